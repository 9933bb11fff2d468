"""Callbacks for binary training: the flip rate of binary weights (paper Fig. 3c) and the
reach of the classification gradient through the LNS layers' kernel quantizers."""

from __future__ import annotations

import keras
import numpy as np

from lns_keras.layers.quantized import QuantConv2D, QuantDense

__all__ = ["FlipRate", "GradientReach", "binary_signs", "gradient_reach"]


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


def _local_derivative(layer):
    """∂ q(a(z)) / ∂z elementwise at the mapping's raw output z, with `q` the layer's kernel
    quantizer (its pseudo-gradient) and `a` the mapping's output activation."""
    import tensorflow as tf  # the pseudo-gradients are custom gradients: read them by autodiff

    z = tf.convert_to_tensor(layer.mapping.pre_activation(layer.kernel))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer.kernel_quantizer(layer.mapping.activate(z))
    return keras.ops.convert_to_numpy(tape.gradient(out, z, output_gradients=tf.ones_like(out)))


def gradient_reach(model: keras.Model) -> dict[str, dict[str, float]]:
    """How much of the classification gradient reaches each LNS layer's mapping output.

    The classification loss reaches $\\hat Q$ only through the kernel quantizer's
    pseudo-gradient (and, with `mapping_activation="tanh"`, through `tanh`'). For each LNS
    layer this measures that local derivative at every entry of the mapping's output.

    Args:
        model: A model with LNS layers (others are ignored).

    Returns:
        For each LNS layer's name: `reach`, the fraction of entries whose local derivative
        is non-zero (the fraction of mapped weights the classification gradient reaches);
        `scale`, its mean magnitude; `outside`, the fraction of entries with
        $|\\hat Q| > 1$ (where `ste_sign`'s default window passes nothing).

    Raises:
        AttributeError: If `model` is not a Keras model.
    """
    from lns_keras.layers.lns import is_lns_layer

    stats = {}
    for layer in model._flatten_layers(include_self=False):
        if is_lns_layer(layer) and layer.built:
            derivative = np.abs(_local_derivative(layer))
            q_hat = keras.ops.convert_to_numpy(layer.binary_estimate())
            stats[layer.name] = {
                "reach": float(np.mean(derivative > 0)),
                "scale": float(np.mean(derivative)),
                "outside": float(np.mean(np.abs(q_hat) > 1)),
                "size": int(q_hat.size),
            }
    return stats


class GradientReach(keras.callbacks.Callback):
    """Log [`gradient_reach`][lns_keras.callbacks.gradient_reach] at the end of each epoch.

    Adds `gradient_reach` (over all LNS layers, weighted by size), `q_hat_outside` (the
    fraction of $|\\hat Q| > 1$) and, with `per_layer`, `gradient_reach/<layer>` to the
    epoch logs. Models without LNS layers log nothing.

    Args:
        per_layer: Whether to log the per-layer fractions too.

    Raises:
        AttributeError: At the end of an epoch, if the callback is not attached to a
            Keras model.

    Example:
        ```python
        lns_model.fit(ds, epochs=3, callbacks=[lns_keras.callbacks.GradientReach(),
                                               keras.callbacks.CSVLogger("log.csv")])
        ```
    """

    def __init__(self, per_layer: bool = True):
        super().__init__()
        self.per_layer = per_layer

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        stats = gradient_reach(self.model)
        if not stats:
            return
        total = sum(s["size"] for s in stats.values())
        logs["gradient_reach"] = sum(s["reach"] * s["size"] for s in stats.values()) / total
        logs["q_hat_outside"] = sum(s["outside"] * s["size"] for s in stats.values()) / total
        if self.per_layer:
            for name, s in stats.items():
                logs[f"gradient_reach/{name}"] = s["reach"]
