"""VGG-Small for CIFAR-10: the network of SLB's CIFAR-10 recipes (and of LQ-Nets).

VGG-Small (Zhang et al., *LQ-Nets*, ECCV 2018; `quan_vggsmall` in SLB's recipes,
slb.md §5.5 and §6.1) is six 3×3 convolutions with 128, 128, 256, 256, 512 and 512
channels, `same` padding, 2×2 max pooling after the second, fourth and sixth, and a
dense classifier on the flattened 4×4×512 features of a 32×32 input:

    conv 128 - conv 128 - MP - conv 256 - conv 256 - MP - conv 512 - conv 512 - MP - FC

Each convolution is followed by its max pooling (where there is one), then batch
normalization, then the mode's activation: `conv → (pool) → BN → act`, the order of the
binary VGG-Small of IR-Net and its successors, so that the max pooling acts on the
convolution's output. The first convolution and the classifier stay full precision in
every mode (the usual convention for VGG-Small comparisons; SLB's own choice is not
known, slb.md §5.4); the other five convolutions are the mode's quantized layers. Float
mode has a ReLU after every batch normalization; the 1-bit modes have none (the next
layer's sign is the activation), see [`apps.models.modes`][apps.models.modes].

With a 32×32×3 input and 10 classes the float network has 4.66 M parameters (4.58 M in
the convolutions, 82 k in the classifier) and 0.61 G multiply-accumulates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from apps.models.modes import (
    FLOAT,
    LayerMode,
    activation,
    batch_norm,
    build_model,
    classifier,
    conv,
)

__all__ = ["vgg_small"]

# (channels, max pooling after it) of each convolution.
_CONVS = ((128, False), (128, True), (256, False), (256, True), (512, False), (512, True))


def _vgg_small_body(inputs, num_classes: int, mode: LayerMode):
    x = inputs
    for i, (filters, pool) in enumerate(_CONVS, start=1):
        name = f"conv{i}"
        x = conv(FLOAT if i == 1 else mode, filters, 3, name=name)(x)  # first conv: float
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = batch_norm(name=f"{name}_bn")(x)
        x = activation(mode, name=f"{name}_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return classifier(x, num_classes)


def vgg_small(
    input_shape: Sequence[int],
    num_classes: int,
    mode: str = "float",
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    **lns_kwargs: Any,
) -> keras.Model:
    """VGG-Small for CIFAR-10, SLB's CIFAR-10 network (LQ-Nets' VGG-Small).

    Args:
        input_shape: `(height, width, channels)`, `(32, 32, 3)` for CIFAR-10 (at least
            8×8 for the three poolings).
        num_classes: Number of classes.
        mode: `"float"`, `"bnn"`, `"lns"`, `"slb"` or `"dorefa"` (see
            [`apps.models.modes`][apps.models.modes]).
        weight_bits: With `"slb"` (1, 2 or 4) and `"dorefa"` (1 to 8): bits of a weight
            of the quantized layers; default 1.
        activation_bits: With `"slb"` and `"dorefa"`: bits of their inputs, 1 to 8 or 32
            (full precision); default 1.
        **lns_kwargs: With `mode="lns"`, passed to
            [`to_lns`][lns_keras.convert.to_lns] (`alpha`, `rho`, ...).

    Returns:
        An uncompiled model with softmax outputs.

    Raises:
        ValueError: For an unknown `mode`, bit widths the mode does not take, a bad
            `input_shape` or `num_classes`, or LNS arguments without `mode="lns"`.

    Example:
        ```python
        model = vgg_small((32, 32, 3), 10, mode="slb", weight_bits=2, activation_bits=2)
        ```
    """
    return build_model(
        _vgg_small_body,
        "vgg_small",
        input_shape,
        num_classes,
        mode,
        lns_kwargs,
        weight_bits,
        activation_bits,
    )
