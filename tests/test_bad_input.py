"""The library's answer to bad input (issue 8's probe): every wrong argument is a
`ValueError` that names the argument and its value, and every right one, NumPy scalars
included, is accepted and stored as a plain Python number."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import convert, losses
from lns_keras.layers.lns import is_lns_layer

LAYERS = [
    lambda **kwargs: lns_keras.LNSQuantConv2D(4, 3, **kwargs),
    lambda **kwargs: lns_keras.LNSQuantDense(4, **kwargs),
]
LAYER_IDS = ["conv", "dense"]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _raises(*names):
    """`pytest.raises(ValueError)` whose message contains every one of `names`."""
    return pytest.raises(ValueError, match="".join(f"(?=[\\s\\S]*{re.escape(n)})" for n in names))


# --- alpha, rho, mapping_width of the LNS layers ------------------------------------


def _shown(value) -> str:
    """How an error message shows `value`: a NumPy scalar as the number it holds, on
    NumPy 1 and 2 alike (NumPy 2's repr is `np.float32(nan)`)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize(
    "alpha, expected",
    [(np.float32(1), 1.0), (np.float64(0.5), 0.5), (np.int64(2), 2.0), (0, 0.0), (3, 3.0)],
)
def test_alpha_accepts_real_numbers_and_stores_a_float(make, alpha, expected):
    layer = make(alpha=alpha)
    assert type(layer.alpha) is float and layer.alpha == expected
    json.dumps(layer.get_config())  # no NumPy scalar left in the config


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize(
    "alpha",
    [True, False, float("inf"), float("-inf"), float("nan"), np.float32("nan"), -1.0, "1", None],
)
def test_alpha_rejects_what_is_not_a_finite_real_number_at_least_zero(make, alpha):
    with _raises("`alpha`", f"alpha={_shown(alpha)}"):
        make(alpha=alpha)


@pytest.mark.parametrize(
    "rho, noise_rates, config_rho",
    [
        (np.float32(0.25), (0.25, 0.25), 0.25),
        (np.float64(0.01), (0.01, 0.01), 0.01),
        (0, (0.0, 0.0), 0.0),
        ((np.float32(0.25), np.float64(0.125)), (0.25, 0.125), [0.25, 0.125]),
        ([0, np.float16(0.5)], (0.0, 0.5), [0.0, 0.5]),
    ],
)
def test_rho_accepts_real_numbers_and_stores_floats(rho, noise_rates, config_rho):
    layer = lns_keras.LNSQuantConv2D(4, 3, rho=rho)
    assert layer.noise_rates == noise_rates
    assert all(type(rate) is float for rate in layer.noise_rates)
    config = layer.get_config()
    assert config["rho"] == config_rho
    json.dumps(config)
    assert lns_keras.LNSQuantConv2D.from_config(config).noise_rates == noise_rates


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize(
    "rho, bad_rate",
    [
        (float("nan"), "rho_pos=nan"),
        (float("inf"), "rho_pos=inf"),
        (True, "rho_pos=True"),
        ("0.1", "rho_pos='0.1'"),
        (-0.1, "rho_pos=-0.1"),
        ((0.1, float("nan")), "rho_neg=nan"),
        ((0.1, True), "rho_neg=True"),
        ((np.float32("inf"), 0.1), "rho_pos=inf"),
        ((0.6, np.float32(0.4)), "sum"),
    ],
)
def test_rho_rejects_what_is_not_a_valid_noise_rate(make, rho, bad_rate):
    with _raises("`rho`", f"rho={rho!r}", bad_rate):
        make(rho=rho)


@pytest.mark.parametrize("rho_pos, rho_neg", [(np.float32(0.1), np.float64(0.2)), (0, 0)])
def test_check_noise_rates_accepts_numpy_scalars(rho_pos, rho_neg):
    losses.check_noise_rates(rho_pos, rho_neg)  # no exception


@pytest.mark.parametrize(
    "rho_pos, rho_neg, bad",
    [
        (float("nan"), 0.1, "rho_pos=nan"),
        (0.1, float("inf"), "rho_neg=inf"),
        (True, 0, "rho_pos=True"),
    ],
)
def test_check_noise_rates_rejects_nan_inf_and_bool(rho_pos, rho_neg, bad):
    with _raises(bad):
        losses.check_noise_rates(rho_pos, rho_neg)


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("width", [np.int64(3), np.int32(1), 2])
def test_mapping_width_accepts_integers_and_stores_an_int(make, width):
    layer = make(mapping_width=width)
    assert type(layer.mapping_width) is int and layer.mapping_width == int(width)
    assert type(layer.mapping.width) is int
    json.dumps(layer.get_config())


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("width", [True, 0, -2, 2.0, np.float32(2), "2", None])
def test_mapping_width_rejects_what_is_not_a_positive_integer(make, width):
    with _raises("`mapping_width`", f"mapping_width={_shown(width)}"):
        make(mapping_width=width)


# --- corrected_loss: labels ±1 of the estimates' shape --------------------------------


@pytest.mark.parametrize(
    "hat_shape, noisy_shape",
    [((3, 1), (1, 4)), ((4,), (1, 4)), ((2, 3), (3,)), ((5,), ())],
)
def test_corrected_loss_rejects_labels_of_another_shape(hat_shape, noisy_shape):
    q_hat = np.zeros(hat_shape, "float32")
    q_noisy = np.ones(noisy_shape, "float32")
    with _raises("`q_noisy`", str(noisy_shape), str(hat_shape)):
        losses.corrected_loss(q_hat, q_noisy, 0.1, 0.1)


@pytest.mark.parametrize(
    "labels, bad",
    [
        ([0.0, 1.0, 1.0], "[0.0]"),
        ([1, 0, 1], "[0]"),
        ([1.0, -1.0, 0.5], "[0.5]"),
        ([2, -2, 1], "[-2, 2]"),
    ],
)
def test_corrected_loss_rejects_labels_other_than_plus_minus_one(labels, bad):
    q_hat = keras.ops.zeros((3,))
    with _raises("`q_noisy`", bad):
        losses.corrected_loss(q_hat, np.array(labels), 0.1, 0.1)
    with _raises("`q_noisy`", bad):
        losses.corrected_loss(q_hat, keras.ops.convert_to_tensor(np.array(labels)), 0.1, 0.1)


def test_corrected_loss_accepts_integer_and_float_plus_minus_one():
    q_hat = np.array([0.5, -0.5, 2.0], "float32")
    floats = _np(losses.corrected_loss(q_hat, np.array([1.0, -1.0, 1.0], "float32"), 0.1, 0.2))
    ints = _np(losses.corrected_loss(q_hat, np.array([1, -1, 1], "int32"), 0.1, 0.2))
    np.testing.assert_array_equal(floats, ints)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_corrected_loss_compiles_and_checks_only_shapes_when_traced(jit_compile):
    # Inside tf.function / XLA the labels have no values yet: the shapes are checked while
    # tracing, the values are not (no host round trip, nothing XLA cannot compile).
    @tf.function(jit_compile=jit_compile)
    def loss(q_hat, q_noisy):
        return losses.corrected_loss(q_hat, q_noisy, 0.1, 0.1)

    q_hat = tf.constant([0.5, -0.5, 2.0])
    q_noisy = tf.constant([1.0, -1.0, -1.0])
    np.testing.assert_allclose(
        _np(loss(q_hat, q_noisy)), _np(losses.corrected_loss(q_hat, q_noisy, 0.1, 0.1))
    )
    with _raises("`q_noisy`", "(1, 3)", "(3,)"):
        loss(q_hat, tf.ones((1, 3)))


def test_corrected_loss_with_dimensions_unknown_while_tracing():
    @tf.function(input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2])])
    def loss(q_hat, q_noisy):
        return losses.corrected_loss(q_hat, q_noisy, 0.1, 0.1)

    assert _np(loss(tf.zeros((4, 2)), tf.ones((4, 2)))).shape == (4, 2)
    with _raises("`q_noisy`", "(None, 3)", "(None, 2)"):
        tf.function(input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 3])])(
            lambda q_hat, q_noisy: losses.corrected_loss(q_hat, q_noisy, 0.1, 0.1)
        ).get_concrete_function()


def test_corrected_loss_on_symbolic_inputs_checks_shapes():
    result = losses.corrected_loss(keras.Input((3,)), keras.Input((3,)), 0.1, 0.1)
    assert tuple(result.shape) == (None, 3)
    with _raises("`q_noisy`", "(None, 4)", "(None, 3)"):
        losses.corrected_loss(keras.Input((3,)), keras.Input((4,)), 0.1, 0.1)


def test_layer_loss_does_not_check_its_own_labels(monkeypatch):
    # The layer's labels are sign(W), ±1 by construction: it runs only Eq. 15, so eager
    # calls pay no label check and compiled ones contain nothing but the math.
    def fail(*args):
        raise AssertionError("the layer checked its own labels")

    monkeypatch.setattr(losses, "_check_labels", fail)
    layer = lns_keras.LNSQuantConv2D(4, 3, alpha=1.0)
    layer(np.ones((1, 5, 5, 2), "float32"), training=True)
    assert len(layer.losses) == 1 and np.isfinite(_np(layer.losses[0]))


def test_lns_model_trains_under_xla():
    inputs = keras.Input((6, 6, 2))
    x = lns_keras.LNSQuantConv2D(4, 3, alpha=1.0, input_quantizer=None)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    rng = np.random.default_rng(0)
    history = model.fit(
        rng.normal(size=(8, 6, 6, 2)).astype("float32"), rng.integers(0, 2, 8), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


# --- convert: what can be converted and folded --------------------------------------


def _binary_dense(units, **kwargs):
    return lns_keras.QuantDense(
        units, input_quantizer="ste_sign", kernel_quantizer="ste_sign", **kwargs
    )


def _functional(*layers):
    inputs = keras.Input((6,))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="probe")


def test_fold_rejects_a_model_without_lns_layers():
    with _raises("'probe'", "no LNS layer"):
        convert.fold(_functional(keras.layers.Dense(3)))
    baseline = _functional(_binary_dense(4), keras.layers.Dense(3))  # binary, not LNS
    with _raises("'probe'", "no LNS layer"):
        convert.fold(baseline)
    folded = convert.fold(convert.to_lns(baseline))  # the same model after to_lns folds
    assert [type(layer).__name__ for layer in folded.layers][1:] == ["QuantDense", "Dense"]


class SubclassedNet(keras.Model):
    """A model defined by its `call`: its layers are tracked, its graph is not known."""

    def __init__(self, binary_layer, **kwargs):
        super().__init__(**kwargs)
        self.binary = binary_layer
        self.head = keras.layers.Dense(3)

    def call(self, inputs):
        return self.head(self.binary(inputs))


def _subclassed(binary_layer):
    model = SubclassedNet(binary_layer)
    model(np.zeros((1, 6), "float32"))
    return model


def test_to_lns_and_fold_reject_a_subclassed_model():
    with _raises("functional and Sequential", "SubclassedNet"):
        convert.to_lns(_subclassed(_binary_dense(4)))
    with _raises("functional and Sequential", "SubclassedNet"):
        convert.fold(_subclassed(lns_keras.LNSQuantDense(4)))


def test_to_lns_accepts_sequential_and_subclassed_functional_models():
    sequential = keras.Sequential([keras.Input((6,)), _binary_dense(4), keras.layers.Dense(3)])
    assert any(is_lns_layer(layer) for layer in convert.to_lns(sequential).layers)

    class FunctionalSubclass(keras.Model):
        def __init__(self):
            inputs = keras.Input((6,))
            super().__init__(inputs, keras.layers.Dense(3)(_binary_dense(4)(inputs)))

    lns_model = convert.to_lns(FunctionalSubclass())
    assert any(is_lns_layer(layer) for layer in lns_model.layers)
    assert not any(is_lns_layer(layer) for layer in convert.fold(lns_model).layers)


def test_sign_agreement_and_warm_start_work_on_a_subclassed_model():
    # They only walk the tracked layers and fit; neither rebuilds the model's graph.
    model = _subclassed(lns_keras.LNSQuantDense(4))
    assert 0.0 <= convert.sign_agreement(model) <= 1.0
    rng = np.random.default_rng(0)
    history = convert.warm_start(
        model,
        rng.normal(size=(8, 6)).astype("float32"),
        y=rng.integers(0, 3, 8),
        epochs=np.int64(1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        verbose=0,
    )
    assert len(history.history["loss"]) == 1


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"alpha": float("inf")}, ["`alpha`", "alpha=inf"]),
        ({"alpha": True}, ["`alpha`", "alpha=True"]),
        ({"alpha": float("nan")}, ["`alpha`", "alpha=nan"]),
        ({"epochs": True}, ["`epochs`", "epochs=True"]),
        ({"epochs": -1}, ["`epochs`", "epochs=-1"]),
        ({"epochs": 1.0}, ["`epochs`", "epochs=1.0"]),
    ],
)
def test_warm_start_rejects_bad_alpha_and_epochs_before_any_work(kwargs, names):
    model = _functional(lns_keras.LNSQuantDense(4, alpha=0.5))
    arguments = {"epochs": 1, "loss": "mse", **kwargs}
    with _raises(*names):
        convert.warm_start(model, np.zeros((2, 6), "float32"), **arguments)
    assert model.compiled is False and model.layers[1].alpha == 0.5
