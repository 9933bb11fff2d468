"""Quantized layers (larq-style) and their LNS twins."""

from lns_keras.layers.lns import LNSQuantConv2D, LNSQuantDense, is_lns_layer
from lns_keras.layers.quantized import QuantConv2D, QuantDense, kernel_scale_factor

__all__ = [
    "LNSQuantConv2D",
    "LNSQuantDense",
    "QuantConv2D",
    "QuantDense",
    "is_lns_layer",
    "kernel_scale_factor",
]
