"""SLB (slb.md): value sets, soft and hard kernels (S1-S3), their gradient, the temperature
schedule, batch-norm recalibration, folding, saving, k-bit quantizers and bad arguments."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import kbit, quantizers, slb
from lns_keras.layers.slb import value_set

BITS = [1, 2, 4]


def _random(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _built_layer(kind, bits, seed=0, logits_scale=1.0):
    """A built SLB layer with logits far from uniform (so soft and hard kernels differ)."""
    if kind == "conv":
        layer = lns_keras.SLBQuantConv2D(3, 3, weight_bits=bits)
        layer.build((None, 5, 5, 2))
    else:
        layer = lns_keras.SLBQuantDense(3, weight_bits=bits)
        layer.build((None, 4))
    layer.logits.assign(_random(layer.logits.shape, seed=seed, scale=logits_scale))
    return layer


# --------------------------------------------------------------------------- value sets


def test_value_sets():
    np.testing.assert_array_equal(value_set(1), [-1.0, 1.0])
    np.testing.assert_array_equal(value_set(2), np.float32([-1, -1 / 3, 1 / 3, 1]))
    np.testing.assert_array_equal(value_set(4), np.linspace(-1, 1, 16).astype(np.float32))
    # 4-bit: step 2/15, symmetric, no zero (slb.md §1.2)
    np.testing.assert_allclose(np.diff(value_set(4)), 2 / 15, rtol=1e-6)
    assert 0.0 not in value_set(4)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_layer_values_and_logits_shape(kind, bits):
    layer = _built_layer(kind, bits)
    np.testing.assert_array_equal(layer.values, value_set(bits))
    kernel_shape = (3, 3, 2, 3) if kind == "conv" else (4, 3)
    assert layer.kernel_shape == kernel_shape
    assert tuple(layer.logits.shape) == kernel_shape + (2**bits,)
    assert [w.name for w in layer.trainable_weights] == ["logits", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["temperature", "hard"]
    assert float(_numpy(layer.temperature)) == 1.0  # T_0 = 1
    assert layer.hard is False
    with pytest.raises(AttributeError, match="no latent kernel"):
        layer.kernel  # noqa: B018


def test_default_logits_are_he_normal_with_fan_out():
    # slb.md §1.5: N(0, 2 / (C_o k_h k_w n)); here 64 * 3 * 3 * 4 = 2304.
    layer = lns_keras.SLBQuantConv2D(64, 3, weight_bits=2)
    layer.build((None, 8, 8, 16))
    logits = _numpy(layer.logits)
    assert abs(logits.mean()) < 0.002
    assert logits.std() == pytest.approx(math.sqrt(2 / 2304), rel=0.03)


# --------------------------------------------------------------------------- S1-S3


@pytest.mark.parametrize("temperature", [1.0, 3.7])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_soft_kernel_is_expected_value_under_softmax(kind, bits, temperature):
    layer = _built_layer(kind, bits)
    layer.set_temperature(temperature)
    logits = _numpy(layer.logits)
    probabilities = _softmax(logits * temperature)  # S1
    expected = (probabilities * value_set(bits)).sum(axis=-1)  # S2
    np.testing.assert_allclose(_numpy(layer.probabilities()), probabilities, atol=1e-6)
    np.testing.assert_allclose(_numpy(layer.soft_kernel()), expected, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 6.0])
def test_one_bit_soft_kernel_is_tanh_of_logit_difference(temperature):
    # slb.md §2.1 [D]: with V = {-1, +1}, W_c = tanh((A_+ - A_-) T / 2).
    layer = _built_layer("conv", 1, logits_scale=2.0)
    layer.set_temperature(temperature)
    logits = _numpy(layer.logits)
    expected = np.tanh((logits[..., 1] - logits[..., 0]) * temperature / 2)
    np.testing.assert_allclose(_numpy(layer.soft_kernel()), expected, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_soft_kernel_gradient_matches_formula(bits):
    # dW_c / dA_j = T P_j (v_j - W_c) for the weight's own logits, 0 for every other's.
    layer = _built_layer("dense", bits)
    temperature = 2.5
    layer.set_temperature(temperature)
    with tf.GradientTape() as tape:
        soft = layer.soft_kernel()
    jacobian = _numpy(tape.jacobian(soft, layer.logits))  # (4, 3, 4, 3, n)
    probabilities = _softmax(_numpy(layer.logits) * temperature)
    soft = _numpy(soft)
    formula = temperature * probabilities * (value_set(bits) - soft[..., None])
    for i in range(4):
        for o in range(3):
            np.testing.assert_allclose(jacobian[i, o, i, o], formula[i, o], atol=1e-5)
            others = np.delete(jacobian[i, o].reshape(12, -1), i * 3 + o, axis=0)
            assert np.all(others == 0)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_hard_kernel_is_value_at_argmax(kind, bits):
    layer = _built_layer(kind, bits)
    logits = _numpy(layer.logits)
    expected = value_set(bits)[np.argmax(logits, axis=-1)]  # S3
    np.testing.assert_array_equal(_numpy(layer.hard_kernel()), expected)
    # argmax A = argmax P for any T > 0
    layer.set_temperature(1000.0)
    np.testing.assert_array_equal(_numpy(layer.hard_kernel()), expected)
    # As T grows, the soft kernel approaches the hard one (slb.md §3.1).
    np.testing.assert_allclose(_numpy(layer.soft_kernel()), expected, atol=1e-3)


def _conv(x, kernel):
    return _numpy(tf.nn.conv2d(x, kernel, strides=1, padding="VALID"))


@pytest.mark.parametrize("bits", BITS)
def test_training_uses_soft_kernel_and_inference_the_hard_one(bits):
    layer = _built_layer("conv", bits)
    layer.bias.assign(_random((3,), seed=7))
    x = _random((2, 5, 5, 2), seed=3)
    bias = _numpy(layer.bias)
    soft = _conv(x, layer.soft_kernel()) + bias
    hard = _conv(x, layer.hard_kernel()) + bias
    assert np.abs(soft - hard).max() > 0.1  # the test can tell them apart
    np.testing.assert_allclose(_numpy(layer(x, training=True)), soft, atol=1e-5)
    np.testing.assert_allclose(_numpy(layer(x, training=False)), hard, atol=1e-5)
    np.testing.assert_allclose(_numpy(layer(x)), hard, atol=1e-5)
    layer.hard = True  # after the schedule's window: hard in training too (slb.md §2.3)
    assert layer.hard is True
    np.testing.assert_allclose(_numpy(layer(x, training=True)), hard, atol=1e-5)


def test_input_quantizer_is_applied():
    layer = lns_keras.SLBQuantDense(2, weight_bits=2, input_quantizer="ste_sign", use_bias=False)
    x = _random((3, 4), seed=1)
    out = _numpy(layer(x))
    expected = np.where(x >= 0, 1.0, -1.0) @ _numpy(layer.hard_kernel())
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_hard_training_gives_logits_no_gradient_in_a_compiled_step():
    layer = _built_layer("dense", 2)
    x = _random((5, 4), seed=2)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, layer.logits)

    assert np.abs(_numpy(gradient(x))).max() > 0
    layer.hard = True  # read from the variable by the already traced function
    np.testing.assert_array_equal(_numpy(gradient(x)), 0.0)


# --------------------------------------------------------------------------- schedule


def _schedule_formula(e, epochs, t0, factor, start, end):
    """slb.md §3.3, written out independently of the library."""
    e_s, e_e = math.floor(epochs * start), math.floor(epochs * end)
    return t0 if e <= e_s else t0 * factor ** (min(e, e_e) - e_s)


def _tiny_slb_model(bits=1):
    inputs = keras.Input((4,))
    outputs = lns_keras.SLBQuantDense(2, weight_bits=bits)(inputs)
    return keras.Model(inputs, outputs)


AUTHORS_SETTINGS = {
    # slb.md §3.4 and §6: (epochs, start, end, factor)
    "vgg_small_cifar10_w1a1": (500, 0.3, 0.9, 1.03),
    "vgg_small_cifar10_w4a32": (500, 0.3, 0.9, 1.06),
    "resnet20_cifar10_w1a1": (500, 0.4, 0.9, 1.03),
    "resnet20_cifar10_w2a2": (500, 0.4, 0.9, 1.04),
    "birealnet18_imagenet": (240, 0.4, 0.9, 1.05),
    "mindspore_resnet18_cifar10": (100, 0.2, 0.6, 1.2),
    "mindspore_resnet18_imagenet": (100, 0.4, 0.9, 1.12),
}


@pytest.mark.parametrize("setting", sorted(AUTHORS_SETTINGS))
def test_schedule_temperatures_per_epoch_match_formula(setting):
    epochs, start, end, factor = AUTHORS_SETTINGS[setting]
    model = _tiny_slb_model()
    layer = model.layers[-1]
    scheduler = slb.SLBTemperatureScheduler(t0=1.0, factor=factor, start=start, end=end)
    scheduler.set_model(model)
    scheduler.set_params({"epochs": epochs, "steps": 10})
    scheduler.on_train_begin()
    e_e = math.floor(epochs * end)
    for epoch in range(epochs):
        scheduler.on_epoch_begin(epoch)
        expected = _schedule_formula(epoch + 1, epochs, 1.0, factor, start, end)
        assert float(_numpy(layer.temperature)) == pytest.approx(expected, rel=1e-6)
        assert layer.hard is (epoch + 1 >= e_e)
        logs = {}
        scheduler.on_epoch_end(epoch, logs)
        assert logs["temperature"] == pytest.approx(expected, rel=1e-12)
    # The final T of slb.md §3.4's table: f ** (E_e - E_s).
    e_s = math.floor(epochs * start)
    assert float(_numpy(layer.temperature)) == pytest.approx(factor ** (e_e - e_s), rel=1e-6)


def test_schedule_window_and_final_temperature_of_birealnet_recipe():
    assert slb.schedule_window(240, 0.4, 0.9) == (96, 216)
    assert slb.schedule_window(500, 0.3, 0.9) == (150, 450)
    assert slb.schedule_window(100, 0.29, 0.9) == (29, 90)  # not 28.999...
    final = slb.scheduled_temperature(240, 240, factor=1.05, start=0.4, end=0.9)
    assert final == pytest.approx(1.05**120) and 348 < final < 350  # "≈ 349"


def test_per_step_schedule_agrees_with_per_epoch_at_each_epoch_start():
    model = _tiny_slb_model()
    layer = model.layers[-1]
    scheduler = slb.SLBTemperatureScheduler(factor=2.0, start=0.25, end=0.75, per_step=True)
    scheduler.set_model(model)
    scheduler.set_params({"epochs": 8, "steps": 4})  # window: epochs 2..6
    scheduler.on_train_begin()
    seen = []
    for epoch in range(8):
        scheduler.on_epoch_begin(epoch)
        for step in range(4):
            scheduler.on_train_batch_begin(step)
            seen.append(float(_numpy(layer.temperature)))
            if step == 0:
                assert seen[-1] == pytest.approx(_schedule_formula(epoch + 1, 8, 1, 2, 0.25, 0.75))
    assert seen == sorted(seen)
    # inside the window it grows within an epoch: epoch 3 goes 2, 2^1.25, 2^1.5, 2^1.75
    np.testing.assert_allclose(seen[8:12], [2.0, 2**1.25, 2**1.5, 2**1.75], rtol=1e-6)
    assert seen[-1] == pytest.approx(2.0**4)


def test_compiled_fit_follows_the_schedule_and_freezes_logits_when_hard():
    model = _tiny_slb_model(bits=2)
    layer = model.layers[-1]
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x, y = _random((32, 4), seed=1), _random((32, 2), seed=2)
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(_numpy(layer.logits).copy())
    )
    # E = 3, E_s = 1, E_e = 2: epoch 1 soft at T = 1, epochs 2-3 hard at T = 3.
    scheduler = slb.SLBTemperatureScheduler(factor=3.0, start=1 / 3, end=2 / 3)
    before = _numpy(layer.logits).copy()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[scheduler, record])
    assert history.history["temperature"] == pytest.approx([1.0, 3.0, 3.0])
    assert layer.hard is True
    assert np.abs(snapshots[0] - before).max() > 0  # soft epoch: the search moves
    np.testing.assert_array_equal(snapshots[1], snapshots[0])  # hard: no gradient
    np.testing.assert_array_equal(snapshots[2], snapshots[0])


def test_scheduler_without_slb_layer_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    scheduler = slb.SLBTemperatureScheduler()
    scheduler.set_model(model)
    scheduler.set_params({"epochs": 3})
    with pytest.raises(ValueError, match="no SLB layer"):
        scheduler.on_train_begin()


# --------------------------------------------------------------------------- recalibration


def _bn_model(bits=2):
    inputs = keras.Input((5, 5, 2))
    h = lns_keras.SLBQuantConv2D(4, 3, weight_bits=bits, use_bias=False, name="slb_conv")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, outputs)
    conv = model.get_layer("slb_conv")
    conv.logits.assign(_random(conv.logits.shape, seed=4))
    return model


def _channel_stats(x, kernel):
    out = _conv(x, kernel)
    return out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))


def test_recalibration_sets_moving_statistics_to_those_of_the_hard_weights():
    model = _bn_model()
    conv, bn = model.get_layer("slb_conv"), model.get_layer("bn")
    batches = [_random((16, 5, 5, 2), seed=10 + i) for i in range(3)]
    data = [(x, np.zeros((16, 2), np.float32)) for x in batches]
    used = slb.recalibrate_batch_norm(model, data, steps=2)
    assert used == 2
    # The average over the two batches of each batch's statistics, with the hard kernel.
    stats = [_channel_stats(x, conv.hard_kernel()) for x in batches[:2]]
    expected_mean = np.mean([mean for mean, _ in stats], axis=0)
    expected_var = np.mean([var for _, var in stats], axis=0)
    # Tolerance: float32 reductions over 16 * 3 * 3 values, a few ulps of values ~1.
    np.testing.assert_allclose(_numpy(bn.moving_mean), expected_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_numpy(bn.moving_variance), expected_var, rtol=1e-5, atol=1e-5)
    # The soft kernel's statistics differ: the test can fail.
    soft_mean = np.mean([_channel_stats(x, conv.soft_kernel())[0] for x in batches[:2]], axis=0)
    assert np.abs(soft_mean - expected_mean).max() > 0.05
    # Flags and momentum are restored.
    assert conv.hard is False and bn.momentum == 0.9
    # One batch: exactly that batch's statistics.
    slb.recalibrate_batch_norm(model, [batches[2]])
    mean, var = _channel_stats(batches[2], conv.hard_kernel())
    np.testing.assert_allclose(_numpy(bn.moving_mean), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_numpy(bn.moving_variance), var, rtol=1e-5, atol=1e-5)


def test_recalibration_callback_runs_before_validation_from_start_on():
    model = _bn_model()
    conv, bn = model.get_layer("slb_conv"), model.get_layer("bn")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _random((32, 5, 5, 2), seed=1), _random((32, 2), seed=2)
    calibration = [x[:16], x[16:]]
    seen_at_validation = []
    probe = keras.callbacks.LambdaCallback(
        on_test_begin=lambda logs: seen_at_validation.append(_numpy(bn.moving_mean).copy())
    )
    recalibration = slb.BatchNormRecalibration(calibration, steps=2, start=0.5)
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        validation_data=(x[:8], y[:8]),
        callbacks=[recalibration, probe],
    )
    # E = 2, start 0.5: E_s = 1, so only epoch 2 is recalibrated.
    assert history.history["bn_recalibration_steps"] == [0, 2]
    expected = np.mean([_channel_stats(b, conv.hard_kernel())[0] for b in calibration], axis=0)
    np.testing.assert_allclose(seen_at_validation[1], expected, rtol=1e-5, atol=1e-5)
    assert np.abs(seen_at_validation[0] - expected).max() > 1e-3
    np.testing.assert_allclose(_numpy(bn.moving_mean), expected, rtol=1e-5, atol=1e-5)


def test_recalibration_callback_recalibrates_once_at_the_end():
    model = _bn_model()
    conv, bn = model.get_layer("slb_conv"), model.get_layer("bn")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _random((16, 5, 5, 2), seed=1), _random((16, 2), seed=2)
    # start=1: no epoch is due, but training ends recalibrated.
    recalibration = slb.BatchNormRecalibration([x], start=1.0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[recalibration])
    mean, _ = _channel_stats(x, conv.hard_kernel())
    np.testing.assert_allclose(_numpy(bn.moving_mean), mean, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- fold


def _slb_network(bits):
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)

    def input_quantizer():  # one PACT, with its own alpha, per layer
        return "ste_sign" if bits == 1 else kbit.PACT(k_bit=bits, initial_alpha=1.5)

    h = lns_keras.SLBQuantConv2D(
        6, 3, padding="same", weight_bits=bits, input_quantizer=input_quantizer()
    )(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    outputs = lns_keras.SLBQuantDense(3, weight_bits=bits, input_quantizer=input_quantizer())(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(bits)
    model.set_weights(
        [
            rng.normal(size=w.shape).astype(w.dtype) if w.dtype != "bool" else np.array(False)
            for w in model.weights
        ]
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.abs(_numpy(layer.moving_variance)) + 0.5)
        if lns_keras.layers.slb.is_slb_layer(layer):
            layer.set_temperature(1.0)
            if bits > 1:
                layer.input_quantizer.alpha.assign(1.7)
    return model


@pytest.mark.parametrize("bits", BITS)
def test_fold_predicts_as_the_slb_model(bits):
    model = _slb_network(bits)
    folded = slb.fold(model)
    x = _random((8, 6, 6, 3), seed=5)
    expected = _numpy(model(x, training=False))
    actual = _numpy(folded(x, training=False))
    assert np.abs(actual - expected).max() <= 1e-5
    conv, dense = folded.layers[3], folded.layers[6]
    assert type(conv) is lns_keras.QuantConv2D and type(dense) is lns_keras.QuantDense
    for layer in (conv, dense):
        assert set(np.unique(_numpy(layer.kernel))) <= set(value_set(bits).tolist())
        assert isinstance(layer.kernel_constraint, lns_keras.constraints.WeightClip)
        if bits == 1:
            assert isinstance(layer.kernel_quantizer, quantizers.SteSign)
        else:
            assert isinstance(layer.kernel_quantizer, kbit.SteUniform)
            assert layer.kernel_quantizer.precision == bits
            assert float(_numpy(layer.input_quantizer.alpha)) == pytest.approx(1.7)
    assert not any(lns_keras.layers.slb.is_slb_layer(layer) for layer in folded.layers)
    # Memory is that of the folded model: the logits are not counted (k bits a weight).
    stats, folded_stats = lns_keras.model_stats(model), lns_keras.model_stats(folded)
    assert stats.memory_mbit == pytest.approx(folded_stats.memory_mbit)
    kernels = 3 * 3 * 4 * 6 + 6 * 6 * 6 * 3
    if bits == 1:
        assert (stats.params_1bit, stats.params_kbit) == (kernels, 0)
    else:
        assert (stats.params_1bit, stats.params_kbit) == (0, kernels)
        assert {s.kernel_bits for s in stats.layers if s.params_kbit} == {bits}
    assert stats.params_32bit == folded_stats.params_32bit


def test_ste_uniform_is_exact_on_the_value_set():
    for bits in BITS:
        values = value_set(bits)
        np.testing.assert_array_equal(_numpy(kbit.SteUniform(k_bit=bits)(values)), values)
    q = kbit.SteUniform(k_bit=2)
    np.testing.assert_allclose(
        _numpy(q(np.float32([-3.0, -0.9, -0.2, 0.1, 0.4, 0.7, 5.0]))),
        [-1, -1, -1 / 3, 1 / 3, 1 / 3, 1, 1],
        atol=1e-7,
    )
    x = tf.constant([-1.5, -0.5, 0.5, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(q(x))
    np.testing.assert_array_equal(_numpy(tape.gradient(y, x)), [0, 1, 1, 0])
    assert isinstance(quantizers.get("ste_uniform"), kbit.SteUniform)


def test_folded_one_bit_model_exports_to_lce_binary_convolution(tmp_path):
    from lce_interpreter import Interpreter  # LCE's, in the numpy<2 oracle env

    model = _slb_network(1)
    folded = slb.fold(model)
    path = lns_keras.export.to_tflite(folded, tmp_path / "slb.tflite", lce=True)
    flatbuffer = open(path, "rb").read()
    assert "LceBconv2d" in lns_keras.export.tflite_op_names(flatbuffer)
    x = _random((1, 6, 6, 3), seed=6)
    np.testing.assert_allclose(
        Interpreter(flatbuffer).predict(x), _numpy(model(x)), rtol=0, atol=1e-3
    )


def test_fold_refuses_a_model_without_slb_layers():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no SLB layer"):
        slb.fold(model)
    with pytest.raises(ValueError, match="built keras.Model"):
        slb.fold("model")


# --------------------------------------------------------------------------- saving


def test_keras_round_trip_keeps_logits_temperature_hard_flag_and_pact(tmp_path):
    model = _slb_network(2)
    conv = model.layers[3]
    dense = model.layers[6]
    conv.set_temperature(3.7)
    dense.hard = True
    conv.input_quantizer.alpha.assign(2.25)
    path = tmp_path / "slb.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    loaded_conv, loaded_dense = loaded.layers[3], loaded.layers[6]
    assert type(loaded_conv) is lns_keras.SLBQuantConv2D
    assert type(loaded_dense) is lns_keras.SLBQuantDense
    assert float(_numpy(loaded_conv.temperature)) == pytest.approx(3.7)
    assert loaded_conv.hard is False and loaded_dense.hard is True
    assert float(_numpy(loaded_conv.input_quantizer.alpha)) == 2.25
    assert isinstance(loaded_conv.input_quantizer, kbit.PACT)
    np.testing.assert_array_equal(_numpy(loaded_conv.logits), _numpy(conv.logits))
    assert loaded_conv.get_config() == conv.get_config()
    x = _random((4, 6, 6, 3), seed=8)
    for training in (False, True):  # training=True depends on T and the hard flag
        np.testing.assert_allclose(
            _numpy(loaded(x, training=training)), _numpy(model(x, training=training)), atol=1e-6
        )


def test_config_round_trip_without_latent_kernel_keys():
    layer = lns_keras.SLBQuantConv2D(
        8, 3, weight_bits=4, strides=2, logits_regularizer="l2", input_quantizer="pact"
    )
    config = layer.get_config()
    for key in ("kernel_initializer", "kernel_quantizer", "kernel_scale", "kernel_constraint"):
        assert key not in config
    assert config["weight_bits"] == 4
    clone = lns_keras.SLBQuantConv2D.from_config(config)
    assert clone.get_config() == config


# --------------------------------------------------------------------------- k-bit activations


def _value_and_gradients(quantizer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
        total = tf.reduce_sum(y)
    variables = quantizer.trainable_weights if hasattr(quantizer, "trainable_weights") else []
    gradients = tape.gradient(total, [x, *variables])
    return _numpy(y), [_numpy(g) for g in gradients]


def test_pact_numerics_and_gradients():
    q = kbit.PACT(k_bit=2, initial_alpha=1.5)
    x = np.float32([-0.7, 0.2, 0.3, 0.8, 1.2, 1.6, 4.0])
    y, (dx, dalpha) = _value_and_gradients(q, x)
    # clip to [0, 1.5], steps of 0.5: round(x / 0.5) * 0.5
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0, 1.5, 1.5], atol=1e-6)
    np.testing.assert_array_equal(dx, [0, 1, 1, 1, 1, 0, 0])  # 1 on (0, alpha)
    assert dalpha == 2.0  # two inputs above alpha (PACT Eq. 3)
    one_bit, _ = _value_and_gradients(kbit.PACT(k_bit=1, initial_alpha=2.0), x)
    np.testing.assert_array_equal(one_bit, [0, 0, 0, 0, 2, 2, 2])
    assert q.precision == 2


def test_pact_is_registered_by_name_and_serializes():
    q = quantizers.get("pact")
    assert isinstance(q, kbit.PACT) and q.precision == 2
    assert quantizers.get("pact") is not q  # every layer gets its own alpha
    restored = quantizers.deserialize(quantizers.serialize(kbit.PACT(k_bit=4, initial_alpha=3.0)))
    assert isinstance(restored, kbit.PACT)
    assert (restored.precision, restored.initial_alpha) == (4, 3.0)


def test_pact_alpha_trains_inside_a_quantized_layer():
    inputs = keras.Input((4,))
    layer = lns_keras.QuantDense(2, input_quantizer=kbit.PACT(k_bit=2))
    model = keras.Model(inputs, layer(inputs))
    assert any(w.name == "alpha" for w in model.trainable_weights)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.full((8, 4), 3.0, np.float32)  # everything above alpha: its gradient is nonzero
    model.fit(x, np.full((8, 2), 10.0, np.float32), epochs=1, verbose=0)
    assert float(_numpy(layer.input_quantizer.alpha)) != 1.0


def test_dorefa_activations_numerics():
    # k-bit DoReFa activations: round((2^k - 1) clip(x, 0, 1)) / (2^k - 1), straight through.
    q = quantizers.DoReFa(k_bit=2, mode="activations")
    x = np.float32([-0.4, 0.1, 0.2, 0.45, 0.9, 1.7])
    y, (dx,) = _value_and_gradients(q, x)
    np.testing.assert_allclose(y, [0, 0, 1 / 3, 1 / 3, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(dx, [0, 1, 1, 1, 1, 0])
    y4, _ = _value_and_gradients(quantizers.DoReFa(k_bit=4, mode="activations"), x)
    np.testing.assert_allclose(y4, np.round(np.clip(x, 0, 1) * 15) / 15, atol=1e-6)


# --------------------------------------------------------------------------- from a kernel


@pytest.mark.parametrize("bits", BITS)
def test_init_logits_from_kernel_picks_the_nearest_value(bits):
    layer = _built_layer("conv", bits)
    kernel = _random(layer.kernel_shape, seed=9)
    layer.init_logits_from_kernel(kernel, normalize="channel", margin=2.0)
    scaled = kernel / np.abs(kernel).max(axis=(0, 1, 2))
    nearest = value_set(bits)[np.argmin(np.abs(scaled[..., None] - value_set(bits)), axis=-1)]
    np.testing.assert_array_equal(_numpy(layer.hard_kernel()), nearest)
    assert set(np.unique(_numpy(layer.logits)).tolist()) == {0.0, 2.0}
    binary = np.where(kernel >= 0, 1.0, -1.0).astype(np.float32)
    layer.init_logits_from_kernel(binary)
    np.testing.assert_array_equal(_numpy(layer.hard_kernel()), binary)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: lns_keras.SLBQuantConv2D(4, 3, weight_bits=3), "weight_bits"),
        (lambda: lns_keras.SLBQuantConv2D(4, 3, weight_bits=True), "weight_bits"),
        (lambda: lns_keras.SLBQuantDense(4, weight_bits="2"), "weight_bits"),
        (lambda: lns_keras.SLBQuantConv2D(4, 3, kernel_quantizer="ste_sign"), "kernel_quantizer"),
        (lambda: lns_keras.SLBQuantDense(4, kernel_scale="layer"), "kernel_scale"),
        (lambda: lns_keras.SLBQuantDense(4, kernel_initializer="zeros"), "kernel_initializer"),
        (lambda: lns_keras.SLBQuantDense(4, lora_rank=2), "lora_rank"),
        (lambda: slb.SLBTemperatureScheduler(t0=0), "t0"),
        (lambda: slb.SLBTemperatureScheduler(t0=float("inf")), "t0"),
        (lambda: slb.SLBTemperatureScheduler(factor=0.9), "factor"),
        (lambda: slb.SLBTemperatureScheduler(start=-0.1), "start"),
        (lambda: slb.SLBTemperatureScheduler(end=1.5), "end"),
        (lambda: slb.SLBTemperatureScheduler(start=0.7, end=0.5), "start"),
        (lambda: slb.SLBTemperatureScheduler(epochs=0), "epochs"),
        (lambda: slb.BatchNormRecalibration([], steps=0), "steps"),
        (lambda: slb.BatchNormRecalibration([], start=2), "start"),
        (lambda: slb.scheduled_temperature(1, 0), "epochs"),
        (lambda: kbit.PACT(k_bit=0), "k_bit"),
        (lambda: kbit.PACT(initial_alpha=0.0), "initial_alpha"),
        (lambda: kbit.PACT(initial_alpha=float("nan")), "initial_alpha"),
        (lambda: kbit.SteUniform(k_bit=2.0), "k_bit"),
        (lambda: kbit.SteUniform(clip_value=0), "clip_value"),
        (lambda: value_set(8), "weight_bits"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_temperature_is_refused(temperature):
    layer = _built_layer("dense", 1)
    with pytest.raises(ValueError, match="`temperature`"):
        layer.set_temperature(temperature)
    assert float(_numpy(layer.temperature)) == 1.0


def test_bad_kernel_for_init_is_refused():
    layer = _built_layer("dense", 2)
    with pytest.raises(ValueError, match=r"kernel_shape \(4, 3\).*\(3, 4\)"):
        layer.init_logits_from_kernel(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`normalize`"):
        layer.init_logits_from_kernel(np.zeros((4, 3)), normalize="max")
    with pytest.raises(ValueError, match="`margin`"):
        layer.init_logits_from_kernel(np.zeros((4, 3)), margin=0)


def test_recalibration_without_batches_is_refused():
    model = _bn_model()
    with pytest.raises(ValueError, match="no batch"):
        slb.recalibrate_batch_norm(model, [])
    assert model.get_layer("slb_conv").hard is False


# --------------------------------------------------------------------------- flip rate


@pytest.mark.parametrize("bits", [1, 2])
def test_binary_signs_and_flip_rate_count_a_1_bit_slb_layer_by_its_hard_kernel(bits):
    model = _bn_model(bits)
    conv = model.get_layer("slb_conv")
    signs = lns_keras.callbacks.binary_signs(model)
    if bits != 1:
        assert "slb_conv" not in signs  # a 2-bit kernel has no sign to flip
        return
    np.testing.assert_array_equal(
        signs["slb_conv"], keras.ops.convert_to_numpy(conv.hard_kernel()) > 0
    )
    # Swapping the two logits of a quarter of the weights flips exactly those.
    logits = keras.ops.convert_to_numpy(conv.logits)
    flipped = np.zeros(logits.shape[:-1], bool)
    flipped.reshape(-1)[: flipped.size // 4] = True
    logits[flipped] = logits[flipped][:, ::-1]
    callback = lns_keras.callbacks.FlipRate()
    callback.set_model(model)
    callback.on_train_begin()
    conv.logits.assign(logits)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["flip_rate"] == pytest.approx(0.25)
    assert (
        lns_keras.callbacks.binary_signs(model)["slb_conv"][flipped].tolist()
        == (~signs["slb_conv"][flipped]).tolist()
    )
