"""Networks without shortcuts: the binary AlexNet for ImageNet and a small Fashion-MNIST net.

AlexNet is the variant that BNN papers binarize (XNOR-Net, DoReFa-Net; the LNS paper's
Table 5): convolutions 96-11×11/4, 256-5×5, 384-3×3, 384-3×3, 256-3×3, the second,
fourth and fifth in two groups as Krizhevsky et al.'s two towers (and DoReFa-Net's
`split=2`), each followed by batch normalization, max pooling 3×3/2 after the first,
second and fifth; dense 4096, 4096 with batch normalization, then the classifier. With
224×224 inputs and `same` padding the last pooling gives 6×6×256 features, as the
original's 227×227. In the BNN the first conv and the last dense stay full precision;
every other conv and both hidden dense layers are binary. Float mode has ReLU after
every batch normalization.

The groups make the parameter counts those of the paper's Table 5, whose "Mbit" are
2^20 bits: float 60.99 M parameters = 1861 Mbit (paper: 1860), the baseline BNN
181.5 Mbit (paper: 180 for DoReFa-Net, whose AlexNet has biases instead of batch
normalization).

The Fashion-MNIST net is a quick demonstration network for 28×28×1 inputs: a
full-precision 3×3 conv with 32 channels, then binary 3×3 convs with 32 and 64 channels,
each followed by batch normalization and 2×2 max pooling, and a full-precision dense
classifier on the flattened 3×3×64 features. An epoch of 50,000 Fashion-MNIST images
(batch 128, XLA) takes 51–75 s on 2 quiet CPU cores (`experiments/fashion_mnist_converged`);
twice the channels (64, 128) cost 40 % more for the same accuracy
after two epochs (about 81 % for the BNN with Adam). In the k-bit modes (`"slb"`,
`"dorefa"`) the two binary convs become the mode's k-bit layers; `"slb"` with 1-bit
weights and activations is the network of `apps/configs/fashion_mnist_slb.flags`.
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
    dense,
)

__all__ = ["alexnet", "fashion_net"]


def _conv_bn(
    x,
    mode: LayerMode,
    filters: int,
    kernel_size: int,
    name: str,
    *,
    full_precision=False,
    **conv_kwargs,
):
    """Conv, batch normalization and the mode's activation.

    `full_precision=True` keeps the conv full precision in every mode; a BNN still gets no
    ReLU there, since a ReLU before the next binary layer's sign would make every input +1.
    """
    x = conv(FLOAT if full_precision else mode, filters, kernel_size, name=name, **conv_kwargs)(x)
    x = batch_norm(name=f"{name}_bn")(x)
    return activation(mode, name=f"{name}_relu")(x)


def _alexnet_body(inputs, num_classes: int, mode: LayerMode):
    def max_pool(x, name):
        return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)

    x = _conv_bn(inputs, mode, 96, 11, "conv1", strides=4, full_precision=True)
    x = max_pool(x, "pool1")
    x = _conv_bn(x, mode, 256, 5, "conv2", groups=2)
    x = max_pool(x, "pool2")
    x = _conv_bn(x, mode, 384, 3, "conv3")
    x = _conv_bn(x, mode, 384, 3, "conv4", groups=2)
    x = _conv_bn(x, mode, 256, 3, "conv5", groups=2)
    x = max_pool(x, "pool5")
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = dense(mode, 4096, name=f"fc{i}")(x)
        x = batch_norm(name=f"fc{i}_bn")(x)
        x = activation(mode, name=f"fc{i}_relu")(x)
    return classifier(x, num_classes)


def alexnet(
    input_shape: Sequence[int],
    num_classes: int,
    mode: str = "float",
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    **lns_kwargs: Any,
) -> keras.Model:
    """AlexNet for ImageNet as binarized by XNOR-Net and DoReFa-Net (LNS paper, Table 5).

    Args:
        input_shape: `(height, width, channels)`, `(224, 224, 3)` for ImageNet (at least
            about 64×64 for the three poolings).
        num_classes: Number of classes.
        mode: `"float"`, `"bnn"` (the LNS paper's baseline), `"lns"`, `"slb"` or
            `"dorefa"` (see [`apps.models.modes`][apps.models.modes]).
        weight_bits: With `"slb"` (1, 2 or 4) and `"dorefa"` (1 to 8): bits of a weight
            of the quantized layers; default 1.
        activation_bits: With `"slb"` and `"dorefa"`: bits of their inputs, 1 to 8 or 32
            (full precision); default 1.
        **lns_kwargs: With `mode="lns"`, passed to
            [`to_lns`][lns_keras.convert.to_lns] (`alpha`, `rho`, ...). Only the binary
            convolutions get mappings unless `include_dense=True` is passed: the
            mappings of fc6/fc7 would hold about 0.8 G weights.

    Returns:
        An uncompiled model with softmax outputs.

    Raises:
        ValueError: For an unknown `mode`, bit widths the mode does not take, a bad
            `input_shape` or `num_classes`, or LNS arguments without `mode="lns"`.

    Example:
        ```python
        baseline = alexnet((224, 224, 3), 1000, mode="bnn")
        ```
    """
    return build_model(
        _alexnet_body,
        "alexnet",
        input_shape,
        num_classes,
        mode,
        lns_kwargs,
        weight_bits,
        activation_bits,
    )


def _fashion_net_body(inputs, num_classes: int, mode: LayerMode):
    x = inputs
    for i, filters in enumerate((32, 32, 64), start=1):
        x = _conv_bn(x, mode, filters, 3, f"conv{i}", full_precision=i == 1)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return classifier(x, num_classes)


def fashion_net(
    input_shape: Sequence[int],
    num_classes: int,
    mode: str = "float",
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    **lns_kwargs: Any,
) -> keras.Model:
    """A small, fast network for Fashion-MNIST (28×28×1), for demonstrations and tests.

    Args:
        input_shape: `(height, width, channels)`, `(28, 28, 1)` for Fashion-MNIST.
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
        model = fashion_net((28, 28, 1), 10, mode="bnn")
        slb = fashion_net((28, 28, 1), 10, mode="slb", weight_bits=1, activation_bits=1)
        ```
    """
    return build_model(
        _fashion_net_body,
        "fashion_net",
        input_shape,
        num_classes,
        mode,
        lns_kwargs,
        weight_bits,
        activation_bits,
    )
