"""QuantConv2D / QuantDense: Keras equivalence, quantized arithmetic, constraint, saving, export."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import constraints, export, quantizers


def _random(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    weights = [_random(w.shape, seed=i + 1) for i, w in enumerate(source.weights)]
    source.set_weights(weights)
    target.set_weights(weights)


def _sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


# --------------------------------------------------------------------------- channels_first
#
# TensorFlow's CPU Conv2D kernels take NCHW only when oneDNN is on, which TF does by default
# only on AVX-512-class CPUs; elsewhere `keras.layers.Conv2D(data_format="channels_first")`
# itself raises `UnimplementedError`. QuantConv2D deliberately fails the same way rather than
# transposing to NHWC behind the user's back: a fallback chosen by the machine that traces
# the graph would put transposes into saved and exported graphs (and, once built, keep them
# on a GPU), and would make the layer differ from the Keras layer it claims to equal.
# So the tests run every channels_first case twice: "xla" under `jit_compile=True`, which
# XLA runs in NCHW on any CPU, and "eager", which needs the backend's own NCHW kernels and
# is skipped, naming that limit, where they are missing. The child-process test at the end
# of this section forces the no-oneDNN condition so every CI machine covers it.

NCHW_SKIP_REASON = (
    "TensorFlow has no eager NCHW Conv2D kernel here: its CPU kernels take NCHW only with "
    "oneDNN (TF_ENABLE_ONEDNN_OPTS=1, on by default only on AVX-512-class CPUs) and no GPU "
    "is visible; the 'xla' case of this test runs channels_first on this machine"
)
EXECUTION_MODES = ("eager", "xla")


@functools.cache
def _nchw_conv_runs_eagerly() -> bool:
    """Whether TensorFlow runs an NCHW Conv2D outside XLA here (a GPU, or a CPU with oneDNN)."""
    try:
        tf.nn.conv2d(tf.zeros((1, 1, 2, 2)), tf.zeros((1, 1, 1, 1)), 1, "VALID", "NCHW")
    except tf.errors.UnimplementedError:
        return False
    return True


def _call(layer: keras.layers.Layer, x: np.ndarray, mode: str) -> np.ndarray:
    """`layer(x)` as a NumPy array, eagerly or compiled by XLA (`mode`: "eager" or "xla")."""
    if mode == "xla":
        return keras.ops.convert_to_numpy(tf.function(layer, jit_compile=True)(x))
    if getattr(layer, "data_format", None) == "channels_first" and not _nchw_conv_runs_eagerly():
        pytest.skip(NCHW_SKIP_REASON)
    return keras.ops.convert_to_numpy(layer(x))


# --------------------------------------------------------------------------- Keras equivalence

CONV_CONFIGS = [
    {},
    {"strides": 2, "padding": "same"},
    {"strides": (2, 1), "padding": "valid", "use_bias": False},
    {"dilation_rate": 2, "padding": "same", "activation": "relu"},
    {"padding": "valid", "use_bias": True, "activation": "tanh", "data_format": "channels_last"},
    {"kernel_size": 1, "use_bias": False},
    {"data_format": "channels_first", "strides": 2, "padding": "same"},
]


CONV_CASES = [
    pytest.param(config, mode, id=f"{config or 'default'}-{mode}")
    for config in CONV_CONFIGS
    for mode in (EXECUTION_MODES if config.get("data_format") == "channels_first" else ["eager"])
]


@pytest.mark.parametrize("config, mode", CONV_CASES)
def test_quant_conv2d_without_quantizers_is_conv2d(config, mode):
    config = {"kernel_size": 3, **config}
    x = _random((2, 9, 9, 3), scale=2.0)
    ours = lns_keras.QuantConv2D(4, **config)
    reference = keras.layers.Conv2D(4, **config)
    ours.build(x.shape)
    reference.build(x.shape)
    _copy_weights(reference, ours)
    expected = _call(reference, x, mode)
    actual = _call(ours, x, mode)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


DENSE_CONFIGS = [
    {},
    {"use_bias": False},
    {"activation": "relu"},
    {"activation": "sigmoid", "use_bias": True},
]


@pytest.mark.parametrize("config", DENSE_CONFIGS, ids=lambda c: str(c) or "default")
@pytest.mark.parametrize("input_shape", [(3, 7), (2, 3, 7)])
def test_quant_dense_without_quantizers_is_dense(config, input_shape):
    x = _random(input_shape, scale=2.0)
    ours = lns_keras.QuantDense(5, **config)
    reference = keras.layers.Dense(5, **config)
    ours.build(x.shape)
    reference.build(x.shape)
    _copy_weights(reference, ours)
    expected = keras.ops.convert_to_numpy(reference(x))
    actual = keras.ops.convert_to_numpy(ours(x))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- quantized arithmetic

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _binary_conv_by_hand(x, kernel, bias=None, **config):
    """Keras Conv2D applied to sign(x) with the kernel sign(W)."""
    reference = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], use_bias=False, **config)
    reference.build(x.shape)
    reference.set_weights([_sign(kernel)])
    out = keras.ops.convert_to_numpy(reference(_sign(x)))
    return out if bias is None else out + bias


def _binary_conv(kernel_scale, **config):
    x = _random((2, 6, 6, 3), scale=1.5)
    x[0, 0, 0, :] = 0.0  # sign(0) = +1 on both sides
    layer = lns_keras.QuantConv2D(
        4,
        3,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_scale=kernel_scale,
        use_bias=False,
        **config,
    )
    layer.build(x.shape)
    kernel = _random(layer.kernel.shape, seed=5)
    kernel[0, 0, 0, :] = 0.0
    layer.set_weights([kernel])
    return x, kernel, keras.ops.convert_to_numpy(layer(x))


@pytest.mark.parametrize("config", [{}, {"padding": "same", "strides": 2}])
def test_binary_conv_is_conv_of_signs(config):
    x, kernel, actual = _binary_conv(None, **config)
    expected = _binary_conv_by_hand(x, kernel, **config)
    # Sums of ±1 are integers: exact.
    np.testing.assert_array_equal(actual, expected)
    assert np.all(actual == np.round(actual))


def test_binary_conv_layer_scale():
    x, kernel, actual = _binary_conv("layer")
    scale = np.mean(np.abs(kernel))
    expected = _binary_conv_by_hand(x, kernel) * scale
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_binary_conv_channel_scale():
    x, kernel, actual = _binary_conv("channel")
    scale = np.mean(np.abs(kernel), axis=(0, 1, 2))
    assert scale.shape == (4,)
    expected = _binary_conv_by_hand(x, kernel) * scale
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    # The per-channel scales differ, so a single scale would not do.
    layer_scaled = _binary_conv_by_hand(x, kernel) * np.mean(np.abs(kernel))
    assert not np.allclose(actual, layer_scaled, atol=1e-3)


@pytest.mark.parametrize("mode", EXECUTION_MODES)
@pytest.mark.parametrize("kernel_scale", [None, "layer", "channel"])
def test_binary_conv_channels_first_is_channels_last_transposed(kernel_scale, mode):
    x = _random((2, 6, 6, 3), scale=1.5)
    config = {**BINARY, "kernel_scale": kernel_scale, "padding": "same"}
    last = lns_keras.QuantConv2D(4, 3, **config)
    first = lns_keras.QuantConv2D(4, 3, data_format="channels_first", **config)
    last.build(x.shape)
    first.build((2, 3, 6, 6))
    weights = [_random(last.kernel.shape, seed=1), _random((4,), seed=2)]
    last.set_weights(weights)
    first.set_weights(weights)
    expected = keras.ops.convert_to_numpy(last(x))
    actual = _call(first, np.transpose(x, (0, 3, 1, 2)), mode)
    np.testing.assert_allclose(np.transpose(actual, (0, 2, 3, 1)), expected, atol=1e-5)


def test_channels_first_cases_pass_in_a_child_without_onednn(tmp_path):
    """The channels_first cases in a Python where TF cannot run NCHW eagerly, as on most CPUs.

    The child turns oneDNN off and hides any GPU, so whatever CPU runs this test, the "xla"
    cases must pass there and the "eager" ones be skipped for the platform limit (no silent
    pass and no failure).
    """
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-k",
            "channels_first and not child_without_onednn",
            __file__,
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        children = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = (
            (children[0].tag, children[0].get("message", "")) if children else ("passed", "")
        )
    xla = {name: o for name, o in outcomes.items() if name.endswith("-xla]")}
    eager = {name: o for name, o in outcomes.items() if name.endswith("-eager]")}
    # One channels_first Conv2D equivalence case and three binary-conv scales.
    assert len(xla) == len(eager) == 4, outcomes
    assert all(outcome == "passed" for outcome, _ in xla.values()), xla
    assert all(
        outcome == "skipped" and "oneDNN" in message for outcome, message in eager.values()
    ), eager


def test_binary_conv_with_bias_and_activation():
    x = _random((1, 5, 5, 2))
    layer = lns_keras.QuantConv2D(
        3, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", activation="relu"
    )
    layer.build(x.shape)
    kernel, bias = _random(layer.kernel.shape, seed=2), _random((3,), seed=3)
    layer.set_weights([kernel, bias])
    expected = np.maximum(_binary_conv_by_hand(x, kernel, bias), 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6)


@pytest.mark.parametrize("kernel_scale", [None, "layer", "channel"])
def test_binary_dense_by_hand(kernel_scale):
    x = _random((3, 6), scale=1.5)
    x[0, 0] = 0.0
    layer = lns_keras.QuantDense(
        4,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_scale=kernel_scale,
    )
    layer.build(x.shape)
    kernel, bias = _random((6, 4), seed=7), _random((4,), seed=8)
    layer.set_weights([kernel, bias])
    scale = {
        None: 1.0,
        "layer": np.mean(np.abs(kernel)),
        "channel": np.mean(np.abs(kernel), axis=0),
    }[kernel_scale]
    expected = _sign(x) @ _sign(kernel) * scale + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


def test_bad_kernel_scale_is_named():
    with pytest.raises(ValueError, match="kernel_scale"):
        lns_keras.QuantConv2D(4, 3, kernel_scale="filter")
    with pytest.raises(ValueError, match="kernel_scale"):
        lns_keras.QuantDense(4, kernel_scale="global")


def test_unknown_quantizer_name_in_layer():
    with pytest.raises(ValueError, match="ste_sing"):
        lns_keras.QuantDense(4, kernel_quantizer="ste_sing")


def test_gradient_reaches_latent_kernel_through_ste():
    layer = lns_keras.QuantDense(2, kernel_quantizer="ste_sign", use_bias=False)
    layer.build((1, 3))
    layer.set_weights([np.array([[0.5, -2.0], [0.2, 0.1], [-0.3, 1.5]], np.float32)])
    x = tf.constant([[1.0, -1.0, 2.0]])
    with tf.GradientTape() as tape:
        y = keras.ops.sum(layer(x))
    grad = keras.ops.convert_to_numpy(tape.gradient(y, layer.kernel.value))
    # dy/dW[i, j] = x[i], zeroed where |W| > 1 (STE clipped at 1).
    np.testing.assert_allclose(grad, [[1.0, 0.0], [-1.0, -1.0], [2.0, 0.0]])


# --------------------------------------------------------------------------- weight_clip


def test_weight_clip_by_name():
    layer = lns_keras.QuantDense(3, kernel_constraint="weight_clip")
    assert isinstance(layer.kernel_constraint, constraints.WeightClip)
    assert layer.kernel_constraint.clip_value == 1.0
    assert isinstance(constraints.get("weight_clip"), constraints.WeightClip)
    assert constraints.get(None) is None
    clipped = keras.ops.convert_to_numpy(constraints.WeightClip(0.5)(tf.constant([-2.0, 0.3, 0.7])))
    np.testing.assert_allclose(clipped, [-0.5, 0.3, 0.5])


@pytest.mark.parametrize("layer_class", ["QuantConv2D", "QuantDense"])
def test_weight_clip_holds_after_a_large_step(layer_class):
    if layer_class == "QuantConv2D":
        layer = lns_keras.QuantConv2D(
            2,
            3,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )
        x = _random((4, 5, 5, 2))
        y = _random((4, 3, 3, 2))
    else:
        layer = lns_keras.QuantDense(
            2,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )
        x = _random((4, 6))
        y = _random((4, 2))
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=100.0), loss="mse")
    before = model.layers[0].kernel.numpy().copy()
    model.train_on_batch(x, y)
    after = model.layers[0].kernel.numpy()
    assert not np.allclose(before, after)  # the step happened
    assert np.max(np.abs(after)) <= 1.0
    assert np.any(np.abs(after) == 1.0)  # and the large step was clipped


# --------------------------------------------------------------------------- serialization

QUANTIZER_SPECS = [
    *sorted(quantizers._ALIASES),
    quantizers.SteSign(clip_value=0.5),
    quantizers.SwishSign(beta=2.0),
    quantizers.SteTern(threshold_value=0.2, ternary_weight_networks=True),
    quantizers.DoReFa(k_bit=3, mode="weights"),
    quantizers.NoOp(precision=1),
]


def _quantizer_id(spec):
    return spec if isinstance(spec, str) else type(spec).__name__


def _round_trip(model: keras.Model, x: np.ndarray, tmp_path) -> keras.Model:
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=0, atol=1e-7)
    return loaded


def _config_without_name(layer):
    """The layer's config as saved (JSON: tuples become lists), without its name."""
    config = json.loads(json.dumps(layer.get_config()))
    config.pop("name", None)
    return config


@pytest.mark.parametrize("spec", QUANTIZER_SPECS, ids=_quantizer_id)
def test_save_load_quantized_layers(spec, tmp_path):
    inputs = keras.Input((5, 5, 2))
    h = lns_keras.QuantConv2D(
        3,
        3,
        input_quantizer=spec,
        kernel_quantizer=spec,
        kernel_constraint="weight_clip",
        kernel_scale="channel",
    )(inputs)
    h = keras.layers.Flatten()(h)
    outputs = lns_keras.QuantDense(2, input_quantizer=spec, kernel_quantizer=spec)(h)
    model = keras.Model(inputs, outputs)
    x = _random((2, 5, 5, 2), seed=11, scale=0.8)
    loaded = _round_trip(model, x, tmp_path)
    for original, restored in zip(model.layers[1:], loaded.layers[1:], strict=True):
        assert type(restored) is type(original)
        assert _config_without_name(restored) == _config_without_name(original)
    conv = loaded.layers[1]
    assert type(conv.input_quantizer) is type(quantizers.get(spec))
    assert isinstance(conv.kernel_constraint, constraints.WeightClip)
    assert conv.kernel_scale == "channel"


def test_save_load_weight_clip_with_custom_value(tmp_path):
    inputs = keras.Input((4,))
    outputs = lns_keras.QuantDense(3, kernel_constraint=constraints.WeightClip(0.25))(inputs)
    loaded = _round_trip(keras.Model(inputs, outputs), _random((2, 4)), tmp_path)
    constraint = loaded.layers[-1].kernel_constraint
    assert isinstance(constraint, constraints.WeightClip)
    assert constraint.clip_value == 0.25


def test_save_load_lns_layers(tmp_path):
    inputs = keras.Input((6, 6, 2))
    h = lns_keras.LNSQuantConv2D(
        4, 3, padding="same", use_bias=False, alpha=0.5, rho=(0.01, 0.02), mapping_width=1
    )(inputs)
    h = lns_keras.LNSQuantConv2D(
        4, 3, kernel_scale="channel", noisy_labels="pretrained", loss_reduction="sum"
    )(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = lns_keras.LNSQuantDense(3, kernel_scale=None, kernel_quantizer="approx_sign")(h)
    model = keras.Model(inputs, outputs)
    loaded = _round_trip(model, _random((2, 6, 6, 2), seed=4), tmp_path)
    for original, restored in zip(model.layers[1:], loaded.layers[1:], strict=True):
        assert type(restored) is type(original)
        assert _config_without_name(restored) == _config_without_name(original)
    assert loaded.layers[1].rho == [0.01, 0.02]
    assert loaded.layers[2].noisy_labels == "pretrained"


# --------------------------------------------------------------------------- TFLite / LCE export


def _binary_model(kernel_scale):
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = lns_keras.QuantConv2D(
        8,
        3,
        padding="same",
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        kernel_scale=kernel_scale,
    )(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(4)(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.weights])
    bn = model.layers[2]
    bn.moving_variance.assign(np.abs(bn.moving_variance.numpy()) + 0.5)
    return model


@pytest.mark.parametrize("kernel_scale", ["layer", None])
def test_lce_export_has_binary_conv_and_predicts_like_keras(kernel_scale, tmp_path):
    from lce_interpreter import Interpreter  # LCE's, in the numpy<2 oracle env

    model = _binary_model(kernel_scale)
    path = tmp_path / "model.tflite"
    assert export.to_tflite(model, path, lce=True) == str(path)
    flatbuffer = path.read_bytes()
    names = export.tflite_op_names(flatbuffer)
    assert "LceBconv2d" in names
    x = _random((2, 8, 8, 3), seed=9)
    expected = model.predict(x, verbose=0)
    actual = Interpreter(flatbuffer).predict(x)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_float_export_has_no_lce_ops(tmp_path):
    model = _binary_model("layer")
    path = tmp_path / "float.tflite"
    export.to_tflite(model, path, lce=False)
    flatbuffer = path.read_bytes()
    names = export.tflite_op_names(flatbuffer)
    assert "CONV_2D" in names
    assert not [name for name in names if name.startswith("Lce")]
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    x = _random((1, 8, 8, 3), seed=10)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    actual = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(actual, model.predict(x, verbose=0), rtol=0, atol=1e-3)


def test_export_refuses_unfolded_lns_model(tmp_path):
    inputs = keras.Input((6, 6, 2))
    outputs = lns_keras.LNSQuantConv2D(2, 3)(inputs)
    with pytest.raises(ValueError, match="fold"):
        export.to_tflite(keras.Model(inputs, outputs), tmp_path / "x.tflite")
    assert not list(tmp_path.iterdir())
