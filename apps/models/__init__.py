"""Model builders: ResNet-20, Bi-Real ResNet-18, AlexNet, VGG-Small and a Fashion-MNIST net.

Every builder has the signature
`builder(input_shape, num_classes, mode="float", *, weight_bits=None,
activation_bits=None, **lns_kwargs) -> keras.Model`, where `mode` is `"float"` (full
precision), `"bnn"` (the LNS paper's baseline BNN), `"lns"` (that BNN converted with
[`to_lns`][lns_keras.convert.to_lns]), `"slb"` (SLB's searched k-bit weights) or
`"dorefa"` (the straight-through k-bit baseline of SLB); the bit widths apply to the
last two. See [`apps.models.modes`][apps.models.modes]. Models end in a softmax.

```python
from apps.models import get_builder

baseline = get_builder("resnet20")((32, 32, 3), 10, mode="bnn")
# ... train it, then, or later with lns_keras.convert.to_lns(baseline, ...):
lns_model = get_builder("resnet20")((32, 32, 3), 10, mode="lns", alpha=1.0, rho=0.005)
slb_model = get_builder("vgg_small")((32, 32, 3), 10, mode="slb", weight_bits=2,
                                     activation_bits=2)
```
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from apps.models.modes import LNS_DEFAULTS, MODES
from apps.models.plain import alexnet, fashion_net
from apps.models.resnet import resnet18_bireal, resnet20
from apps.models.vgg import vgg_small

__all__ = [
    "BUILDERS",
    "LNS_DEFAULTS",
    "MODES",
    "alexnet",
    "fashion_net",
    "get_builder",
    "resnet18_bireal",
    "resnet20",
    "vgg_small",
]

BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "resnet20": resnet20,
    "resnet18_bireal": resnet18_bireal,
    "alexnet": alexnet,
    "fashion_net": fashion_net,
    "vgg_small": vgg_small,
}


def get_builder(name: str) -> Callable[..., keras.Model]:
    """The model builder called `name`.

    Args:
        name: One of `BUILDERS`: `"resnet20"`, `"resnet18_bireal"`, `"alexnet"`,
            `"fashion_net"`, `"vgg_small"`.

    Returns:
        The builder, `builder(input_shape, num_classes, mode="float", *,
        weight_bits=None, activation_bits=None, **lns_kwargs)`.

    Raises:
        ValueError: If `name` is not a known model; the message lists the known ones.
    """
    try:
        return BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name={name!r}; known models: {sorted(BUILDERS)}."
        ) from None
