"""What a builder's `mode` means for each layer: full precision, the baseline BNN, or LNS.

Every builder in `apps.models` takes `mode`:

- `"float"`: full precision: `keras.layers.Conv2D` / `Dense` and ReLU.
- `"bnn"`: the LNS paper's baseline BNN (§4.1-4.3): 1-bit weights and activations
  through `ste_sign`, latent weights clipped to [-1, 1], DoReFa's layer-wise scale
  mean|W|. The first conv, the last dense and the ResNet down-sampling shortcuts stay
  full precision. There is no other activation: the next binary layer's `ste_sign`
  input quantizer is the non-linearity.
- `"lns"`: that BNN with every binary layer replaced by its LNS twin
  ([`to_lns`][lns_keras.convert.to_lns]), weights copied.

A builder's body asks [`conv`][apps.models.modes.conv] and
[`dense`][apps.models.modes.dense] for the layer at each position, passing
`FLOAT` for the positions that stay full precision in every mode, so the rule lives
here once; [`build_model`][apps.models.modes.build_model] checks the arguments and turns
the body into a model of the requested mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

import lns_keras

__all__ = ["BNN", "FLOAT", "MODES", "activation", "batch_norm", "build_model", "conv", "dense"]

MODES = ("float", "bnn", "lns")
FLOAT, BNN = "float", "bnn"

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

Body = Callable[[keras.KerasTensor, int, str], keras.KerasTensor]


def conv(
    mode: str,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str = "same",
    groups: int = 1,
    name: str | None = None,
) -> keras.layers.Layer:
    """The convolution for `mode` at this position: float `Conv2D` or binary `QuantConv2D`.

    Both have no bias (a batch normalization follows every convolution here).

    Args:
        mode: `FLOAT` for a full-precision layer, `BNN` for a binary one.
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        strides: Stride of the convolution.
        padding: `"same"` or `"valid"`.
        groups: Number of channel groups (AlexNet's two-tower convolutions).
        name: Layer name.

    Returns:
        An unbuilt layer.
    """
    if mode == FLOAT:
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups,
            use_bias=False,
            kernel_initializer="he_normal",
            name=name,
        )
    return lns_keras.QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        name=name,
        **BINARY_LAYER_ARGS,
    )


def dense(mode: str, units: int, *, name: str | None = None) -> keras.layers.Layer:
    """The hidden dense layer for `mode`: float `Dense` or binary `QuantDense`, no bias.

    Args:
        mode: `FLOAT` for a full-precision layer, `BNN` for a binary one.
        units: Number of outputs.
        name: Layer name.

    Returns:
        An unbuilt layer (a batch normalization should follow it).
    """
    if mode == FLOAT:
        return keras.layers.Dense(units, use_bias=False, name=name)
    return lns_keras.QuantDense(units, name=name, **BINARY_LAYER_ARGS)


def batch_norm(name: str | None = None) -> keras.layers.Layer:
    """Batch normalization with PyTorch's defaults (momentum 0.1, epsilon 1e-5), as the paper."""
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def activation(mode: str, name: str | None = None) -> Callable[[Any], Any]:
    """The activation after a block for `mode`: ReLU in float, none in a BNN.

    In a BNN the next binary layer's `ste_sign` input quantizer is the activation.

    Args:
        mode: `FLOAT` or `BNN`.
        name: Layer name of the ReLU.

    Returns:
        A callable on tensors (a `ReLU` layer, or the identity).
    """
    if mode == FLOAT:
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


def build_model(
    body: Body,
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mode: str,
    lns_kwargs: dict[str, Any],
) -> keras.Model:
    """Check a builder's arguments and build its model in `mode`.

    Args:
        body: `body(inputs, num_classes, layer_mode) -> softmax outputs`, with
            `layer_mode` `FLOAT` or `BNN`.
        name: Architecture name; the model is named `f"{name}_{mode}"`.
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes, >= 2.
        mode: One of `MODES`.
        lns_kwargs: Arguments of [`to_lns`][lns_keras.convert.to_lns]; only with
            `mode="lns"`.

    Returns:
        The model (uncompiled).

    Raises:
        ValueError: For an unknown `mode`, a bad `input_shape` or `num_classes`, or LNS
            arguments with a mode other than `"lns"`; each names the value.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got mode={mode!r}.")
    input_shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got num_classes={num_classes!r}.")
    if lns_kwargs and mode != "lns":
        raise ValueError(
            f"LNS arguments {sorted(lns_kwargs)} apply only to mode='lns', got mode={mode!r}."
        )
    inputs = keras.Input(input_shape, name="image")
    outputs = body(inputs, num_classes, FLOAT if mode == "float" else BNN)
    model = keras.Model(inputs, outputs, name=f"{name}_{mode}")
    if mode == "lns":
        return lns_keras.convert.to_lns(model, **{**LNS_DEFAULTS.get(name, {}), **lns_kwargs})
    return model
