"""Quantized layers (larq-style) and their LNS twins."""

from lns_keras.layers.lns import LNSQuantConv2D, LNSQuantDense, is_lns_layer
from lns_keras.layers.quantized import QuantConv2D, QuantDense, kernel_scale_factor
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

__all__ = [
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
    "is_lns_layer",
    "kernel_scale_factor",
]
