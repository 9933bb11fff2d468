"""Callbacks for binary training: the flip rate of binary weights (paper Fig. 3c)."""

from __future__ import annotations

import keras
import numpy as np

from lns_keras.layers.quantized import QuantConv2D, QuantDense

__all__ = ["FlipRate", "binary_signs"]


def binary_signs(model: keras.Model) -> dict[str, np.ndarray]:
    """The signs of every 1-bit kernel: `sign(W)` for plain layers, `sign(Q̂)` for LNS ones.

    Args:
        model: A Keras model.

    Returns:
        A dict from layer name to a boolean array (`True` where the binary weight is +1).

    Raises:
        AttributeError: If `model` is not a Keras model or layer.
    """
    signs = {}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, QuantConv2D | QuantDense) and layer.built:
            if getattr(layer.kernel_quantizer, "precision", None) == 1:
                signs[layer.name] = keras.ops.convert_to_numpy(layer.binary_kernel()) > 0
    return signs


def _rate(before: dict, after: dict, names) -> float:
    changed = sum(int(np.sum(before[n] != after[n])) for n in names)
    total = sum(after[n].size for n in names)
    return changed / total if total else 0.0


class FlipRate(keras.callbacks.Callback):
    """Log the fraction of binary weights whose sign changed, each epoch.

    Adds to the epoch logs (so `CSVLogger`, `TensorBoard` and `History` see them, when
    this callback comes before them in the list):

    - `flip_rate`: changed since the previous epoch (paper Fig. 3c), over all 1-bit kernels;
    - `flip_rate_total`: changed since training began (or since `reference`);
    - `flip_rate/<layer>` and `flip_rate_total/<layer>`: the same per layer.

    Args:
        reference: Signs to measure `flip_rate_total` against, e.g.
            `binary_signs(pretrained_baseline)`; default: the signs when training begins.
        per_layer: Whether to log the per-layer rates.

    Raises:
        ValueError: From NumPy, at the end of an epoch, if `reference` holds signs whose
            shape does not broadcast against the layer's binary kernel.

    Example:
        ```python
        model.fit(ds, epochs=10, callbacks=[lns_keras.callbacks.FlipRate(),
                                            keras.callbacks.CSVLogger("log.csv")])
        ```
    """

    def __init__(self, reference: dict[str, np.ndarray] | None = None, per_layer: bool = True):
        super().__init__()
        self.reference = reference
        self.per_layer = per_layer
        self._previous: dict[str, np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        self._previous = binary_signs(self.model)
        if self.reference is None:
            self.reference = dict(self._previous)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        current = binary_signs(self.model)
        names = [n for n in current if n in self._previous and n in self.reference]
        logs["flip_rate"] = _rate(self._previous, current, names)
        logs["flip_rate_total"] = _rate(self.reference, current, names)
        if self.per_layer:
            for name in names:
                logs[f"flip_rate/{name}"] = _rate(self._previous, current, [name])
                logs[f"flip_rate_total/{name}"] = _rate(self.reference, current, [name])
        self._previous = current
