"""Keras 3's post-training quantization (`model.quantize("int8")`) and lns_keras layers.

Decision (docs/guide/quantizers-and-layers.md): a full-precision `QuantDense` (no
quantizer, no `kernel_scale`) is a `keras.layers.Dense` and is quantized as one; a layer
with a quantizer is left as it is, with a warning that says why, never silently.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import lns_keras

BINARY = {
    "input_quantizer": "ste_sign",
    "kernel_quantizer": "ste_sign",
    "kernel_constraint": "weight_clip",
}


def _model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8,)),
            lns_keras.QuantDense(6, **BINARY, name="binary"),
            lns_keras.QuantDense(5, activation="relu", name="full_precision"),
            keras.layers.Dense(3, name="keras_dense"),
        ]
    )


def _quantize(model) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.quantize("int8")
    return [str(w.message) for w in caught]


def test_full_precision_quant_dense_is_quantized_as_keras_dense():
    rng = np.random.default_rng(0)
    model = _model()
    twin = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)]
    )
    full_precision = model.get_layer("full_precision")
    # The same weights in a plain Keras Dense: the int8 results must be identical.
    twin.layers[0].set_weights(full_precision.get_weights())
    twin.layers[1].set_weights(model.get_layer("keras_dense").get_weights())
    x = rng.normal(size=(16, 8)).astype("float32")
    hidden = keras.ops.convert_to_numpy(model.get_layer("binary")(x))
    before = model.predict(x, verbose=0)
    messages = _quantize(model)
    twin.quantize("int8")

    assert full_precision.quantization_mode == "int8"
    assert keras.backend.standardize_dtype(full_precision.kernel.dtype) == "int8"
    after = model.predict(x, verbose=0)
    np.testing.assert_array_equal(after, twin.predict(hidden, verbose=0))
    assert not np.array_equal(after, before)  # int8 rounding changed something ...
    np.testing.assert_allclose(after, before, atol=0.1)  # ... a little

    # The binary layer is left as it is, and a warning says so (no silent skip).
    assert model.get_layer("binary").quantization_mode is None
    assert any("SteSign" in m and "leaves that layer as it is" in m for m in messages)


def test_quantized_model_saves_loads_and_counts_8_bits(tmp_path):
    model = _model()
    _quantize(model)
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    model.save(tmp_path / "int8.keras")
    loaded = keras.saving.load_model(tmp_path / "int8.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("full_precision").get_config()["kernel_scale"] is None
    # model_stats counts the int8 kernels at 8 bits (6*5 + 5*3 weights).
    stats = lns_keras.model_stats(loaded)
    assert stats.params[8] == 6 * 5 + 5 * 3
    assert stats.params[1] == 8 * 6


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}, "kernel_quantizer"),
        ({"input_quantizer": lns_keras.quantizers.ste_sign}, "input_quantizer"),
        ({"kernel_scale": "layer"}, "kernel_scale"),
    ],
)
def test_layer_with_a_quantizer_is_refused_by_name(kwargs, named):
    layer = lns_keras.QuantDense(4, **kwargs, name="q")
    layer.build((None, 8))
    with pytest.raises(NotImplementedError, match=named):
        layer.quantize("int8")
    assert layer.quantization_mode is None


def test_function_quantizer_layer_is_skipped_loudly():
    """A layer whose quantizer is a function has no sublayer: Keras calls its quantize."""
    model = keras.Sequential(
        [keras.Input((8,)), lns_keras.QuantDense(4, input_quantizer=lns_keras.quantizers.ste_sign)]
    )
    messages = _quantize(model)
    assert model.layers[0].quantization_mode is None
    assert any("input_quantizer" in m and "left as it is" in m for m in messages)


def test_lns_layer_is_not_quantized():
    model = keras.Sequential([keras.Input((8,)), lns_keras.LNSQuantDense(4, name="lns")])
    messages = _quantize(model)
    assert model.get_layer("lns").quantization_mode is None
    assert messages  # its quantizers say why
