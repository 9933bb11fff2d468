"""FlipRatio and the context module (quantized weights, quantized_scope, metrics_scope):
larq 0.14 as the oracle, the layer hook under `model.fit`, serialization, bad arguments.

larq runs once for this module in a subprocess (`larq_oracle`).
"""

from __future__ import annotations

import keras
import larq_oracle
import numpy as np
import pytest

import lns_keras
from lns_keras import context
from lns_keras.metrics import FlipRatio

FLIP_SHAPE = (4, 5)
FLIP_UPDATES = 6
RESET_AFTER = 3  # reset_state() after this many updates
# Kernel quantizers compared with larq's quantized_scope (no kernel_scale: larq has none).
SCOPE_QUANTIZERS = ["ste_sign", "ste_tern", "dorefa_quantizer", "approx_sign"]

LARQ_SCRIPT = """
import larq as lq

m = lq.metrics.FlipRatio()
for t in range(FLIP_UPDATES):
    if t == RESET_AFTER:
        m.reset_state()
    m.update_state(inp[f"values{t}"])
    out[f"result{t}"] = m.result().numpy()

x = tf.keras.Input((6,))
h = x
for q in SCOPE_QUANTIZERS:
    h = lq.layers.QuantDense(6, kernel_quantizer=q, kernel_constraint="weight_clip")(h)
model = tf.keras.Model(x, h)
model.set_weights([inp[f"scope_w{i}"] for i in range(len(model.get_weights()))])
with lq.context.quantized_scope(True):
    for i, w in enumerate(model.get_weights()):
        out[f"scope_q{i}"] = w
"""


def _constants() -> str:
    names = ["FLIP_UPDATES", "RESET_AFTER", "SCOPE_QUANTIZERS"]
    return "\n".join(f"{name} = {globals()[name]!r}" for name in names) + "\n"


def _flip_values() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    values = [rng.choice([-1.0, 1.0], size=FLIP_SHAPE)]
    for _ in range(FLIP_UPDATES - 1):
        flips = rng.random(FLIP_SHAPE) < rng.uniform(0.1, 0.6)
        values.append(np.where(flips, -values[-1], values[-1]))
    return [v.astype("float32") for v in values]


def scope_model() -> keras.Model:
    x = keras.Input((6,))
    h = x
    for q in SCOPE_QUANTIZERS:
        h = lns_keras.QuantDense(6, kernel_quantizer=q, kernel_constraint="weight_clip")(h)
    return keras.Model(x, h)


def _scope_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [rng.normal(scale=0.7, size=w.shape).astype("float32") for w in scope_model().weights]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    inputs = {f"values{t}": v for t, v in enumerate(_flip_values())}
    inputs.update({f"scope_w{i}": w for i, w in enumerate(_scope_weights())})
    return larq_oracle.run(_constants() + LARQ_SCRIPT, inputs, tmp_path_factory.mktemp("larq_m"))


# FlipRatio.


def test_flip_ratio_matches_larq(oracle):
    metric = FlipRatio()
    results = []
    for t, values in enumerate(_flip_values()):
        if t == RESET_AFTER:
            metric.reset_state()
        metric.update_state(values)
        results.append(float(metric.result()))
    larq = [float(oracle[f"result{t}"]) for t in range(FLIP_UPDATES)]
    np.testing.assert_allclose(results, larq, rtol=1e-6)
    assert 0 < max(results) < 1  # the sequence flips some values, not all


@pytest.mark.parametrize("explicit_build", [True, False])
def test_flip_ratio_follows_larqs_test(explicit_build):
    metric = FlipRatio()
    if explicit_build:
        metric.build((2,))
        assert float(metric.result()) == 0 and float(metric.count) == 0
    expected = [([1, 1], 0.0, 1, 0.0), ([2, 2], 1.0, 2, 1.0), ([1, 2], 1.5, 3, 0.75)]
    for values, total, count, result in expected:
        metric.update_state(np.array(values))
        np.testing.assert_array_equal(metric._previous_values.numpy(), values)
        assert float(metric.total) == total and float(metric.count) == count
        assert float(metric.result()) == result


def test_flip_ratio_rejects_a_wrong_shape():
    metric = FlipRatio()
    metric.build((3,))
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(1,\)"):
        metric.update_state(np.array([1]))  # broadcastable, still wrong


def test_flip_ratio_needs_a_build_inside_a_compiled_function():
    import tensorflow as tf

    metric = FlipRatio()

    @tf.function
    def update(values):
        metric.update_state(values)

    with pytest.raises(ValueError, match="must be built"):
        update(tf.ones((2,)))


def test_flip_ratio_config_roundtrip():
    metric = FlipRatio(values_dtype="int16", name="mcv", dtype="float16")
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(restored, FlipRatio)
    assert (restored.name, restored.dtype, restored.values_dtype) == ("mcv", "float16", "int16")


class TrackedQuantDense(lns_keras.QuantDense):
    """QuantDense with the flip-ratio hook (the docstring's recipe)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.flip_ratio = FlipRatio(name=f"flip_ratio/{self.name}")
        self.flip_ratio.build(self.kernel.shape)

    def call(self, inputs, training=None):
        if training:
            self.flip_ratio.update_state(self.binary_kernel())
        return super().call(inputs, training=training)


class RecordKernels(keras.callbacks.Callback):
    """The binary kernel each training step sees, and the logged ratio per epoch."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.kernels: list[list[np.ndarray]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.kernels.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.kernels[-1].append(keras.ops.convert_to_numpy(self.layer.binary_kernel()))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_flip_ratio_through_a_layer_under_fit(jit_compile):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    layer = TrackedQuantDense(
        3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name="qd"
    )
    model = keras.Sequential([keras.Input((6,)), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    record = RecordKernels(layer)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[record])
    logged = history.history["flip_ratio/qd"]
    for epoch, kernels in enumerate(record.kernels):
        # Each epoch's first step only records (Keras resets the metric at its start).
        ratios = [np.mean(a != b) for a, b in zip(kernels, kernels[1:])]
        assert logged[epoch] == pytest.approx(np.mean(ratios), abs=1e-6)
    assert max(logged) > 0


# Quantized weights.


def test_quantized_weights_match_larqs_quantized_scope(oracle):
    model = scope_model()
    model.set_weights(_scope_weights())
    ours = context.get_quantized_weights(model)
    assert len(ours) == len(model.get_weights())
    for i, value in enumerate(ours):
        np.testing.assert_allclose(value, oracle[f"scope_q{i}"], rtol=1e-6, atol=1e-7)
    # Kernels quantized, biases not.
    assert set(np.unique(ours[0])) == {-1.0, 1.0}
    np.testing.assert_array_equal(ours[1], model.get_weights()[1])


def mixed_model() -> keras.Model:
    x = keras.Input((6, 6, 2))
    h = lns_keras.QuantConv2D(
        4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", kernel_scale="channel"
    )(x)
    h = lns_keras.LNSQuantConv2D(4, 3, padding="same")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5)(h)
    y = lns_keras.QuantDense(
        2, input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_scale="layer"
    )(h)
    return keras.Model(x, y)


def test_quantized_weights_are_what_the_layers_compute_with():
    model = mixed_model()
    conv, lns, _, dense, qdense = (layer for layer in model.layers[1:])
    weights = dict(zip((id(w) for w in model.weights), context.get_quantized_weights(model)))
    w = conv.kernel.numpy()
    np.testing.assert_allclose(
        weights[id(conv.kernel)], np.sign(w) * np.abs(w).mean(axis=(0, 1, 2)), rtol=1e-6
    )
    lns_expected = keras.ops.convert_to_numpy(lns.binary_kernel()) * np.abs(lns.kernel).mean()
    np.testing.assert_allclose(weights[id(lns.kernel)], lns_expected, rtol=1e-6)
    w = qdense.kernel.numpy()
    np.testing.assert_allclose(weights[id(qdense.kernel)], np.sign(w) * np.abs(w).mean(), rtol=1e-6)
    np.testing.assert_array_equal(weights[id(dense.kernel)], dense.kernel.numpy())
    for variable in lns.mapping.weights:  # the mapping keeps its weights
        np.testing.assert_array_equal(weights[id(variable)], variable.numpy())


def plain_model() -> keras.Model:
    x = keras.Input((6, 6, 2))
    h = lns_keras.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_scale="channel")(x)
    h = keras.layers.Flatten()(h)
    y = lns_keras.QuantDense(
        2, input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_scale="layer"
    )(h)
    return keras.Model(x, y)


def test_quantized_scope_saves_a_model_that_predicts_the_same(tmp_path):
    model = plain_model()
    x = np.random.default_rng(6).normal(size=(8, 6, 6, 2)).astype("float32")
    latent = model.get_weights()
    quantized = context.get_quantized_weights(model)
    with context.quantized_scope(True, model) as quantize:
        assert quantize is True and context.should_quantize()
        inside = model.get_weights()
        layer_inside = model.layers[1].get_weights()
        model.save(tmp_path / "binary.keras")
    for a, b in zip(inside, quantized, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(layer_inside[0], quantized[0])
    for a, b in zip(model.get_weights(), latent, strict=True):  # latent values back
        np.testing.assert_array_equal(a, b)
    assert not context.should_quantize()
    loaded = keras.models.load_model(tmp_path / "binary.keras", safe_mode=True)
    for a, b in zip(loaded.get_weights(), quantized, strict=True):
        np.testing.assert_array_equal(a, b)
    # For sign quantizers the quantized values (with their scales) are a fixed point.
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-5)
    assert not np.array_equal(quantized[0], latent[0])


def test_quantized_scope_restores_on_an_exception_and_nests():
    model = plain_model()
    latent = model.get_weights()
    quantized = context.get_quantized_weights(model)
    with pytest.raises(RuntimeError, match="boom"):
        with context.quantized_scope(True, model):
            raise RuntimeError("boom")
    for a, b in zip(model.get_weights(), latent, strict=True):
        np.testing.assert_array_equal(a, b)
    with context.quantized_scope(True, model):
        with context.quantized_scope(True, model):  # no double quantization
            np.testing.assert_array_equal(model.get_weights()[0], quantized[0])
            np.testing.assert_array_equal(context.get_quantized_weights(model)[0], quantized[0])
        np.testing.assert_array_equal(model.get_weights()[0], quantized[0])
        with context.quantized_scope(False, model):
            assert not context.should_quantize()
            np.testing.assert_array_equal(model.get_weights()[0], latent[0])
        assert context.should_quantize()
        np.testing.assert_array_equal(model.get_weights()[0], quantized[0])
    np.testing.assert_array_equal(model.get_weights()[0], latent[0])


def test_quantized_scope_without_a_model_only_sets_the_flag():
    model = plain_model()
    latent = model.get_weights()
    with context.quantized_scope(True):
        assert context.should_quantize()
        np.testing.assert_array_equal(model.get_weights()[0], latent[0])
        with context.quantized_scope(False):
            assert not context.should_quantize()
        assert context.should_quantize()
    assert not context.should_quantize()


@pytest.mark.parametrize(
    "kwargs, named",
    [({"quantize": "yes"}, "quantize"), ({"quantize": True, "model": "m"}, "model")],
)
def test_quantized_scope_rejects_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        with context.quantized_scope(**kwargs):
            pass
    assert not context.should_quantize()


def test_get_quantized_weights_rejects_a_non_model():
    with pytest.raises(ValueError, match="model"):
        context.get_quantized_weights([np.zeros(3)])


def test_metrics_scope_as_larq():
    assert context.get_training_metrics() == set()
    with context.metrics_scope(["flip_ratio"]):
        assert context.get_training_metrics() == {"flip_ratio"}
    assert context.get_training_metrics() == set()
    with pytest.raises(ValueError, match=r".*unknown_metric.*"):
        with context.metrics_scope(["flip_ratio", "unknown_metric"]):
            pass
    assert context.get_training_metrics() == set()


def test_quantized_weights_of_the_layer_zoo_are_a_fixed_point():
    """Depthwise (channel scale over two axes), separable (two kernels), transposed
    (channel axis -2) and 1D layers: their quantized weights predict what they do."""
    x = keras.Input((8, 8, 3))
    h = lns_keras.QuantDepthwiseConv2D(
        3, depth_multiplier=2, depthwise_quantizer="ste_sign", kernel_scale="channel"
    )(x)
    h = lns_keras.QuantSeparableConv2D(
        4,
        3,
        padding="same",
        depthwise_quantizer="ste_sign",
        pointwise_quantizer="ste_sign",
        kernel_scale="layer",
    )(h)
    h = lns_keras.QuantConv2DTranspose(5, 3, kernel_quantizer="ste_sign", kernel_scale="channel")(h)
    h = keras.layers.Reshape((-1, 5))(h)
    y = lns_keras.QuantConv1D(2, 3, kernel_quantizer="ste_sign", kernel_scale="channel")(h)
    model = keras.Model(x, y)
    found = context.quantized_kernels(model)
    assert [v.path.split("/")[-1] for _, v, _, _ in found] == [
        "kernel",
        "depthwise_kernel",
        "pointwise_kernel",
        "kernel",
        "kernel",
    ]
    inputs = np.random.default_rng(8).normal(size=(4, 8, 8, 3)).astype("float32")
    clone = keras.models.clone_model(model)
    clone.set_weights(context.get_quantized_weights(model))
    np.testing.assert_allclose(
        clone.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6
    )
    assert not np.array_equal(clone.get_weights()[0], model.get_weights()[0])
