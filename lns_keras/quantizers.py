"""Quantizers: the forward quantization and the pseudo-gradient used to train through it.

A quantizer maps full-precision values to a few levels (two, for a binary network) in the
forward pass, and replaces the gradient of that step function, zero almost everywhere,
by a *pseudo-gradient* in the backward pass. The names, arguments and numerics are those
of [larq](https://larq.dev) 0.14, re-implemented for Keras 3.

Quantizers are used through the quantizer arguments of the quantized layers:

```python
import keras
import lns_keras

x = keras.Input((32, 32, 3))
y = lns_keras.QuantConv2D(
    64, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
    kernel_constraint="weight_clip",
)(x)
```

Strings and objects are interchangeable: `kernel_quantizer="ste_sign"` is
`kernel_quantizer=lns_keras.quantizers.SteSign(clip_value=1.0)`. The function
`kernel_quantizer=lns_keras.quantizers.ste_sign` computes the same. A quantizer of your
own, a `Quantizer` subclass or a plain function, is registered with Keras and then named
like the built-in ones; all of these are saved in a `.keras` file and load back with
`safe_mode=True`:

```python
@keras.saving.register_keras_serializable(package="MyPackage")
def my_quantizer(x):
    return lns_keras.quantizers.ste_sign(x, clip_value=2.0)

layer = lns_keras.QuantDense(10, kernel_quantizer="MyPackage>my_quantizer")
```

Each quantizer says how many bits its output has in `precision` (1 for the binary ones,
2 for `ste_tern`, `k_bit` for `DoReFa`), which [`model_stats`][lns_keras.model_stats],
`Bop` and the flip-rate tools read. Beyond larq, the functions carry it too
(`ste_sign.precision == 1`), so `kernel_quantizer=lns_keras.quantizers.ste_sign` counts
as binary as `"ste_sign"` does; a function of your own says its precision the same way
(`my_quantizer.precision = 1`).

The forward pass of every quantizer is only the quantization (for binary quantizers
`sign`), with the pseudo-gradient attached by `keras.ops.custom_gradient`. An exported
graph therefore holds a bare `sign`, which larq-compute-engine fuses into a 1-bit
convolution.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

__all__ = [
    "ApproxSign",
    "DoReFa",
    "DoReFaQuantizer",
    "MagnitudeAwareSign",
    "NoOp",
    "NoOpQuantizer",
    "Quantizer",
    "SteHeaviside",
    "SteSign",
    "SteTern",
    "SwishSign",
    "approx_sign",
    "deserialize",
    "get",
    "get_kernel_quantizer",
    "serialize",
    "sign",
    "ste_heaviside",
    "ste_sign",
    "ste_tern",
    "swish_sign",
]

_ALIASES: dict[str, type] = {}


def _register_alias(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        _ALIASES[name] = cls
        return cls

    return decorator


def _check_clip_value(clip_value: float | None) -> None:
    if clip_value is not None and not clip_value > 0:
        raise ValueError(
            f"`clip_value` must be a positive number or None, got clip_value={clip_value!r}."
        )


def _upstream(args: tuple, upstream: Any) -> Any:
    # keras.ops.custom_gradient passes the upstream gradient positionally (TF) or by name.
    return args[0] if upstream is None else upstream


def _as_tensor(x):
    # tf.custom_gradient refuses a function that reads a variable: read it first.
    if isinstance(x, keras.Variable) or hasattr(x, "read_value"):
        return ops.copy(x)
    return x


def _clipped_gradient(x, dy, clip_value: float | None):
    """Straight-through gradient, zeroed where `|x| > clip_value`."""
    if clip_value is None:
        return dy
    return ops.where(ops.less_equal(ops.abs(x), clip_value), dy, ops.zeros_like(dy))


@keras.saving.register_keras_serializable(package="lns_keras")
def sign(x):
    r"""Sign that is never zero: $\operatorname{sign}(x) = +1$ for $x \ge 0$, else $-1$.

    Written as `sign(sign(x) + 0.1)`, larq's form, which larq-compute-engine recognises.

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x` holding ±1.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """
    return ops.sign(ops.sign(x) + 0.1)


def heaviside(x):
    r"""Heaviside step: $+1$ for $x > 0$, else $0$.

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x` holding 0 or 1.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """
    return ops.sign(ops.relu(x))


@keras.saving.register_keras_serializable(package="lns_keras")
def ste_sign(x, clip_value: float | None = 1.0):
    r"""Sign with the straight-through estimator.

    $q(x) = \operatorname{sign}(x)$; $\partial q / \partial x = 1$ where
    $|x| \le$ `clip_value`, else 0 (Hubara et al., 2016).

    Args:
        x: Input tensor.
        clip_value: Gradient clipping threshold; `None` passes every gradient.

    Returns:
        The binarized tensor.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return sign(x), grad

    return _call(_as_tensor(x))


@keras.saving.register_keras_serializable(package="lns_keras")
def approx_sign(x):
    r"""Sign with the piecewise-polynomial pseudo-gradient of Bi-Real Net.

    $\partial q / \partial x = 2 - 2|x|$ for $|x| \le 1$, else 0 (Liu et al., 2018).

    Args:
        x: Input tensor.

    Returns:
        The binarized tensor.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            abs_x = ops.abs(x)
            return ops.where(ops.less_equal(abs_x, 1.0), (1 - abs_x) * 2 * dy, ops.zeros_like(dy))

        return sign(x), grad

    return _call(_as_tensor(x))


@keras.saving.register_keras_serializable(package="lns_keras")
def swish_sign(x, beta: float = 5.0):
    r"""Sign with the SignSwish pseudo-gradient (Darabi et al., 2018).

    $\partial q / \partial x = \beta\,(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh(\beta x))$.

    Args:
        x: Input tensor.
        beta: Steepness of the swish.

    Returns:
        The binarized tensor.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            b_x = beta * x
            return dy * beta * (2 - b_x * ops.tanh(b_x * 0.5)) / (1 + ops.cosh(b_x))

        return sign(x), grad

    return _call(_as_tensor(x))


@keras.saving.register_keras_serializable(package="lns_keras")
def ste_tern(
    x,
    threshold_value: float = 0.05,
    ternary_weight_networks: bool = False,
    clip_value: float | None = 1.0,
):
    r"""Ternarization with the straight-through estimator (Li et al., 2016).

    $q(x) = +1$ for $x > \Delta$, $0$ for $|x| < \Delta$, $-1$ for $x < -\Delta$, where
    $\Delta$ is `threshold_value`, or $0.7 \cdot \operatorname{mean}|x|$ when
    `ternary_weight_networks` is set.

    Args:
        x: Input tensor.
        threshold_value: The threshold $\Delta$.
        ternary_weight_networks: Compute $\Delta$ from `x` as in Ternary Weight Networks.
        clip_value: Gradient clipping threshold; `None` passes every gradient.

    Returns:
        The ternarized tensor.

    Raises:
        TypeError: If `ternary_weight_networks=False` and `x` cannot be added to the
            threshold, e.g. a Python list (pass a tensor or a NumPy array).
        ValueError: From the backend, if `ternary_weight_networks=True` and `x` cannot be
            converted to a tensor.
    """

    @ops.custom_gradient
    def _call(x):
        if ternary_weight_networks:
            threshold = 0.7 * ops.mean(ops.abs(x))
        else:
            threshold = threshold_value

        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return ops.sign(ops.sign(x + threshold) + ops.sign(x - threshold)), grad

    return _call(_as_tensor(x))


@keras.saving.register_keras_serializable(package="lns_keras")
def ste_heaviside(x, clip_value: float | None = 1.0):
    r"""Heaviside step with the straight-through estimator.

    $q(x) = 1$ for $x > 0$, else $0$; $\partial q/\partial x = 1$ where $|x| \le$
    `clip_value`.

    Args:
        x: Input tensor.
        clip_value: Gradient clipping threshold; `None` passes every gradient.

    Returns:
        The tensor of zeros and ones.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return heaviside(x), grad

    return _call(_as_tensor(x))


# The bits of each function's output, as its class says (larq 0.14's functions carry
# none; lns_keras's tools read it, see the module docstring).
sign.precision = 1
heaviside.precision = 1
ste_sign.precision = 1
approx_sign.precision = 1
swish_sign.precision = 1
ste_tern.precision = 2
ste_heaviside.precision = 1

_TRAINING_METRICS = ("flip_ratio",)


def _check_metrics(metrics) -> list[str] | None:
    if metrics is None:
        return None
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ValueError(
            f"`metrics` must be a list of metric names or None, got metrics={metrics!r}."
        )
    unknown = [m for m in metrics if m not in _TRAINING_METRICS]
    if unknown:
        raise ValueError(
            f"Unknown training metric(s) {unknown} in metrics={list(metrics)!r}; "
            f"available: {list(_TRAINING_METRICS)}."
        )
    return list(metrics)


@keras.saving.register_keras_serializable(package="lns_keras")
class Quantizer(keras.layers.Layer):
    """Base class of quantizers.

    Subclasses implement `call`; the base class holds `precision` and larq's `metrics`.

    Args:
        metrics: Training metrics of the weight this quantizer reads, larq's argument:
            `["flip_ratio"]` makes the quantized layer that uses it as a weight quantizer
            track the weight's [`FlipRatio`][lns_keras.metrics.FlipRatio]; `None` (default):
            those of the `context.metrics_scope` the layer is built in.
        **kwargs: The keyword arguments of `keras.layers.Layer` (`name`, `dtype`,
            `trainable`, ...).

    Raises:
        ValueError: If `metrics` names an unknown training metric (only `"flip_ratio"`
            exists); from Keras, for a keyword argument `keras.layers.Layer` does not
            take, or when called on something that is not a tensor or an array (e.g. a
            list).
        NotImplementedError: From Keras, when the base class itself is called.

    Attributes:
        precision: Bits of the output (1 for binary quantizers), read by
            [`model_stats`][lns_keras.model_stats]; `None` when unknown.

    Example:
        ```python
        q = lns_keras.quantizers.get("ste_sign")
        isinstance(q, lns_keras.quantizers.Quantizer), q.precision  # (True, 1)
        ```
    """

    precision: int | None = None

    def __init__(self, *args, metrics: list[str] | None = None, **kwargs):
        # larq's attribute name, read by `get_kernel_quantizer` and the quantized layers.
        self._custom_metrics = _check_metrics(metrics)
        super().__init__(*args, **kwargs)
        # Without a `build` of its own a quantizer has nothing to build: built from the
        # start, as Keras's stateless layers are, so that Keras's `Model.quantize` reaches
        # `quantize` below instead of failing on an unbuilt layer.
        if type(self).build is keras.layers.Layer.build:
            self.built = True
        # An elementwise function keeps its input's dtype, as larq's quantizers and the
        # functions (`ste_sign`) do: Keras would first cast a float64 input to the
        # layer's float32. `__call__` converts arrays and variables itself.
        self._convert_input_args = False

    def __call__(self, inputs, *args, **kwargs):
        if not isinstance(inputs, keras.KerasTensor) and not ops.is_tensor(inputs):
            inputs = ops.convert_to_tensor(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def quantize(self, mode=None, type_check=True, config=None) -> None:
        """Refuse Keras's post-training quantization: a quantizer has no int8 form.

        `keras.Model.quantize` calls this on every leaf layer and shows the error as a
        warning; the quantized layer that uses this quantizer is left as it is (see
        `QuantDense.quantize`).

        Args:
            mode: Keras's quantization mode (`"int8"`, ...).
            type_check: Keras's argument, unused.
            config: Keras's argument, unused.

        Raises:
            NotImplementedError: Always.
        """
        # Keras's Model.quantize catches NotImplementedError, warns with this message and
        # leaves the layer as it is: the protocol for "this layer does not take part".
        raise NotImplementedError(
            f"{type(self).__name__} {self.name!r} quantizes the inputs or weights of an "
            f"lns_keras layer itself: Keras's quantize({mode!r}) leaves that layer as it is. "
            "Only full-precision lns_keras layers (QuantDense without quantizers) take "
            "part; a binary layer is exported with lns_keras.export instead."
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        if self._custom_metrics:
            config["metrics"] = list(self._custom_metrics)
        return config


class _ClippedQuantizer(Quantizer):
    """A quantizer with a straight-through gradient clipped at `clip_value`.

    Args:
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `clip_value` is not positive.
    """

    def __init__(self, clip_value: float | None = 1.0, **kwargs):
        _check_clip_value(clip_value)
        super().__init__(**kwargs)
        self.clip_value = clip_value

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("noop")
class NoOp(Quantizer):
    r"""Identity that only marks a precision: $q(x) = x$.

    Args:
        precision: The precision to record for the variable it is applied to (`None`:
            unknown, counted as 32-bit).
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `precision` is not a positive integer.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        layer = lns_keras.QuantDense(16, kernel_quantizer=lns_keras.quantizers.NoOp(1))
        ```
    """

    def __init__(self, precision: int | None = None, **kwargs):
        if precision is not None and (not isinstance(precision, int) or precision < 1):
            raise ValueError(
                f"`precision` must be a positive integer or None, got precision={precision!r}."
            )
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("ste_sign")
class SteSign(_ClippedQuantizer):
    r"""Binary quantizer with the straight-through estimator.

    $$q(x) = \begin{cases} -1 & x < 0 \\ +1 & x \ge 0 \end{cases} \qquad
    \frac{\partial q}{\partial x} = \begin{cases} 1 & |x| \le \text{clip\_value} \\
    0 & \text{else} \end{cases}$$

    Reference: Hubara et al., *Binarized Neural Networks*, NeurIPS 2016.

    Args:
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `clip_value` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.SteSign(clip_value=1.0)
        q(keras.ops.convert_to_tensor([-0.5, 0.0, 2.0]))  # [-1, 1, 1]
        ```
    """

    precision = 1

    def call(self, inputs):
        return ste_sign(inputs, clip_value=self.clip_value)


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("approx_sign")
class ApproxSign(Quantizer):
    r"""Binary quantizer with the Bi-Real Net pseudo-gradient.

    $$q(x) = \operatorname{sign}(x) \qquad \frac{\partial q}{\partial x} =
    \begin{cases} 2 - 2|x| & |x| \le 1 \\ 0 & \text{else} \end{cases}$$

    Reference: Liu et al., *Bi-Real Net*, ECCV 2018.

    Keyword Args:
        **kwargs: The keyword arguments of `keras.layers.Layer` (`name`, `dtype`,
            `trainable`, ...); this class has no `__init__` of its own.

    Raises:
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.ApproxSign()
        q(keras.ops.convert_to_tensor([-0.5, 0.0, 2.0]))  # [-1, 1, 1]
        ```
    """

    precision = 1

    def call(self, inputs):
        return approx_sign(inputs)


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("ste_heaviside")
class SteHeaviside(_ClippedQuantizer):
    r"""Binary quantizer to $\{0, 1\}$ with the straight-through estimator.

    $$q(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases} \qquad
    \frac{\partial q}{\partial x} = \begin{cases} 1 & |x| \le \text{clip\_value} \\
    0 & \text{else} \end{cases}$$

    Args:
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `clip_value` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.SteHeaviside()
        q(keras.ops.convert_to_tensor([-0.5, 0.0, 2.0]))  # [0, 0, 1]
        ```
    """

    precision = 1

    def call(self, inputs):
        return ste_heaviside(inputs, clip_value=self.clip_value)


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("swish_sign")
class SwishSign(Quantizer):
    r"""Binary quantizer with the SignSwish pseudo-gradient.

    $$q(x) = \operatorname{sign}(x) \qquad \frac{\partial q}{\partial x} =
    \frac{\beta\,(2 - \beta x \tanh(\beta x / 2))}{1 + \cosh(\beta x)}$$

    Reference: Darabi et al., *BNN+*, 2018.

    Args:
        beta: Steepness of the swish; must be positive.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `beta` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.SwishSign(beta=5.0)
        q(keras.ops.convert_to_tensor([-0.5, 0.0, 2.0]))  # [-1, 1, 1]
        ```
    """

    precision = 1

    def __init__(self, beta: float = 5.0, **kwargs):
        if not beta > 0:
            raise ValueError(f"`beta` must be positive, got beta={beta!r}.")
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, inputs):
        return swish_sign(inputs, beta=self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("magnitude_aware_sign")
class MagnitudeAwareSign(_ClippedQuantizer):
    r"""Sign scaled by the mean magnitude per output channel (Bi-Real Net, §3.3).

    $$q(x) = \operatorname{mean}(|x|) \cdot \operatorname{sign}(x)$$

    The mean is taken over every axis but the last and is held constant in the backward
    pass, which is the straight-through estimator clipped at `clip_value`.

    Args:
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `clip_value` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.MagnitudeAwareSign()
        q(keras.ops.convert_to_tensor([[-0.5, 1.0], [0.25, -3.0]]))
        # [[-0.375, 2.0], [0.375, -2.0]]: column means 0.375 and 2.0
        ```
    """

    precision = 1

    def call(self, inputs):
        axes = tuple(range(len(inputs.shape) - 1))
        scale = ops.stop_gradient(ops.mean(ops.abs(inputs), axis=axes))
        return scale * ste_sign(inputs, clip_value=self.clip_value)


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("ste_tern")
class SteTern(Quantizer):
    r"""Ternary quantizer with the straight-through estimator.

    $$q(x) = \begin{cases} +1 & x > \Delta \\ 0 & |x| < \Delta \\ -1 & x < -\Delta
    \end{cases}$$

    with $\Delta$ = `threshold_value`, or $\Delta = 0.7\,\operatorname{mean}|x|$ when
    `ternary_weight_networks=True` (Li et al., *Ternary Weight Networks*, 2016).

    Args:
        threshold_value: The threshold $\Delta$; must be non-negative.
        ternary_weight_networks: Compute $\Delta$ from the input.
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `threshold_value` is negative or `clip_value` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.SteTern(threshold_value=0.05)
        q(keras.ops.convert_to_tensor([-0.5, 0.01, 0.3]))  # [-1, 0, 1]
        ```
    """

    precision = 2

    def __init__(
        self,
        threshold_value: float = 0.05,
        ternary_weight_networks: bool = False,
        clip_value: float | None = 1.0,
        **kwargs,
    ):
        if not threshold_value >= 0:
            raise ValueError(
                f"`threshold_value` must be non-negative, got threshold_value={threshold_value!r}."
            )
        _check_clip_value(clip_value)
        super().__init__(**kwargs)
        self.threshold_value = threshold_value
        self.ternary_weight_networks = ternary_weight_networks
        self.clip_value = clip_value

    def call(self, inputs):
        return ste_tern(
            inputs,
            threshold_value=self.threshold_value,
            ternary_weight_networks=self.ternary_weight_networks,
            clip_value=self.clip_value,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "threshold_value": self.threshold_value,
            "ternary_weight_networks": self.ternary_weight_networks,
            "clip_value": self.clip_value,
        }


@keras.saving.register_keras_serializable(package="lns_keras")
@_register_alias("dorefa_quantizer")
class DoReFa(Quantizer):
    r"""k-bit quantizer of DoReFa-Net (Zhou et al., 2016), §2.3.

    With $n = 2^k - 1$, `mode="activations"` clips to $[0, 1]$ and rounds,
    $q(x) = \operatorname{round}(n \cdot \operatorname{clip}(x, 0, 1)) / n$;
    `mode="weights"` maps $w \mapsto \tanh(w) / (2 \max|\tanh(w)|) + 1/2$, quantizes, and
    rescales to $[-1, 1]$ by $2q - 1$. The rounding passes the gradient straight through.

    Args:
        k_bit: Number of bits, at least 1.
        mode: `"activations"` or `"weights"`.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `k_bit` is not an integer ≥ 1 or `mode` is not one of the two
            (also when called after `mode` was changed to another value, as in larq).
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.quantizers.DoReFa(k_bit=2, mode="activations")
        q(keras.ops.convert_to_tensor([-0.2, 0.4, 1.3]))  # [0, 1/3, 1]
        ```
    """

    def __init__(self, k_bit: int = 2, mode: str = "activations", **kwargs):
        if not isinstance(k_bit, int) or k_bit < 1:
            raise ValueError(f"`k_bit` must be an integer >= 1, got k_bit={k_bit!r}.")
        if mode not in ("activations", "weights"):
            raise ValueError(f"`mode` must be 'activations' or 'weights', got mode={mode!r}.")
        super().__init__(**kwargs)
        self.precision = k_bit
        self.mode = mode

    def _weight_preprocess(self, inputs):
        limited = ops.tanh(inputs)
        # The max is a constant for the gradient, as in larq (the x / x pitfall).
        dividend = ops.stop_gradient(ops.max(ops.abs(limited)))
        safe = ops.where(ops.equal(dividend, 0.0), ops.ones_like(dividend), dividend)
        normed = ops.where(
            ops.equal(dividend, 0.0), ops.zeros_like(limited), limited / (2.0 * safe)
        )
        return normed + 0.5

    def call(self, inputs):
        if self.mode == "activations":
            # clip(x, 0, 1) whose gradient is 1 on [0, 1], both ends included, as larq's
            # tf.clip_by_value has it on every backend (jnp.clip halves it at the ends).
            x = _as_tensor(inputs)
            inputs = ops.where(ops.less(x, 0.0), 0.0, ops.where(ops.greater(x, 1.0), 1.0, x))
        elif self.mode == "weights":
            inputs = self._weight_preprocess(inputs)
        else:  # changed after construction
            raise ValueError(f"`mode` must be 'activations' or 'weights', got mode={self.mode!r}.")
        n = 2**self.precision - 1

        @ops.custom_gradient
        def _round(x):
            def grad(*args, upstream=None):
                return _upstream(args, upstream)

            return ops.round(x * n) / n, grad

        outputs = _round(_as_tensor(inputs))
        if self.mode == "weights":
            outputs = 2.0 * outputs - 1.0
        return outputs

    def get_config(self):
        return {**super().get_config(), "k_bit": self.precision, "mode": self.mode}


# larq's names from before 0.10, kept by larq 0.14 for backward compatibility: the same
# classes, also resolved by name (`get("DoReFaQuantizer")`, a config's class name).
NoOpQuantizer = NoOp
DoReFaQuantizer = DoReFa
_LEGACY_NAMES = {"NoOpQuantizer": NoOp, "DoReFaQuantizer": DoReFa}


def _builtin_names() -> dict[str, type]:
    """Our aliases (`"ste_sign"`), class names (`"SteSign"`) and larq's legacy class names
    (`"DoReFaQuantizer"`), each naming its class."""
    return {**_LEGACY_NAMES, **{cls.__name__: cls for cls in _ALIASES.values()}, **_ALIASES}


def _unknown_name(name: str) -> ValueError:
    close = difflib.get_close_matches(name, _builtin_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    class_names = sorted(cls.__name__ for cls in _ALIASES.values())
    return ValueError(
        f"Unknown quantizer name {name!r} (given as `input_quantizer`, `kernel_quantizer` or "
        f"`identifier`).{hint} A quantizer name is an alias ({', '.join(sorted(_ALIASES))}), "
        f"a class name ({', '.join(class_names)}), or the name of a class or function "
        "registered with `keras.saving.register_keras_serializable`, written "
        "'Package>name' (e.g. 'MyPackage>my_quantizer'). A quantizer object, a function, "
        "a config from `quantizers.serialize` or None is accepted as well."
    )


def _from_name(name: str, custom_objects: dict | None = None) -> Quantizer | Callable:
    """The quantizer a name stands for: a new object for a class, the function itself."""
    cls = _builtin_names().get(name)
    if cls is not None:
        return cls()
    registered = keras.saving.get_registered_object(name, custom_objects=custom_objects)
    if registered is None:
        raise _unknown_name(name)
    if not inspect.isclass(registered):
        quantizer = registered
    else:
        try:
            quantizer = registered()
        except TypeError as error:
            raise TypeError(
                f"The quantizer name {name!r} names the class {registered.__name__}, which "
                f"cannot be built without arguments ({error}). Pass an object instead, "
                f"e.g. kernel_quantizer={registered.__name__}(...)."
            ) from error
    if not callable(quantizer):
        raise ValueError(
            f"The quantizer name {name!r} names {quantizer!r}, which is not callable: a "
            "quantizer is a function or an object that is called on a tensor."
        )
    return quantizer


def serialize(quantizer: Quantizer | Callable | str | None) -> dict | str | None:
    """Serialize a quantizer to a Keras config, which [`get`][lns_keras.quantizers.get] reads.

    A function is saved by its registered name (`"lns_keras>ste_sign"`, or the
    `"Package>name"` given to `keras.saving.register_keras_serializable`) and its module,
    so that a `.keras` file holding it loads with `safe_mode=True`. An unregistered
    function is saved by its bare name, and loads only if it is passed to
    `keras.saving.load_model` in `custom_objects`.

    Args:
        quantizer: A quantizer object, a function, a quantizer name, or `None`.

    Returns:
        The Keras config of `quantizer` (a name is returned as it is), or `None`.

    Raises:
        TypeError: From Keras, if `quantizer` is an object Keras cannot serialize (one
            without `get_config`).

    Example:
        ```python
        lns_keras.quantizers.serialize(lns_keras.quantizers.ste_sign)
        # {'module': 'lns_keras.quantizers', 'class_name': 'function',
        #  'config': 'lns_keras>ste_sign', 'registered_name': 'lns_keras>ste_sign'}
        ```
    """
    if quantizer is None:
        return None
    if isinstance(quantizer, types.FunctionType) and quantizer.__name__ != "<lambda>":
        # Keras's own serialization records a function's module as `builtins`, where it
        # looks only for Keras's built-in functions: name the function's real module.
        name = keras.saving.get_registered_name(quantizer)
        return {
            "module": quantizer.__module__,
            "class_name": "function",
            "config": name,
            "registered_name": name,
        }
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(
    config: dict | str | None, custom_objects: dict | None = None
) -> Quantizer | Callable | None:
    """Build a quantizer from its Keras config or its name.

    The inverse of [`serialize`][lns_keras.quantizers.serialize]; a name is resolved as by
    [`get`][lns_keras.quantizers.get].

    Args:
        config: A config produced by [`serialize`][lns_keras.quantizers.serialize], a
            quantizer name (`"ste_sign"`, `"SteSign"`, `"MyPackage>my_quantizer"`), or
            `None`.
        custom_objects: Extra classes or functions to look up by name, as in
            `keras.saving.load_model`.

    Returns:
        The quantizer: a new object for a config or name of a class, the function itself
        for a function; `None` for `None`.

    Raises:
        ValueError: If `config` is an unknown name, or neither a name, a dict nor `None`.
        TypeError: If a name stands for a class that needs constructor arguments; from
            Keras, if a config names a class or function that is neither registered nor
            in `custom_objects`.
    """
    if config is None:
        return None
    if isinstance(config, str):
        return _from_name(config, custom_objects)
    if not isinstance(config, dict):
        raise ValueError(
            "`config` must be a quantizer name, a config produced by `quantizers.serialize`, "
            f"or None, got config={config!r}."
        )
    # Our bare class names also resolve a config without a registered name, the form
    # larq and tf.keras wrote: {"class_name": "SteSign", "config": {...}}.
    class_names = {**_LEGACY_NAMES, **{cls.__name__: cls for cls in _ALIASES.values()}}
    return keras.saving.deserialize_keras_object(
        config, custom_objects={**class_names, **(custom_objects or {})}
    )


def get(identifier: Any) -> Quantizer | Callable | None:
    """Resolve a quantizer from a name, a config, an object, a function or `None`.

    This is what the quantized layers do with their `input_quantizer` and
    `kernel_quantizer` arguments.

    Args:
        identifier: An alias (`"ste_sign"`, `"approx_sign"`, `"swish_sign"`,
            `"ste_heaviside"`, `"ste_tern"`, `"magnitude_aware_sign"`,
            `"dorefa_quantizer"`, `"noop"`); a class name (`"SteSign"`); the name of a
            class or function registered with `keras.saving.register_keras_serializable`,
            `"Package>name"` (ours are `"lns_keras>SteSign"`, `"lns_keras>ste_sign"`, ...),
            or a name in a `keras.saving.custom_object_scope`; a config produced by
            [`serialize`][lns_keras.quantizers.serialize]; a quantizer object or a
            function, returned as it is; or `None`.

    Returns:
        A quantizer object (a new one for the name of a class), a function, or `None`.

    Raises:
        ValueError: If `identifier` is an unknown name or is not one of the above.
        TypeError: If a name stands for a class that needs constructor arguments; from
            Keras, if a config names a class or function that is not registered.

    Example:
        ```python
        @keras.saving.register_keras_serializable(package="MyPackage")
        def my_quantizer(x):
            return lns_keras.quantizers.ste_sign(x, clip_value=2.0)

        lns_keras.quantizers.get("MyPackage>my_quantizer") is my_quantizer  # True
        lns_keras.quantizers.get("ste_sign")  # a new SteSign(clip_value=1.0)
        ```
    """
    if identifier is None:
        return None
    if isinstance(identifier, str | dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(
        f"Could not interpret quantizer identifier={identifier!r}: expected a quantizer name, "
        "a config produced by `quantizers.serialize`, a quantizer object, a function, or None."
    )


def get_kernel_quantizer(identifier: Any) -> Quantizer | Callable | None:
    """Resolve a weight quantizer as [`get`][lns_keras.quantizers.get] does, and give it the
    training metrics in scope (larq's `get_kernel_quantizer`).

    A [`Quantizer`][lns_keras.quantizers.Quantizer] given without `metrics` takes those
    of the enclosing [`metrics_scope`][lns_keras.context.metrics_scope] (a copy); a
    function or a quantizer with its own `metrics` is returned as it is. The quantized
    layers resolve their weight quantizers with it; their input quantizers with `get`.

    Args:
        identifier: Anything [`get`][lns_keras.quantizers.get] takes.

    Returns:
        The quantizer, a function, or `None`.

    Raises:
        ValueError: If `identifier` is an unknown name or is not one of what `get`
            takes.
        TypeError: As `get`, for a name of a class that needs constructor arguments.

    Example:
        ```python
        with lns_keras.context.metrics_scope(["flip_ratio"]):
            q = lns_keras.quantizers.get_kernel_quantizer("ste_sign")
        q._custom_metrics  # ["flip_ratio"]
        ```
    """
    from lns_keras import context

    quantizer = get(identifier)
    if isinstance(quantizer, Quantizer) and not quantizer._custom_metrics:
        quantizer._custom_metrics = sorted(context.get_training_metrics())
    return quantizer
