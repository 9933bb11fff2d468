"""larq-style quantized layers for Keras 3: `QuantConv2D` and `QuantDense`.

A quantized layer quantizes its input with `input_quantizer` and its kernel with
`kernel_quantizer` before the usual convolution or matrix product. With both
quantizers `None` it computes exactly what the Keras layer computes.

Beyond larq, `kernel_scale` multiplies the output by a scale of the latent kernel
(`"layer"`: mean |W| over the layer, as in DoReFa-Net and the LNS paper's baseline;
`"channel"`: one mean per output channel, as in XNOR-Net). Scaling the output rather than
the kernel is the same arithmetic and keeps the exported graph `conv(sign(x), sign(w)) * s`,
which larq-compute-engine fuses into one binary convolution.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lns_keras import constraints, quantizers

__all__ = ["KERNEL_SCALES", "QuantConv2D", "QuantDense", "kernel_scale_factor"]

KERNEL_SCALES = ("layer", "channel", None)
"""The values `kernel_scale` takes: `"layer"`, `"channel"` and `None`."""


def check_kernel_scale(kernel_scale: str | None) -> None:
    if kernel_scale not in KERNEL_SCALES:
        raise ValueError(
            f"`kernel_scale` must be one of {KERNEL_SCALES}, got kernel_scale={kernel_scale!r}."
        )


def kernel_scale_factor(kernel, kernel_scale: str | None):
    """The scale of a binary kernel, computed from the latent kernel, constant in backprop.

    Args:
        kernel: The latent real kernel, output channels last.
        kernel_scale: `"layer"` (mean |W|, a scalar), `"channel"` (mean |W| per output
            channel) or `None` (no scale). Not checked here (the layers check it): any
            other value is read as `"channel"`.

    Returns:
        A scalar or a vector of length `kernel.shape[-1]`, or `None`.

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
        scale = ops.mean(magnitude, axis=tuple(range(len(kernel.shape) - 1)))
    scale = ops.cast(scale, kernel.dtype)
    return ops.stop_gradient(scale)


class _QuantizedMixin:
    """What QuantConv2D and QuantDense share: quantizers, the scale, the config."""

    def _init_quantization(self, input_quantizer, kernel_quantizer, kernel_scale):
        check_kernel_scale(kernel_scale)
        self.input_quantizer = quantizers.get(input_quantizer)
        self.kernel_quantizer = quantizers.get(kernel_quantizer)
        self.kernel_scale = kernel_scale

    def quantized_kernel(self, training=None):
        """The kernel the layer multiplies with: `kernel_quantizer(W)` (or `W`).

        The output scale (`kernel_scale`) is applied to the layer's output, not here.

        Args:
            training: Whether the layer runs in training. Unused by the plain layers; the
                LNS layers add their noisy-supervision loss when it is true.

        Returns:
            A tensor of the kernel's shape.

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        return self.binary_kernel()

    def binary_kernel(self):
        """The quantized kernel without its scale: `kernel_quantizer(W)` (or `W`).

        Returns:
            A tensor of the kernel's shape (±1 for a 1-bit `kernel_quantizer`).

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        return self._quantize_kernel(self.kernel)

    def _quantize_kernel(self, kernel):
        return self.kernel_quantizer(kernel) if self.kernel_quantizer else kernel

    def _quantization_config(self) -> dict[str, Any]:
        return {
            "input_quantizer": quantizers.serialize(self.input_quantizer),
            "kernel_quantizer": quantizers.serialize(self.kernel_quantizer),
            "kernel_scale": self.kernel_scale,
        }

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
            scale = kernel_scale_factor(self.kernel, self.kernel_scale)
            outputs = outputs * self._per_output_channel(scale)
        if self.use_bias:
            outputs = ops.add(outputs, self._per_output_channel(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _per_output_channel(self, values):
        """Shape a scalar or a per-output-channel vector to broadcast against the output."""
        return values


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantConv2D(_QuantizedMixin, keras.layers.Conv2D):
    r"""2D convolution with quantized input and kernel (larq's `QuantConv2D`).

    $$y = \operatorname{conv}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    `data_format="channels_first"` and `groups > 1` work as in Keras, with every
    `kernel_scale`.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv2D`.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel (name, object or `None`).
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        **kwargs: Every other argument of `keras.layers.Conv2D`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`, or any
            argument that `keras.layers.Conv2D` rejects (e.g. `filters=0`); from Keras,
            when called on an input whose rank or channel count does not fit the layer.

    Example:
        ```python
        x = keras.Input((32, 32, 3))
        y = lns_keras.QuantConv2D(
            64, 3, padding="same", use_bias=False,
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
        self._init_quantization(input_quantizer, kernel_quantizer, kernel_scale)

    def _apply_kernel(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def _per_output_channel(self, per_channel):
        if self.data_format == "channels_last" or len(ops.shape(per_channel)) == 0:
            return per_channel
        return ops.reshape(per_channel, (1, self.filters) + (1,) * self.rank)

    def get_config(self):
        return {**super().get_config(), **self._quantization_config()}


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantDense(_QuantizedMixin, keras.layers.Dense):
    r"""Densely connected layer with quantized input and kernel (larq's `QuantDense`).

    $$y = q_a(x)\, q_w(W) \cdot s(W) + b$$

    Args:
        units: Number of outputs.
        *args: Further positional arguments of `keras.layers.Dense`.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel (name, object or `None`).
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
        self._init_quantization(input_quantizer, kernel_quantizer, kernel_scale)

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), **self._quantization_config()}
