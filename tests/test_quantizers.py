"""Quantizers: larq 0.14 as the oracle for values and pseudo-gradients, the registry, errors.

larq imports only under Keras 2, so it runs once per session in a subprocess with
`TF_USE_LEGACY_KERAS=1`, in the oracle's own environment (`larq_oracle.python()`); inputs,
quantizer specs and results travel through `.npz` files.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import keras
import larq_oracle
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import activations, constraints, quantizers

# A quantizer spec is `{"alias": name}` (resolved by name on both sides),
# `{"class": name, "kwargs": {...}}` (constructed from the class of the same name), or
# `{"function": name, "module": "quantizers" or "activations", "kwargs": {...}}` (the
# function of that name in `larq.<module>` and `lns_keras.<module>`, called with kwargs).
# Every registered alias of larq's quantizers (those this module defines) is an oracle
# case, so a new quantizer is tested the day it is registered; the extra cases exercise
# non-default arguments. Aliases beyond larq (`lns_keras.kbit`: "pact", "ste_uniform")
# have no larq counterpart; tests/test_slb.py pins their numerics.
_KERNEL_SHAPE = (3, 3, 4, 8)
_MATRIX_SHAPE = (6, 10)
LARQ_ALIASES = sorted(
    alias for alias, cls in quantizers._ALIASES.items() if cls.__module__ == quantizers.__name__
)

# larq's quantizer functions; each has a `precision` in lns_keras (not in larq).
_FUNCTIONS = ("ste_sign", "approx_sign", "swish_sign", "ste_tern", "ste_heaviside")

ORACLE_CASES = {
    **{alias: ({"alias": alias}, _MATRIX_SHAPE) for alias in LARQ_ALIASES},
    "magnitude_aware_sign_4d": ({"alias": "magnitude_aware_sign"}, _KERNEL_SHAPE),
    "SteSign(clip_value=0.5)": ({"class": "SteSign", "kwargs": {"clip_value": 0.5}}, _MATRIX_SHAPE),
    "SteSign(clip_value=None)": (
        {"class": "SteSign", "kwargs": {"clip_value": None}},
        _MATRIX_SHAPE,
    ),
    "SteHeaviside(clip_value=2.0)": (
        {"class": "SteHeaviside", "kwargs": {"clip_value": 2.0}},
        _MATRIX_SHAPE,
    ),
    "SwishSign(beta=2.0)": ({"class": "SwishSign", "kwargs": {"beta": 2.0}}, _MATRIX_SHAPE),
    "SteTern(ternary_weight_networks=True)": (
        {"class": "SteTern", "kwargs": {"ternary_weight_networks": True}},
        _KERNEL_SHAPE,
    ),
    "SteTern(threshold_value=0.2)": (
        {"class": "SteTern", "kwargs": {"threshold_value": 0.2}},
        _MATRIX_SHAPE,
    ),
    "DoReFa(k_bit=3, mode=weights)": (
        {"class": "DoReFa", "kwargs": {"k_bit": 3, "mode": "weights"}},
        _KERNEL_SHAPE,
    ),
    "DoReFa(k_bit=1)": ({"class": "DoReFa", "kwargs": {"k_bit": 1}}, _MATRIX_SHAPE),
    "MagnitudeAwareSign(clip_value=0.5)": (
        {"class": "MagnitudeAwareSign", "kwargs": {"clip_value": 0.5}},
        _KERNEL_SHAPE,
    ),
    "NoOp(precision=1)": ({"class": "NoOp", "kwargs": {"precision": 1}}, _MATRIX_SHAPE),
    # larq's legacy class names
    "DoReFaQuantizer(k_bit=3)": (
        {"class": "DoReFaQuantizer", "kwargs": {"k_bit": 3}},
        _MATRIX_SHAPE,
    ),
    "NoOpQuantizer(precision=2)": (
        {"class": "NoOpQuantizer", "kwargs": {"precision": 2}},
        _MATRIX_SHAPE,
    ),
    # the functions, passed as quantizers
    **{
        f"function {name}": (
            {"function": name, "module": "quantizers", "kwargs": {}},
            _MATRIX_SHAPE,
        )
        for name in _FUNCTIONS
    },
    "function ste_sign(clip_value=0.5)": (
        {"function": "ste_sign", "module": "quantizers", "kwargs": {"clip_value": 0.5}},
        _MATRIX_SHAPE,
    ),
    "function ste_tern(ternary_weight_networks=True)": (
        {
            "function": "ste_tern",
            "module": "quantizers",
            "kwargs": {"ternary_weight_networks": True},
        },
        _KERNEL_SHAPE,
    ),
    # larq's activations
    "activation leaky_tanh": (
        {"function": "leaky_tanh", "module": "activations", "kwargs": {}},
        _MATRIX_SHAPE,
    ),
    "activation leaky_tanh(alpha=0.5)": (
        {"function": "leaky_tanh", "module": "activations", "kwargs": {"alpha": 0.5}},
        _MATRIX_SHAPE,
    ),
    "activation hard_tanh": (
        {"function": "hard_tanh", "module": "activations", "kwargs": {}},
        _MATRIX_SHAPE,
    ),
}

# Values that sit on the edges of the quantizers: zero, the clip bounds, the default
# ternary threshold, and values beyond the clip bounds.
_SPECIAL_VALUES = np.array([0.0, 0.0, 1.0, -1.0, 0.05, -0.05, 0.5, -0.5, 1.5, -1.5, 3.0, -3.0])


def _inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random tensor holding every special value, and a random upstream gradient."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=1.5, size=shape).ravel()
    positions = rng.choice(x.size, size=_SPECIAL_VALUES.size, replace=False)
    x[positions] = _SPECIAL_VALUES
    dy = rng.normal(size=shape)
    return x.reshape(shape).astype(np.float32), dy.astype(np.float32)


def _larq_script() -> str:
    return textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        import larq as lq

        folder = sys.argv[1]
        specs = json.load(open(f"{folder}/specs.json"))
        data = np.load(f"{folder}/inputs.npz")
        results = {}
        for i, (name, spec) in enumerate(specs.items()):
            if "function" in spec:
                function = getattr(getattr(lq, spec["module"]), spec["function"])
                quantizer = lambda x, f=function, kw=spec["kwargs"]: f(x, **kw)  # noqa: E731
            elif spec.get("alias") == "noop":
                quantizer = lq.quantizers.NoOp(precision=None)  # larq's NoOp has no default
            elif "alias" in spec:
                quantizer = lq.quantizers.get(spec["alias"])
            else:
                quantizer = getattr(lq.quantizers, spec["class"])(**spec["kwargs"])
            x = tf.constant(data[f"x{i}"])
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = quantizer(x)
            grad = tape.gradient(y, x, output_gradients=tf.constant(data[f"dy{i}"]))
            results[f"y{i}"] = y.numpy()
            results[f"grad{i}"] = grad.numpy()
        np.savez(f"{folder}/results.npz", **results)
        """
    )


@pytest.fixture(scope="session")
def larq_results(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """larq's forward values and gradients for every case in `ORACLE_CASES`."""
    folder = tmp_path_factory.mktemp("larq_oracle")
    specs = {name: spec for name, (spec, _) in ORACLE_CASES.items()}
    arrays = {}
    for i, (_, shape) in enumerate(ORACLE_CASES.values()):
        arrays[f"x{i}"], arrays[f"dy{i}"] = _inputs(shape, seed=i)
    (folder / "specs.json").write_text(json.dumps(specs))
    np.savez(folder / "inputs.npz", **arrays)
    (folder / "oracle.py").write_text(_larq_script())
    run = subprocess.run(
        [larq_oracle.python(), str(folder / "oracle.py"), str(folder)],
        env=larq_oracle.environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        # CI has larq installed: a missing or broken oracle is a failure, never a skip.
        pytest.fail(f"The larq oracle subprocess failed:\n{run.stderr[-4000:]}")
    results = np.load(folder / "results.npz")
    return {
        name: (arrays[f"x{i}"], arrays[f"dy{i}"], results[f"y{i}"], results[f"grad{i}"])
        for i, name in enumerate(ORACLE_CASES)
    }


def _build(spec: dict):
    if "function" in spec:
        module = {"quantizers": quantizers, "activations": activations}[spec["module"]]
        function = getattr(module, spec["function"])
        return lambda x: function(x, **spec["kwargs"])
    if "alias" in spec:
        return quantizers.get(spec["alias"])
    return getattr(quantizers, spec["class"])(**spec["kwargs"])


def _forward_and_gradient(quantizer, x: np.ndarray, dy: np.ndarray):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    grad = tape.gradient(y, x, output_gradients=tf.constant(dy))
    return keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(grad)


def test_every_alias_is_an_oracle_case():
    aliases = {spec["alias"] for spec, _ in ORACLE_CASES.values() if "alias" in spec}
    assert aliases == set(LARQ_ALIASES)
    assert len(LARQ_ALIASES) >= 8


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_matches_larq(case, larq_results):
    spec, _ = ORACLE_CASES[case]
    x, dy, larq_y, larq_grad = larq_results[case]
    y, grad = _forward_and_gradient(_build(spec), x, dy)
    assert y.shape == x.shape and grad.shape == x.shape
    np.testing.assert_allclose(y, larq_y, rtol=0, atol=1e-6, err_msg="forward")
    np.testing.assert_allclose(grad, larq_grad, rtol=0, atol=1e-6, err_msg="gradient")


def test_oracle_inputs_hit_the_edges():
    x, _ = _inputs(_MATRIX_SHAPE, seed=0)
    assert np.sum(x == 0) >= 2
    for value in (1.5, -1.5, 3.0, -3.0):
        assert np.any(x == np.float32(value))


@pytest.mark.parametrize("alias", ["ste_sign", "approx_sign", "swish_sign"])
def test_sign_of_zero_is_plus_one(alias):
    y = keras.ops.convert_to_numpy(quantizers.get(alias)(tf.constant([[0.0, -0.0, -1e-7, 2.0]])))
    np.testing.assert_array_equal(y, [[1.0, 1.0, -1.0, 1.0]])


def test_magnitude_aware_sign_of_zero_is_plus_the_scale():
    x = tf.constant([[0.0, 2.0], [-1.0, 0.0]])
    y = keras.ops.convert_to_numpy(quantizers.get("magnitude_aware_sign")(x))
    # Column means of |x|: 0.5 and 1.0; sign(0) = +1.
    np.testing.assert_array_equal(y, [[0.5, 1.0], [-0.5, 1.0]])


def test_sign_function_of_zero_is_plus_one():
    y = keras.ops.convert_to_numpy(quantizers.sign(tf.constant([-2.0, -0.0, 0.0, 0.3])))
    np.testing.assert_array_equal(y, [-1.0, 1.0, 1.0, 1.0])


def test_ste_heaviside_of_zero_is_zero():
    y = keras.ops.convert_to_numpy(quantizers.get("ste_heaviside")(tf.constant([-1.0, 0.0, 0.5])))
    np.testing.assert_array_equal(y, [0.0, 0.0, 1.0])


@pytest.mark.parametrize("alias", sorted(quantizers._ALIASES))
def test_alias_and_class_name_resolve_to_the_same_class(alias):
    cls = quantizers._ALIASES[alias]
    by_alias = quantizers.get(alias)
    by_class_name = quantizers.get(cls.__name__)
    assert type(by_alias) is cls
    assert type(by_class_name) is cls
    assert isinstance(by_alias, quantizers.Quantizer)


def test_noop_alias_has_unknown_precision():
    assert quantizers.get("noop").precision is None


def test_precisions():
    assert quantizers.get("ste_sign").precision == 1
    assert quantizers.get("ste_tern").precision == 2
    assert quantizers.DoReFa(k_bit=3).precision == 3


def test_get_none_and_callable():
    assert quantizers.get(None) is None

    def my_quantizer(x):
        return x

    assert quantizers.get(my_quantizer) is my_quantizer
    obj = quantizers.SteSign(clip_value=0.3)
    assert quantizers.get(obj) is obj


def test_get_config_dict_round_trip():
    original = quantizers.SteTern(threshold_value=0.1, ternary_weight_networks=True)
    restored = quantizers.get(quantizers.serialize(original))
    assert type(restored) is quantizers.SteTern
    assert restored.threshold_value == 0.1
    assert restored.ternary_weight_networks is True
    assert quantizers.serialize(None) is None
    assert type(quantizers.deserialize("ste_sign")) is quantizers.SteSign


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="nonexistent_sign") as error:
        quantizers.get("nonexistent_sign")
    for alias in quantizers._ALIASES:
        assert alias in str(error.value)


def test_uninterpretable_identifier():
    with pytest.raises(ValueError, match="42"):
        quantizers.get(42)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: quantizers.SteSign(clip_value=-1.0), "clip_value"),
        (lambda: quantizers.SteSign(clip_value=0.0), "clip_value"),
        (lambda: quantizers.SteHeaviside(clip_value=-0.5), "clip_value"),
        (lambda: quantizers.MagnitudeAwareSign(clip_value=-1.0), "clip_value"),
        (lambda: quantizers.SteTern(clip_value=-1.0), "clip_value"),
        (lambda: quantizers.SteTern(threshold_value=-0.1), "threshold_value"),
        (lambda: quantizers.DoReFa(k_bit=0), "k_bit"),
        (lambda: quantizers.DoReFa(mode="bias"), "mode"),
        (lambda: quantizers.SwishSign(beta=0.0), "beta"),
        (lambda: quantizers.SwishSign(beta=-2.0), "beta"),
        (lambda: quantizers.NoOp(precision=0), "precision"),
        (lambda: constraints.WeightClip(-1), "clip_value"),
        (lambda: constraints.WeightClip(0), "clip_value"),
    ],
)
def test_invalid_argument_is_named(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make()


def test_forward_graph_is_a_bare_sign():
    """The forward pass holds `sign(sign(x) + 0.1)` and no `x + stop_gradient(...)` trick."""
    quantizer = quantizers.SteSign()
    function = tf.function(lambda x: quantizer(x))
    graph = function.get_concrete_function(tf.TensorSpec((2, 5), tf.float32)).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("Sign") == 2
    assert "StopGradient" not in op_types
    # The one addition is the `+ 0.1` inside `sign`, between the two Sign ops.
    add_ops = [op for op in graph.get_operations() if op.type in ("AddV2", "Add")]
    assert len(add_ops) == 1
    assert {t.op.type for t in add_ops[0].inputs} == {"Sign", "Const"}
    assert not {"Sub", "Identity"} & {
        t.op.type for op in graph.get_operations() if op.type == "Sign" for t in op.inputs
    }


def test_dorefa_mode_changed_after_construction_is_refused():
    """larq raises in `call`; lns_keras used to run the weights path silently."""
    quantizer = quantizers.DoReFa(k_bit=2, mode="activations")
    quantizer.mode = "weight"  # a typo, after construction
    with pytest.raises(ValueError, match="mode='weight'"):
        quantizer(tf.constant([0.2, 0.7]))


def test_legacy_names():
    assert quantizers.NoOpQuantizer is quantizers.NoOp
    assert quantizers.DoReFaQuantizer is quantizers.DoReFa
    assert type(quantizers.get("DoReFaQuantizer")) is quantizers.DoReFa
    restored = quantizers.get({"class_name": "DoReFaQuantizer", "config": {"k_bit": 3}})
    assert type(restored) is quantizers.DoReFa and restored.precision == 3


@pytest.mark.parametrize(
    "function, cls",
    [
        (quantizers.ste_sign, quantizers.SteSign),
        (quantizers.approx_sign, quantizers.ApproxSign),
        (quantizers.swish_sign, quantizers.SwishSign),
        (quantizers.ste_heaviside, quantizers.SteHeaviside),
        (quantizers.ste_tern, quantizers.SteTern),
    ],
)
def test_functions_have_their_classes_precision(function, cls):
    assert function.precision == cls.precision
    assert quantizers.sign.precision == 1


def test_function_quantizer_counts_as_binary():
    """`model_stats`, `convert.is_binary_layer` and Bop see a function as its class."""
    layer = lns_keras.QuantDense(
        4,
        input_quantizer=quantizers.ste_sign,
        kernel_quantizer=quantizers.ste_sign,
        kernel_constraint="weight_clip",
    )
    model = keras.Sequential([keras.Input((8,)), layer])
    stats = lns_keras.model_stats(model)
    assert stats.params_1bit == 32 and stats.binary_macs == 32
    assert lns_keras.convert.is_binary_layer(layer)
    assert lns_keras.optimizers.Bop.is_binary_variable(layer.kernel)


def test_quantizer_metrics_argument():
    quantizer = quantizers.SteSign(metrics=["flip_ratio"])
    assert quantizer._custom_metrics == ["flip_ratio"]
    restored = quantizers.get(quantizers.serialize(quantizer))
    assert restored._custom_metrics == ["flip_ratio"]
    # Without metrics the config is unchanged (no "metrics" key).
    assert "metrics" not in quantizers.SteSign().get_config()
    with pytest.raises(ValueError, match="flip_rate"):
        quantizers.SteSign(metrics=["flip_rate"])
    with pytest.raises(ValueError, match="`metrics`"):
        quantizers.SteSign(metrics="flip_ratio")


def test_get_kernel_quantizer_takes_the_metrics_in_scope():
    """larq's `test_get_kernel_quantizer_assigns_metrics` and `..._accepts_function`."""
    with lns_keras.context.metrics_scope(["flip_ratio"]):
        ste_sign = quantizers.get_kernel_quantizer("ste_sign")
        assert "flip_ratio" in lns_keras.context.get_training_metrics()
    assert isinstance(ste_sign, quantizers.SteSign)
    assert "flip_ratio" in ste_sign._custom_metrics
    assert quantizers.get_kernel_quantizer("ste_sign")._custom_metrics == []

    def custom_quantizer(x):
        return x

    assert quantizers.get_kernel_quantizer(custom_quantizer) is custom_quantizer
    assert not hasattr(custom_quantizer, "_custom_metrics")
    own = quantizers.SteSign(metrics=["flip_ratio"])
    with lns_keras.context.metrics_scope([]):
        assert quantizers.get_kernel_quantizer(own)._custom_metrics == ["flip_ratio"]
    assert quantizers.get_kernel_quantizer(None) is None
