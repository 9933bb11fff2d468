"""What a quantized layer does once built: tag its kernels' precision, track FlipRatio.

larq's quantized variables carried the kernel quantizer's `precision`, and its weight
quantizers updated a `FlipRatio` when asked (`metrics=["flip_ratio"]` or
`context.metrics_scope`). In lns_keras the layer does both in `build` and `call`; the
logged flip ratios are checked against larq's on the same weights, data and optimizer
(one larq subprocess for the module).
"""

from __future__ import annotations

import keras
import larq_oracle
import numpy as np
import pytest

import lns_keras
from lns_keras import quantizers

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


# ------------------------------------------------------------------ precision tagging


@pytest.mark.parametrize(
    "quantizer, precision",
    [
        ("ste_sign", 1),
        (quantizers.ste_sign, 1),
        ("ste_tern", 2),
        (quantizers.DoReFa(k_bit=3, mode="weights"), 3),
        (quantizers.NoOp(precision=1), 1),
    ],
)
def test_built_layer_tags_its_kernel(quantizer, precision):
    layer = lns_keras.QuantDense(4, kernel_quantizer=quantizer, kernel_constraint="weight_clip")
    layer.build((None, 8))
    assert layer.kernel.precision == precision
    assert not hasattr(layer.bias, "precision")
    assert lns_keras.optimizers.Bop.is_binary_variable(layer.kernel) == (precision == 1)


def test_untagged_kernels():
    """No quantizer, or one without a precision: no tag (as `mark_precisions`)."""
    plain = lns_keras.QuantDense(4)
    plain.build((None, 8))
    custom = lns_keras.QuantDense(4, kernel_quantizer=lambda x: keras.ops.sign(x))
    custom.build((None, 8))
    assert not hasattr(plain.kernel, "precision")
    assert not hasattr(custom.kernel, "precision")


def test_every_zoo_layer_tags_its_weights():
    inputs = keras.Input((8, 8, 3))
    x = lns_keras.QuantDepthwiseConv2D(
        3, depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip"
    )(inputs)
    x = lns_keras.QuantSeparableConv2D(
        4,
        1,
        depthwise_quantizer="ste_tern",
        pointwise_quantizer="ste_sign",
        pointwise_constraint="weight_clip",
    )(x)
    x = lns_keras.QuantLocallyConnected2D(
        2, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
    )(x)
    model = keras.Model(inputs, x)
    depthwise, separable, local = model.layers[1:]
    assert depthwise.kernel.precision == 1
    assert (separable.depthwise_kernel.precision, separable.pointwise_kernel.precision) == (2, 1)
    assert local.kernel.precision == 1
    # mark_precisions finds exactly what the layers tagged themselves.
    marked = lns_keras.optimizers.mark_precisions(model)
    assert sorted(marked.values()) == [1, 1, 1, 2]


def test_lns_kernel_is_not_tagged():
    """An LNS layer's quantizer reads the mapping's output, not the kernel."""
    layer = lns_keras.LNSQuantDense(4)
    layer.build((None, 8))
    assert not hasattr(layer.kernel, "precision")


def test_tagged_after_loading(tmp_path):
    model = keras.Sequential(
        [keras.Input((8,)), lns_keras.QuantDense(4, **BINARY, kernel_constraint="weight_clip")]
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.layers[0].kernel.precision == 1


# ------------------------------------------------------------------------ FlipRatio


def test_layer_metrics_argument_and_scope():
    explicit = lns_keras.QuantDense(3, kernel_quantizer="ste_sign", metrics=["flip_ratio"])
    explicit.build((None, 4))
    with lns_keras.context.metrics_scope(["flip_ratio"]):
        scoped = lns_keras.QuantDense(3, kernel_quantizer="ste_sign", name="scoped")
    scoped.build((None, 4))
    on_quantizer = lns_keras.QuantDense(
        3, kernel_quantizer=quantizers.SteSign(metrics=["flip_ratio"]), name="on_quantizer"
    )
    on_quantizer.build((None, 4))
    none = lns_keras.QuantDense(3, kernel_quantizer="ste_sign")
    none.build((None, 4))
    full_precision = lns_keras.QuantDense(3, metrics=["flip_ratio"])  # nothing to track
    full_precision.build((None, 4))
    assert [m.name for m in explicit.metrics] == [f"flip_ratio/{explicit.name}"]
    assert [m.name for m in scoped.metrics] == ["flip_ratio/scoped"]
    assert [m.name for m in on_quantizer.metrics] == ["flip_ratio/on_quantizer"]
    assert none.metrics == [] and full_precision.metrics == []
    with pytest.raises(ValueError, match="flip_rate"):
        lns_keras.QuantDense(3, metrics=["flip_rate"])


def test_separable_layer_tracks_each_kernel():
    layer = lns_keras.QuantSeparableConv2D(
        4,
        3,
        depthwise_quantizer="ste_sign",
        pointwise_quantizer="ste_sign",
        metrics=["flip_ratio"],
        name="sep",
    )
    layer.build((None, 8, 8, 3))
    assert sorted(m.name for m in layer.metrics) == [
        "flip_ratio/sep/depthwise_kernel",
        "flip_ratio/sep/pointwise_kernel",
    ]


def _flip_model(metrics_on: str) -> keras.Model:
    kwargs = {"kernel_constraint": "weight_clip", "use_bias": False, "name": "qd"}
    if metrics_on == "layer":
        layer = lns_keras.QuantDense(
            6, kernel_quantizer="ste_sign", metrics=["flip_ratio"], **kwargs
        )
    else:
        with lns_keras.context.metrics_scope(["flip_ratio"]):
            layer = lns_keras.QuantDense(6, kernel_quantizer="ste_sign", **kwargs)
    return keras.Sequential([keras.Input((8,)), layer, keras.layers.Dense(1, name="head")])


def _data():
    rng = np.random.default_rng(7)
    return {
        "x": rng.normal(size=(64, 8)).astype("float32"),
        "y": rng.normal(size=(64, 1)).astype("float32"),
        "kernel": rng.uniform(-0.05, 0.05, size=(8, 6)).astype("float32"),
        "head_kernel": rng.normal(size=(6, 1)).astype("float32"),
        "head_bias": np.zeros(1, "float32"),
    }


LARQ_FIT = """
import larq as lq
model = tf.keras.Sequential([
    tf.keras.Input((8,)),
    lq.layers.QuantDense(6, kernel_quantizer=lq.quantizers.SteSign(metrics=["flip_ratio"]),
                         kernel_constraint="weight_clip", use_bias=False),
    tf.keras.layers.Dense(1),
])
model.set_weights([inp["kernel"], inp["head_kernel"], inp["head_bias"]])
model.compile(loss="mse", optimizer=tf.keras.optimizers.SGD(0.05))
history = model.fit(inp["x"], inp["y"], batch_size=16, epochs=3, shuffle=False, verbose=0)
key = next(k for k in history.history if k.startswith("flip_ratio"))
out["flip_ratio"] = np.array(history.history[key])
out["loss"] = np.array(history.history["loss"])
"""


@pytest.fixture(scope="module")
def larq_history(tmp_path_factory) -> dict[str, np.ndarray]:
    return larq_oracle.run(LARQ_FIT, _data(), tmp_path_factory.mktemp("larq_flip_ratio"))


@pytest.mark.parametrize("metrics_on", ["layer", "scope"])
def test_fit_logs_larqs_flip_ratio(metrics_on, larq_history):
    data = _data()
    model = _flip_model(metrics_on)
    model.set_weights([data["kernel"], data["head_kernel"], data["head_bias"]])
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(data["x"], data["y"], batch_size=16, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], larq_history["loss"], rtol=1e-5)
    flip_ratio = np.array(history.history["flip_ratio/qd"])
    # Some weights flip (the check is not vacuous), and larq logs the same ratios.
    assert flip_ratio.max() > 0
    np.testing.assert_allclose(flip_ratio, larq_history["flip_ratio"], atol=1e-6)


def test_flip_ratio_counts_the_kernel_signs_that_changed():
    """The logged value, by hand: the mean over steps (but the epoch's first) of the
    fraction of kernel signs that changed since the step before."""
    data = _data()
    model = _flip_model("layer")
    model.set_weights([data["kernel"], data["head_kernel"], data["head_bias"]])
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.05))
    signs = [np.sign(data["kernel"])]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            signs.append(np.sign(keras.ops.convert_to_numpy(model.layers[0].kernel)))

    history = model.fit(
        data["x"], data["y"], batch_size=16, epochs=1, shuffle=False, verbose=0,
        callbacks=[Record()],
    )  # fmt: skip
    # Steps 0..3 read signs[0..3]; ratios compare consecutive steps (3 of them).
    ratios = [np.mean(signs[t] != signs[t - 1]) for t in range(1, 4)]
    assert history.history["flip_ratio/qd"][0] == pytest.approx(np.mean(ratios), abs=1e-6)


def test_no_update_outside_training():
    layer = lns_keras.QuantDense(3, kernel_quantizer="ste_sign", metrics=["flip_ratio"])
    layer.build((None, 4))
    metric = layer.metrics[0]
    layer(np.ones((2, 4), "float32"))
    layer(np.ones((2, 4), "float32"), training=False)
    assert float(metric.count) == 0
    layer(np.ones((2, 4), "float32"), training=True)
    assert float(metric.count) == 1


def test_metrics_argument_is_saved(tmp_path):
    model = _flip_model("layer")
    assert model.layers[0].get_config()["metrics"] == ["flip_ratio"]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert [m.name for m in loaded.layers[0].metrics] == ["flip_ratio/qd"]
    # Built in a scope: the quantizer carries the metric, and keeps it.
    scoped = _flip_model("scope")
    scoped.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras", safe_mode=True)
    assert [m.name for m in loaded.layers[0].metrics] == ["flip_ratio/qd"]


def test_bop_trains_an_lns_keras_model_without_mark_precisions():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            lns_keras.QuantDense(5, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
            keras.layers.Dense(3),
        ]
    )
    optimizers = lns_keras.optimizers
    model.compile(
        optimizer=optimizers.CaseOptimizer(
            (optimizers.Bop.is_binary_variable, optimizers.Bop(threshold=0.0)),
            default_optimizer=keras.optimizers.SGD(0.1),
        ),
        loss="mse",
    )
    rng = np.random.default_rng(3)
    kernel = model.layers[0].kernel
    before = keras.ops.convert_to_numpy(kernel)
    model.fit(rng.normal(size=(8, 4)), rng.normal(size=(8, 3)), batch_size=8, verbose=0)
    after = keras.ops.convert_to_numpy(kernel)
    # Bop trains the kernel: it holds signs (±1) after a step with threshold 0.
    assert not np.array_equal(before, after)
    assert set(np.unique(np.abs(after))) <= {1.0}
