"""What a builder's `mode` means for each layer: full precision, BNN, LNS, SLB or DoReFa.

Every builder in `apps.models` takes `mode` and, for the k-bit modes, `weight_bits` and
`activation_bits`:

- `"float"`: full precision: `keras.layers.Conv2D` / `Dense` and ReLU.
- `"bnn"`: the LNS paper's baseline BNN (§4.1-4.3): 1-bit weights and activations
  through `ste_sign`, latent weights clipped to [-1, 1], DoReFa's layer-wise scale
  mean|W|. The first conv, the last dense and the ResNet down-sampling shortcuts stay
  full precision. There is no other activation: the next binary layer's `ste_sign`
  input quantizer is the non-linearity.
- `"lns"`: that BNN with every binary layer replaced by its LNS twin
  ([`to_lns`][lns_keras.convert.to_lns]), weights copied.
- `"slb"`: SLB (Yang et al., NeurIPS 2020): the same network with every quantized
  layer an [`SLBQuantConv2D`][lns_keras.SLBQuantConv2D] /
  [`SLBQuantDense`][lns_keras.SLBQuantDense] of `weight_bits` ∈ {1, 2, 4} bits,
  logits initialised at random (He-normal, fan-out, as the MindSpore port; slb.md §1.5).
- `"dorefa"`: the straight-through (STE) baseline SLB is compared with: the same
  network with `QuantConv2D` / `QuantDense` whose `weight_bits`-bit kernels are
  DoReFa-Net's, `DoReFa(k_bit=weight_bits, mode="weights")` for 2 bits and more and,
  for 1 bit, DoReFa's own binary form `sign(W)·mean|W|` (`ste_sign`, `weight_clip`,
  the layer scale): with 1-bit weights and activations it is the `"bnn"` network.

The activation quantizer of the k-bit modes is the same in `"slb"` and `"dorefa"`, so
that the two differ only in how the weights are found (`activation_bits`):

| `activation_bits` | input quantizer of a quantized layer | activation after a block |
| --- | --- | --- |
| 1 | `"ste_sign"` | none (the sign is the non-linearity) |
| 2-8 | [`PACT(k_bit=activation_bits)`][lns_keras.kbit.PACT], one per layer | none (PACT clips to $[0, \\alpha]$) |
| 32 | none (full precision) | ReLU |

PACT is what the authors pass for ResNet-20 and Bi-Real ResNet-18 (slb.md §5.1); their
VGG-Small quantizer is not known, and PACT is used there too. The first conv, the last
dense and the down-sampling shortcuts stay full precision in every mode, as in the BNN
(the MindSpore port of SLB quantizes the first conv too; the paper's choice is not
known, slb.md §5.4).

A builder's body asks [`conv`][apps.models.modes.conv] and
[`dense`][apps.models.modes.dense] for the layer at each position, passing `FLOAT` for
the positions that stay full precision in every mode, and
[`activation`][apps.models.modes.activation] for the non-linearity after a block, so the
rule lives here once; [`build_model`][apps.models.modes.build_model] checks the
arguments, turns them into a [`LayerMode`][apps.models.modes.LayerMode] with
[`layer_mode`][apps.models.modes.layer_mode] and builds the body in it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import keras

import lns_keras
from lns_keras.layers.slb import WEIGHT_BITS as SLB_WEIGHT_BITS

__all__ = [
    "ACTIVATION_BITS",
    "BNN",
    "DOREFA_WEIGHT_BITS",
    "FLOAT",
    "FULL_PRECISION",
    "MODES",
    "LayerMode",
    "activation",
    "batch_norm",
    "build_model",
    "conv",
    "dense",
    "layer_mode",
]

MODES = ("float", "bnn", "lns", "slb", "dorefa")
FULL_PRECISION = 32
ACTIVATION_BITS = (*range(1, 9), FULL_PRECISION)
"""The `activation_bits` of the k-bit modes: 1 to 8 bits, or 32 for full precision."""
DOREFA_WEIGHT_BITS = tuple(range(1, 9))
"""The `weight_bits` of mode `"dorefa"`."""


@dataclasses.dataclass(frozen=True)
class LayerMode:
    """How the quantized positions of a network are built.

    Attributes:
        method: `"float"` (full precision), `"ste"` (`QuantConv2D` / `QuantDense` with
            straight-through quantizers: the BNN and DoReFa) or `"slb"`.
        weight_bits: Bits of a weight (32 for full precision).
        activation_bits: Bits of a quantized layer's input (32 for full precision).
    """

    method: str
    weight_bits: int = FULL_PRECISION
    activation_bits: int = FULL_PRECISION

    @property
    def quantized(self) -> bool:
        """Whether the quantized positions hold quantized layers."""
        return self.method != "float"


FLOAT = LayerMode("float")
BNN = LayerMode("ste", 1, 1)

# The baseline BNN layer (DoReFa-style, paper §4.2): sign activations and weights with a
# straight-through estimator, weights clipped to [-1, 1], output scaled by mean|W|.
BINARY_LAYER_ARGS = {
    "input_quantizer": "ste_sign",
    "kernel_quantizer": "ste_sign",
    "kernel_constraint": "weight_clip",
    "kernel_scale": "layer",
    "use_bias": False,
}

# Per-architecture defaults of `to_lns` in mode "lns" (and in apps/pipeline.py's LNS stage):
# AlexNet's fc6/fc7 mappings would hold ~0.8 G weights, so only its convolutions get one.
LNS_DEFAULTS: dict[str, dict[str, Any]] = {"alexnet": {"include_dense": False}}

Body = Callable[[keras.KerasTensor, int, LayerMode], keras.KerasTensor]


def _check_bits(name: str, value, mode: str, accepted: tuple) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in accepted:
        shown = str(accepted[0]) if len(accepted) == 1 else f"one of {accepted}"
        raise ValueError(f"`{name}` must be {shown} with mode={mode!r}, got {name}={value!r}.")


def layer_mode(
    mode: str, weight_bits: int | None = None, activation_bits: int | None = None
) -> LayerMode:
    """The [`LayerMode`][apps.models.modes.LayerMode] of a builder's `mode` and bit widths.

    Args:
        mode: One of `MODES`.
        weight_bits: Bits of a weight; `None`: 32 for `"float"`, 1 otherwise. `"bnn"` and
            `"lns"` take 1 only, `"slb"` 1, 2 or 4, `"dorefa"` 1 to 8.
        activation_bits: Bits of a quantized layer's input; `None`: 32 for `"float"`, 1
            otherwise. `"bnn"` and `"lns"` take 1 only, `"slb"` and `"dorefa"` one of
            `ACTIVATION_BITS` (1 to 8, or 32 for full-precision activations).

    Returns:
        The layer mode (for `"lns"`, the BNN's, which `build_model` then converts).

    Raises:
        ValueError: For an unknown `mode`, or bit widths it does not take; the message
            names the argument and its value.

    Example:
        ```python
        layer_mode("slb", weight_bits=2, activation_bits=2)
        # LayerMode(method='slb', weight_bits=2, activation_bits=2)
        ```
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got mode={mode!r}.")
    if mode == "float":
        for name, value in (("weight_bits", weight_bits), ("activation_bits", activation_bits)):
            if value is not None:
                _check_bits(name, value, mode, (FULL_PRECISION,))
        return FLOAT
    weight_bits = 1 if weight_bits is None else weight_bits
    activation_bits = 1 if activation_bits is None else activation_bits
    if mode in ("bnn", "lns"):
        _check_bits("weight_bits", weight_bits, mode, (1,))
        _check_bits("activation_bits", activation_bits, mode, (1,))
        return BNN
    weights = SLB_WEIGHT_BITS if mode == "slb" else DOREFA_WEIGHT_BITS
    _check_bits("weight_bits", weight_bits, mode, weights)
    _check_bits("activation_bits", activation_bits, mode, ACTIVATION_BITS)
    return LayerMode("slb" if mode == "slb" else "ste", weight_bits, activation_bits)


def _input_quantizer(mode: LayerMode):
    """The activation quantizer of a quantized layer: sign, PACT or none (see the table)."""
    if mode.activation_bits == 1:
        return "ste_sign"
    if mode.activation_bits == FULL_PRECISION:
        return None
    return lns_keras.kbit.PACT(k_bit=mode.activation_bits)  # a new clip α per layer


def _quantized_layer_args(mode: LayerMode) -> dict[str, Any]:
    """The arguments of the quantized layer class of `mode` (besides shape and name)."""
    if mode == BNN:
        return dict(BINARY_LAYER_ARGS)
    args: dict[str, Any] = {"input_quantizer": _input_quantizer(mode), "use_bias": False}
    if mode.method == "slb":
        return {**args, "weight_bits": mode.weight_bits}
    if mode.weight_bits == 1:  # DoReFa's binary weights: sign(W)·mean|W|, as the BNN
        kernel = {k: BINARY_LAYER_ARGS[k] for k in ("kernel_quantizer", "kernel_constraint")}
        return {**args, **kernel, "kernel_scale": "layer"}
    return {
        **args,
        "kernel_quantizer": lns_keras.quantizers.DoReFa(k_bit=mode.weight_bits, mode="weights"),
    }


def conv(
    mode: LayerMode,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str = "same",
    groups: int = 1,
    name: str | None = None,
) -> keras.layers.Layer:
    """The convolution for `mode` at this position: `Conv2D`, `QuantConv2D` or SLB.

    All have no bias (a batch normalization follows every convolution here).

    Args:
        mode: `FLOAT` for a full-precision layer, else the network's layer mode.
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        strides: Stride of the convolution.
        padding: `"same"` or `"valid"`.
        groups: Number of channel groups (AlexNet's two-tower convolutions).
        name: Layer name.

    Returns:
        An unbuilt layer.
    """
    shape = dict(strides=strides, padding=padding, groups=groups, name=name)
    if not mode.quantized:
        return keras.layers.Conv2D(
            filters, kernel_size, use_bias=False, kernel_initializer="he_normal", **shape
        )
    layer = lns_keras.SLBQuantConv2D if mode.method == "slb" else lns_keras.QuantConv2D
    return layer(filters, kernel_size, **shape, **_quantized_layer_args(mode))


def dense(mode: LayerMode, units: int, *, name: str | None = None) -> keras.layers.Layer:
    """The hidden dense layer for `mode`: `Dense`, `QuantDense` or SLB, no bias.

    Args:
        mode: `FLOAT` for a full-precision layer, else the network's layer mode.
        units: Number of outputs.
        name: Layer name.

    Returns:
        An unbuilt layer (a batch normalization should follow it).
    """
    if not mode.quantized:
        return keras.layers.Dense(units, use_bias=False, name=name)
    layer = lns_keras.SLBQuantDense if mode.method == "slb" else lns_keras.QuantDense
    return layer(units, name=name, **_quantized_layer_args(mode))


def batch_norm(name: str | None = None) -> keras.layers.Layer:
    """Batch normalization with PyTorch's defaults (momentum 0.1, epsilon 1e-5), as the paper."""
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def activation(mode: LayerMode, name: str | None = None) -> Callable[[Any], Any]:
    """The activation after a block for `mode`: ReLU, or none before a quantized input.

    With quantized activations the next quantized layer's input quantizer (sign, PACT)
    is the non-linearity; a ReLU before a sign would make every input +1.

    Args:
        mode: `FLOAT` or the network's layer mode.
        name: Layer name of the ReLU.

    Returns:
        A callable on tensors (a `ReLU` layer, or the identity).
    """
    if not mode.quantized or mode.activation_bits == FULL_PRECISION:
        return keras.layers.ReLU(name=name)
    return lambda x: x


def classifier(x, num_classes: int):
    """The last, full-precision dense layer and a float32 softmax."""
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or not all(isinstance(d, int) and d > 0 for d in input_shape)
    ):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive integers, got "
            f"input_shape={input_shape!r}."
        )
    return tuple(input_shape)


def _model_name(name: str, mode: str, layers: LayerMode) -> str:
    """`f"{name}_{mode}"`, with the bit widths for the k-bit modes (`resnet20_slb_w2a2`)."""
    if mode in ("slb", "dorefa"):
        return f"{name}_{mode}_w{layers.weight_bits}a{layers.activation_bits}"
    return f"{name}_{mode}"


def build_model(
    body: Body,
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mode: str,
    lns_kwargs: dict[str, Any],
    weight_bits: int | None = None,
    activation_bits: int | None = None,
) -> keras.Model:
    """Check a builder's arguments and build its model in `mode`.

    Args:
        body: `body(inputs, num_classes, layer_mode) -> softmax outputs`, with
            `layer_mode` a [`LayerMode`][apps.models.modes.LayerMode].
        name: Architecture name; the model is named `f"{name}_{mode}"`, with
            `f"_w{weight_bits}a{activation_bits}"` appended for `"slb"` and `"dorefa"`.
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes, >= 2.
        mode: One of `MODES`.
        lns_kwargs: Arguments of [`to_lns`][lns_keras.convert.to_lns]; only with
            `mode="lns"`.
        weight_bits: Bits of a weight (see [`layer_mode`][apps.models.modes.layer_mode]).
        activation_bits: Bits of a quantized layer's input.

    Returns:
        The model (uncompiled).

    Raises:
        ValueError: For an unknown `mode`, bit widths the mode does not take, a bad
            `input_shape` or `num_classes`, or LNS arguments with a mode other than
            `"lns"`; each names the value.
    """
    layers = layer_mode(mode, weight_bits, activation_bits)
    input_shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got num_classes={num_classes!r}.")
    if lns_kwargs and mode != "lns":
        raise ValueError(
            f"LNS arguments {sorted(lns_kwargs)} apply only to mode='lns', got mode={mode!r}."
        )
    inputs = keras.Input(input_shape, name="image")
    outputs = body(inputs, num_classes, layers)
    model = keras.Model(inputs, outputs, name=_model_name(name, mode, layers))
    if mode == "lns":
        return lns_keras.convert.to_lns(model, **{**LNS_DEFAULTS.get(name, {}), **lns_kwargs})
    return model
