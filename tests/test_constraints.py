"""`"weight_clip"` by name, in lns_keras's layers and in plain Keras ones (larq's usage).

Keras 3's `keras.constraints.get` reads strings from its own table of built-ins only;
importing lns_keras adds `"weight_clip"` and `"WeightClip"` there (lns_keras/_keras_names.py).
These tests fail if a Keras version moves that table, instead of users finding out.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import lns_keras
from lns_keras import constraints


@pytest.mark.parametrize("name", ["weight_clip", "WeightClip"])
def test_keras_constraints_get_knows_the_name(name):
    constraint = keras.constraints.get(name)
    assert isinstance(constraint, constraints.WeightClip)
    assert constraint.clip_value == 1.0
    # A new object each time, as Keras gives for its own names.
    assert keras.constraints.get(name) is not constraint


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.Dense(3, kernel_constraint="weight_clip"),
        lambda: keras.layers.Conv2D(3, 1, kernel_constraint="weight_clip"),
        lambda: keras.layers.DepthwiseConv2D(1, depthwise_constraint="weight_clip"),
    ],
    ids=["Dense", "Conv2D", "DepthwiseConv2D"],
)
def test_plain_keras_layers_take_it_by_name(make):
    layer = make()
    name = "depthwise_constraint" if hasattr(layer, "depthwise_constraint") else "kernel_constraint"
    assert isinstance(getattr(layer, name), constraints.WeightClip)


def test_dense_with_weight_clip_clips_trains_and_saves(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, kernel_constraint="weight_clip")]
    )
    model.layers[0].kernel.assign(np.full((4, 3), 0.99, "float32"))
    model.compile(optimizer=keras.optimizers.SGD(10.0), loss="mse")
    model.fit(np.ones((8, 4), "float32"), np.full((8, 3), -50.0, "float32"), verbose=0)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert np.abs(kernel).max() <= 1.0 and kernel.min() == pytest.approx(-1.0)
    model.save(tmp_path / "dense.keras")
    loaded = keras.saving.load_model(tmp_path / "dense.keras", safe_mode=True)
    assert isinstance(loaded.layers[0].kernel_constraint, constraints.WeightClip)
    config = model.layers[0].get_config()["kernel_constraint"]
    assert config["registered_name"] == "lns_keras>WeightClip"


def test_keras_names_are_not_replaced():
    assert isinstance(keras.constraints.get("non_neg"), keras.constraints.NonNeg)
    from lns_keras._keras_names import add_builtin_name

    assert add_builtin_name("constraints", "non_neg", constraints.WeightClip) is False
    assert isinstance(keras.constraints.get("non_neg"), keras.constraints.NonNeg)


def test_our_get_and_keras_get_agree():
    for identifier in ("weight_clip", "max_norm", None, constraints.WeightClip(0.5)):
        ours, theirs = constraints.get(identifier), keras.constraints.get(identifier)
        assert type(ours) is type(theirs)
    with pytest.raises(ValueError, match="weight_clipp"):
        keras.constraints.get("weight_clipp")


def test_leaky_tanh_by_name_in_plain_keras():
    """The other larq name Keras 3's tables learn: `leaky_tanh` (lns_keras.activations)."""
    assert keras.activations.get("leaky_tanh") is lns_keras.activations.leaky_tanh
    layer = keras.layers.Activation("leaky_tanh")
    y = keras.ops.convert_to_numpy(layer(np.array([-3.0, 0.5, 2.0], "float32")))
    np.testing.assert_allclose(y, [-1.4, 0.5, 1.2], rtol=1e-6)
    assert lns_keras.activations.hard_tanh is keras.activations.hard_tanh
