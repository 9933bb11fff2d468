"""Bop, CaseOptimizer and HyperparameterScheduler: larq 0.14 as the oracle, serialization,
bad arguments, and a tiny BNN trained with Bop under `model.fit` (jit and not).

larq runs once for this module in a subprocess (`larq_oracle`): the same gradients on the
same initial variables through larq's optimizers, and larq's scheduler in a larq `fit`.
"""

from __future__ import annotations

import math

import keras
import larq_oracle
import numpy as np
import pytest

import lns_keras
from lns_keras import callbacks, context
from lns_keras.optimizers import Bop, CaseOptimizer, is_binary_variable, mark_precisions

STEPS = 4
BOP = {"threshold": 1e-2, "gamma": 0.2}
# At w·m = τ exactly larq's sign(0) = +1 sets the weight to +1 (a -1 weight flips).
TIE_BOP = {"threshold": 0.25, "gamma": 0.5}
CASE_BOP = {"threshold": 1e-3, "gamma": 0.3}
SGD = {"learning_rate": 0.1, "momentum": 0.9}
ADAM = {"learning_rate": 0.01}
N_SAMPLES, BATCH = 32, 8

LARQ_SCRIPT = """
import larq as lq
from tensorflow.keras.optimizers import legacy

def bop_steps(names, hyper, steps):
    bop = lq.optimizers.Bop(**hyper)
    variables = [tf.Variable(inp[f"{n}_w"]) for n in names]
    for step in range(steps):
        bop.apply_gradients(zip([tf.constant(inp[f"{n}_g{step}"]) for n in names], variables))
        for n, v in zip(names, variables):
            out[f"{n}_w{step}"] = v.numpy()
            out[f"{n}_m{step}"] = bop.get_slot(v, "m").numpy()

bop_steps(["binary", "latent"], BOP, STEPS)
bop_steps(["tie"], TIE_BOP, 1)

def small_model():
    return tf.keras.Sequential([
        lq.layers.QuantDense(5, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                             input_shape=(4,)),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(3),
    ])

for name, default in (("adam", lambda: legacy.Adam(**ADAM)),
                      ("sgd", lambda: legacy.SGD(**SGD))):
    model = small_model()
    model.set_weights([inp[f"model_w{i}"] for i in range(len(model.get_weights()))])
    case = lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(**CASE_BOP)),
        default_optimizer=default(),
    )
    n = len(model.trainable_weights)
    for step in range(STEPS):
        grads = [tf.constant(inp[f"model_g{step}_{i}"]) for i in range(n)]
        case.apply_gradients(zip(grads, model.trainable_weights))
        for i, w in enumerate(model.trainable_weights):
            out[f"{name}_{step}_{i}"] = tf.keras.backend.get_value(w)

# The scheduler, in a larq fit: per epoch (one- and two-argument schedules) and per step.
def fit_with(make_callbacks, epochs):
    model = small_model()
    bop = lq.optimizers.Bop(threshold=1e-6, gamma=1e-3)
    adam = legacy.Adam(0.01)
    model.compile(
        optimizer=lq.optimizers.CaseOptimizer((lq.optimizers.Bop.is_binary_variable, bop),
                                              default_optimizer=adam),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(inp["x"], inp["y"], epochs=epochs, batch_size=BATCH, verbose=0,
                        shuffle=False, callbacks=make_callbacks(bop, adam))
    return history.history

from larq.callbacks import HyperparameterScheduler as HS
per_epoch = fit_with(lambda bop, adam: [
    HS(lambda e: 1e-2 / (1.0 + e), "gamma", bop),
    HS(lambda e, value: value * 0.5, "threshold", bop),
    HS(lambda e: 0.01 * 0.9 ** e, "lr", adam, log_name="adam_lr"),
], epochs=3)
for key in ("gamma", "threshold", "adam_lr"):
    out[f"epoch_{key}"] = np.array(per_epoch[key])
per_step = fit_with(lambda bop, adam: [
    HS(lambda t: 1e-3 / (1.0 + t), "gamma", bop, update_freq="step"),
], epochs=2)
out["step_gamma"] = np.array(per_step["gamma"])
"""


def _constants() -> str:
    names = ["STEPS", "BOP", "TIE_BOP", "CASE_BOP", "SGD", "ADAM", "BATCH"]
    return "\n".join(f"{name} = {globals()[name]!r}" for name in names) + "\n"


def small_model(name=None) -> keras.Model:
    """larq's small model in lns_keras: a binary dense layer, batch norm, a float dense."""
    return keras.Sequential(
        [
            keras.Input((4,)),
            lns_keras.QuantDense(5, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ],
        name=name,
    )


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {}
    arrays["binary_w"] = rng.choice([-1.0, 1.0], size=(4, 5)).astype("float32")
    arrays["latent_w"] = rng.normal(scale=0.05, size=(3, 3)).astype("float32")
    for name, shape in (("binary", (4, 5)), ("latent", (3, 3))):
        for step in range(STEPS):
            arrays[f"{name}_g{step}"] = rng.normal(scale=0.1, size=shape).astype("float32")
    arrays["tie_w"] = np.array([-1.0, 1.0, -1.0, 1.0, 0.0], "float32")
    arrays["tie_g0"] = np.array([-0.5, 0.5, 0.5, -0.5, 0.3], "float32")
    model = small_model()
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()]
    weights[5] = np.abs(weights[5]) + 0.5  # BN moving variance
    for i, w in enumerate(weights):
        arrays[f"model_w{i}"] = w
    for step in range(STEPS):
        for i, w in enumerate(model.trainable_weights):
            arrays[f"model_g{step}_{i}"] = rng.normal(scale=0.05, size=w.shape).astype("float32")
    arrays["x"] = rng.normal(size=(N_SAMPLES, 4)).astype("float32")
    arrays["y"] = rng.integers(0, 3, size=N_SAMPLES)
    return arrays


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    inputs = _inputs()
    outputs = larq_oracle.run(
        _constants() + LARQ_SCRIPT, inputs, tmp_path_factory.mktemp("larq_optimizers")
    )
    return inputs, outputs


def _bop_steps(inputs, names, hyper, steps):
    bop = Bop(**hyper)
    variables = [keras.Variable(inputs[f"{n}_w"]) for n in names]
    results = {}
    for step in range(steps):
        bop.apply_gradients([(inputs[f"{n}_g{step}"], v) for n, v in zip(names, variables)])
        for i, (n, v) in enumerate(zip(names, variables)):
            results[f"{n}_w{step}"] = keras.ops.convert_to_numpy(v)
            results[f"{n}_m{step}"] = keras.ops.convert_to_numpy(bop._moving_averages[i])
    return results


def test_bop_steps_match_larq(oracle):
    inputs, larq = oracle
    ours = _bop_steps(inputs, ["binary", "latent"], BOP, STEPS)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, larq[key], err_msg=key)
    # Not vacuous: the steps flip some binary weights and binarize the latent ones.
    assert not np.array_equal(ours[f"binary_w{STEPS - 1}"], inputs["binary_w"])
    assert set(np.unique(ours["latent_w0"])) == {-1.0, 1.0}


def test_bop_tie_matches_larq(oracle):
    inputs, larq = oracle
    ours = _bop_steps(inputs, ["tie"], TIE_BOP, 1)
    np.testing.assert_array_equal(ours["tie_w0"], larq["tie_w0"])
    np.testing.assert_array_equal(ours["tie_w0"], [1.0, 1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("default", ["adam", "sgd"])
def test_case_optimizer_steps_match_larq(oracle, default):
    inputs, larq = oracle
    model = small_model()
    model.set_weights([inputs[f"model_w{i}"] for i in range(len(model.get_weights()))])
    assert mark_precisions(model) == {model.layers[0].kernel.path: 1}
    make = keras.optimizers.Adam if default == "adam" else keras.optimizers.SGD
    case = CaseOptimizer(
        (Bop.is_binary_variable, Bop(**CASE_BOP)),
        default_optimizer=make(**(ADAM if default == "adam" else SGD)),
    )
    weights = model.trainable_weights
    for step in range(STEPS):
        case.apply_gradients([(inputs[f"model_g{step}_{i}"], w) for i, w in enumerate(weights)])
        for i, w in enumerate(weights):
            ours = keras.ops.convert_to_numpy(w)
            theirs = larq[f"{default}_{step}_{i}"]
            if i == 0:  # the binary kernel, Bop's: exactly
                np.testing.assert_array_equal(ours, theirs, err_msg=f"step {step}")
            else:  # the rest, Keras 3's Adam/SGD against tf.keras's fused kernels
                np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert case.optimizers[0].iterations.numpy() == STEPS
    assert case.iterations.numpy() == STEPS


def _fit_scheduled(make_callbacks, epochs, jit_compile=False):
    inputs = _inputs()
    model = small_model()
    mark_precisions(model)
    bop = Bop(threshold=1e-6, gamma=1e-3)
    adam = keras.optimizers.Adam(0.01)
    model.compile(
        optimizer=CaseOptimizer((Bop.is_binary_variable, bop), default_optimizer=adam),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    history = model.fit(
        inputs["x"],
        inputs["y"],
        epochs=epochs,
        batch_size=BATCH,
        verbose=0,
        shuffle=False,
        callbacks=make_callbacks(bop, adam),
    )
    return history.history, bop, adam


def test_scheduler_per_epoch_matches_larq(oracle):
    _, larq = oracle
    HS = callbacks.HyperparameterScheduler
    history, bop, adam = _fit_scheduled(
        lambda bop, adam: [
            HS(lambda e: 1e-2 / (1.0 + e), "gamma", bop),
            HS(lambda e, value: value * 0.5, "threshold", bop),
            HS(lambda e: 0.01 * 0.9**e, "learning_rate", adam, log_name="adam_lr"),
        ],
        epochs=3,
    )
    for key in ("gamma", "threshold", "adam_lr"):
        np.testing.assert_array_equal(np.float32(history[key]), larq[f"epoch_{key}"], key)
    assert float(bop.gamma.numpy()) == pytest.approx(1e-2 / 3)
    assert float(adam.learning_rate.numpy()) == pytest.approx(0.01 * 0.9**2)


def test_scheduler_per_step_matches_larq(oracle):
    _, larq = oracle
    history, bop, _ = _fit_scheduled(
        lambda bop, adam: [
            callbacks.HyperparameterScheduler(
                lambda t: 1e-3 / (1.0 + t), "gamma", bop, update_freq="step"
            )
        ],
        epochs=2,
    )
    np.testing.assert_array_equal(np.float32(history["gamma"]), larq["step_gamma"])
    steps_per_epoch = N_SAMPLES // BATCH
    assert history["gamma"][-1] == pytest.approx(1e-3 / (2 * steps_per_epoch))


def test_scheduled_gamma_reaches_the_compiled_step():
    """A value set by the scheduler is the one a jit-compiled step uses: gamma = 0 in the
    first epoch leaves Bop's moving averages at zero, gamma > 0 in the second does not."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            bop = self.model.optimizer.optimizers[0]
            seen.append(max(float(np.abs(m.numpy()).max()) for m in bop._moving_averages))

    _fit_scheduled(
        lambda bop, adam: [
            callbacks.HyperparameterScheduler(lambda e: 0.0 if e == 0 else 0.5, "gamma", bop),
            Record(),
        ],
        epochs=2,
        jit_compile=True,
    )
    assert seen[0] == 0.0 and seen[1] > 0.0


def test_scheduler_verbose_prints_like_larq(capsys):
    _fit_scheduled(
        lambda bop, adam: [
            callbacks.HyperparameterScheduler(lambda e: 0.25, "gamma", bop, verbose=1)
        ],
        epochs=1,
    )
    assert "Epoch 0: gamma is now 0.25." in capsys.readouterr().out


# The end to end: a tiny BNN trained by Bop and Adam under model.fit.


def tiny_bnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            lns_keras.QuantConv2D(
                4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False
            ),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            lns_keras.QuantDense(
                3,
                input_quantizer="ste_sign",
                kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip",
                use_bias=False,
            ),
        ]
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tiny_bnn_trains_with_bop(jit_compile):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=64)
    model = tiny_bnn()
    binary = [model.layers[0].kernel, model.layers[3].kernel]
    assert sorted(mark_precisions(model).values()) == [1, 1]
    model.compile(
        optimizer=CaseOptimizer(
            (Bop.is_binary_variable, Bop(threshold=1e-5, gamma=1e-2)),
            default_optimizer=keras.optimizers.Adam(0.01),
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    initial = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after_one = [keras.ops.convert_to_numpy(v) for v in binary]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    final = [keras.ops.convert_to_numpy(v) for v in binary]
    for kernel in after_one + final:  # Bop keeps binary weights at exactly ±1
        assert set(np.unique(kernel)) <= {-1.0, 1.0}
    flipped = sum(int(np.sum(a != b)) for a, b in zip(after_one, final))
    assert 0 < flipped < sum(k.size for k in final)
    # Adam trained everything else, and left it real-valued.
    for variable, start in zip(model.trainable_variables, initial):
        if not any(variable is b for b in binary):
            value = keras.ops.convert_to_numpy(variable)
            assert not np.array_equal(value, start), variable.path
            assert not set(np.unique(value)) <= {-1.0, 1.0}


def test_first_bop_step_binarizes_a_real_initialisation():
    """larq's Bop keeps no latent weights: a real initial kernel is sign(w) after a step
    whose moving average is below the threshold (no flips)."""
    w0 = np.random.default_rng(1).normal(size=(6, 5)).astype("float32")
    variable = keras.Variable(w0)
    Bop(threshold=1.0, gamma=1e-3).apply_gradients([(np.ones_like(w0), variable)])
    np.testing.assert_array_equal(variable.numpy(), np.where(w0 >= 0, 1.0, -1.0))


# Which variables are binary.


def test_mark_precisions_marks_what_quantizers_read():
    x = keras.Input((6, 6, 2))
    h = lns_keras.QuantConv2D(4, 3, kernel_quantizer="ste_tern")(x)
    h = lns_keras.QuantConv2D(4, 3, kernel_quantizer=lns_keras.quantizers.NoOp(precision=1))(h)
    h = lns_keras.LNSQuantConv2D(4, 1)(h)
    h = lns_keras.QuantConv2D(4, 1)(h)  # no kernel quantizer
    h = keras.layers.Flatten()(h)
    y = lns_keras.QuantDense(2, kernel_quantizer=lns_keras.quantizers.ste_sign)(h)  # a function
    model = keras.Model(x, y)
    marked = mark_precisions(model)
    layers = model.layers
    # lns_keras's functions carry their class's precision (ste_sign: 1)
    assert marked == {
        layers[1].kernel.path: 2,
        layers[2].kernel.path: 1,
        layers[6].kernel.path: 1,
    }
    assert [is_binary_variable(v) for v in model.trainable_variables].count(True) == 2
    assert is_binary_variable(layers[2].kernel) and not is_binary_variable(layers[3].kernel)
    assert Bop.is_binary_variable is is_binary_variable


# Serialization.


def _roundtrip(optimizer):
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert keras.optimizers.serialize(restored) == config
    return restored


@pytest.mark.parametrize(
    "hyper",
    [5e-4, keras.optimizers.schedules.PolynomialDecay(5e-4, 100)],
    ids=["float", "schedule"],
)
def test_bop_config_roundtrip(hyper):
    bop = Bop(threshold=hyper, gamma=hyper, clipnorm=1.0, name="my_bop")
    restored = _roundtrip(bop)
    assert isinstance(restored, Bop) and restored.name == "my_bop" and restored.clipnorm == 1.0
    assert type(restored._gamma) is type(bop._gamma)
    assert type(restored._threshold) is type(bop._threshold)
    assert "learning_rate" not in bop.get_config()


def test_case_optimizer_config_roundtrip_keeps_routing():
    model = small_model()
    mark_precisions(model)
    case = CaseOptimizer(
        (Bop.is_binary_variable, Bop(threshold=1e-6)),
        (lambda v: "batch_normalization" in v.path, keras.optimizers.SGD(0.1)),
        default_optimizer=keras.optimizers.Adam(0.01),
    )
    assert _roundtrip(case).pred_opt_pairs[0][0] is is_binary_variable
    case.build(model.trainable_variables)
    restored = _roundtrip(case)
    # The lambda is not saved; the routing it decided is.
    assert restored.pred_opt_pairs[1][0] is None
    fresh = small_model()  # unmarked: the routing comes from the config alone
    restored.build(fresh.trainable_variables)
    assert restored._routing == case._routing == [0, 2, 1, 1, 2, 2]


def _xy():
    inputs = _inputs()
    return inputs["x"], inputs["y"]


@pytest.mark.parametrize("case", [True, False], ids=["case_optimizer", "bop_alone"])
def test_model_with_bop_saves_and_loads(tmp_path, case):
    x, y = _xy()
    model = small_model(name="bnn")
    mark_precisions(model)
    optimizer = (
        CaseOptimizer(
            (Bop.is_binary_variable, Bop(threshold=1e-5, gamma=1e-2)),
            default_optimizer=keras.optimizers.Adam(0.01),
        )
        if case
        else Bop(threshold=1e-5, gamma=1e-2)
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, shuffle=False)
    path = tmp_path / "bnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=True)
    assert type(loaded.optimizer) is type(optimizer)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # Training goes on identically: same routing, same optimizer state.
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert set(np.unique(loaded.layers[0].kernel.numpy())) <= {-1.0, 1.0}


# Bad arguments.


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"threshold": -1e-8}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": "small"}, "threshold"),
        ({"gamma": -1e-4}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": math.nan}, "gamma"),
        ({"gamma": True}, "gamma"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"weight_decay": 0.1}, "weight_decay"),
    ],
)
def test_bop_rejects_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        Bop(**kwargs)


def test_bop_setter_rejects_bad_values():
    bop = Bop()
    with pytest.raises(ValueError, match="gamma"):
        bop.gamma = -1.0
    bop.threshold = 0.5
    assert float(bop.threshold.numpy()) == 0.5
    scheduled = Bop(gamma=keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5))
    with pytest.raises(ValueError, match="schedule"):
        scheduled.gamma = 1e-3


@pytest.mark.parametrize(
    "args, kwargs, named",
    [
        (((False, Bop()),), {}, r"predicate_optimizer_pairs\[0\]\[0\]"),
        (((is_binary_variable, "adam"),), {}, r"predicate_optimizer_pairs\[0\]\[1\]"),
        ((is_binary_variable,), {}, r"predicate_optimizer_pairs\[0\]"),
        (((is_binary_variable, Bop()),), {"default_optimizer": False}, "default_optimizer"),
    ],
)
def test_case_optimizer_rejects_bad_arguments(args, kwargs, named):
    # A ValueError naming the argument, and the TypeError larq raised.
    with pytest.raises(ValueError, match=named):
        CaseOptimizer(*args, **kwargs)
    with pytest.raises(TypeError):
        CaseOptimizer(*args, **kwargs)


def test_case_optimizer_rejects_an_optimizer_twice():
    bop = Bop()
    with pytest.raises(ValueError, match="once"):
        CaseOptimizer((is_binary_variable, bop), default_optimizer=bop)


def _fit_one_step(optimizer):
    x, y = _xy()
    model = small_model()
    mark_precisions(model)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, verbose=0)
    return model


def test_overlapping_predicates_raise():
    with pytest.raises(ValueError, match="several optimizers"):
        _fit_one_step(CaseOptimizer((lambda v: True, Bop()), (lambda v: True, Bop())))


def test_predicate_claiming_nothing_raises():
    with pytest.raises(ValueError, match="claimed no variable"):
        _fit_one_step(
            CaseOptimizer((lambda v: False, Bop()), default_optimizer=keras.optimizers.Adam())
        )


def test_unmarked_model_tells_what_to_do():
    x, y = _xy()
    model = small_model()
    # lns_keras's layers tag their kernels when built; a layer of one's own may not.
    del model.layers[0].kernel.precision
    model.compile(
        optimizer=CaseOptimizer(
            (Bop.is_binary_variable, Bop()), default_optimizer=keras.optimizers.Adam()
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match="mark_precisions"):
        model.fit(x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, verbose=0)


def test_missing_default_warns_and_leaves_the_rest_untrained():
    with pytest.warns(UserWarning, match="default_optimizer"):
        model = small_model()
        mark_precisions(model)
        before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        model.compile(
            optimizer=CaseOptimizer((Bop.is_binary_variable, Bop())),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x, y = _xy()
        model.fit(x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert not np.array_equal(before[0], after[0])  # Bop binarized the kernel
    for a, b in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"schedule": 0.1, "hyperparameter": "gamma"}, "schedule"),
        ({"schedule": abs, "hyperparameter": 3}, "hyperparameter"),
        ({"schedule": abs, "hyperparameter": "gamma", "update_freq": "wrong"}, "update_freq"),
        ({"schedule": abs, "hyperparameter": "gamma", "verbose": "yes"}, "verbose"),
        ({"schedule": abs, "hyperparameter": "gamma", "log_name": 1}, "log_name"),
    ],
)
def test_scheduler_rejects_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        callbacks.HyperparameterScheduler(**kwargs)


@pytest.mark.parametrize(
    "hyperparameter, optimizer, message",
    [
        ("invalid_param", keras.optimizers.Adam, "no hyperparameter 'invalid_param'"),
        ("beta_1", keras.optimizers.Adam, "variable"),
        ("learning_rate", None, "CaseOptimizer"),  # the model's optimizer: a CaseOptimizer
    ],
)
def test_scheduler_rejects_what_it_cannot_set(hyperparameter, optimizer, message):
    x, y = _xy()
    model = small_model()
    mark_precisions(model)
    model.compile(
        optimizer=CaseOptimizer(
            (Bop.is_binary_variable, Bop()), default_optimizer=keras.optimizers.Adam()
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    scheduler = callbacks.HyperparameterScheduler(
        lambda e: 0.1, hyperparameter, optimizer() if optimizer else None
    )
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[scheduler])


def test_quantized_kernels_is_used_for_marking():
    """mark_precisions and the context module agree on which weights are quantized."""
    model = small_model()
    found = context.quantized_kernels(model)
    assert [v.path for _, v, _, _ in found] == list(mark_precisions(model))


def test_scheduler_sets_the_models_optimizer_by_default():
    """larq's test_normal_optimizer, with Keras 3's name for the learning rate."""
    x, y = _xy()
    model = small_model()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    scheduler = callbacks.HyperparameterScheduler(lambda e: 1.0 / (1.0 + e), "learning_rate")
    model.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[scheduler])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.5)


def test_case_optimizer_inside_a_loss_scale_optimizer():
    """Mixed precision wraps the optimizer in a LossScaleOptimizer (larq's test)."""
    x, y = _xy()
    model = small_model()
    mark_precisions(model)
    case = CaseOptimizer(
        (Bop.is_binary_variable, Bop(threshold=1e-6, gamma=1e-2)),
        default_optimizer=keras.optimizers.Adam(0.01),
    )
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(case),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    assert set(np.unique(model.layers[0].kernel.numpy())) == {-1.0, 1.0}
    assert case.optimizers[0].iterations.numpy() == N_SAMPLES // BATCH
