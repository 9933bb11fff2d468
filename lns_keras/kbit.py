"""Quantizers for k bits: PACT activations and the uniform weight quantizer of SLB.

Two quantizers that the 1-bit set of [`lns_keras.quantizers`][lns_keras.quantizers]
lacks, registered in the same registry, so that a layer takes them by name or as objects:

```python
import keras
import lns_keras

x = keras.Input((32, 32, 16))
y = lns_keras.QuantConv2D(
    16, 3, input_quantizer=lns_keras.kbit.PACT(k_bit=2),
    kernel_quantizer=lns_keras.kbit.SteUniform(k_bit=2),
)(x)
```

- `"pact"`, [`PACT`][lns_keras.kbit.PACT]: $k$-bit activations in $[0, \\alpha]$ with a
  learnable clipping level $\\alpha$ (Choi et al., 2018). It holds a trainable weight, so
  it is a layer inside the layer that uses it, and `quantizers.get("pact")` gives a new
  one, with its own $\\alpha$, every time.
- `"ste_uniform"`, [`SteUniform`][lns_keras.kbit.SteUniform]: $k$-bit weights on the
  $2^k$ evenly spaced levels from $-1$ to $1$, SLB's value set; a folded SLB layer holds
  its kernel with this quantizer (see [`lns_keras.slb.fold`][lns_keras.slb.fold]).

For $k$-bit activations in $[0, 1]$ without a learnable clip, DoReFa's quantizer is
`lns_keras.quantizers.DoReFa(k_bit=k, mode="activations")`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lns_keras import quantizers

__all__ = ["PACT", "SteUniform", "pact", "ste_uniform"]


def _check_k_bit(k_bit: int) -> None:
    if isinstance(k_bit, bool) or not isinstance(k_bit, int) or k_bit < 1:
        raise ValueError(f"`k_bit` must be an integer >= 1, got k_bit={k_bit!r}.")


def _straight_through_round(x):
    """`round(x)` whose gradient is the identity."""

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            return args[0] if upstream is None else upstream

        return ops.round(x), grad

    return _call(x)


def ste_uniform(x, k_bit: int = 2, clip_value: float | None = 1.0):
    r"""Uniform $k$-bit quantization of $[-1, 1]$ with the straight-through estimator.

    With $n = 2^k - 1$ steps,

    $$q(x) = \frac{2\,\operatorname{round}\!\big(n\,(\operatorname{clip}(x, -1, 1) + 1)/2\big) - n}{n},
    \qquad \frac{\partial q}{\partial x} = \begin{cases} 1 & |x| \le \text{clip\_value} \\
    0 & \text{else} \end{cases}$$

    The levels are $\{(2j - n)/n\}_{j=0}^{n}$ = `numpy.linspace(-1, 1, 2**k_bit)`, SLB's
    value set (slb.md §1.2). Each level is computed as one division of two integers, so
    $q(v) = v$ holds exactly, in float32, for every level $v$.

    Args:
        x: Input tensor.
        k_bit: Number of bits, at least 1.
        clip_value: Gradient clipping threshold; `None` passes every gradient.

    Returns:
        The quantized tensor, with values among the $2^k$ levels.

    Raises:
        ValueError: If `k_bit` is not an integer ≥ 1; from the backend, if `x` cannot
            be converted to a tensor.
    """
    _check_k_bit(k_bit)
    steps = 2**k_bit - 1

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            if clip_value is None:
                return dy
            return ops.where(ops.less_equal(ops.abs(x), clip_value), dy, ops.zeros_like(dy))

        level = ops.round((ops.clip(x, -1.0, 1.0) + 1.0) * (steps / 2))
        return (2.0 * level - steps) / steps, grad

    return _call(quantizers._as_tensor(x))


def pact(x, alpha, k_bit: int = 2):
    r"""PACT: clip to $[0, \alpha]$ and quantize to $k$ bits (Choi et al., 2018, Eqs. 1-3).

    $$y = \operatorname{clip}(x, 0, \alpha), \qquad
    q(x) = \frac{\alpha}{n}\operatorname{round}\!\Big(\frac{n\,y}{\alpha}\Big),
    \quad n = 2^k - 1$$

    The rounding passes the gradient straight through, so
    $\partial q/\partial x = 1$ for $0 < x \le \alpha$, else 0, and
    $\partial q/\partial \alpha = 1$ for $x > \alpha$, else 0 (PACT's Eq. 3, with
    the tie $x = \alpha$ counted inside, the same on every backend).

    Args:
        x: Input tensor.
        alpha: The clipping level $\alpha > 0$: a scalar tensor or variable.
        k_bit: Number of bits, at least 1.

    Returns:
        The quantized tensor, with values in $\{0, \alpha/n, \dots, \alpha\}$.

    Raises:
        ValueError: If `k_bit` is not an integer ≥ 1; from the backend, if `x` cannot
            be converted to a tensor.
    """
    _check_k_bit(k_bit)
    steps = 2**k_bit - 1
    # PACT Eq. 1; its gradient reaches alpha. A `where`, not `minimum`: at the tie
    # x = alpha, JAX's and PyTorch's minimum split the gradient in halves.
    alpha = ops.convert_to_tensor(alpha)  # a variable's value: jnp.where takes no variable
    clipped = ops.where(ops.greater(x, alpha), alpha, ops.relu(x))
    # The step is held constant in backprop: alpha's gradient comes from the clip only.
    step = ops.stop_gradient(alpha) / steps
    return _straight_through_round(clipped / step) * step


@keras.saving.register_keras_serializable(package="lns_keras")
@quantizers._register_alias("ste_uniform")
class SteUniform(quantizers.Quantizer):
    r"""$k$-bit uniform quantizer on $[-1, 1]$ with the straight-through estimator.

    $$q(x) = \frac{2\,\operatorname{round}\!\big(n\,(\operatorname{clip}(x, -1, 1) + 1)/2\big) - n}{n},
    \qquad \frac{\partial q}{\partial x} = \begin{cases} 1 & |x| \le \text{clip\_value} \\
    0 & \text{else} \end{cases}$$

    with $n = 2^k - 1$: the levels are `numpy.linspace(-1, 1, 2**k_bit)`, the value set
    of SLB (slb.md §1.2), and $q$ leaves each of them exactly as it is, so a kernel
    holding SLB's hard weights passes through unchanged. Its `precision` is `k_bit`.

    Args:
        k_bit: Number of bits, at least 1.
        clip_value: Gradient clipping threshold; `None` passes every gradient.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `k_bit` is not an integer ≥ 1 or `clip_value` is not positive.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.kbit.SteUniform(k_bit=2)
        q(keras.ops.convert_to_tensor([-0.9, -0.2, 0.4, 3.0]))  # [-1, -1/3, 1/3, 1]
        ```
    """

    def __init__(self, k_bit: int = 2, clip_value: float | None = 1.0, **kwargs):
        _check_k_bit(k_bit)
        quantizers._check_clip_value(clip_value)
        super().__init__(**kwargs)
        self.precision = k_bit
        self.clip_value = clip_value

    def call(self, inputs):
        return ste_uniform(inputs, k_bit=self.precision, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "k_bit": self.precision, "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="lns_keras")
@quantizers._register_alias("pact")
class PACT(quantizers.Quantizer):
    r"""$k$-bit activation quantizer with a learnable clipping level (PACT).

    $$y = \operatorname{clip}(x, 0, \alpha), \qquad
    q(x) = \frac{\alpha}{n}\operatorname{round}\!\Big(\frac{n\,y}{\alpha}\Big),
    \quad n = 2^k - 1$$

    $$\frac{\partial q}{\partial x} = \begin{cases} 1 & 0 < x < \alpha \\ 0 &
    \text{else} \end{cases} \qquad \frac{\partial q}{\partial \alpha} = \begin{cases} 1
    & x > \alpha \\ 0 & \text{else} \end{cases}$$

    $\alpha$ is the quantizer's trainable weight `alpha`, one scalar per quantizer. Give
    each layer its own object (or the name `"pact"`, which makes a new one): an object
    shared by two layers shares its $\alpha$, and Keras cannot load such a model back
    from a `.keras` file.
    Reference: Choi et al., *PACT: Parameterized Clipping Activation for Quantized Neural
    Networks*, 2018. SLB's recipes for ResNet-20 and Bi-Real ResNet-18 pass `--pact`
    (slb.md §5.1); the first MindSpore port of SLB computes the same function with a
    floor in place of the rounding and $\alpha$ initialised at 1 (slb.md §5.2). This
    class rounds, as PACT does; `initial_alpha` defaults to 1, as in that port.

    Args:
        k_bit: Number of bits, at least 1 (1 bit gives $\{0, \alpha\}$).
        initial_alpha: The initial $\alpha > 0$.
        alpha_regularizer: Regularizer of $\alpha$ (PACT uses an L2 penalty), or `None`.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `k_bit` is not an integer ≥ 1 or `initial_alpha` is not a
            positive finite number; from Keras, for an unknown `alpha_regularizer`.
        ValueError: From Keras, for a keyword argument `keras.layers.Layer` does not take,
            or when called on something that is not a tensor or an array (e.g. a list).

    Example:
        ```python
        q = lns_keras.kbit.PACT(k_bit=2, initial_alpha=1.0)
        q(keras.ops.convert_to_tensor([-0.5, 0.2, 0.6, 4.0]))  # [0, 1/3, 2/3, 1]
        layer = lns_keras.QuantConv2D(64, 3, input_quantizer="pact")  # k_bit=2
        ```
    """

    def __init__(
        self,
        k_bit: int = 2,
        initial_alpha: float = 1.0,
        alpha_regularizer=None,
        **kwargs,
    ):
        _check_k_bit(k_bit)
        if not (
            isinstance(initial_alpha, int | float)
            and math.isfinite(initial_alpha)
            and initial_alpha > 0
        ):
            raise ValueError(
                f"`initial_alpha` must be a positive finite number, got "
                f"initial_alpha={initial_alpha!r}."
            )
        super().__init__(**kwargs)
        self.precision = k_bit
        self.initial_alpha = float(initial_alpha)
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)
        # Created here, not in build: the quantized layers call their input quantizer
        # inside their own call, where a new variable would come too late for the
        # optimizer (and inside a traced function).
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_alpha),
            regularizer=self.alpha_regularizer,
            trainable=True,
        )
        self.built = True

    def call(self, inputs):
        return pact(inputs, self.alpha, k_bit=self.precision)

    def get_config(self):
        return {
            **super().get_config(),
            "k_bit": self.precision,
            "initial_alpha": self.initial_alpha,
            "alpha_regularizer": keras.regularizers.serialize(self.alpha_regularizer)
            if self.alpha_regularizer
            else None,
        }
