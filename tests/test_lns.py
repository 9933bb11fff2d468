"""LNS: the corrected loss, the layer, convert / warm start / fold / export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import convert, losses
from lns_keras.callbacks import FlipRate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --- corrected_loss (Eq. 15) ---------------------------------------------------------


@pytest.mark.parametrize("rho_pos, rho_neg", [(0.005, 0.005), (0.1, 0.3), (0.0, 0.2), (0.45, 0.05)])
def test_corrected_loss_is_unbiased(rho_pos, rho_neg):
    q_hat = np.linspace(-2.5, 2.5, 41).astype("float32")
    plus, minus = np.ones_like(q_hat), -np.ones_like(q_hat)
    l_plus = _np(losses.corrected_loss(q_hat, plus, rho_pos, rho_neg))
    l_minus = _np(losses.corrected_loss(q_hat, minus, rho_pos, rho_neg))
    # Eq. 11: true q = +1 is observed as -1 with rate rho_pos.
    np.testing.assert_allclose(
        (1 - rho_pos) * l_plus + rho_pos * l_minus, (q_hat - 1) ** 2, atol=1e-5
    )
    # Eq. 12: true q = -1 is observed as +1 with rate rho_neg.
    np.testing.assert_allclose(
        (1 - rho_neg) * l_minus + rho_neg * l_plus, (q_hat + 1) ** 2, atol=1e-5
    )


@pytest.mark.parametrize("rho", [0.0, 0.005, 0.2])
def test_corrected_loss_derivative_is_eq18(rho):
    rng = np.random.default_rng(0)
    q_hat = tf.constant(rng.normal(size=64).astype("float32"))
    q_noisy = np.where(rng.random(64) > 0.5, 1.0, -1.0).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(q_hat)
        loss = tf.reduce_sum(losses.corrected_loss(q_hat, q_noisy, rho, rho))
    expected = 2 * (q_hat.numpy() - q_noisy) - 4 * rho * q_noisy / (1 - 2 * rho)  # Eq. 18
    np.testing.assert_allclose(tape.gradient(loss, q_hat).numpy(), expected, atol=1e-5)


def test_corrected_loss_with_zero_rate_is_squared_error():
    q_hat = np.array([-1.5, -0.2, 0.0, 0.7, 3.0], "float32")
    q_noisy = np.array([1, -1, 1, -1, 1], "float32")
    np.testing.assert_allclose(
        _np(losses.corrected_loss(q_hat, q_noisy, 0.0, 0.0)), (q_hat - q_noisy) ** 2, atol=1e-6
    )


@pytest.mark.parametrize(
    "rho_pos, rho_neg, bad",
    [(-0.1, 0.0, "-0.1"), (0.0, -0.01, "-0.01"), (0.6, 0.4, "1.0"), (0.7, 0.5, "0.7")],
)
def test_invalid_noise_rates_raise(rho_pos, rho_neg, bad):
    with pytest.raises(ValueError, match=bad):
        losses.corrected_loss(np.zeros(2, "float32"), np.ones(2, "float32"), rho_pos, rho_neg)
    with pytest.raises(ValueError, match=bad):
        lns_keras.LNSQuantConv2D(4, 3, rho=(rho_pos, rho_neg))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": -1.0}, "alpha=-1.0"),
        ({"rho": 0.5}, "rho_pos"),  # 0.5 + 0.5 = 1
        ({"loss_reduction": "max"}, "loss_reduction='max'"),
        ({"noisy_labels": "oracle"}, "noisy_labels='oracle'"),
        ({"kernel_scale": "filter"}, "kernel_scale='filter'"),
        ({"mapping_width": 0}, "mapping_width"),
        ({"rho": (0.1, 0.2, 0.3)}, "rho="),
    ],
)
def test_invalid_layer_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("(", r"\(").replace(")", r"\)")):
        lns_keras.LNSQuantConv2D(4, 3, **kwargs)


# --- the layer ----------------------------------------------------------------------


def _tiny_lns_model(alpha=1.0, **kwargs):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = lns_keras.LNSQuantConv2D(8, 3, padding="same", use_bias=False, alpha=alpha, **kwargs)(x)
    x = keras.layers.BatchNormalization()(x)
    x = lns_keras.LNSQuantConv2D(8, 3, padding="same", alpha=alpha, **kwargs)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = lns_keras.LNSQuantDense(6, alpha=alpha, **kwargs)(x)
    outputs = keras.layers.Dense(4)(x)
    return keras.Model(inputs, outputs)


def test_mapping_preserves_kernel_shape():
    model = _tiny_lns_model()
    for layer in model.layers:
        if isinstance(layer, lns_keras.LNSQuantConv2D | lns_keras.LNSQuantDense):
            assert tuple(layer.binary_estimate().shape) == tuple(layer.kernel.shape)
    # The paper's widths: c -> 2c -> 2c -> c with 3x3 taps for a conv kernel.
    conv = model.layers[2]
    assert [tuple(k.shape) for k in conv.mapping.conv_kernels] == [
        (3, 3, 8, 16),
        (3, 3, 16, 16),
        (3, 3, 16, 8),
    ]
    dense = model.layers[-2]
    assert [tuple(k.shape) for k in dense.mapping.conv_kernels] == [
        (1, 1, 8, 16),
        (1, 1, 16, 16),
        (1, 1, 16, 8),
    ]


def test_losses_one_term_per_layer_in_training_none_in_inference():
    model = _tiny_lns_model()
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    model(x, training=True)
    assert len(model.losses) == 3
    assert all(float(_np(term)) > 0 for term in model.losses)
    model(x, training=False)
    assert len(model.losses) == 0


def test_alpha_zero_contributes_nothing():
    model = _tiny_lns_model(alpha=0.0)
    model(np.zeros((2, 6, 6, 3), "float32"), training=True)
    assert len(model.losses) == 0


def test_layer_loss_is_alpha_times_mean_or_sum_of_eq15():
    layer = lns_keras.LNSQuantConv2D(4, 3, alpha=0.5, rho=(0.01, 0.02))
    layer.build((None, 5, 5, 3))
    layer(np.ones((1, 5, 5, 3), "float32"), training=True)
    q_hat, kernel = _np(layer.binary_estimate()), _np(layer.kernel)
    labels = np.where(kernel >= 0, 1.0, -1.0)
    elementwise = _np(losses.corrected_loss(q_hat, labels.astype("float32"), 0.01, 0.02))
    np.testing.assert_allclose(_np(layer.losses[0]), 0.5 * elementwise.mean(), rtol=1e-5)

    summed = lns_keras.LNSQuantConv2D(4, 3, alpha=0.5, rho=(0.01, 0.02), loss_reduction="sum")
    summed.build((None, 5, 5, 3))
    summed.set_weights(layer.get_weights())
    summed(np.ones((1, 5, 5, 3), "float32"), training=True)
    np.testing.assert_allclose(_np(summed.losses[0]), 0.5 * elementwise.sum(), rtol=1e-5)


def test_q_hat_is_the_same_in_training_and_inference():
    layer = lns_keras.LNSQuantConv2D(6, 3, padding="same")
    x = np.random.default_rng(1).normal(size=(3, 7, 7, 4)).astype("float32")
    y_train = _np(layer(x, training=True))
    q_train = _np(layer.binary_estimate())
    y_infer = _np(layer(x, training=False))
    np.testing.assert_array_equal(y_train, y_infer)
    np.testing.assert_array_equal(q_train, _np(layer.binary_estimate()))


def test_forward_is_sign_of_q_hat_times_layer_scale():
    layer = lns_keras.LNSQuantConv2D(5, 3, use_bias=False)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    y = _np(layer(x, training=False))
    kernel = _np(layer.kernel)
    binary = np.where(_np(layer.binary_estimate()) >= 0, 1.0, -1.0).astype("float32")
    expected = (
        _np(keras.ops.conv(np.where(x >= 0, 1.0, -1.0).astype("float32"), binary))
        * np.abs(kernel).mean()
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_gradients_of_classification_and_noisy_supervision():
    layer = lns_keras.LNSQuantConv2D(4, 3, padding="same", alpha=1.0)
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 5, 3)).astype("float32"))
    mapping_vars = layer.mapping.trainable_variables

    # The classification loss reaches both the latent kernel and the mapping.
    with tf.GradientTape() as tape:
        cls = tf.reduce_sum(tf.square(layer(x, training=False)))
    grads = tape.gradient(cls, [layer.kernel, *mapping_vars])
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)

    # The noisy-supervision term reaches the mapping, and the kernel only through f_θ.
    with tf.GradientTape(persistent=True) as tape:
        supervision = layer.noisy_supervision_loss(layer.binary_estimate())
        labels = layer.noisy_targets()
        through_labels = tf.reduce_sum(labels * layer.kernel)
    grad_kernel = tape.gradient(supervision, layer.kernel).numpy()
    grad_mapping = tape.gradient(supervision, mapping_vars)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grad_mapping)
    # d(sum(labels * W))/dW == labels exactly: no gradient leaks through the labels.
    np.testing.assert_array_equal(
        tape.gradient(through_labels, layer.kernel).numpy(), labels.numpy()
    )

    # The kernel gradient is dℓ̃/dQ̂ · dQ̂/dW with the labels held as constants.
    constant_labels = tf.constant(labels.numpy())
    with tf.GradientTape() as tape:
        q_hat = layer.binary_estimate()
        reference = tf.reduce_mean(
            losses.corrected_loss(q_hat, constant_labels, *layer.noise_rates)
        )
    np.testing.assert_allclose(
        grad_kernel, tape.gradient(reference, layer.kernel).numpy(), atol=1e-7
    )
    assert np.any(grad_kernel != 0)


def test_pretrained_labels_are_a_frozen_snapshot():
    layer = lns_keras.LNSQuantConv2D(4, 3, noisy_labels="pretrained")
    layer.build((None, 5, 5, 2))
    before = _np(layer.noisy_targets())
    np.testing.assert_array_equal(before, np.where(_np(layer.kernel) >= 0, 1.0, -1.0))
    layer.kernel.assign(-layer.kernel)
    np.testing.assert_array_equal(_np(layer.noisy_targets()), before)
    assert all(v is not layer.pretrained_labels for v in layer.trainable_variables)


# --- convert / warm start / fold ----------------------------------------------------


def _synthetic_task(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(6, 10, 10, 1)).astype("float32")
    labels = rng.integers(0, 6, n)
    images = prototypes[labels] + 0.9 * rng.normal(size=(n, 10, 10, 1)).astype("float32")
    return images, labels


def _baseline_bnn():
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    for filters in (16, 24):
        x = lns_keras.QuantConv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            kernel_scale="layer",
        )(x)
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = lns_keras.QuantDense(
        32,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        kernel_scale="layer",
    )(x)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(6)(x)
    return keras.Model(inputs, outputs)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def pretrained():
    keras.utils.set_random_seed(0)
    images, labels = _synthetic_task()
    model = _baseline_bnn()
    model.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    model.fit(images[:1000], labels[:1000], epochs=4, batch_size=50, verbose=0)
    return model, images, labels


def test_to_lns_copies_weights_and_keeps_full_precision_layers(pretrained):
    model, images, _ = pretrained
    lns_model = convert.to_lns(model, alpha=2.0, rho=0.01)
    kinds = [type(layer).__name__ for layer in lns_model.layers]
    assert kinds.count("LNSQuantConv2D") == 2 and kinds.count("LNSQuantDense") == 1
    assert "Conv2D" in kinds and kinds[-1] == "Dense"
    for old, new in zip(model.layers, lns_model.layers):
        if hasattr(new, "mapping"):
            np.testing.assert_array_equal(_np(old.kernel), _np(new.kernel))
            assert new.alpha == 2.0 and new.noise_rates == (0.01, 0.01)
        else:
            for a, b in zip(old.get_weights(), new.get_weights()):
                np.testing.assert_array_equal(a, b)


def test_to_lns_rejects_a_model_without_binary_layers():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no binary"):
        convert.to_lns(model)
    with pytest.raises(ValueError, match="rho_pos"):
        convert.to_lns(_baseline_bnn(), rho=0.7)


def test_warm_start_reaches_agreement_and_keeps_accuracy(pretrained):
    model, images, labels = pretrained
    baseline_accuracy = model.evaluate(images[1000:], labels[1000:], verbose=0)[1]
    lns_model = convert.to_lns(model)
    trainable_before = [v.trainable for v in lns_model.variables]
    kernels_before = [_np(v) for v in lns_model.variables if "mapping" not in v.path]
    convert.warm_start(
        lns_model,
        images[:1000],
        y=labels[:1000],
        epochs=12,
        batch_size=50,
        loss=LOSS,
        optimizer=keras.optimizers.Adam(1e-2),
        verbose=0,
    )
    agreement = convert.sign_agreement(lns_model)
    assert agreement >= 0.99, agreement
    # Only the mappings moved; trainability is restored.
    for before, variable in zip(
        kernels_before, [v for v in lns_model.variables if "mapping" not in v.path]
    ):
        np.testing.assert_array_equal(before, _np(variable))
    assert [v.trainable for v in lns_model.variables] == trainable_before
    lns_layers = [layer for layer in lns_model.layers if hasattr(layer, "mapping")]
    assert all(layer.loss_reduction == "mean" and layer.alpha == 1.0 for layer in lns_layers)
    lns_model.compile(loss=LOSS, metrics=["accuracy"])
    lns_accuracy = lns_model.evaluate(images[1000:], labels[1000:], verbose=0)[1]
    assert lns_accuracy >= baseline_accuracy - 0.01, (lns_accuracy, baseline_accuracy)


def test_fold_predicts_the_same_and_has_no_mappings(pretrained):
    model, images, _ = pretrained
    lns_model = convert.to_lns(model)
    lns_model.compile(keras.optimizers.Adam(1e-3), LOSS)
    lns_model.fit(images[:200], _synthetic_task()[1][:200], epochs=1, batch_size=50, verbose=0)
    folded = convert.fold(lns_model)
    assert not any("mapping" in v.path for v in folded.variables)
    assert not any(hasattr(layer, "mapping") for layer in folded.layers)
    diff = np.abs(
        folded.predict(images[:64], verbose=0) - lns_model.predict(images[:64], verbose=0)
    )
    assert diff.max() <= 1e-5
    baseline_stats, folded_stats = lns_keras.model_stats(model), lns_keras.model_stats(folded)
    assert baseline_stats == folded_stats


def test_save_load_mid_training_and_continue(pretrained, tmp_path):
    model, images, labels = pretrained
    lns_model = convert.to_lns(model, rho=(0.01, 0.02), noisy_labels="pretrained")
    lns_model.compile(keras.optimizers.Adam(1e-3), LOSS)
    lns_model.fit(images[:100], labels[:100], epochs=1, batch_size=50, verbose=0)
    path = tmp_path / "lns.keras"
    lns_model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(images[:32], verbose=0), lns_model.predict(images[:32], verbose=0), atol=1e-6
    )
    loaded_layer = [layer for layer in loaded.layers if hasattr(layer, "mapping")][0]
    assert loaded_layer.noise_rates == (0.01, 0.02) and loaded_layer.noisy_labels == "pretrained"
    before = [_np(v) for v in loaded.trainable_variables]
    history = loaded.fit(images[:100], labels[:100], epochs=1, batch_size=50, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.any(b != _np(v)) for b, v in zip(before, loaded.trainable_variables))


def test_flip_rate_logs_reach_csv_logger(pretrained, tmp_path):
    model, images, labels = pretrained
    lns_model = convert.to_lns(model)
    lns_model.compile(keras.optimizers.SGD(0.5), LOSS)
    csv = tmp_path / "log.csv"
    history = lns_model.fit(
        images[:200],
        labels[:200],
        epochs=2,
        batch_size=50,
        verbose=0,
        callbacks=[FlipRate(), keras.callbacks.CSVLogger(str(csv))],
    )
    header = csv.read_text().splitlines()[0].split(",")
    assert "flip_rate" in header and "flip_rate_total" in header
    names = [layer.name for layer in lns_model.layers if hasattr(layer, "mapping")]
    assert all(f"flip_rate/{name}" in header for name in names)
    rates = history.history["flip_rate"]
    assert all(0.0 <= r <= 1.0 for r in rates)
    assert rates[0] > 0  # lr 0.5 on a fresh mapping flips weights
    # After two epochs the total is at least as large as the last epoch's flips are possible.
    assert history.history["flip_rate_total"][0] == pytest.approx(rates[0])


def test_flip_rate_counts_changed_signs_exactly():
    inputs = keras.Input((3,))
    layer = lns_keras.QuantDense(2, kernel_quantizer="ste_sign", use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    layer.kernel.assign(np.array([[1, 1], [1, 1], [1, 1]], "float32"))
    callback = FlipRate()
    callback.set_model(model)
    callback.on_train_begin()
    layer.kernel.assign(np.array([[-1, 1], [1, 1], [1, -1]], "float32"))
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["flip_rate"] == pytest.approx(2 / 6)
    layer.kernel.assign(np.array([[-1, 1], [1, 1], [1, 1]], "float32"))
    callback.on_epoch_end(1, logs)
    assert logs["flip_rate"] == pytest.approx(1 / 6)
    assert logs["flip_rate_total"] == pytest.approx(1 / 6)


# --- export -------------------------------------------------------------------------


def test_lce_export_of_folded_model_matches_keras(pretrained, tmp_path):
    from lce_interpreter import Interpreter  # LCE's, in the numpy<2 oracle env

    model, images, labels = pretrained
    lns_model = convert.to_lns(model)
    folded = convert.fold(lns_model)
    with pytest.raises(ValueError, match="fold"):
        lns_keras.export.to_tflite(lns_model, tmp_path / "x.tflite")
    cwd = os.getcwd()
    path = lns_keras.export.to_tflite(folded, tmp_path / "m.tflite", lce=True)
    flatbuffer = open(path, "rb").read()
    ops = lns_keras.export.tflite_op_names(flatbuffer)
    assert "LceBconv2d" in ops
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert os.getcwd() == cwd  # the converters' chdir is undone
    x = np.random.default_rng(5).normal(size=(100, 10, 10, 1)).astype("float32")
    interpreter = Interpreter(flatbuffer, num_threads=1)
    lce_logits = np.concatenate([interpreter.predict(x[i : i + 1]) for i in range(100)])
    keras_logits = folded.predict(x, verbose=0)
    np.testing.assert_array_equal(lce_logits.argmax(-1), keras_logits.argmax(-1))
    np.testing.assert_allclose(lce_logits, keras_logits, atol=1e-3)


# --- distribution -------------------------------------------------------------------


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import lns_keras

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inputs = keras.Input((6, 6, 2))
            x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
            x = lns_keras.LNSQuantConv2D(6, 3, padding="same", alpha=5.0, rho=0.01)(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            outputs = lns_keras.LNSQuantDense(3, alpha=5.0, input_quantizer=None)(x)
            model = keras.Model(inputs, outputs)
            model.compile(keras.optimizers.SGD(0.1),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
        y = rng.integers(0, 3, 8)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = model.fit(ds, epochs=1, verbose=0)
        return history.history["loss"][0], [v.numpy() for v in model.trainable_variables]

    one_loss, one_weights = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    two_loss, two_weights = run(strategy)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one_weights, two_weights))
    moved = max(float(np.abs(a).max()) for a in one_weights)
    print(json.dumps({"one": one_loss, "two": two_loss, "diff": diff, "moved": moved}))
    """
)


def test_mirrored_strategy_counts_the_corrected_loss_once():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["one"] == pytest.approx(numbers["two"], abs=1e-5)
    assert numbers["diff"] <= 1e-5, numbers
