"""larq-style quantized layers for Keras 3: `QuantConv2D`, `QuantDense`, and their base.

A quantized layer quantizes its input with `input_quantizer` and its kernel with
`kernel_quantizer` before the usual convolution or matrix product. With both
quantizers `None` it computes exactly what the Keras layer computes. The rest of larq's
layers (`QuantConv1D`, `QuantDepthwiseConv2D`, ...) are in
[`lns_keras.layers.zoo`][lns_keras.layers.zoo], on the same base.

Beyond larq, `kernel_scale` multiplies the output by a scale of the latent kernel
(`"layer"`: mean |W| over the layer, as in DoReFa-Net and the LNS paper's baseline;
`"channel"`: one mean per output channel, as in XNOR-Net). Scaling the output rather than
the kernel is the same arithmetic and keeps the exported graph `conv(sign(x), sign(w)) * s`,
which larq-compute-engine fuses into one binary convolution.

As in larq, the convolutions take `pad_values`: with `padding="same"` the input is padded
with that value instead of zeros (a binary network's input is ±1, so a zero is a third
value; QuickNet pads with 1.0). And a 1-bit kernel quantizer without a kernel constraint
logs a warning: once a latent weight leaves the quantizer's gradient window, its gradient
is zero for good ("starved"); `kernel_constraint="weight_clip"` keeps it inside.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import keras
from keras import ops

from lns_keras import constraints, quantizers

__all__ = ["KERNEL_SCALES", "QuantConv2D", "QuantDense", "kernel_scale_factor"]

KERNEL_SCALES = ("layer", "channel", None)
"""The values `kernel_scale` takes: `"layer"`, `"channel"` and `None`."""

logger = logging.getLogger(__name__)


def check_kernel_scale(kernel_scale: str | None, accepted: tuple = KERNEL_SCALES) -> None:
    if kernel_scale not in accepted:
        raise ValueError(
            f"`kernel_scale` must be one of {accepted}, got kernel_scale={kernel_scale!r}."
        )


def kernel_scale_factor(kernel, kernel_scale: str | None, channel_axes: int | tuple = -1):
    """The scale of a binary kernel, computed from the latent kernel, constant in backprop.

    Args:
        kernel: The latent real kernel.
        kernel_scale: `"layer"` (mean |W|, a scalar), `"channel"` (mean |W| per output
            channel) or `None` (no scale). Not checked here (the layers check it): any
            other value is read as `"channel"`.
        channel_axes: The kernel's axes that index the output channels: `-1` (default:
            dense and convolution kernels), `-2` (transposed convolutions, whose kernel
            is `(..., filters, in_channels)`), or `(-2, -1)` (depthwise kernels, whose
            output channel is `in_channel * depth_multiplier + m`). With several axes the
            per-channel means are flattened in that order.

    Returns:
        A scalar or a vector with one value per output channel, or `None`.

    Raises:
        AttributeError: If `kernel` has no `dtype`, e.g. a Python list (pass a tensor, a
            variable or a NumPy array).
        ValueError: From the backend, if `kernel` cannot be converted to a tensor.
    """
    if kernel_scale is None:
        return None
    # Averaged in float64: then the mean of a folded kernel, ±s everywhere, is exactly s,
    # and a folded model predicts exactly what its LNS model predicts.
    magnitude = ops.abs(ops.cast(kernel, "float64"))
    if kernel_scale == "layer":
        scale = ops.mean(magnitude)
    else:
        rank = len(kernel.shape)
        axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
        kept = {axis % rank for axis in axes}
        scale = ops.mean(magnitude, axis=tuple(a for a in range(rank) if a not in kept))
        scale = ops.reshape(scale, (-1,))
    scale = ops.cast(scale, kernel.dtype)
    return ops.stop_gradient(scale)


def _starves_unconstrained(quantizer) -> bool:
    """Whether latent weights under `quantizer` can be starved without a constraint.

    larq's rule (1-bit and not `NoOp`), except for a quantizer whose straight-through
    gradient has no window (`clip_value=None`, the LNS layers' default): it never starves.
    """
    return (
        getattr(quantizer, "precision", None) == 1
        and not isinstance(quantizer, quantizers.NoOp)
        and getattr(quantizer, "clip_value", 1.0) is not None
    )


class _QuantizedMixin:
    """What every quantized layer shares: quantizers, the scale, one `call`, the config.

    A layer lists its quantized weights in `_quantized_weights` as (weight attribute,
    quantizer argument, constraint argument) and implements `_apply_kernel`, the product
    of the quantized input with the quantized kernel(s).
    """

    _quantized_weights = (("kernel", "kernel_quantizer", "kernel_constraint"),)
    # The kernel's axes that index output channels (see `kernel_scale_factor`).
    _output_channel_axes: int | tuple = -1
    _kernel_scales = KERNEL_SCALES

    def _init_quantization(self, input_quantizer, kernel_scale, **kernel_quantizers):
        """Called at the end of `__init__`, once the Keras layer has set its constraints."""
        check_kernel_scale(kernel_scale, self._kernel_scales)
        self.input_quantizer = quantizers.get(input_quantizer)
        for _, quantizer_name, constraint_name in self._quantized_weights:
            quantizer = quantizers.get(kernel_quantizers[quantizer_name])
            setattr(self, quantizer_name, quantizer)
            if _starves_unconstrained(quantizer) and getattr(self, constraint_name) is None:
                logger.warning(
                    "%s %r: a binary `%s` without `%s` may starve the latent weights: "
                    "outside the quantizer's gradient window their gradient is always "
                    'zero. Pass `%s="weight_clip"` to keep them inside.',
                    type(self).__name__,
                    self.name,
                    quantizer_name,
                    constraint_name,
                    constraint_name,
                )
        self.kernel_scale = kernel_scale

    def quantized_kernel(self, training=None):
        """The kernel the layer multiplies with: `kernel_quantizer(W)` (or `W`).

        The output scale (`kernel_scale`) is applied to the layer's output, not here.

        Args:
            training: Whether the layer runs in training. Unused by the plain layers; the
                LNS layers add their noisy-supervision loss when it is true.

        Returns:
            A tensor of the kernel's shape; for a separable convolution, the pair
            (depthwise kernel, pointwise kernel).

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        return self.binary_kernel()

    def binary_kernel(self):
        """The quantized kernel without its scale: `kernel_quantizer(W)` (or `W`).

        Returns:
            A tensor of the kernel's shape (±1 for a 1-bit `kernel_quantizer`); for a
            separable convolution, the pair (depthwise kernel, pointwise kernel).

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        kernels = tuple(
            _quantize(getattr(self, quantizer_name), getattr(self, weight_name))
            for weight_name, quantizer_name, _ in self._quantized_weights
        )
        return kernels[0] if len(kernels) == 1 else kernels

    def _quantize_kernel(self, kernel):
        """`kernel` through the (first) kernel quantizer: the LNS layers quantize $\\hat Q$."""
        return _quantize(getattr(self, self._quantized_weights[0][1]), kernel)

    def _output_scale(self):
        """`kernel_scale`'s factor: a scalar, or one value per output channel."""
        return kernel_scale_factor(self.kernel, self.kernel_scale, self._output_channel_axes)

    def _quantization_config(self) -> dict[str, Any]:
        return {
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            **{
                name: quantizers.serialize(getattr(self, name))
                for _, name, _ in self._quantized_weights
            },
            "kernel_scale": self.kernel_scale,
        }

    def get_config(self):
        return {**super().get_config(), **self._quantization_config()}

    # Keras's Conv and Dense save only `kernel` and `bias`; a subclass's own variables
    # (an LNS layer's frozen labels) must be saved too, so use the generic Layer form.
    # For a plain layer the order (kernel, bias) is the same as Keras's.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def call(self, inputs, training=None):
        if self.input_quantizer:
            inputs = self.input_quantizer(inputs)
        outputs = self._apply_kernel(inputs, self.quantized_kernel(training))
        if self.kernel_scale is not None:
            outputs = outputs * self._per_output_channel(self._output_scale())
        if self.use_bias:
            outputs = ops.add(outputs, self._per_output_channel(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _per_output_channel(self, values):
        """Shape a scalar or a per-output-channel vector to broadcast against the output."""
        if getattr(self, "data_format", "channels_last") == "channels_last":
            return values
        if len(ops.shape(values)) == 0:
            return values
        return ops.reshape(values, (1, -1) + (1,) * self.rank)


def _quantize(quantizer, kernel):
    return quantizer(kernel) if quantizer else kernel


def _check_pad_values(pad_values, padding: str) -> float:
    if (
        isinstance(pad_values, bool)
        or not isinstance(pad_values, numbers.Real)
        or not math.isfinite(pad_values)
    ):
        raise ValueError(
            f"`pad_values` must be a finite real number, got pad_values={pad_values!r}."
        )
    if padding == "causal" and pad_values != 0:
        raise ValueError(
            f"`pad_values` must be 0 with padding='causal', got pad_values={pad_values!r}; "
            "use padding='same' to pad with another value."
        )
    return float(pad_values)


def _same_padding(size, kernel_size: int, stride: int, dilation: int):
    """(before, after) padding of one spatial axis under `padding="same"`, as TensorFlow pads.

    `size` may be a tensor (an axis unknown when the graph was traced).
    """
    span = (kernel_size - 1) * dilation + 1
    output_size = (size + stride - 1) // stride
    total = (output_size - 1) * stride + span - size
    total = ops.maximum(total, 0) if not isinstance(total, int) else max(total, 0)
    return total // 2, total - total // 2


class _PaddedConvMixin(_QuantizedMixin):
    """A quantized convolution that takes larq's `pad_values`.

    With `padding="same"` and `pad_values != 0` the input is padded explicitly with
    `pad_values` (after the input quantizer, as larq does), and the convolution runs
    `"valid"`; the output has the shape `"same"` gives.
    """

    def _init_pad_values(self, pad_values) -> None:
        self.pad_values = _check_pad_values(pad_values, self.padding)

    def _padded(self, inputs):
        """`inputs` padded where the convolution op cannot pad them itself, and the
        padding the op then applies."""
        if self.padding == "causal":  # Conv1D only, zeros: what keras.layers.Conv1D does
            return ops.pad(inputs, self._compute_causal_padding()), "valid"
        if self.padding != "same" or self.pad_values == 0:
            return inputs, self.padding
        shape = ops.shape(inputs)
        spatial = shape[1:-1] if self.data_format == "channels_last" else shape[2:]
        pads = [
            _same_padding(size, kernel_size, stride, dilation)
            for size, kernel_size, stride, dilation in zip(
                spatial, self.kernel_size, self.strides, self.dilation_rate, strict=True
            )
        ]
        if self.data_format == "channels_last":
            pad_width = [(0, 0), *pads, (0, 0)]
        else:
            pad_width = [(0, 0), (0, 0), *pads]
        return ops.pad(inputs, pad_width, constant_values=self.pad_values), "valid"

    def _apply_kernel(self, inputs, kernel):
        inputs, padding = self._padded(inputs)
        return ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def _quantization_config(self) -> dict[str, Any]:
        return {**super()._quantization_config(), "pad_values": self.pad_values}


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantConv2D(_PaddedConvMixin, keras.layers.Conv2D):
    r"""2D convolution with quantized input and kernel (larq's `QuantConv2D`).

    $$y = \operatorname{conv}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    `data_format="channels_first"` and `groups > 1` work as in Keras, with every
    `kernel_scale`.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv2D`.
        pad_values: With `padding="same"`, the value the input is padded with after
            quantization (larq's argument; default 0, as Keras pads). Ignored with
            `padding="valid"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel (name, object or `None`). A 1-bit one
            without `kernel_constraint` logs a warning, as in larq.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        **kwargs: Every other argument of `keras.layers.Conv2D`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`, a
            `pad_values` that is not a finite real number, or any argument that
            `keras.layers.Conv2D` rejects (e.g. `filters=0`); from Keras, when called on
            an input whose rank or channel count does not fit the layer.

    Example:
        ```python
        x = keras.Input((32, 32, 3))
        y = lns_keras.QuantConv2D(
            64, 3, padding="same", pad_values=1.0, use_bias=False,
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)
        ```
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args,
        pad_values: float = 0.0,
        input_quantizer=None,
        kernel_quantizer=None,
        kernel_constraint=None,
        kernel_scale: str | None = None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            *args,
            kernel_constraint=constraints.get(kernel_constraint),
            **kwargs,
        )
        self._init_pad_values(pad_values)
        self._init_quantization(input_quantizer, kernel_scale, kernel_quantizer=kernel_quantizer)


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantDense(_QuantizedMixin, keras.layers.Dense):
    r"""Densely connected layer with quantized input and kernel (larq's `QuantDense`).

    $$y = q_a(x)\, q_w(W) \cdot s(W) + b$$

    Args:
        units: Number of outputs.
        *args: Further positional arguments of `keras.layers.Dense`.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel (name, object or `None`). A 1-bit one
            without `kernel_constraint` logs a warning, as in larq.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        **kwargs: Every other argument of `keras.layers.Dense`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`, or any
            argument that `keras.layers.Dense` rejects (e.g. `units=0`); from Keras, when
            called on an input whose last axis does not fit the layer's kernel.

    Example:
        ```python
        x = keras.Input((784,))
        y = lns_keras.QuantDense(
            256, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)
        ```
    """

    def __init__(
        self,
        units: int,
        *args,
        input_quantizer=None,
        kernel_quantizer=None,
        kernel_constraint=None,
        kernel_scale: str | None = None,
        **kwargs,
    ):
        super().__init__(
            units, *args, kernel_constraint=constraints.get(kernel_constraint), **kwargs
        )
        self._init_quantization(input_quantizer, kernel_scale, kernel_quantizer=kernel_quantizer)

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)
