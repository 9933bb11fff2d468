"""The library core on TensorFlow, JAX and PyTorch: the same numbers on every backend.

`backend_runs` runs `tests/test_backend_core.py` under `KERAS_BACKEND=jax` and
`KERAS_BACKEND=torch` in child processes, in the background while the rest of the suite
runs (the main run is TensorFlow's). Each child run also computes `backend_probes.probe()`
and saves a `.keras` file. Here: the child runs passed, and their numbers are
TensorFlow's (`tests/backend_probes.py` lists them):

- each quantizer's forward value and pseudo-gradient, within 1e-6;
- each quantized layer's output and input gradient, within 1e-5 (sums of products);
- one LNS training step from the same weights and data: the loss and every updated
  weight, within 1e-5; `fold` of the stepped network predicts what it predicts;
- `model_stats` and `summary` alike;
- a `.keras` file saved under each backend loads under the others and predicts the same.
"""

from __future__ import annotations

import backend_probes
import backend_runs
import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != backend_runs.REFERENCE,
    reason="compares JAX and PyTorch with TensorFlow: the run's own backend must be TensorFlow",
)
OTHERS = backend_runs.OTHERS


@pytest.fixture(scope="module")
def runs():
    return backend_runs.results()


def _check(run: backend_runs.Run | None, name: str) -> None:
    if run is None:
        pytest.fail(f"The child run {name} did not run (the session was stopped?)")
    if run.returncode != 0:
        state = "timed out" if run.returncode is None else f"exited {run.returncode}"
        pytest.fail(
            f"The child run {name} ({' '.join(run.command)}, KERAS_BACKEND={run.backend}) "
            f"{state}:\n{run.output[-6000:]}"
        )


@pytest.fixture(scope="module")
def probes(runs) -> dict[str, dict[str, np.ndarray]]:
    folder, child_runs = runs
    _check(child_runs.get("probes-tensorflow"), "probes-tensorflow")
    loaded = {}
    for backend in (backend_runs.REFERENCE, *OTHERS):
        path = folder / f"{backend}.npz"
        if path.is_file():
            with np.load(path) as arrays:
                loaded[backend] = dict(arrays)
    return loaded


def _others(probes, backend):
    if backend not in probes:
        pytest.fail(f"No numbers from {backend}: its child run failed (see its test here)")
    return probes[backend]


@pytest.mark.parametrize("backend", OTHERS)
def test_core_tests_pass(runs, backend):
    _check(runs[1].get(f"pytest-{backend}"), f"pytest-{backend}")
    assert " passed" in runs[1][f"pytest-{backend}"].output


def _compare(reference, other, prefix, atol, rtol=0.0):
    names = sorted(name for name in reference if name.startswith(prefix))
    assert names, prefix
    assert sorted(n for n in other if n.startswith(prefix)) == names
    for name in names:
        np.testing.assert_allclose(other[name], reference[name], atol=atol, rtol=rtol, err_msg=name)


# The activations are clips: where x = ±1 exactly, each backend's autodiff picks its own
# derivative (Keras's `hard_tanh`: 1 on TensorFlow and JAX, 0 on PyTorch; larq's
# `leaky_tanh` formula: 1 + alpha on TensorFlow, as larq's own, 0.5 + alpha / 2 on JAX and
# PyTorch). Everywhere else they agree; docs/guide/installation.md says so.
TIES = {"activation hard_tanh": (-1.0, 1.0), "activation leaky_tanh": (-1.0, 1.0)}


@pytest.mark.parametrize("backend", OTHERS)
def test_quantizers_forward_and_pseudo_gradient_equal_tensorflow(probes, backend):
    reference, other = probes[backend_runs.REFERENCE], _others(probes, backend)
    cases = {name.split("/")[1] for name in reference if name.startswith("quantizer/")}
    assert cases == set(backend_probes.QUANTIZER_CASES)
    for i, (case, (_, shape)) in enumerate(backend_probes.QUANTIZER_CASES.items()):
        x, _ = backend_probes.quantizer_inputs(i, shape)
        away = ~np.isin(x, TIES.get(case, ()))
        assert away.sum() >= x.size - 4, case  # the ties are the edge values alone
        for part in ("y", "grad"):
            name = f"quantizer/{case}/{part}"
            np.testing.assert_allclose(
                other[name][away], reference[name][away], atol=1e-6, rtol=0, err_msg=name
            )
        np.testing.assert_allclose(
            other[f"quantizer/{case}/y"], reference[f"quantizer/{case}/y"], atol=1e-6
        )


@pytest.mark.parametrize("backend", OTHERS)
def test_quantized_layers_equal_tensorflow(probes, backend):
    _compare(probes[backend_runs.REFERENCE], _others(probes, backend), "layer/", atol=1e-5)


def test_every_quantized_layer_is_a_layer_case():
    """A new layer of the zoo is compared across backends the day it is added."""
    import lns_keras

    zoo = set(lns_keras.layers.zoo.__all__)
    assert zoo <= {cls for cls, *_ in backend_probes.LAYER_CASES.values()}


@pytest.mark.parametrize("backend", OTHERS)
def test_one_lns_training_step_equals_tensorflow(probes, backend):
    reference, other = probes[backend_runs.REFERENCE], _others(probes, backend)
    np.testing.assert_allclose(other["lns/loss"], reference["lns/loss"], atol=1e-5, rtol=0)
    _compare(reference, other, "lns/weight/", atol=1e-5)
    # The step moved the weights: the comparison is not of the initial values alone.
    initial = {
        variable.path: keras.ops.convert_to_numpy(variable)
        for variable in backend_probes.lns_network().trainable_variables
    }
    moved = [
        path
        for path, value in initial.items()
        if not np.allclose(reference[f"lns/weight/{path}"], value)
    ]
    assert len(moved) >= len(initial) // 2, moved


@pytest.mark.parametrize("backend", (backend_runs.REFERENCE, *OTHERS))
def test_fold_predicts_what_the_lns_model_predicts(probes, backend):
    other = _others(probes, backend)
    # JAX computes the scale in float32 (no float64 unless JAX_ENABLE_X64): the folded
    # kernel's scale is then within float32 rounding of the LNS model's, ~1e-7 relative.
    np.testing.assert_allclose(
        other["fold/folded_predictions"], other["fold/lns_predictions"], atol=1e-5, rtol=1e-6
    )
    # Logits of up to ~40: float32 sums in another order differ by a few 1e-7 of that.
    _compare(probes[backend_runs.REFERENCE], other, "fold/", atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("backend", OTHERS)
def test_model_stats_and_summary_equal_tensorflow(probes, backend):
    reference, other = probes[backend_runs.REFERENCE], _others(probes, backend)
    assert str(other["summary/stats"]) == str(reference["summary/stats"])
    assert str(other["summary/text"]) == str(reference["summary/text"])


def _predictions(folder, name):
    path = folder / name
    if not path.is_file():
        pytest.fail(f"{name} is missing: the child run that writes it failed")
    with np.load(path) as arrays:
        return arrays["y"]


@pytest.mark.parametrize("backend", OTHERS)
def test_keras_file_saved_on_tensorflow_loads_and_predicts_the_same(runs, probes, backend):
    folder, _ = runs
    _others(probes, backend)
    expected = _predictions(folder, "tensorflow-predictions.npz")
    actual = _predictions(folder, f"tensorflow-on-{backend}.npz")
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_keras_file_saved_on_jax_loads_on_torch(runs, probes):
    folder, _ = runs
    _others(probes, "torch")
    expected = _predictions(folder, "jax-predictions.npz")
    np.testing.assert_allclose(
        _predictions(folder, "jax-on-torch.npz"), expected, atol=1e-5, rtol=1e-5
    )


def test_keras_file_saved_on_torch_loads_on_jax(runs, probes):
    folder, done = runs
    _check(done.get("load-jax"), "load-jax")
    _others(probes, "torch")
    expected = _predictions(folder, "torch-predictions.npz")
    np.testing.assert_allclose(
        _predictions(folder, "torch-on-jax.npz"), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("backend", OTHERS)
def test_keras_file_saved_on_another_backend_loads_on_tensorflow(runs, probes, backend):
    folder, _ = runs
    _others(probes, backend)
    loaded = keras.saving.load_model(folder / f"{backend}.keras", safe_mode=True)
    expected = _predictions(folder, f"{backend}-predictions.npz")
    actual = loaded.predict(backend_probes.exchange_input(), verbose=0)
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    # Every backend built the same network: the same weights, the same predictions.
    np.testing.assert_allclose(
        expected, _predictions(folder, "tensorflow-predictions.npz"), atol=1e-5
    )


# --- apps/train.py under JAX ------------------------------------------------------------


def test_demo_trains_under_jax_with_data_parallel(runs):
    folder, child_runs = runs
    _check(child_runs.get("train-jax"), "train-jax")
    output = child_runs["train-jax"].output
    assert "Keras backend: jax, DataParallel over 2 devices" in output
    demo = folder / "demo"
    for path in ("metrics.json", "baseline/final.keras", "lns/final.keras", "lns/lns.keras"):
        assert (demo / path).is_file(), path
    assert not list(demo.rglob("*.tflite"))  # TensorFlow only: off by default under JAX
    # The folded model trained under JAX loads here, under TensorFlow.
    model = keras.saving.load_model(demo / "lns" / "final.keras", safe_mode=True)
    assert model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 10)


def test_tensorflow_only_flag_is_refused_under_jax(runs):
    _, child_runs = runs
    run = child_runs.get("train-jax-refused")
    if run is None:
        pytest.fail("The child run train-jax-refused did not run")
    assert run.returncode == 2, run.output[-3000:]
    assert "error: --strategy='mirrored' is invalid: tf.distribute strategies need" in run.output


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"strategy": "mirrored"}, "--strategy='mirrored' is invalid: tf.distribute"),
        ({"strategy": "multi_worker_mirrored"}, "--strategy='multi_worker_mirrored'"),
        ({"export_tflite": True}, "--export_tflite=True is invalid: the TFLite converters"),
    ],
    ids=["mirrored", "multi_worker_mirrored", "export_tflite"],
)
@pytest.mark.parametrize("backend", OTHERS)
def test_check_backend_refuses_tensorflow_only_settings(backend, setting, message):
    from apps import pipeline

    config = pipeline.TrainConfig(**{"export_tflite": False, **setting})
    with pytest.raises(ValueError, match=message) as error:
        pipeline.check_backend(config, backend=backend)
    assert f"Keras runs {backend!r}" in str(error.value)
    pipeline.check_backend(config, backend="tensorflow")  # all of it is fine there
    pipeline.check_backend(pipeline.TrainConfig(export_tflite=False), backend=backend)
