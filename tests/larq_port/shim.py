"""larq's module names on lns_keras: the ported tests' `lq`.

`lq.layers.QuantDense` is `lns_keras.layers.QuantDense`, `lq.quantizers.SteSign` is
`lns_keras.quantizers.SteSign`, and so on: every module larq's tests use has a module of
the same name and contents in lns_keras, except `lq.models`, whose `ModelProfile` (the
per-layer figures larq's summary prints) is answered from `lns_keras.model_stats` by
`larq_port.models`, and `testing_utils`, larq's test helpers, which are our own.
"""

from larq_port import models, testing_utils
from lns_keras import (
    activations,
    callbacks,
    constraints,
    context,
    layers,
    metrics,
    optimizers,
    quantizers,
)

__all__ = [
    "activations",
    "callbacks",
    "constraints",
    "context",
    "layers",
    "metrics",
    "models",
    "optimizers",
    "quantizers",
    "testing_utils",
]
