"""The Keras 2 backend helpers larq's tests call, on Keras 3.

Keras 2's `tf.keras.backend` built graphs by hand: a `placeholder`, a tensor computed
from it, and a `function` that feeds values in. Keras 3's counterpart is a symbolic
input (`keras.Input`) and a functional model, which is what these helpers build. The
rest read or make values (`get_value`, `eval`, `variable`) or reset Keras's state.
"""

from __future__ import annotations

import types

import keras
import numpy as np


def placeholder(shape=None, ndim=None, dtype="float32"):
    """A symbolic input of `shape`, or of `ndim` unknown dimensions (batch included)."""
    if shape is None:
        shape = (None,) * ndim
    return keras.Input(batch_shape=tuple(shape), dtype=dtype)


def function(inputs, outputs):
    """A callable that maps a list of input values to the list of output values."""
    model = keras.Model(inputs, outputs)

    def run(values):
        results = model(values[0] if len(inputs) == 1 else list(values))
        if len(outputs) == 1:
            results = [results]
        return [keras.ops.convert_to_numpy(r) for r in results]

    return run


def get_value(x):
    """The value of a variable or tensor as a NumPy array (or a plain Python number)."""
    return keras.ops.convert_to_numpy(x)


eval = get_value  # noqa: A001 (Keras 2's name)


def variable(value, dtype=None):
    """A Keras variable holding `value`."""
    return keras.Variable(np.asarray(value), dtype=dtype)


def clear_session():
    """Reset Keras's global state (layer names included)."""
    keras.backend.clear_session()


def _mnist_load_data():
    """MNIST's shapes and dtypes, random: larq's tests fit one image, never learn digits."""
    rng = np.random.default_rng(0)

    def split(n):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        return images, rng.integers(0, 10, size=(n,), dtype=np.uint8)

    return split(8), split(2)


mnist = types.SimpleNamespace(load_data=_mnist_load_data)


def _dropped(name: str) -> type:
    """A stand-in for a Keras 2 layer that Keras 3 dropped: making one fails, naming it."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"Keras 3 has no {name} layer (Keras 2 had it).")

    return type(name, (), {"__init__": __init__})


LocallyConnected1D = _dropped("LocallyConnected1D")
LocallyConnected2D = _dropped("LocallyConnected2D")
