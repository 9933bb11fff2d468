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

import inspect
import logging
import math
import numbers
from typing import Any

import keras
from keras import ops

from lns_keras import constraints, context, quantizers
from lns_keras.metrics import FlipRatio

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
    magnitude = ops.abs(ops.cast(kernel, _widest_float()))
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


def _widest_float() -> str:
    """float64, or float32 under JAX without x64 (which would truncate it, with a warning)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "float32"
    return "float64"


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


def _keras_signature(cls: type) -> type:
    """Give `cls` the signature of the Keras layer it forwards `*args, **kwargs` to.

    A quantized layer takes its Keras layer's arguments through `*args, **kwargs`; its
    signature (`inspect.signature`, `help`, editors) shows them as the Keras layer has
    them, in its order with its defaults, then the layer's own keyword-only arguments
    (quantizers, `pad_values`, ...), as larq's layers list them.
    """
    keras_layer = next(k for k in cls.__mro__ if k.__module__.startswith("keras."))
    keras_parameters = list(inspect.signature(keras_layer.__init__).parameters.values())[1:]
    named = [p for p in keras_parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    names = {p.name for p in named}
    own = []
    for klass in cls.__mro__[: cls.__mro__.index(keras_layer)]:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in names:
                names.add(p.name)
                own.append(p)
    var_keyword = [p for p in keras_parameters if p.kind is p.VAR_KEYWORD]
    cls.__signature__ = _ClassSignature(inspect.Signature([*named, *own, *var_keyword]))
    return cls


class _ClassSignature:
    """A class's `__signature__` that its instances do not inherit (their `call`'s is
    theirs: `tf.function(layer)` reads it)."""

    def __init__(self, signature: inspect.Signature):
        self.signature = signature

    def __get__(self, instance, owner):
        return self.signature if instance is None else None


class _QuantizedMixin:
    """What every quantized layer shares: quantizers, the scale, one `call`, the config.

    A layer lists its quantized weights in `_quantized_weights` as (weight attribute,
    quantizer argument, constraint argument) and implements `_apply_kernel`, the product
    of the quantized input with the quantized kernel(s).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass's own signature, not the one `_keras_signature` gave its parent.
        cls.__signature__ = None

    _quantized_weights = (("kernel", "kernel_quantizer", "kernel_constraint"),)
    # The kernel's axes that index output channels (see `kernel_scale_factor`).
    _output_channel_axes: int | tuple = -1
    _kernel_scales = KERNEL_SCALES

    def _init_quantization(self, input_quantizer, kernel_scale, metrics=None, **kernel_quantizers):
        """Called at the end of `__init__`, once the Keras layer has set its constraints."""
        check_kernel_scale(kernel_scale, self._kernel_scales)
        # Validated as a quantizer's `metrics` are; not `self.metrics`, Keras's own.
        self._custom_metrics = quantizers._check_metrics(metrics)
        self.input_quantizer = quantizers.get(input_quantizer)
        for _, quantizer_name, constraint_name in self._quantized_weights:
            # larq's rule: a weight quantizer takes the training metrics in scope.
            quantizer = quantizers.get_kernel_quantizer(kernel_quantizers[quantizer_name])
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

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantization()

    def _build_quantization(self) -> None:
        """After the weights exist: tag their precisions, create the training metrics.

        Each latent weight that a quantizer reads gets `variable.precision`, the
        quantizer's (what larq's `QuantizedVariable` carried, and `Bop.is_binary_variable`
        reads); an LNS layer's kernel is not tagged (its quantizer reads $\\hat Q$). Each
        quantized weight whose layer or quantizer asks for `"flip_ratio"` gets a built
        `FlipRatio` (variables cannot be created inside a compiled training step), held
        where larq holds it: by the weight's quantizer, as its `flip_ratio` (by the layer
        when the quantizer is a function, or already holds another layer's).
        """
        for layer, variable, quantizer, direct in context.quantized_kernels(self):
            precision = getattr(quantizer, "precision", None)
            if layer is self and direct and precision is not None:
                variable.precision = precision
        tracked = [
            weight_name
            for weight_name, quantizer_name, _ in self._quantized_weights
            if getattr(self, quantizer_name) is not None
            and "flip_ratio"
            in (self._custom_metrics or []) + (_metrics_of(getattr(self, quantizer_name)) or [])
        ]
        # weight -> (quantizer argument, or None for the layer itself; attribute): names
        # only, so that Keras tracks each metric once, where it is held.
        holders = {}
        for weight_name, quantizer_name, _ in self._quantized_weights:
            if weight_name not in tracked:
                continue
            suffix = f"/{weight_name}" if len(self._quantized_weights) > 1 else ""
            metric = FlipRatio(name=f"flip_ratio/{self.name}{suffix}")
            metric.build(tuple(getattr(self, weight_name).shape))
            quantizer = getattr(self, quantizer_name)
            if isinstance(quantizer, keras.layers.Layer) and not hasattr(quantizer, "flip_ratio"):
                quantizer.flip_ratio = metric
                holders[weight_name] = (quantizer_name, "flip_ratio")
            else:
                setattr(self, f"_flip_ratio_{weight_name}", metric)
                holders[weight_name] = (None, f"_flip_ratio_{weight_name}")
        self._flip_ratio_holders = holders

    def _update_training_metrics(self, kernels) -> None:
        """Update each `FlipRatio` with its weight's quantized value (a training step)."""
        holders = getattr(self, "_flip_ratio_holders", None)
        if not holders:
            return
        kernels = kernels if isinstance(kernels, tuple) else (kernels,)
        for (weight_name, _, _), kernel in zip(self._quantized_weights, kernels, strict=True):
            if weight_name in holders:
                quantizer_name, attribute = holders[weight_name]
                holder = getattr(self, quantizer_name) if quantizer_name else self
                getattr(holder, attribute).update_state(kernel)

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
            # Keras's int8 `Dense` keeps its own `kernel_scale` (a variable) under this name;
            # a layer it quantized had none of ours.
            "kernel_scale": None
            if isinstance(self.kernel_scale, keras.Variable)
            else self.kernel_scale,
            "metrics": self._custom_metrics,
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
        kernels = self.quantized_kernel(training)
        if training:
            self._update_training_metrics(kernels)
        outputs = self._apply_kernel(inputs, kernels)
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


def _metrics_of(quantizer) -> list[str] | None:
    """The training metrics a quantizer carries (larq's `_custom_metrics`)."""
    return getattr(quantizer, "_custom_metrics", None)


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
@_keras_signature
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
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
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
        metrics: Training metrics of the quantized weights: `["flip_ratio"]` logs each
            one's [`FlipRatio`][lns_keras.metrics.FlipRatio] during `fit`, as
            `flip_ratio/<layer name>`; `None` (default): those the weight quantizers carry
            (their `metrics`, or the `context.metrics_scope` the layer is created in).
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
        metrics: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(
            units, *args, kernel_constraint=constraints.get(kernel_constraint), **kwargs
        )
        self._init_quantization(
            input_quantizer, kernel_scale, metrics, kernel_quantizer=kernel_quantizer
        )

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def quantize(self, mode=None, type_check=True, config=None) -> None:
        """Keras's post-training quantization (`model.quantize("int8")`), for a
        full-precision `QuantDense` only.

        A `QuantDense` without quantizers and without `kernel_scale` computes what
        `keras.layers.Dense` computes, so it is quantized as Keras quantizes a `Dense`
        (same modes, same arithmetic, saved and loaded the same way). A layer with an
        input or kernel quantizer or a `kernel_scale` is refused: Keras's int8 product
        would bypass its quantizers. `keras.Model.quantize` shows the refusal as a
        warning and leaves the layer as it is (a layer whose quantizers are objects is
        skipped by Keras, and each quantizer warns instead). Subclasses (the LNS and
        SLB layers) are refused too.

        Args:
            mode: Keras's quantization mode (`"int8"`, `"int4"`, `"float8"`, ...).
            type_check: Keras's argument: refuse subclasses (default `True`).
            config: A `keras.quantizers.QuantizationConfig`, or `None`.

        Raises:
            NotImplementedError: For a layer with a quantizer or `kernel_scale`, or a
                subclass of `QuantDense` with `type_check=True`.
            ValueError: From Keras, for an unknown `mode`.

        Example:
            ```python
            model = keras.Sequential([
                keras.Input((784,)),
                lns_keras.QuantDense(256, input_quantizer="ste_sign",
                                     kernel_quantizer="ste_sign",
                                     kernel_constraint="weight_clip"),
                lns_keras.QuantDense(10),  # full precision: becomes int8
            ])
            model.quantize("int8")  # warns that the binary layer is left as it is
            ```
        """
        quantizers_set = [
            name
            for name in ("input_quantizer", *(q for _, q, _ in self._quantized_weights))
            if getattr(self, name) is not None
        ]
        if quantizers_set or self.kernel_scale is not None:
            given = quantizers_set + (["kernel_scale"] if self.kernel_scale is not None else [])
            # Keras's Model.quantize catches NotImplementedError, warns with this message and
            # leaves the layer as it is: the protocol for "this layer does not take part".
            raise NotImplementedError(
                f"{type(self).__name__} {self.name!r} has {', '.join(given)}: Keras's "
                f"quantize({mode!r}) would bypass them, so the layer is left as it is. "
                "Only a full-precision QuantDense (no quantizers, no kernel_scale) takes "
                "part; a binary layer is exported with lns_keras.export instead."
            )
        if type_check and type(self) is not QuantDense:
            raise self._not_implemented_error(self.quantize)
        keras.layers.Dense.quantize(self, mode, type_check=False, config=config)

    # Once quantized, the variables are Keras's (an int8 kernel and its scale), saved and
    # loaded as Keras's Dense does.
    def save_own_variables(self, store):
        if self.quantization_mode is not None:
            return keras.layers.Dense.save_own_variables(self, store)
        return super().save_own_variables(store)

    def load_own_variables(self, store):
        if self.quantization_mode is not None:
            return keras.layers.Dense.load_own_variables(self, store)
        return super().load_own_variables(store)
