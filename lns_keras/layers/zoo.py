"""The rest of larq's quantized layers, on Keras 3.

larq 0.14 has a quantized twin of most Keras convolutions; `lns_keras` carries them with
larq's names, arguments and defaults, on the same base as
[`QuantConv2D`][lns_keras.layers.quantized.QuantConv2D]:

| larq 0.14 | `lns_keras` | Keras 3 layer | Quantized weights |
| --- | --- | --- | --- |
| `QuantConv1D`, `QuantConv3D` | `QuantConv1D`, `QuantConv3D` | `Conv1D`, `Conv3D` | `kernel` (`kernel_quantizer`) |
| `QuantDepthwiseConv2D` | `QuantDepthwiseConv2D` | `DepthwiseConv2D` | `kernel` (`depthwise_quantizer`) |
| `QuantSeparableConv1D`, `QuantSeparableConv2D` | same | `SeparableConv1D`, `SeparableConv2D` | `depthwise_kernel`, `pointwise_kernel` |
| `QuantConv2DTranspose`, `QuantConv3DTranspose` | same | `Conv2DTranspose`, `Conv3DTranspose` | `kernel` (`kernel_quantizer`) |
| `QuantLocallyConnected1D`, `QuantLocallyConnected2D` | same, `implementation=1` | none (Keras 3 dropped it) | `kernel` (`kernel_quantizer`) |

Every layer quantizes its input with `input_quantizer`, its weights with their
quantizers, then runs the Keras operation; with every quantizer `None` it computes what
the Keras layer computes. The convolutions that larq pads (all but the transposed ones
and the locally connected ones) take `pad_values`. A 1-bit weight quantizer without the
matching constraint (`kernel_constraint`, `depthwise_constraint`,
`pointwise_constraint`) logs larq's warning about starved weights.

```python
y = lns_keras.layers.QuantSeparableConv2D(
    64, 3, padding="same", pad_values=1.0,
    input_quantizer="ste_sign",
    depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
    pointwise_quantizer="ste_sign", pointwise_constraint="weight_clip",
)(x)
```

Beyond larq, each takes `kernel_scale` as `QuantConv2D` does (the separable ones only
`"layer"`: a per-channel scale of the depthwise kernel does not factor out of the
pointwise sum).
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops

from lns_keras import constraints
from lns_keras.layers.quantized import (
    _keras_signature,
    _PaddedConvMixin,
    _QuantizedMixin,
    kernel_scale_factor,
)

__all__ = [
    "QuantConv1D",
    "QuantConv2DTranspose",
    "QuantConv3D",
    "QuantConv3DTranspose",
    "QuantDepthwiseConv2D",
    "QuantLocallyConnected1D",
    "QuantLocallyConnected2D",
    "QuantSeparableConv1D",
    "QuantSeparableConv2D",
]


class _QuantConv(_PaddedConvMixin):
    """`QuantConv1D` and `QuantConv3D`: one kernel, quantized by `kernel_quantizer`."""

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
        metrics: list[str] | None = None,
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
        self._init_quantization(
            input_quantizer, kernel_scale, metrics, kernel_quantizer=kernel_quantizer
        )


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantConv1D(_QuantConv, keras.layers.Conv1D):
    r"""1D convolution with quantized input and kernel (larq's `QuantConv1D`).

    $$y = \operatorname{conv}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    Args:
        filters: Number of output channels.
        kernel_size: Length of the kernel.
        *args: Further positional arguments of `keras.layers.Conv1D`.
        pad_values: With `padding="same"`, the value the quantized input is padded with
            (default 0). Ignored with `padding="valid"`; must be 0 with
            `padding="causal"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.Conv1D`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`; a
            `pad_values` that is not a finite real number, or is not 0 with
            `padding="causal"`; any argument `keras.layers.Conv1D` rejects; from Keras,
            when called on an input whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((128, 16))
        y = lns_keras.QuantConv1D(
            32, 3, padding="same", pad_values=1.0,
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)
        ```
    """


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantConv3D(_QuantConv, keras.layers.Conv3D):
    r"""3D convolution with quantized input and kernel (larq's `QuantConv3D`).

    $$y = \operatorname{conv}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    Args:
        filters: Number of output channels.
        kernel_size: Depth, height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv3D`.
        pad_values: With `padding="same"`, the value the quantized input is padded with
            (default 0). Ignored with `padding="valid"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.Conv3D`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`; a
            `pad_values` that is not a finite real number; any argument
            `keras.layers.Conv3D` rejects; from Keras, when called on an input whose rank
            or channel count does not fit.

    Example:
        ```python
        x = keras.Input((16, 32, 32, 3))
        y = lns_keras.QuantConv3D(
            8, 3, padding="same",
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)
        ```
    """


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantDepthwiseConv2D(_PaddedConvMixin, keras.layers.DepthwiseConv2D):
    r"""Depthwise 2D convolution with quantized input and kernel (larq's
    `QuantDepthwiseConv2D`).

    Each input channel $c$ is convolved with its own `depth_multiplier` filters:

    $$y_{c m} = \operatorname{conv}(q_a(x_c),\, q_w(W_{c m})) \cdot s(W) + b_{c m},$$

    output channel $c \cdot$ `depth_multiplier` $+ m$. The kernel is Keras 3's `kernel`
    (larq's `depthwise_kernel`); larq's argument names are kept.

    Args:
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.DepthwiseConv2D`.
        pad_values: With `padding="same"`, the value the quantized input is padded with
            (default 0). Ignored with `padding="valid"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        depthwise_quantizer: Quantizer for the depthwise kernel. A 1-bit one without
            `depthwise_constraint` logs a warning.
        depthwise_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"` (one mean per
            output channel $c m$).
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.DepthwiseConv2D`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`; a
            `pad_values` that is not a finite real number; any argument
            `keras.layers.DepthwiseConv2D` rejects (a `kernel_quantizer`, say: this layer
            takes `depthwise_quantizer`); from Keras, when called on an input whose rank
            or channel count does not fit.

    Example:
        ```python
        x = keras.Input((32, 32, 16))
        y = lns_keras.QuantDepthwiseConv2D(
            3, padding="same", pad_values=1.0, depth_multiplier=2,
            input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
            depthwise_constraint="weight_clip",
        )(x)
        ```
    """

    _quantized_weights = (("kernel", "depthwise_quantizer", "depthwise_constraint"),)
    _output_channel_axes = (-2, -1)

    def __init__(
        self,
        kernel_size,
        *args,
        pad_values: float = 0.0,
        input_quantizer=None,
        depthwise_quantizer=None,
        depthwise_constraint=None,
        kernel_scale: str | None = None,
        metrics: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(
            kernel_size,
            *args,
            depthwise_constraint=constraints.get(depthwise_constraint),
            **kwargs,
        )
        self._init_pad_values(pad_values)
        self._init_quantization(
            input_quantizer, kernel_scale, metrics, depthwise_quantizer=depthwise_quantizer
        )

    def _apply_kernel(self, inputs, kernel):
        inputs, padding = self._padded(inputs)
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


class _QuantSeparableConv(_PaddedConvMixin):
    """`QuantSeparableConv1D` and `QuantSeparableConv2D`: two quantized kernels."""

    _quantized_weights = (
        ("depthwise_kernel", "depthwise_quantizer", "depthwise_constraint"),
        ("pointwise_kernel", "pointwise_quantizer", "pointwise_constraint"),
    )
    # A per-channel scale of the depthwise kernel does not factor out of the pointwise sum.
    _kernel_scales = ("layer", None)

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args,
        pad_values: float = 0.0,
        input_quantizer=None,
        depthwise_quantizer=None,
        pointwise_quantizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        kernel_scale: str | None = None,
        metrics: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            *args,
            depthwise_constraint=constraints.get(depthwise_constraint),
            pointwise_constraint=constraints.get(pointwise_constraint),
            **kwargs,
        )
        self._init_pad_values(pad_values)
        self._init_quantization(
            input_quantizer,
            kernel_scale,
            metrics,
            depthwise_quantizer=depthwise_quantizer,
            pointwise_quantizer=pointwise_quantizer,
        )

    def _apply_kernel(self, inputs, kernels):
        depthwise_kernel, pointwise_kernel = kernels
        inputs, padding = self._padded(inputs)
        return ops.separable_conv(
            inputs,
            depthwise_kernel,
            pointwise_kernel,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def _output_scale(self):
        # The product is linear in each kernel: s_d * s_p factors out of both sums.
        return kernel_scale_factor(self.depthwise_kernel, "layer") * kernel_scale_factor(
            self.pointwise_kernel, "layer"
        )


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantSeparableConv1D(_QuantSeparableConv, keras.layers.SeparableConv1D):
    r"""Separable 1D convolution with quantized input and kernels (larq's
    `QuantSeparableConv1D`).

    A depthwise convolution with kernel $D$ (`depth_multiplier` filters per input
    channel) followed by a pointwise ($1 \times 1$) convolution with kernel $P$:

    $$y = \operatorname{conv}_{1 \times 1}\big(\operatorname{dconv}(q_a(x),\,
    q_d(D)),\, q_p(P)\big) \cdot s + b,$$

    with $s = \operatorname{mean}|D| \cdot \operatorname{mean}|P|$ for
    `kernel_scale="layer"`, else 1. `binary_kernel()` and `quantized_kernel()` return the
    pair $(q_d(D), q_p(P))$.

    Args:
        filters: Number of output channels.
        kernel_size: Length of the depthwise kernel.
        *args: Further positional arguments of `keras.layers.SeparableConv1D`.
        pad_values: With `padding="same"`, the value the quantized input is padded with
            (default 0). Ignored with `padding="valid"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        depthwise_quantizer: Quantizer for the depthwise kernel. A 1-bit one without
            `depthwise_constraint` logs a warning.
        pointwise_quantizer: Quantizer for the pointwise kernel. A 1-bit one without
            `pointwise_constraint` logs a warning.
        depthwise_constraint: Constraint on the latent depthwise kernel.
        pointwise_constraint: Constraint on the latent pointwise kernel.
        kernel_scale: `None` (larq's behaviour) or `"layer"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.SeparableConv1D`.

    Raises:
        ValueError: For an unknown quantizer or constraint; a `kernel_scale` other than
            `None` and `"layer"`; a `pad_values` that is not a finite real number; any
            argument `keras.layers.SeparableConv1D` rejects; from Keras, when called on an input
            whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((128, 16))
        y = lns_keras.QuantSeparableConv1D(
            32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
            depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
            pointwise_quantizer="ste_sign", pointwise_constraint="weight_clip",
        )(x)
        ```
    """


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantSeparableConv2D(_QuantSeparableConv, keras.layers.SeparableConv2D):
    r"""Separable 2D convolution with quantized input and kernels (larq's
    `QuantSeparableConv2D`).

    A depthwise convolution with kernel $D$ (`depth_multiplier` filters per input
    channel) followed by a pointwise ($1 \times 1$) convolution with kernel $P$:

    $$y = \operatorname{conv}_{1 \times 1}\big(\operatorname{dconv}(q_a(x),\,
    q_d(D)),\, q_p(P)\big) \cdot s + b,$$

    with $s = \operatorname{mean}|D| \cdot \operatorname{mean}|P|$ for
    `kernel_scale="layer"`, else 1. `binary_kernel()` and `quantized_kernel()` return the
    pair $(q_d(D), q_p(P))$.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the depthwise kernel.
        *args: Further positional arguments of `keras.layers.SeparableConv2D`.
        pad_values: With `padding="same"`, the value the quantized input is padded with
            (default 0). Ignored with `padding="valid"`, as in larq.
        input_quantizer: Quantizer for the input (name, object or `None`).
        depthwise_quantizer: Quantizer for the depthwise kernel. A 1-bit one without
            `depthwise_constraint` logs a warning.
        pointwise_quantizer: Quantizer for the pointwise kernel. A 1-bit one without
            `pointwise_constraint` logs a warning.
        depthwise_constraint: Constraint on the latent depthwise kernel.
        pointwise_constraint: Constraint on the latent pointwise kernel.
        kernel_scale: `None` (larq's behaviour) or `"layer"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.SeparableConv2D`.

    Raises:
        ValueError: For an unknown quantizer or constraint; a `kernel_scale` other than
            `None` and `"layer"`; a `pad_values` that is not a finite real number; any
            argument `keras.layers.SeparableConv2D` rejects; from Keras, when called on an input
            whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((32, 32, 16))
        y = lns_keras.QuantSeparableConv2D(
            32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
            depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
            pointwise_quantizer="ste_sign", pointwise_constraint="weight_clip",
        )(x)
        ```
    """


class _QuantConvTranspose(_QuantizedMixin):
    """`QuantConv2DTranspose` and `QuantConv3DTranspose` (larq pads these with zeros only)."""

    # A transposed convolution's kernel is (*kernel_size, filters, in_channels).
    _output_channel_axes = -2

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args,
        input_quantizer=None,
        kernel_quantizer=None,
        kernel_constraint=None,
        kernel_scale: str | None = None,
        metrics: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            *args,
            kernel_constraint=constraints.get(kernel_constraint),
            **kwargs,
        )
        self._init_quantization(
            input_quantizer, kernel_scale, metrics, kernel_quantizer=kernel_quantizer
        )

    def _apply_kernel(self, inputs, kernel):
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantConv2DTranspose(_QuantConvTranspose, keras.layers.Conv2DTranspose):
    r"""Transposed 2D convolution with quantized input and kernel (larq's
    `QuantConv2DTranspose`).

    $$y = \operatorname{conv}^{\top}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    The kernel is `(height, width, filters, in_channels)`; `kernel_scale="channel"`
    takes one mean per output channel (`filters`). larq gives the transposed
    convolutions no `pad_values`, nor does this layer.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv2DTranspose`.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.Conv2DTranspose`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`; any argument
            `keras.layers.Conv2DTranspose` rejects; from Keras, when called on an input
            whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((16, 16, 32))
        y = lns_keras.QuantConv2DTranspose(
            16, 3, strides=2, padding="same",
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)  # (None, 32, 32, 16)
        ```
    """


@keras.saving.register_keras_serializable(package="lns_keras")
@_keras_signature
class QuantConv3DTranspose(_QuantConvTranspose, keras.layers.Conv3DTranspose):
    r"""Transposed 3D convolution with quantized input and kernel (larq's
    `QuantConv3DTranspose`).

    $$y = \operatorname{conv}^{\top}(q_a(x),\, q_w(W)) \cdot s(W) + b$$

    The kernel is `(depth, height, width, filters, in_channels)`;
    `kernel_scale="channel"` takes one mean per output channel (`filters`).

    Args:
        filters: Number of output channels.
        kernel_size: Depth, height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv3DTranspose`.
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Every other argument of `keras.layers.Conv3DTranspose`.

    Raises:
        ValueError: For an unknown quantizer, constraint or `kernel_scale`; any argument
            `keras.layers.Conv3DTranspose` rejects; from Keras, when called on an input
            whose rank or channel count does not fit.

    Example:
        ```python
        x = keras.Input((8, 16, 16, 32))
        y = lns_keras.QuantConv3DTranspose(
            16, 3, strides=2, padding="same",
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)  # (None, 16, 32, 32, 16)
        ```
    """


def _positive_ints(name: str, value, rank: int) -> tuple[int, ...]:
    """`value` (an int or `rank` ints) as a tuple of `rank` positive ints, else ValueError."""
    values = (value,) * rank if isinstance(value, numbers.Integral) else value
    if (
        not isinstance(values, tuple | list)
        or len(values) != rank
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values)
        or any(v < 1 for v in values)
    ):
        raise ValueError(
            f"`{name}` must be a positive integer or {rank} positive integers, got "
            f"{name}={value!r}."
        )
    return tuple(int(v) for v in values)


class _QuantLocallyConnected(_QuantizedMixin, keras.layers.Layer):
    """A convolution with unshared weights: one filter bank per output position.

    Keras 3 has no `LocallyConnected` layer; this is Keras 2's `implementation=1` (its
    default, with the same weight layout), written on `keras.ops`: the input's patches
    (an identity convolution, as `keras.ops.image.extract_patches` does) times a kernel
    of shape `(output positions, prod(kernel_size) * in_channels, filters)`.
    """

    rank: int

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format: str | None = None,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        implementation: int = 1,
        *,
        input_quantizer=None,
        kernel_quantizer=None,
        kernel_scale: str | None = None,
        metrics: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters < 1:
            raise ValueError(f"`filters` must be a positive integer, got filters={filters!r}.")
        self.filters = int(filters)
        self.kernel_size = _positive_ints("kernel_size", kernel_size, self.rank)
        self.strides = _positive_ints("strides", strides, self.rank)
        if not isinstance(padding, str) or padding.lower() != "valid":
            raise ValueError(
                f"`padding` must be 'valid', got padding={padding!r}: Keras 2 pads a "
                "locally connected layer only with implementation=2, whose weight layout "
                "this layer does not take."
            )
        self.padding = "valid"
        data_format = data_format or keras.config.image_data_format()
        if data_format != "channels_last":
            raise ValueError(
                f"`data_format` must be 'channels_last', got data_format={data_format!r}."
            )
        self.data_format = data_format
        if implementation != 1:
            raise ValueError(
                f"`implementation` must be 1, got implementation={implementation!r}: "
                "Keras 2's implementations 2 and 3 compute the same function with other "
                "weight layouts (a dense masked kernel, a sparse one); convert such "
                "weights to implementation 1's layout."
            )
        self.implementation = 1
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)
        self._init_quantization(
            input_quantizer, kernel_scale, metrics, kernel_quantizer=kernel_quantizer
        )

    def _output_size(self, input_shape) -> tuple:
        spatial = tuple(input_shape[1:-1])
        if any(size is None for size in spatial):
            raise ValueError(
                f"{type(self).__name__} needs a known input size (its weights are per "
                f"position), got input shape {tuple(input_shape)}."
            )
        output = tuple(
            (size - k) // s + 1
            for size, k, s in zip(spatial, self.kernel_size, self.strides, strict=True)
        )
        if any(size < 1 for size in output):
            raise ValueError(
                f"The input of shape {tuple(input_shape)} is smaller than "
                f"kernel_size={self.kernel_size}."
            )
        return output

    def build(self, input_shape):
        output_size = self._output_size(input_shape)
        in_channels = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(
            ndim=self.rank + 2, axes={i + 1: d for i, d in enumerate(input_shape[1:])}
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(math.prod(output_size), math.prod(self.kernel_size) * in_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(*output_size, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self._build_quantization()

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._output_size(input_shape), self.filters)

    def _apply_kernel(self, inputs, kernel):
        in_channels = inputs.shape[-1]
        patch_size = math.prod(self.kernel_size) * in_channels
        # Patch features in Keras 2's order (kernel positions, then channels).
        identity = np.eye(patch_size).reshape(*self.kernel_size, in_channels, patch_size)
        patches = ops.conv(
            inputs,
            ops.convert_to_tensor(identity, dtype=inputs.dtype),
            strides=list(self.strides),
            padding="valid",
        )
        output_size = tuple(patches.shape[1:-1])
        patches = ops.reshape(patches, (-1, math.prod(output_size), patch_size))
        outputs = ops.einsum("bpk,pkf->bpf", patches, kernel)
        return ops.reshape(outputs, (-1, *output_size, self.filters))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "implementation": self.implementation,
        }


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantLocallyConnected1D(_QuantLocallyConnected):
    r"""Locally connected 1D layer with quantized input and kernel (larq's
    `QuantLocallyConnected1D`).

    A convolution whose weights are not shared: each output position $p$ has its own
    filters $W_p$ over its input patch $x_p$ (`prod(kernel_size) * in_channels` values),

    $$y_p = q_a(x_p)\, q_w(W_p) \cdot s(W) + b_p.$$

    Keras 3 dropped `LocallyConnected1D`; this layer is Keras 2's `implementation=1`
    (its default) on `keras.ops`, with its weight layout: `kernel` of shape
    `(output positions, prod(kernel_size) * in_channels, filters)` (patch features
    ordered by kernel position, then channel), `bias` of shape
    `(*output_size, filters)`. So weights of a larq `QuantLocallyConnected1D` load as
    they are. Keras 2's other implementations (2, 3) compute the same function with other
    weight layouts, and `padding="same"` exists only with implementation 2: neither is
    taken. The input size must be known when the layer is built.

    Args:
        filters: Number of output channels.
        kernel_size: Length of the window, an int or a 1-tuple.
        strides: Stride of the window, an int or 1 ints.
        padding: `"valid"` only.
        data_format: `"channels_last"` only (`None`: Keras's image data format, which
            must then be `"channels_last"`).
        activation: Activation applied to the output.
        use_bias: Whether to add a bias, one per output position and channel.
        kernel_initializer: Initializer of the latent kernel.
        bias_initializer: Initializer of the bias.
        kernel_regularizer: Regularizer of the latent kernel.
        bias_regularizer: Regularizer of the bias.
        activity_regularizer: Regularizer of the output.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        bias_constraint: Constraint on the bias.
        implementation: 1 only (Keras 2's default).
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Further arguments of `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        ValueError: For a `filters`, `kernel_size` or `strides` that is not positive
            integers; a `padding` other than `"valid"`, a `data_format` other than
            `"channels_last"`, an `implementation` other than 1; an unknown quantizer,
            constraint, initializer, regularizer or `kernel_scale`; when built on an
            input of unknown size or smaller than the window.

    Example:
        ```python
        x = keras.Input((64, 16))
        layer = lns_keras.QuantLocallyConnected1D(
            32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )
        y = layer(x)  # (None, 62, 32); layer.kernel.shape == (62, 48, 32), bias (62, 32)
        ```
    """

    rank = 1


@keras.saving.register_keras_serializable(package="lns_keras")
class QuantLocallyConnected2D(_QuantLocallyConnected):
    r"""Locally connected 2D layer with quantized input and kernel (larq's
    `QuantLocallyConnected2D`).

    A convolution whose weights are not shared: each output position $p$ has its own
    filters $W_p$ over its input patch $x_p$ (`prod(kernel_size) * in_channels` values),

    $$y_p = q_a(x_p)\, q_w(W_p) \cdot s(W) + b_p.$$

    Keras 3 dropped `LocallyConnected2D`; this layer is Keras 2's `implementation=1`
    (its default) on `keras.ops`, with its weight layout: `kernel` of shape
    `(output positions, prod(kernel_size) * in_channels, filters)` (patch features
    ordered by kernel position, then channel), `bias` of shape
    `(*output_size, filters)`. So weights of a larq `QuantLocallyConnected2D` load as
    they are. Keras 2's other implementations (2, 3) compute the same function with other
    weight layouts, and `padding="same"` exists only with implementation 2: neither is
    taken. The input size must be known when the layer is built.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the window, an int or 2 ints.
        strides: Stride of the window, an int or 2 ints.
        padding: `"valid"` only.
        data_format: `"channels_last"` only (`None`: Keras's image data format, which
            must then be `"channels_last"`).
        activation: Activation applied to the output.
        use_bias: Whether to add a bias, one per output position and channel.
        kernel_initializer: Initializer of the latent kernel.
        bias_initializer: Initializer of the bias.
        kernel_regularizer: Regularizer of the latent kernel.
        bias_regularizer: Regularizer of the bias.
        activity_regularizer: Regularizer of the output.
        kernel_constraint: Constraint on the latent kernel, e.g. `"weight_clip"`.
        bias_constraint: Constraint on the bias.
        implementation: 1 only (Keras 2's default).
        input_quantizer: Quantizer for the input (name, object or `None`).
        kernel_quantizer: Quantizer for the kernel. A 1-bit one without
            `kernel_constraint` logs a warning.
        kernel_scale: `None` (larq's behaviour), `"layer"` or `"channel"`.
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
        **kwargs: Further arguments of `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        ValueError: For a `filters`, `kernel_size` or `strides` that is not positive
            integers; a `padding` other than `"valid"`, a `data_format` other than
            `"channels_last"`, an `implementation` other than 1; an unknown quantizer,
            constraint, initializer, regularizer or `kernel_scale`; when built on an
            input of unknown size or smaller than the window.

    Example:
        ```python
        x = keras.Input((16, 16, 8))
        layer = lns_keras.QuantLocallyConnected2D(
            32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )
        y = layer(x)  # (None, 14, 14, 32); layer.kernel.shape == (196, 72, 32), bias (14, 14, 32)
        ```
    """

    rank = 2
