"""SLB layers: low-bit weights searched as distributions over a value set.

SLB (Yang et al., *Searching for Low-Bit Weights in Quantized Neural Networks*, NeurIPS
2020; specification in `slb.md`) keeps no latent real kernel. Each weight chooses among
the $n = 2^b$ values of a fixed set $\\mathbb V$ (`value_set`), and the layer learns one
logit per weight and value, `logits` $A$ of shape `kernel_shape + (n,)`. With the
layer's inverse temperature $T$ (`temperature`):

- S1: $P = \\operatorname{softmax}(A \\cdot T)$ over the last axis;
- S2: the soft kernel $W_c = \\sum_j P_j v_j$ (`soft_kernel()`), used in training;
- S3: the hard kernel $W_d = v_{\\arg\\max_j A_j}$ (`hard_kernel()`), used in inference,
  and in training once the layer is switched to `hard`.

[`SLBTemperatureScheduler`][lns_keras.slb.SLBTemperatureScheduler] raises $T$ and
switches the layers to hard; [`lns_keras.slb.fold`][lns_keras.slb.fold] turns them into
plain `QuantConv2D` / `QuantDense` layers holding $W_d$.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from lns_keras.layers.quantized import QuantConv2D, QuantDense

__all__ = ["WEIGHT_BITS", "SLBQuantConv2D", "SLBQuantDense", "is_slb_layer", "value_set"]

WEIGHT_BITS = (1, 2, 4)
"""The values `weight_bits` takes, as in the MindSpore port of SLB (slb.md §1.2)."""

# Arguments of the latent kernel that an SLB layer does not have.
_LATENT_KERNEL_ARGUMENTS = (
    "kernel_initializer",
    "kernel_regularizer",
    "kernel_constraint",
    "kernel_quantizer",
    "kernel_scale",
)
NORMALIZATIONS = ("channel", "layer", None)


def _check_weight_bits(weight_bits) -> None:
    if isinstance(weight_bits, bool) or weight_bits not in WEIGHT_BITS:
        raise ValueError(
            f"`weight_bits` must be one of {WEIGHT_BITS}, got weight_bits={weight_bits!r}."
        )


def value_set(weight_bits: int) -> np.ndarray:
    """SLB's value set $\\mathbb V$ for `weight_bits` bits (slb.md §1.2).

    $\\{-1, +1\\}$ for 1 bit, `numpy.linspace(-1, 1, 2**weight_bits)` otherwise: $2^b$
    evenly spaced values, symmetric, without 0. Each value is the float32 quotient
    $(2j - n)/n$, $n = 2^b - 1$, which is also what
    [`SteUniform`][lns_keras.kbit.SteUniform] computes, so a folded kernel is exact.

    Args:
        weight_bits: 1, 2 or 4.

    Returns:
        A float32 array of length `2**weight_bits`, ascending.

    Raises:
        ValueError: If `weight_bits` is not 1, 2 or 4.
    """
    _check_weight_bits(weight_bits)
    steps = 2**weight_bits - 1
    levels = 2 * np.arange(steps + 1, dtype=np.float32) - np.float32(steps)
    return levels / np.float32(steps)


def is_slb_layer(layer) -> bool:
    """Whether `layer` is an `SLBQuantConv2D` or `SLBQuantDense`.

    Args:
        layer: Any object.

    Returns:
        `True` for an SLB layer, else `False`.

    Raises:
        Nothing: Any object is accepted.
    """
    return isinstance(layer, _SLBMixin)


def _fan_out_normal(shape) -> keras.initializers.Initializer:
    # MindSpore's HeNormal(mode="fan_out") on its 5-D (C_o, C_i/g, k_h, k_w, n) logits:
    # fan_out = C_o k_h k_w n, which for Keras's (k_h, k_w, C_i/g, C_o, n) is the size
    # over the input-channel axis; a dense (C_i, C_o, n) gets C_o n.
    fan_out = math.prod(shape) // shape[-3]
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan_out))


def _pop_latent_kernel_arguments(cls_name: str, kwargs: dict) -> None:
    for key in _LATENT_KERNEL_ARGUMENTS:
        value = kwargs.pop(key, None)
        if value is not None:
            raise ValueError(
                f"{cls_name} has no latent kernel, so `{key}` does not apply, got "
                f"{key}={value!r}; its weights are the logits: use `logits_initializer` "
                "and `logits_regularizer`."
            )
    if kwargs.get("lora_rank"):
        raise ValueError(
            f"{cls_name} has no latent kernel to adapt with LoRA, so `lora_rank` does not "
            f"apply, got lora_rank={kwargs['lora_rank']!r}."
        )


class _SLBMixin:
    """What SLBQuantConv2D and SLBQuantDense share: the logits and the two kernels."""

    def _init_slb(self, weight_bits, logits_initializer, logits_regularizer):
        _check_weight_bits(weight_bits)
        self.weight_bits = weight_bits
        self.logits_initializer = (
            None if logits_initializer is None else keras.initializers.get(logits_initializer)
        )
        self.logits_regularizer = keras.regularizers.get(logits_regularizer)

    @property
    def values(self) -> np.ndarray:
        """The value set $\\mathbb V$ (`value_set(weight_bits)`), a float32 array."""
        return value_set(self.weight_bits)

    @property
    def kernel(self):
        raise AttributeError(
            f"{type(self).__name__} {self.name!r} has no latent kernel: its weights are "
            "`logits`; use `soft_kernel()` or `hard_kernel()`."
        )

    @property
    def kernel_shape(self) -> tuple:
        """The shape of the kernel the layer computes with (the logits' without the last axis)."""
        return tuple(self.logits.shape[:-1])

    @property
    def hard(self) -> bool:
        """Whether training uses the hard kernel too (slb.md §2.3); set it to switch.

        Stored in the non-trainable boolean variable `hard_flag`, which a compiled
        training step reads at every step and `.keras` files save.
        """
        return bool(keras.ops.convert_to_numpy(self.hard_flag))

    @hard.setter
    def hard(self, value: bool) -> None:
        self.hard_flag.assign(bool(value))

    def _build_slb(self, kernel_shape: tuple) -> None:
        n_values = 2**self.weight_bits
        shape = tuple(kernel_shape) + (n_values,)
        self.logits = self.add_weight(
            name="logits",
            shape=shape,
            initializer=self.logits_initializer or _fan_out_normal(shape),
            regularizer=self.logits_regularizer,
            trainable=True,
            autocast=False,  # S1 in float32: A·T reaches 1e7 at the end of a schedule
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(kernel_shape[-1],),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        else:
            self.bias = None
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(1.0),  # T_0 = 1 (slb.md §3.3)
            trainable=False,
            autocast=False,
            dtype="float32",
        )
        self.hard_flag = self.add_weight(
            name="hard", shape=(), initializer="zeros", trainable=False, dtype="bool"
        )
        self.built = True

    def set_temperature(self, temperature: float) -> None:
        """Set the inverse temperature $T$ of S1 (the schedulers call this).

        Args:
            temperature: $T = 1/\\tau > 0$, finite.

        Raises:
            ValueError: If `temperature` is not a positive finite number.
            AttributeError: If the layer is not built yet.
        """
        if not (
            isinstance(temperature, int | float | np.floating)
            and math.isfinite(temperature)
            and temperature > 0
        ):
            raise ValueError(
                f"`temperature` must be a positive finite number, got temperature={temperature!r}."
            )
        self.temperature.assign(float(temperature))

    def probabilities(self):
        """$P = \\operatorname{softmax}(A \\cdot T)$ over the values (S1).

        Returns:
            A float32 tensor of the logits' shape, summing to 1 over the last axis.

        Raises:
            AttributeError: From Keras, if the layer is not built yet.
        """
        logits = ops.cast(self.logits, "float32")
        return ops.softmax(logits * self.temperature, axis=-1)  # S1, T = 1/τ

    def soft_kernel(self):
        """The soft kernel $W_c = \\sum_j \\operatorname{softmax}(A \\cdot T)_j\\, v_j$ (S2).

        Differentiable in the logits: $\\partial W_c / \\partial A_j = T P_j (v_j - W_c)$.

        Returns:
            A float32 tensor of `kernel_shape`, with values in $[-1, 1]$.

        Raises:
            AttributeError: From Keras, if the layer is not built yet.
        """
        values = ops.convert_to_tensor(self.values)
        return ops.sum(self.probabilities() * values, axis=-1)  # S2

    def hard_kernel(self):
        """The hard kernel $W_d = v_{\\arg\\max_j A_j}$ (S3); no gradient reaches the logits.

        Returns:
            A float32 tensor of `kernel_shape`, with values in `values`.

        Raises:
            AttributeError: From Keras, if the layer is not built yet.
        """
        index = ops.argmax(self.logits, axis=-1)  # argmax A = argmax P for any T > 0
        return ops.take(ops.convert_to_tensor(self.values), index)  # S3

    def quantized_kernel(self, training=None):
        """The kernel the layer multiplies with (slb.md §2.3).

        Args:
            training: In training, the soft kernel, or the hard one once `hard` is set;
                otherwise the hard kernel.

        Returns:
            A tensor of `kernel_shape` in the layer's compute dtype.

        Raises:
            AttributeError: From Keras, if the layer is not built yet.
        """
        if training:
            # A variable, not a Python flag: a compiled training step sees the switch.
            kernel = ops.cond(self.hard_flag.value, self.hard_kernel, self.soft_kernel)
        else:
            kernel = self.hard_kernel()
        return ops.cast(kernel, self.compute_dtype)

    def binary_kernel(self):
        """The hard kernel (S3), as for the other quantized layers.

        Returns:
            A float32 tensor of `kernel_shape`, with values in `values`.

        Raises:
            AttributeError: From Keras, if the layer is not built yet.
        """
        return self.hard_kernel()

    def init_logits_from_kernel(
        self, kernel, *, normalize: str | None = "channel", margin: float = 1.0
    ) -> None:
        """Start the search from a pretrained float or binary kernel.

        The alternative to the random initialisation of slb.md §1.5 (the source does
        not say how the paper initialises; the MindSpore port starts at random). The
        kernel is scaled so that its largest magnitude is 1 (`normalize`), each weight's
        nearest value in `values` gets the logit `margin` and every other value 0. Then
        `hard_kernel()` is the nearest value to the scaled kernel, and at $T = 1$ the
        nearest value has probability $e^m / (e^m + n - 1)$, so the search can still
        move. A ±1 kernel of a binary network is kept as it is.

        Args:
            kernel: An array of `kernel_shape`.
            normalize: `"channel"`: divide each output channel by its largest |w| (the
                batch normalization that follows absorbs a per-channel scale);
                `"layer"`: by the layer's largest |w|; `None`: use the kernel as it is.
            margin: The logit $m > 0$ of the nearest value.

        Raises:
            ValueError: If the shape of `kernel` is not `kernel_shape`, `normalize` is
                unknown, or `margin` is not a positive finite number.
            AttributeError: If the layer is not built yet.
        """
        kernel = np.asarray(keras.ops.convert_to_numpy(kernel), dtype=np.float32)
        if kernel.shape != self.kernel_shape:
            raise ValueError(
                f"`kernel` must have the layer's kernel_shape {self.kernel_shape}, got "
                f"shape {kernel.shape}."
            )
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"`normalize` must be one of {NORMALIZATIONS}, got normalize={normalize!r}."
            )
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin > 0):
            raise ValueError(f"`margin` must be a positive finite number, got margin={margin!r}.")
        if normalize is not None:
            axes = tuple(range(kernel.ndim - 1)) if normalize == "channel" else None
            largest = np.max(np.abs(kernel), axis=axes, keepdims=True)
            kernel = kernel / np.where(largest > 0, largest, 1.0)
        nearest = np.argmin(np.abs(kernel[..., None] - self.values), axis=-1)
        logits = margin * np.eye(len(self.values), dtype=np.float32)[nearest]
        self.logits.assign(logits)

    def _slb_config(self, config: dict[str, Any]) -> dict[str, Any]:
        for key in _LATENT_KERNEL_ARGUMENTS:
            config.pop(key, None)
        return {
            **config,
            "weight_bits": self.weight_bits,
            "logits_initializer": None
            if self.logits_initializer is None
            else keras.initializers.serialize(self.logits_initializer),
            "logits_regularizer": None
            if self.logits_regularizer is None
            else keras.regularizers.serialize(self.logits_regularizer),
        }


@keras.saving.register_keras_serializable(package="lns_keras")
class SLBQuantConv2D(_SLBMixin, QuantConv2D):
    r"""2D convolution whose low-bit kernel is searched over a value set (SLB).

    Training: $y = \operatorname{conv}(q_a(x),\, W_c) + b$ with the soft kernel
    $W_c = \sum_j \operatorname{softmax}(A \cdot T)_j\, v_j$ (S1-S2); once `hard` is set,
    and always in inference, the hard kernel $W_d = v_{\arg\max A}$ (S3) instead. No
    straight-through estimator acts on the weights; $T$ is raised by
    [`SLBTemperatureScheduler`][lns_keras.slb.SLBTemperatureScheduler]. There is no
    scale: the batch normalization that follows absorbs the magnitude (slb.md §1.2).

    Weights: `logits` (trainable, `kernel_shape + (2**weight_bits,)`), `bias`,
    `temperature` (non-trainable, $T_0 = 1$) and `hard_flag` (non-trainable).

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv2D`.
        weight_bits: Bits of a weight, 1, 2 or 4: the value set is $\{-1, +1\}$ or
            `linspace(-1, 1, 2**weight_bits)` (`value_set`).
        input_quantizer: Quantizer of the input (name, object or `None`), e.g.
            `"ste_sign"` for 1-bit activations or `lns_keras.kbit.PACT(k_bit=2)`.
        logits_initializer: Initializer of the logits; `None` (default): He-normal with
            fan-out, $\mathcal N(0, 2/(C_o k_h k_w n))$, as the MindSpore port does
            (slb.md §1.5). To start from a pretrained kernel, call
            `init_logits_from_kernel` after building.
        logits_regularizer: Regularizer of the logits (the MindSpore recipes apply weight
            decay to them, slb.md §6.2), or `None`.
        **kwargs: Every other argument of `keras.layers.Conv2D` (`strides`, `padding`,
            `use_bias`, `groups`, ...), except those of a latent kernel.

    Raises:
        ValueError: If `weight_bits` is not 1, 2 or 4; if an argument of a latent kernel
            is given (`kernel_initializer`, `kernel_regularizer`, `kernel_constraint`,
            `kernel_quantizer`, `kernel_scale`, `lora_rank`); for an unknown quantizer,
            initializer or regularizer; any argument `keras.layers.Conv2D` rejects; from
            Keras, when called on an input whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((32, 32, 16))
        y = lns_keras.SLBQuantConv2D(
            32, 3, padding="same", use_bias=False, weight_bits=2,
            input_quantizer=lns_keras.kbit.PACT(k_bit=2),
        )(x)
        y = keras.layers.BatchNormalization()(y)
        ```
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args,
        weight_bits: int = 1,
        input_quantizer=None,
        logits_initializer=None,
        logits_regularizer=None,
        **kwargs,
    ):
        _pop_latent_kernel_arguments(type(self).__name__, kwargs)
        super().__init__(filters, kernel_size, *args, input_quantizer=input_quantizer, **kwargs)
        self._init_slb(weight_bits, logits_initializer, logits_regularizer)

    def build(self, input_shape):
        # Keras's build would create a latent kernel; only its checks are repeated here.
        channel_axis = -1 if self.data_format == "channels_last" else 1
        input_channel = input_shape[channel_axis]
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={channel_axis: input_channel}
        )
        if input_channel % self.groups != 0:
            raise ValueError(
                f"The number of input channels must be divisible by `groups`, got "
                f"groups={self.groups} and {input_channel} input channels."
            )
        self.compute_output_shape(input_shape)
        self._build_slb(self.kernel_size + (input_channel // self.groups, self.filters))

    def get_config(self):
        return self._slb_config(super().get_config())


@keras.saving.register_keras_serializable(package="lns_keras")
class SLBQuantDense(_SLBMixin, QuantDense):
    r"""Densely connected layer whose low-bit kernel is searched over a value set (SLB).

    As [`SLBQuantConv2D`][lns_keras.SLBQuantConv2D], with $y = q_a(x)\,W + b$. The
    MindSpore port leaves dense layers in full precision (slb.md §5.4); this layer is
    for networks that quantize them too. The default logits initializer uses
    $k_h = k_w = 1$: $\mathcal N(0, 2/(C_o n))$.

    Args:
        units: Number of outputs.
        *args: Further positional arguments of `keras.layers.Dense`.
        weight_bits: Bits of a weight, 1, 2 or 4.
        input_quantizer: Quantizer of the input (name, object or `None`).
        logits_initializer: Initializer of the logits; `None`: He-normal with fan-out.
        logits_regularizer: Regularizer of the logits, or `None`.
        **kwargs: Every other argument of `keras.layers.Dense`, except those of a latent
            kernel.

    Raises:
        ValueError: As for [`SLBQuantConv2D`][lns_keras.SLBQuantConv2D], with
            `keras.layers.Dense` in place of `keras.layers.Conv2D`.

    Example:
        ```python
        x = keras.Input((256,))
        y = lns_keras.SLBQuantDense(10, weight_bits=4, input_quantizer="ste_sign")(x)
        ```
    """

    def __init__(
        self,
        units: int,
        *args,
        weight_bits: int = 1,
        input_quantizer=None,
        logits_initializer=None,
        logits_regularizer=None,
        **kwargs,
    ):
        _pop_latent_kernel_arguments(type(self).__name__, kwargs)
        super().__init__(units, *args, input_quantizer=input_quantizer, **kwargs)
        self._init_slb(weight_bits, logits_initializer, logits_regularizer)

    def build(self, input_shape):
        # Keras's build would create a latent kernel; only its input spec is repeated.
        input_dim = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        self._build_slb((input_dim, self.units))

    def get_config(self):
        return self._slb_config(super().get_config())
