"""The library core on the Keras backend of this run: TensorFlow, JAX or PyTorch.

The test suite runs this file under TensorFlow like any other, and `tests/test_backends.py`
runs it again in child processes under `KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`. So
everything here is written with `keras.ops`, Keras models and NumPy; gradients go through
`lns_keras._autodiff.vjp`. The numbers each backend computes are compared across backends
in `tests/test_backends.py`; here each backend checks that the core works: quantizers
inside a compiled training step, every quantized layer training and reloading from a
`.keras` file, the LNS loss and layers, `to_lns` / `warm_start` / `fold`, SLB, the
summary, the callbacks and the optimizers.
"""

from __future__ import annotations

import os
from pathlib import Path

import backend_probes
import keras
import numpy as np
import pytest

import lns_keras
from lns_keras import _autodiff, callbacks, convert, losses, optimizers, quantizers, slb

BACKEND = keras.backend.backend()
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _weights(model) -> dict[str, np.ndarray]:
    return {v.path: _np(v) for v in model.trainable_variables}


def test_runs_under_the_requested_backend():
    """A child run under JAX or PyTorch really runs that backend."""
    assert BACKEND == os.environ.get("KERAS_BACKEND", "tensorflow")


def test_every_quantizer_trains_inside_a_compiled_step():
    """One `QuantDense` branch per registered quantizer, all trained by one fit."""
    inputs = keras.Input((6,))
    branches = []
    for alias in sorted(quantizers._ALIASES):
        # PACT quantizes activations: its α is one scalar per quantizer object.
        kernel = "ste_sign" if alias == "pact" else alias
        layer = lns_keras.QuantDense(
            3,
            input_quantizer=alias,
            kernel_quantizer=kernel,
            kernel_constraint="weight_clip",
            name=f"branch_{alias}",
        )
        branches.append(layer(inputs))
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()(branches))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    x = backend_probes.rng_array((32, 6), seed=1, scale=0.5)
    y = np.arange(32) % 2
    before = _weights(model)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = _weights(model)
    for alias in quantizers._ALIASES:
        name = f"branch_{alias}/kernel"
        assert not np.array_equal(before[name], after[name]), f"{alias}: no gradient reached"


def test_every_quantized_layer_trains_saves_and_loads(tmp_path):
    """The network with every layer kind: one fit, a `.keras` round trip, one more fit."""
    model = backend_probes.every_layer_network()
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    x = backend_probes.rng_array((16, 8, 8, 3), seed=3)
    y = np.arange(16) % 3
    before = _weights(model)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = _weights(model)
    for layer in ("stem", "lns_conv", "depthwise", "separable", "transpose", "local"):
        kernels = [path for path in after if path.startswith(f"{layer}/") and "kernel" in path]
        assert kernels and all(not np.array_equal(before[p], after[p]) for p in kernels), layer
    assert not np.array_equal(before["slb_conv/logits"], after["slb_conv/logits"])
    assert not np.array_equal(before["lns_dense/kernel"], after["lns_dense/kernel"])

    path = tmp_path / "every_layer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


def test_probes_hold_within_this_backend(tmp_path):
    """The numbers tests/test_backends.py compares across backends, computed here.

    In the child runs that tests/test_backends.py starts, `LNS_PROBE_DIR` names the
    folder where they go, with this backend's `.keras` file (`backend_probes.save`).
    """
    probes = backend_probes.probe()
    for name, value in probes.items():
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    folded, unfolded = probes["fold/folded_predictions"], probes["fold/lns_predictions"]
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)
    folder = os.environ.get("LNS_PROBE_DIR") or tmp_path
    backend_probes.save(folder, probes)
    assert (Path(folder) / f"{BACKEND}.keras").is_file()


def test_corrected_loss_is_unbiased_and_its_derivative_is_eq18():
    rho = 0.1
    q_hat = np.linspace(-2.5, 2.5, 41).astype("float32")
    plus, minus = np.ones_like(q_hat), -np.ones_like(q_hat)
    l_plus = _np(losses.corrected_loss(q_hat, plus, rho, rho))
    l_minus = _np(losses.corrected_loss(q_hat, minus, rho, rho))
    # Eqs. 11-12: the expectation over the noisy label is the clean loss.
    np.testing.assert_allclose((1 - rho) * l_plus + rho * l_minus, (q_hat - 1) ** 2, atol=1e-5)
    np.testing.assert_allclose((1 - rho) * l_minus + rho * l_plus, (q_hat + 1) ** 2, atol=1e-5)
    q_noisy = np.where(np.arange(41) % 3 == 0, 1.0, -1.0).astype("float32")
    gradient = _autodiff.vjp(lambda t: losses.corrected_loss(t, q_noisy, rho, rho), q_hat)
    expected = 2 * (q_hat - q_noisy) - 4 * rho * q_noisy / (1 - 2 * rho)  # Eq. 18
    np.testing.assert_allclose(gradient, expected, atol=1e-5)


def test_lns_layer_adds_alpha_times_its_loss_in_training_only():
    layer, x = backend_probes.layer("LNSQuantConv2D")
    layer.alpha = 2.0
    layer(x, training=False)
    assert not layer.losses
    layer(x, training=True)
    q_hat, labels = _np(layer.binary_estimate()), np.where(_np(layer.kernel) >= 0, 1.0, -1.0)
    expected = 2.0 * np.mean(_np(losses.corrected_loss(q_hat, labels, *layer.noise_rates)))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(_np(layer.losses[0]), expected, rtol=1e-5)


def test_to_lns_warm_start_and_fold():
    baseline = _baseline()
    x, y = backend_probes.lns_data()
    lns_model = convert.to_lns(baseline, rho=0.01)
    for name in ("bconv", "bdense"):
        np.testing.assert_array_equal(
            _np(lns_model.get_layer(name).kernel), _np(baseline.get_layer(name).kernel)
        )
    baseline.predict(x, verbose=0)  # the copies are the LNS model's own buffers
    agreement = convert.sign_agreement(lns_model)
    convert.warm_start(
        lns_model, x, y=y, epochs=3, batch_size=8, loss=LOSS, optimizer="adam", verbose=0
    )
    assert convert.sign_agreement(lns_model) >= agreement

    folded = convert.fold(lns_model)
    assert not any(lns_keras.layers.is_lns_layer(layer) for layer in folded.layers)
    expected = lns_model.predict(x, verbose=0)  # predicts on after folding
    np.testing.assert_allclose(folded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert lns_keras.model_stats(folded) == lns_keras.model_stats(baseline)


def _baseline() -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = lns_keras.QuantConv2D(
        8,
        3,
        padding="same",
        kernel_scale="layer",
        name="bconv",
        **backend_probes.BINARY,
    )(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    x = lns_keras.QuantDense(10, name="bdense", **backend_probes.BINARY)(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_slb_schedule_recalibration_and_fold():
    inputs = keras.Input((6, 6, 3))
    h = lns_keras.SLBQuantConv2D(4, 3, padding="same", weight_bits=2, input_quantizer="pact")(
        inputs
    )
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    outputs = lns_keras.SLBQuantDense(3, weight_bits=1, input_quantizer="ste_sign")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    x = backend_probes.rng_array((16, 6, 6, 3), seed=5)
    y = np.arange(16) % 3
    scheduler = slb.SLBTemperatureScheduler(t0=1.0, factor=2.0, start=0.0, end=0.5)
    recalibration = slb.BatchNormRecalibration([(x[:8], y[:8])], start=0.0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[scheduler, recalibration])
    layers = slb.slb_layers(model)
    assert all(layer.hard for layer in layers)  # past the window: hard kernels
    assert all(float(_np(layer.temperature)) == pytest.approx(2.0) for layer in layers)
    folded = slb.fold(model)
    np.testing.assert_allclose(
        folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_summary_counts_a_binary_convolution():
    inputs = keras.Input((8, 8, 3))
    outputs = lns_keras.QuantConv2D(4, 3, use_bias=False, **backend_probes.BINARY)(inputs)
    stats = lns_keras.model_stats(keras.Model(inputs, outputs))
    # kernel 3*3*3*4 = 108 one-bit weights, 6x6 output positions: 3888 binary MACs.
    assert (stats.params_1bit, stats.params_32bit) == (108, 0)
    assert (stats.binary_macs, stats.float_macs) == (3888, 0)
    lines = []
    lns_keras.summary(keras.Model(inputs, outputs), print_fn=lines.append)
    assert any("QuantConv2D" in line for line in lines)


def test_callbacks_log_during_fit():
    lns_model = convert.to_lns(_baseline())
    lns_model.compile(keras.optimizers.SGD(0.5), LOSS)
    x, y = backend_probes.lns_data()
    history = lns_model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[
            callbacks.FlipRate(),
            callbacks.GradientReach(),
            callbacks.HyperparameterScheduler(lambda epoch: 0.5 / (epoch + 1), "learning_rate"),
        ],
    )
    logs = history.history
    assert all(0.0 <= rate <= 1.0 for rate in logs["flip_rate"])
    assert all(0.0 < reach <= 1.0 for reach in logs["gradient_reach"])
    assert logs["learning_rate"] == pytest.approx([0.5, 0.25])
    assert float(_np(lns_model.optimizer.learning_rate)) == pytest.approx(0.25)


def test_bop_trains_the_binary_kernels_and_adam_the_rest():
    model = _baseline()
    optimizers.mark_precisions(model)
    model.compile(
        optimizers.CaseOptimizer(
            (optimizers.Bop.is_binary_variable, optimizers.Bop(threshold=1e-8, gamma=0.1)),
            default_optimizer=keras.optimizers.Adam(1e-2),
        ),
        LOSS,
    )
    x, y = backend_probes.lns_data()
    before = _weights(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    kernel = _np(model.get_layer("bconv").kernel)
    assert set(np.unique(kernel)) <= {-1.0, 1.0}  # Bop keeps binary weights at ±1
    assert not np.array_equal(before["head/kernel"], _weights(model)["head/kernel"])


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="checks the error off TensorFlow; tests/test_lns.py exports under TensorFlow",
)
def test_tflite_export_names_the_backend_off_tensorflow(tmp_path):
    model = _baseline()
    with pytest.raises(RuntimeError, match=f"'{BACKEND}'.*KERAS_BACKEND=tensorflow"):
        lns_keras.export.to_tflite(model, tmp_path / "model.tflite")
    assert not (tmp_path / "model.tflite").exists()
