"""ResNets: ResNet-20 for CIFAR-10 (He et al., 2016) and ResNet-18 in Bi-Real Net's form.

ResNet-20 is He et al.'s CIFAR network: a 3×3 conv with 16 channels, three stages of
three basic blocks with 16, 32 and 64 channels (stride 2 at the start of the second and
third), global average pooling and a dense classifier. A basic block is two 3×3 convs
with batch normalization and a shortcut around both. In float mode the block is
`relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`; in the BNN the ReLUs go (the next
binary conv's `ste_sign` is the activation): `bn(bconv(bn(bconv(x)))) + shortcut(x)`.
The down-sampling shortcut is a full-precision 1×1 conv with stride 2 and batch
normalization, in every mode (He et al.'s option B; the LNS paper keeps it full
precision).

ResNet-18 follows Bi-Real Net (Liu et al., 2018), the LNS paper's ImageNet baseline
(§4.3, Table 3): every 3×3 binary conv has its own identity shortcut,
`x + prelu(bn(bconv(sign(x))))`, with a PReLU after every binary conv as the paper's
"strong baseline". The down-sampling shortcut is average pooling 2×2 then a
full-precision 1×1 conv and batch normalization. The first conv (7×7/2, 64) with batch
normalization and max pooling, and the last dense stay full precision. In float mode the
topology is the same with float convs and ReLU in place of PReLU; its parameter and
multiply counts are those of the standard ResNet-18.

In the k-bit modes (`"slb"`, `"dorefa"`) both networks keep the BNN's topology, with the
binary convs replaced by the mode's k-bit layers: SLB's ResNet-20 and ImageNet recipes
(slb.md §6.1). The authors name their block `convprelubn` (slb.md §5.5, its meaning
inferred from the name only); the blocks here keep the LNS baseline's order, conv, batch
normalization, then PReLU (ResNet-18) or none (ResNet-20), so that SLB, the STE baseline
and the BNN differ only in their quantized layers. With `activation_bits=32` the
ResNet-20 blocks get back their ReLUs.
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

__all__ = ["resnet18_bireal", "resnet20"]


def _downsample_shortcut(x, filters: int, strides: int, name: str, *, pool: bool):
    """Full-precision 1×1 conv + BN; Bi-Real pools first and convolves with stride 1."""
    if pool and strides > 1:
        x = keras.layers.AveragePooling2D(strides, name=f"{name}_pool")(x)
        strides = 1
    x = conv(FLOAT, filters, 1, strides=strides, name=f"{name}_conv")(x)
    return batch_norm(name=f"{name}_bn")(x)


def _resnet20_block(x, mode: LayerMode, filters: int, strides: int, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _downsample_shortcut(x, filters, strides, f"{name}_shortcut", pool=False)
    y = conv(mode, filters, 3, strides=strides, name=f"{name}_conv1")(x)
    y = batch_norm(name=f"{name}_bn1")(y)
    y = activation(mode, name=f"{name}_relu1")(y)
    y = conv(mode, filters, 3, name=f"{name}_conv2")(y)
    y = batch_norm(name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation(mode, name=f"{name}_relu2")(y)


def _resnet20_body(inputs, num_classes: int, mode: LayerMode):
    x = conv(FLOAT, 16, 3, name="stem_conv")(inputs)  # first conv: full precision
    x = batch_norm(name="stem_bn")(x)
    x = activation(mode, name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _resnet20_block(x, mode, filters, strides, name=f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return classifier(x, num_classes)


def resnet20(
    input_shape: Sequence[int],
    num_classes: int,
    mode: str = "float",
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    **lns_kwargs: Any,
) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al., 2016), full precision, baseline BNN or LNS.

    Args:
        input_shape: `(height, width, channels)`, e.g. `(32, 32, 3)` for CIFAR-10 or
            `(28, 28, 1)` for Fashion-MNIST.
        num_classes: Number of classes.
        mode: `"float"`, `"bnn"` (the LNS paper's baseline), `"lns"`, `"slb"` or
            `"dorefa"` (the STE k-bit baseline of SLB); see
            [`apps.models.modes`][apps.models.modes].
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
        baseline = resnet20((32, 32, 3), 10, mode="bnn")
        slb = resnet20((32, 32, 3), 10, mode="slb", weight_bits=2, activation_bits=2)
        ```
    """
    return build_model(
        _resnet20_body,
        "resnet20",
        input_shape,
        num_classes,
        mode,
        lns_kwargs,
        weight_bits,
        activation_bits,
    )


def _bireal_unit(x, mode: LayerMode, filters: int, strides: int, name: str):
    """One 3×3 conv with its own shortcut: `x + act(bn(conv(x)))` (Bi-Real Net)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _downsample_shortcut(x, filters, strides, f"{name}_shortcut", pool=True)
    y = conv(mode, filters, 3, strides=strides, name=f"{name}_conv")(x)
    y = batch_norm(name=f"{name}_bn")(y)
    if mode.quantized:  # the paper's baseline: PReLU after every binary conv (§4.3)
        y = keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(y)
    else:
        y = keras.layers.ReLU(name=f"{name}_relu")(y)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def _resnet18_bireal_body(inputs, num_classes: int, mode: LayerMode):
    x = conv(FLOAT, 64, 7, strides=2, name="stem_conv")(inputs)  # first conv: full precision
    x = batch_norm(name="stem_bn")(x)
    x = activation(mode, name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(1, 3):
            for unit in range(1, 3):
                strides = 2 if stage > 1 and block == 1 and unit == 1 else 1
                name = f"stage{stage}_block{block}_unit{unit}"
                x = _bireal_unit(x, mode, filters, strides, name=name)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return classifier(x, num_classes)


def resnet18_bireal(
    input_shape: Sequence[int],
    num_classes: int,
    mode: str = "float",
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    **lns_kwargs: Any,
) -> keras.Model:
    """ResNet-18 in Bi-Real Net's form with PReLU, the LNS paper's ImageNet baseline.

    With `(224, 224, 3)` and 1000 classes: float 374 Mbit and 1.82 G FLOPs, the
    baseline BNN 34 Mbit and 164 M FLOPs (paper Table 3: 374 Mbit / 1810 M and
    34 Mbit / 163 M), counted by [`model_stats`][lns_keras.summary.model_stats].

    Args:
        input_shape: `(height, width, channels)`, `(224, 224, 3)` for ImageNet.
        num_classes: Number of classes.
        mode: `"float"`, `"bnn"` (the LNS paper's baseline), `"lns"`, `"slb"` or
            `"dorefa"` (the STE k-bit baseline of SLB); see
            [`apps.models.modes`][apps.models.modes].
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
        baseline = resnet18_bireal((224, 224, 3), 1000, mode="bnn")
        slb = resnet18_bireal((224, 224, 3), 1000, mode="slb", activation_bits=2)
        ```
    """
    return build_model(
        _resnet18_bireal_body,
        "resnet18_bireal",
        input_shape,
        num_classes,
        mode,
        lns_kwargs,
        weight_bits,
        activation_bits,
    )
