"""Issue 9: the classification gradient reaches the mapping output Q̂ wherever it lies.

Q̂ = f_θ(W) is unbounded; `ste_sign`'s default window (|x| ≤ 1) passes nothing outside
[-1, 1], where most of Q̂ sits after the warm start. The LNS default kernel quantizer
passes the gradient everywhere; the `tanh` path bounds Q̂ instead; the old window stays
selectable.
"""

import json

import keras
import numpy as np
import pytest

import lns_keras
from apps import pipeline
from lns_keras import convert, quantizers
from lns_keras.callbacks import GradientReach, gradient_reach


def _baseline(seed=0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    binary = dict(
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        kernel_scale="layer",
        use_bias=False,
        padding="same",
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = lns_keras.QuantConv2D(8, 3, name="binary1", **binary)(x)
    x = keras.layers.BatchNormalization()(x)
    x = lns_keras.QuantConv2D(16, 3, name="binary2", **binary)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + 2 * (x[..., 0].mean((1, 2)) > 0)
    return x, y


def _warm_started(**lns_kwargs) -> keras.Model:
    baseline = _baseline()
    x, y = _data()
    baseline.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    baseline.fit(x, y, epochs=2, batch_size=32, verbose=0)
    model = convert.to_lns(baseline, alpha=1.0, rho=0.005, **lns_kwargs)
    convert.warm_start(
        model,
        x,
        y=y,
        epochs=3,
        batch_size=32,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.Adam(1e-2),
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def warm_default():
    return _warm_started()


def test_lns_layers_default_to_a_gradient_that_passes_everywhere():
    for layer in (lns_keras.LNSQuantConv2D(4, 3), lns_keras.LNSQuantDense(4)):
        assert isinstance(layer.kernel_quantizer, quantizers.SteSign)
        assert layer.kernel_quantizer.clip_value is None
        assert layer.mapping.output_activation is None


def test_after_warm_start_the_default_reaches_at_least_99_percent_of_q_hat(warm_default):
    assert convert.sign_agreement(warm_default) > 0.9
    stats = gradient_reach(warm_default)
    assert set(stats) == {"binary1", "binary2"}
    outside = sum(s["outside"] * s["size"] for s in stats.values()) / sum(
        s["size"] for s in stats.values()
    )
    assert outside > 0.2, "the test needs Q̂ beyond ±1 to mean anything"
    for name, s in stats.items():
        assert s["reach"] >= 0.99, (name, s)
    # The gradient the quantizer passes, read through its own pseudo-gradient by autodiff.
    import tensorflow as tf

    layer = warm_default.get_layer("binary2")
    q_hat = tf.convert_to_tensor(layer.binary_estimate())
    with tf.GradientTape() as tape:
        tape.watch(q_hat)
        out = layer.kernel_quantizer(q_hat)
    grad = tape.gradient(out, q_hat, output_gradients=tf.ones_like(out)).numpy()
    assert np.mean(grad != 0) >= 0.99


def test_the_old_window_cuts_q_hat_beyond_one(warm_default):
    window = convert.to_lns(_baseline(), kernel_quantizer="ste_sign")
    for old, new in zip(warm_default.layers, window.layers, strict=True):
        new.set_weights(old.get_weights())
    stats = gradient_reach(window)
    for name, s in stats.items():
        # with the window, the reach is exactly the fraction inside [-1, 1]
        assert s["reach"] == pytest.approx(1 - s["outside"], abs=1e-6), name
    assert min(s["reach"] for s in stats.values()) < 0.99


def test_tanh_path_bounds_q_hat_and_keeps_its_sign_and_fold_parity():
    model = _warm_started(mapping_activation="tanh", kernel_quantizer="ste_sign")
    layer = model.get_layer("binary2")
    raw = keras.ops.convert_to_numpy(layer.mapping.pre_activation(layer.kernel))
    q_hat = keras.ops.convert_to_numpy(layer.binary_estimate())
    np.testing.assert_allclose(q_hat, np.tanh(raw), rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(q_hat) <= 1)
    stats = gradient_reach(model)
    assert all(s["outside"] == 0 and s["reach"] >= 0.99 for s in stats.values())
    folded = convert.fold(model)
    x, _ = _data(32, seed=1)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_to_lns_does_not_carry_the_baseline_window_over():
    model = convert.to_lns(_baseline())
    for name in ("binary1", "binary2"):
        assert model.get_layer(name).kernel_quantizer.clip_value is None
    folded = convert.fold(model)
    for name in ("binary1", "binary2"):
        # the folded layer is the plain baseline layer again
        assert folded.get_layer(name).kernel_quantizer.clip_value == 1.0


def test_mapping_activation_round_trips_and_rejects_unknown(tmp_path):
    model = convert.to_lns(_baseline(), mapping_activation="tanh")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.get_layer("binary1").mapping.output_activation == "tanh"
    x, _ = _data(8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="mapping_activation.*'relu'"):
        lns_keras.LNSQuantConv2D(4, 3, mapping_activation="relu")


def test_gradient_reach_callback_logs_per_epoch(warm_default):
    x, y = _data(64)
    warm_default.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = warm_default.fit(
        x, y, epochs=1, batch_size=32, verbose=0, callbacks=[GradientReach()]
    )
    assert history.history["gradient_reach"][0] >= 0.99
    assert 0 < history.history["q_hat_outside"][0] < 1
    assert "gradient_reach/binary1" in history.history


def test_gradient_path_names_map_to_layer_arguments():
    assert set(pipeline.GRADIENT_PATHS) == {"identity", "window", "tanh"}
    with pytest.raises(ValueError, match="--gradient_path='clip'"):
        pipeline.TrainConfig(gradient_path="clip").validate()


@pytest.mark.slow
def test_held_out_validation_selects_an_epoch_and_tests_it_once(tmp_path):
    config = pipeline.TrainConfig(
        stage="baseline",
        model="fashion_net",
        epochs=2,
        train_limit=256,
        test_limit=128,
        validation_examples=500,
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=64,
        export_tflite=False,
        verbose=0,
        model_dir=str(tmp_path),
    )
    result = pipeline.run(config)["stages"]["baseline"]
    history = result["history"]
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    assert result["selected_epoch"] == best_epoch
    assert result["selected_val_accuracy"] == pytest.approx(max(history["val_accuracy"]))
    assert 0 <= result["test_accuracy_selected"] <= 1
    assert "cross_entropy" in history and "val_cross_entropy" in history
    best = json.loads((tmp_path / "baseline" / "best.json").read_text())
    assert best["epoch"] == best_epoch
    # 500 held out of 60,000: the validation set is the training split's last 500 images
    job = pipeline._Run(config)
    assert sum(int(x.shape[0]) for x, _ in job.val_ds) == 500
