"""The zoo layers (QuantConv1D, QuantDepthwiseConv2D, ...) with the rest of the library.

What each tool does with them, decided per tool:

- `convert.is_binary_layer`: true for every quantized layer whose input and weight
  quantizers are all 1-bit, the zoo layers included.
- `convert.to_lns`: converts the binary QuantConv2D / QuantDense (the layers with an LNS
  twin), leaves binary zoo layers as they are with a warning naming them, and refuses a
  model whose only binary layers are zoo layers, naming them.
- `convert.fold`: clones the zoo layers with their weights.
- `callbacks.binary_signs` / `FlipRate`: every 1-bit kernel of every quantized layer,
  both kernels of a separable convolution.
- `summary` / `model_stats`: every zoo layer, in both countings.
- `export.to_tflite`: every zoo layer exports and predicts what Keras predicts, as a
  float file and through larq-compute-engine, which has 1-bit kernels for QuantConv2D
  only and so warns about the others.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import callbacks, convert, export

BINARY = {"input_quantizer": "ste_sign"}
KERNEL = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}
DEPTHWISE = {"depthwise_quantizer": "ste_sign", "depthwise_constraint": "weight_clip"}
POINTWISE = {"pointwise_quantizer": "ste_sign", "pointwise_constraint": "weight_clip"}

# One binary instance of every zoo layer (a function, so that each test gets new ones),
# with the input shape it takes.
ZOO = {
    "QuantConv1D": (
        lambda: lns_keras.QuantConv1D(4, 3, padding="same", **BINARY, **KERNEL),
        (9, 3),
    ),
    "QuantConv3D": (
        lambda: lns_keras.QuantConv3D(4, 3, padding="same", **BINARY, **KERNEL),
        (5, 6, 4, 3),
    ),
    "QuantDepthwiseConv2D": (
        lambda: lns_keras.QuantDepthwiseConv2D(
            3, padding="same", pad_values=1.0, depth_multiplier=2, **BINARY, **DEPTHWISE
        ),
        (7, 6, 3),
    ),
    "QuantSeparableConv1D": (
        lambda: lns_keras.QuantSeparableConv1D(
            4, 3, padding="same", **BINARY, **DEPTHWISE, **POINTWISE
        ),
        (9, 3),
    ),
    "QuantSeparableConv2D": (
        lambda: lns_keras.QuantSeparableConv2D(
            4, 3, padding="same", pad_values=1.0, **BINARY, **DEPTHWISE, **POINTWISE
        ),
        (7, 6, 3),
    ),
    "QuantConv2DTranspose": (
        lambda: lns_keras.QuantConv2DTranspose(4, 3, strides=2, padding="same", **BINARY, **KERNEL),
        (5, 4, 3),
    ),
    "QuantConv3DTranspose": (
        lambda: lns_keras.QuantConv3DTranspose(4, 3, strides=2, **BINARY, **KERNEL),
        (3, 4, 2, 3),
    ),
    "QuantLocallyConnected1D": (
        lambda: lns_keras.QuantLocallyConnected1D(4, 3, **BINARY, **KERNEL),
        (9, 3),
    ),
    "QuantLocallyConnected2D": (
        lambda: lns_keras.QuantLocallyConnected2D(4, 3, strides=2, **BINARY, **KERNEL),
        (7, 6, 3),
    ),
}


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _zoo_model(name: str) -> keras.Model:
    """A model of the one zoo layer `name`, with random weights."""
    make, shape = ZOO[name]
    inputs = keras.Input(shape)
    model = keras.Model(inputs, make()(inputs))
    for i, weight in enumerate(model.weights):
        weight.assign(_random(weight.shape, seed=i + 1))
    return model


def test_zoo_covers_every_layer_of_the_zoo_module():
    assert set(ZOO) == set(lns_keras.layers.zoo.__all__)


# ------------------------------------------------------------------ is_binary_layer


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_binary_zoo_layer_is_a_binary_layer(name):
    layer = ZOO[name][0]()
    assert convert.is_binary_layer(layer)
    # A float input makes it a layer with binary weights only, not a binary layer.
    config = {**layer.get_config(), "input_quantizer": None}
    assert not convert.is_binary_layer(type(layer).from_config(config))


def test_is_binary_layer_needs_every_weight_quantizer_binary():
    half = lns_keras.QuantSeparableConv2D(
        4, 3, **BINARY, **DEPTHWISE, pointwise_quantizer="ste_tern"
    )
    assert not convert.is_binary_layer(half)
    assert not convert.is_binary_layer(lns_keras.QuantDepthwiseConv2D(3, **BINARY))
    assert not convert.is_binary_layer(keras.layers.Conv1D(4, 3))
    assert not convert.is_binary_layer("QuantConv1D")
    # The layers it always covered still count.
    assert convert.is_binary_layer(lns_keras.QuantDense(4, **BINARY, **KERNEL))
    assert convert.is_binary_layer(lns_keras.LNSQuantConv2D(4, 3, **BINARY))
    assert not convert.is_binary_layer(lns_keras.SLBQuantConv2D(4, 3, **BINARY))


# ------------------------------------------------------------------ to_lns and fold


def _mixed_baseline() -> keras.Model:
    """A binary QuantConv2D between two binary zoo layers, and a float head."""
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = lns_keras.QuantDepthwiseConv2D(3, padding="same", name="dw", **BINARY, **DEPTHWISE)(h)
    h = lns_keras.QuantConv2D(4, 3, padding="same", name="conv", **BINARY, **KERNEL)(h)
    h = lns_keras.QuantSeparableConv2D(
        4, 3, padding="same", name="sep", **BINARY, **DEPTHWISE, **POINTWISE
    )(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, outputs, name="mixed")
    for i, weight in enumerate(model.weights):
        weight.assign(_random(weight.shape, seed=10 + i))
    return model


def test_to_lns_converts_conv2d_and_names_the_zoo_layers_it_leaves():
    baseline = _mixed_baseline()
    with pytest.warns(UserWarning, match=r"leaves the binary layers .*dw \(QuantDepthwiseConv2D\)"):
        lns_model = convert.to_lns(baseline)
    layers = {layer.name: layer for layer in lns_model.layers}
    assert type(layers["conv"]) is lns_keras.LNSQuantConv2D
    for name, cls in (
        ("dw", lns_keras.QuantDepthwiseConv2D),
        ("sep", lns_keras.QuantSeparableConv2D),
    ):
        assert type(layers[name]) is cls
        for new, old in zip(layers[name].get_weights(), baseline.get_layer(name).get_weights()):
            np.testing.assert_array_equal(new, old)


def test_to_lns_warning_names_every_layer_left():
    with pytest.warns(UserWarning) as record:
        convert.to_lns(_mixed_baseline())
    (message,) = [str(w.message) for w in record if "to_lns" in str(w.message)]
    assert "dw (QuantDepthwiseConv2D)" in message and "sep (QuantSeparableConv2D)" in message
    assert "conv (" not in message


def test_to_lns_without_zoo_layers_does_not_warn():
    inputs = keras.Input((6, 6, 2))
    outputs = lns_keras.QuantConv2D(2, 3, **BINARY, **KERNEL)(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        convert.to_lns(keras.Model(inputs, outputs))


def test_to_lns_refuses_a_model_whose_binary_layers_have_no_twin():
    model = _zoo_model("QuantConv1D")
    layer = model.layers[-1]
    with pytest.raises(
        ValueError,
        match=rf"no binary QuantConv2D/QuantDense to convert; its binary layers "
        rf"\['{layer.name} \(QuantConv1D\)'\] have no LNS twin",
    ):
        convert.to_lns(model)


def test_fold_keeps_the_zoo_layers_and_predicts_what_the_lns_model_predicts():
    with pytest.warns(UserWarning, match="leaves the binary layers"):
        lns_model = convert.to_lns(_mixed_baseline())
    folded = convert.fold(lns_model)
    layers = {layer.name: layer for layer in folded.layers}
    assert type(layers["conv"]) is lns_keras.QuantConv2D
    assert type(layers["dw"]) is lns_keras.QuantDepthwiseConv2D
    assert type(layers["sep"]) is lns_keras.QuantSeparableConv2D
    x = _random((3, 8, 8, 3), seed=5)
    np.testing.assert_allclose(
        folded.predict(x, verbose=0), lns_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------ binary_signs, FlipRate


def test_binary_signs_has_every_binary_kernel():
    model = _mixed_baseline()
    signs = callbacks.binary_signs(model)
    assert sorted(signs) == ["conv", "dw", "sep/depthwise_kernel", "sep/pointwise_kernel"]
    sep = model.get_layer("sep")
    np.testing.assert_array_equal(signs["sep/pointwise_kernel"], sep.pointwise_kernel.numpy() >= 0)
    np.testing.assert_array_equal(signs["dw"], model.get_layer("dw").kernel.numpy() >= 0)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_binary_signs_of_each_zoo_layer(name):
    model = _zoo_model(name)
    layer = model.layers[-1]
    kernels = layer.binary_kernel()
    kernels = kernels if isinstance(kernels, tuple) else (kernels,)
    signs = callbacks.binary_signs(model)
    assert len(signs) == len(kernels)
    for sign, kernel in zip(signs.values(), kernels, strict=True):
        np.testing.assert_array_equal(sign, keras.ops.convert_to_numpy(kernel) > 0)


def test_flip_rate_counts_the_flips_of_every_binary_kernel():
    model = _mixed_baseline()
    flip_rate = callbacks.FlipRate()
    flip_rate.set_model(model)
    flip_rate.on_train_begin()
    # Flip the sign of exactly the first k entries of each binary kernel.
    flipped = {"conv": 5, "dw": 2, "sep/depthwise_kernel": 3, "sep/pointwise_kernel": 0}
    variables = {
        "conv": model.get_layer("conv").kernel,
        "dw": model.get_layer("dw").kernel,
        "sep/depthwise_kernel": model.get_layer("sep").depthwise_kernel,
        "sep/pointwise_kernel": model.get_layer("sep").pointwise_kernel,
    }
    for name, variable in variables.items():
        values = variable.numpy().ravel()
        values[: flipped[name]] = -np.where(values[: flipped[name]] >= 0, 0.5, -0.5)
        variable.assign(values.reshape(variable.shape))
    logs = {}
    flip_rate.on_epoch_end(0, logs)
    sizes = {name: int(np.prod(v.shape)) for name, v in variables.items()}
    assert logs["flip_rate"] == pytest.approx(sum(flipped.values()) / sum(sizes.values()))
    for name in variables:
        assert logs[f"flip_rate/{name}"] == pytest.approx(flipped[name] / sizes[name])
        assert logs[f"flip_rate_total/{name}"] == pytest.approx(flipped[name] / sizes[name])


def test_flip_rate_logs_zoo_layers_during_fit():
    model = _zoo_model("QuantSeparableConv1D")
    model.compile(optimizer=keras.optimizers.SGD(10.0), loss="mse")
    x = _random((8, 9, 3), seed=1)
    y = _random((8, 9, 4), seed=2)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callbacks.FlipRate()])
    name = model.layers[-1].name
    assert f"flip_rate/{name}/depthwise_kernel" in history.history
    assert f"flip_rate/{name}/pointwise_kernel" in history.history
    assert max(history.history["flip_rate"]) > 0  # a large step flips signs


# ------------------------------------------------------------------ summary


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_stats_counts_each_zoo_layer_in_both_countings(name):
    model = _zoo_model(name)
    ours = lns_keras.model_stats(model)
    assert ours.total_params == model.count_params()
    assert ours.params_1bit > 0 and ours.binary_macs > 0 and not ours.unknown_macs
    larq = lns_keras.model_stats(model, compat="larq")
    assert larq.params_1bit == ours.params_1bit
    # larq 0.14 does not count the MACs of 3D and locally connected layers.
    larq_counts = not ("3D" in name or "LocallyConnected" in name)
    assert (larq.unknown_macs == ()) is larq_counts


# ------------------------------------------------------------------ export


def _tflite_predict(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("name", sorted(ZOO))
def test_each_zoo_layer_exports_and_predicts_like_keras(name, tmp_path):
    from lce_interpreter import Interpreter  # LCE's, in the numpy<2 oracle env

    model = _zoo_model(name)
    layer = model.layers[-1]
    x = _random((1, *ZOO[name][1]), seed=3)
    expected = model.predict(x, verbose=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a float file: nothing to warn about
        float_path = export.to_tflite(model, tmp_path / "float.tflite", lce=False)
    flatbuffer = (tmp_path / "float.tflite").read_bytes()
    assert float_path == str(tmp_path / "float.tflite")
    np.testing.assert_allclose(_tflite_predict(flatbuffer, x), expected, rtol=0, atol=1e-5)

    with pytest.warns(UserWarning, match=rf"{layer.name} \({name}\).* float operations"):
        export.to_tflite(model, tmp_path / "lce.tflite", lce=True)
    flatbuffer = (tmp_path / "lce.tflite").read_bytes()
    assert "LceBconv2d" not in export.tflite_op_names(flatbuffer)
    np.testing.assert_allclose(Interpreter(flatbuffer).predict(x), expected, rtol=0, atol=1e-5)


def test_lce_export_of_binary_conv2d_alone_does_not_warn(tmp_path):
    inputs = keras.Input((8, 8, 8))
    outputs = lns_keras.QuantConv2D(8, 3, use_bias=False, **BINARY, **KERNEL)(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        export.to_tflite(keras.Model(inputs, outputs), tmp_path / "m.tflite", lce=True)
    assert "LceBconv2d" in export.tflite_op_names((tmp_path / "m.tflite").read_bytes())


def test_to_lns_and_fold_return_uncompiled_models_without_touching_the_optimizer():
    """Keras's clone_model would compile the clone with a copy of the optimizer."""
    baseline = _mixed_baseline()
    baseline.compile(
        optimizer=lns_keras.optimizers.CaseOptimizer(
            (lns_keras.optimizers.Bop.is_binary_variable, lns_keras.optimizers.Bop()),
            default_optimizer=keras.optimizers.Adam(),
        ),
        loss="mse",
    )
    baseline.fit(_random((4, 8, 8, 3), seed=1), _random((4, 2), seed=2), verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lns_model = convert.to_lns(baseline)
        folded = convert.fold(lns_model)
    assert [str(w.message) for w in caught if "to_lns" not in str(w.message)] == []
    assert baseline.compiled and not lns_model.compiled and not folded.compiled
