"""lns_keras: binary neural networks in Keras 3, trained with Learning with Noisy Supervision.

```python
import lns_keras

layer = lns_keras.LNSQuantConv2D(64, 3, padding="same", alpha=1.0, rho=0.005)
```
"""

from lns_keras import (
    activations,
    callbacks,
    compat,
    constraints,
    context,
    convert,
    export,
    kbit,
    losses,
    metrics,
    models,
    optimizers,
    quantizers,
    slb,
)
from lns_keras.layers import LNSQuantConv2D, LNSQuantDense, QuantConv2D, QuantDense
from lns_keras.layers.slb import SLBQuantConv2D, SLBQuantDense
from lns_keras.layers.zoo import (
    QuantConv1D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantConv3DTranspose,
    QuantDepthwiseConv2D,
    QuantLocallyConnected1D,
    QuantLocallyConnected2D,
    QuantSeparableConv1D,
    QuantSeparableConv2D,
)
from lns_keras.mapping import BinarizationMapping
from lns_keras.summary import model_stats, summary

__version__ = "0.1.0"

__all__ = [
    "BinarizationMapping",
    "LNSQuantConv2D",
    "LNSQuantDense",
    "QuantConv1D",
    "QuantConv2D",
    "QuantConv2DTranspose",
    "QuantConv3D",
    "QuantConv3DTranspose",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantLocallyConnected1D",
    "QuantLocallyConnected2D",
    "QuantSeparableConv1D",
    "QuantSeparableConv2D",
    "SLBQuantConv2D",
    "SLBQuantDense",
    "activations",
    "callbacks",
    "compat",
    "constraints",
    "context",
    "convert",
    "export",
    "kbit",
    "losses",
    "metrics",
    "model_stats",
    "models",
    "optimizers",
    "quantizers",
    "slb",
    "summary",
]
