"""apps/tune.py: a KerasTuner search over alpha and rho on a tiny Fashion-MNIST budget."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner
import pytest

from apps import data, models, tune

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=64, train_limit=256, val_limit=128, epochs=1, warm_start_epochs=1)


@pytest.fixture(scope="module")
def baseline_path(tmp_path_factory) -> str:
    """A fashion_net baseline BNN trained for one epoch on 256 examples."""
    keras.utils.set_random_seed(0)
    model = models.fashion_net((28, 28, 1), 10, mode="bnn")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    model.fit(
        data.load("fashion_mnist", "train", 64, seed=0, limit=256),
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    path = tmp_path_factory.mktemp("baseline") / "baseline.keras"
    model.save(path)
    return str(path)


@pytest.mark.slow
def test_random_search_writes_its_trials_sorted_by_validation_accuracy(tmp_path, baseline_path):
    config = tune.TuneConfig(
        pretrained=baseline_path, model_dir=str(tmp_path), tuner="random", max_trials=2, **TINY
    )
    rows = tune.search(config)

    with open(tmp_path / "tune_results.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == tune.RESULT_COLUMNS
        table = list(reader)
    assert len(table) == 2
    accuracies = [float(r["val_accuracy"]) for r in table]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [r["rank"] for r in table] == ["1", "2"]
    assert [r["trial_id"] for r in table] == [r["trial_id"] for r in rows]
    assert len({r["trial_id"] for r in table}) == 2
    for row in table:
        assert row["status"] == "COMPLETED"
        assert tune.ALPHA_RANGE[0] <= float(row["alpha"]) <= tune.ALPHA_RANGE[1]
        assert tune.RHO_RANGE[0] <= float(row["rho"]) <= tune.RHO_RANGE[1]
        assert 0 <= float(row["flip_rate_total"]) <= 1
        assert row["best_epoch"] == "1"
    text = tune.results_table(rows)
    assert all(f"{100 * a:.2f}%" in text for a in accuracies)
    assert not [p for p in tmp_path.rglob(".tmp-*")]

    # Started again with the same configuration, the finished search runs no new trial.
    again = tune.search(config)
    assert [r["trial_id"] for r in again] == [r["trial_id"] for r in rows]


@pytest.mark.parametrize(
    "name, tuner_class",
    [
        ("random", keras_tuner.RandomSearch),
        ("bayesian", keras_tuner.BayesianOptimization),
        ("hyperband", keras_tuner.Hyperband),
    ],
)
def test_make_tuner_searches_alpha_on_a_log_scale_and_rho(
    tmp_path, baseline_path, name, tuner_class
):
    config = tune.TuneConfig(pretrained=baseline_path, model_dir=str(tmp_path), tuner=name)
    baseline = keras.models.load_model(baseline_path, safe_mode=True, compile=False)
    tuner = tune.make_tuner(config, tune.LNSHyperModel(baseline, config))
    assert isinstance(tuner, tuner_class)
    assert tuner.oracle.objective.name == "val_accuracy"
    assert tuner.oracle.objective.direction == "max"
    space = {hp.name: hp for hp in tuner.oracle.hyperparameters.space}
    assert (space["alpha"].min_value, space["alpha"].max_value) == tune.ALPHA_RANGE
    assert space["alpha"].sampling == "log"
    assert (space["rho"].min_value, space["rho"].max_value) == tune.RHO_RANGE


@pytest.mark.parametrize(
    "flag, overrides",
    [
        ("--tuner", dict(tuner="grid")),
        ("--dataset", dict(dataset="mnist")),
        ("--model", dict(model="resnet50")),
        ("--max_trials", dict(max_trials=0)),
        ("--epochs", dict(epochs=0)),
        ("--learning_rate", dict(learning_rate=0.0)),
        ("--validation_split", dict(validation_split=1.0)),
        ("--pretrained", dict(pretrained=None)),
        ("--pretrained", dict(pretrained="/nonexistent/baseline.keras")),
    ],
)
def test_bad_configuration_names_the_flag(tmp_path, baseline_path, flag, overrides):
    config = tune.TuneConfig(
        **{"pretrained": baseline_path, "model_dir": str(tmp_path), **TINY, **overrides}
    )
    with pytest.raises(ValueError, match=f"^{flag}="):
        tune.search(config)
    assert not (tmp_path / "tuner").exists()


def test_model_that_does_not_fit_the_dataset_names_pretrained(tmp_path):
    path = tmp_path / "cifar.keras"
    models.fashion_net((32, 32, 3), 10, mode="bnn").save(path)
    config = tune.TuneConfig(pretrained=str(path), model_dir=str(tmp_path / "run"), **TINY)
    with pytest.raises(ValueError, match="^--pretrained=.*does not fit --dataset"):
        tune.search(config)


def test_command_line_error_is_one_line(tmp_path, baseline_path):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "apps" / "tune.py"),
            "--tuner=grid",
            f"--pretrained={baseline_path}",
            f"--model_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=240,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: --tuner='grid' is invalid")
