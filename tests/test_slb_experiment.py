"""Issue 10's experiment (`experiments/fashion_mnist_slb/`): the runner's grid and its
order, one tiny run through the runner (row, curve, skip and recovery on a rerun), and
the report's statistics checked against scipy on a synthetic `runs.csv`."""

import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from apps import pipeline, train
from lns_keras.slb import scheduled_temperature

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist_slb"
ARMS = ["slb_w1a1", "ste_w1a1", "slb_w2a2", "ste_w2a2", "slb_w4a4", "ste_w4a4", "float"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"fashion_mnist_slb_{name}", EXPERIMENT / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner = _load("run")
report = _load("report")


@pytest.fixture
def grid_dirs(tmp_path, monkeypatch):
    """The runner's results and model folders in `tmp_path`, never the committed ones."""
    monkeypatch.setenv("LNS_SLB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("LNS_SLB_EXPERIMENT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("LNS_SLB_TEST_OVERRIDE", raising=False)
    return tmp_path


def test_dry_run_lists_the_21_runs_seed_by_seed(grid_dirs, capsys):
    runner.main(["--dry_run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{arm} seed {seed}" for seed in (0, 1, 2) for arm in ARMS]
    assert not (grid_dirs / "runs").exists()  # a dry run writes nothing

    runner.main(["--dry_run", "--only", "float,slb_w4a4", "--seeds", "2"])
    assert capsys.readouterr().out.splitlines() == ["slb_w4a4 seed 2", "float seed 2"]
    with pytest.raises(SystemExit):
        runner.main(["--dry_run", "--only", "slb_w3a3"])
    assert "slb_w3a3" in capsys.readouterr().err


def test_every_arm_trains_the_same_network_epochs_and_schedule(grid_dirs):
    grid = runner.Grid.from_environment()
    configs = {arm: runner.train_config(grid, arm, 0) for arm in ARMS}
    shared = ("model", "dataset", "epochs", "optimizer", "learning_rate", "schedule")
    shared += ("batch_size", "weight_decay", "validation_examples", "seed")
    for name in shared:
        assert len({getattr(c, name) for c in configs.values()}) == 1, name
    assert configs["float"].validation_examples == 10000
    assert {arm: c.stage for arm, c in configs.items()} == {
        **{arm: "slb" for arm in ARMS if arm.startswith("slb")},
        **{arm: "baseline" for arm in ARMS if arm.startswith("ste")},
        "float": "float",
    }
    # The straight-through arms are DoReFa k-bit weights (1 bit: the BNN, the same
    # network) with the SLB arm's activation bits.
    for bits, mode in ((1, "bnn"), (2, "dorefa"), (4, "dorefa")):
        slb, ste = configs[f"slb_w{bits}a{bits}"], configs[f"ste_w{bits}a{bits}"]
        assert (ste.weight_bits, ste.activation_bits) == (bits, bits)
        assert (slb.weight_bits, slb.activation_bits) == (bits, bits)
        assert pipeline.stage_mode(ste.stage, ste.weight_bits, ste.activation_bits) == mode


def test_the_slb_arm_is_the_recipe_of_the_fashion_mnist_slb_flagfile(grid_dirs):
    flagfile = EXPERIMENT.parents[1] / "apps" / "configs" / "fashion_mnist_slb.flags"
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train.py", f"--flagfile={flagfile}"])
        recipe = train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()
    arm = runner.train_config(runner.Grid.from_environment(), "slb_w1a1", 0)
    for name in ("dataset", "model", "stage", "weight_bits", "activation_bits", "epochs"):
        assert getattr(arm, name) == getattr(recipe, name), name
    for name in ("batch_size", "optimizer", "learning_rate", "schedule", "weight_decay"):
        assert getattr(arm, name) == getattr(recipe, name), name
    for name in runner.SLB:
        assert getattr(arm, name) == getattr(recipe, name), name


def test_a_test_override_never_writes_into_the_committed_results(monkeypatch):
    monkeypatch.delenv("LNS_SLB_RESULTS_DIR", raising=False)
    monkeypatch.setenv("LNS_SLB_TEST_OVERRIDE", json.dumps({"epochs": 1}))
    with pytest.raises(ValueError, match="LNS_SLB_RESULTS_DIR"):
        runner.Grid.from_environment()


def test_a_tiny_run_appends_its_row_and_is_skipped_or_recovered_on_rerun(
    grid_dirs, capsys, monkeypatch
):
    epochs = 3
    override = dict(
        epochs=epochs,
        train_limit=256,
        test_limit=128,
        validation_examples=128,
        bn_recalibration_steps=2,
        jit_compile=False,
    )
    monkeypatch.setenv("LNS_SLB_TEST_OVERRIDE", json.dumps(override))
    results = grid_dirs / "results"
    arms = ["--only", "ste_w2a2,slb_w2a2", "--seeds", "0"]
    runner.main(arms)
    rows = runner.read_rows(str(results / "runs.csv"))
    assert [r["arm"] for r in rows] == ["slb_w2a2", "ste_w2a2"]  # the grid's order
    slb, ste = rows
    assert list(slb) == runner.FIELDS
    assert all(slb[field] != "" for field in runner.FIELDS), slb
    slb_only = {"temperature_factor", "final_temperature", "hard_from_epoch", "fold_max_difference"}
    assert {field for field in runner.FIELDS if ste[field] == ""} == slb_only
    for row, method, mode in ((slb, "slb", "slb"), (ste, "ste", "dorefa")):
        assert (row["method"], row["seed"], row["mode"]) == (method, "0", mode)
        assert (row["weight_bits"], row["activation_bits"], row["epochs"]) == ("2", "2", "3")
        assert 1 <= int(row["selected_epoch"]) <= epochs
        assert 0 <= float(row["test_accuracy_selected"]) <= 1
    with open(results / "curves" / "slb_w2a2_s0.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    temperatures = [float(r["temperature"]) for r in curve]
    assert temperatures == [
        scheduled_temperature(e, epochs, factor=2.5, start=0.2, end=0.9)
        for e in range(1, epochs + 1)
    ]
    assert float(slb["final_temperature"]) == temperatures[-1]
    assert (results / "curves" / "ste_w2a2_s0.csv").is_file()

    capsys.readouterr()
    runner.main(arms)  # their rows exist: skipped
    assert "Every run is done." in capsys.readouterr().out
    assert runner.read_rows(str(results / "runs.csv")) == rows

    # A run that finished without its row (the runner died in between) gets the row from
    # its metrics.json, without training again.
    (results / "runs.csv").unlink()
    runner.main(["--only", "slb_w2a2", "--seeds", "0"])
    (again,) = runner.read_rows(str(results / "runs.csv"))
    assert {k: v for k, v in again.items() if k != "commit"} == {
        k: v for k, v in slb.items() if k != "commit"
    }
    assert "finished earlier" in capsys.readouterr().out


# --- the report ---------------------------------------------------------------------

# Test accuracies (epoch chosen on validation) per arm, seeds 0, 1, 2: SLB clearly better
# at W1, no difference at W2, clearly worse at W4.
SYNTHETIC = {
    "slb_w1a1": [0.8012, 0.8105, 0.8060],
    "ste_w1a1": [0.7501, 0.7533, 0.7480],
    "slb_w2a2": [0.8500, 0.8600, 0.8420],
    "ste_w2a2": [0.8550, 0.8450, 0.8590],
    "slb_w4a4": [0.8601, 0.8622, 0.8615],
    "ste_w4a4": [0.8803, 0.8811, 0.8790],
    "float": [0.9010, 0.9031, 0.9002],
}


def _synthetic_results(folder: Path) -> None:
    (folder / "curves").mkdir(parents=True)
    rows = []
    for arm, accuracies in SYNTHETIC.items():
        slb = arm.startswith("slb")
        for seed, accuracy in enumerate(accuracies):
            rows.append(
                {
                    "arm": arm,
                    "method": arm.split("_")[0],
                    "seed": seed,
                    "epochs": 4,
                    "optimizer": "adam",
                    "learning_rate": 0.001,
                    "schedule": "constant",
                    "batch_size": 128,
                    "validation_examples": 10000,
                    "temperature_factor": 2.5 if slb else "",
                    "test_accuracy_selected": accuracy,
                    "selected_epoch": 4 - seed % 2,
                    "best_val_accuracy": accuracy + 0.001,
                    "test_accuracy_last": accuracy - 0.002,
                    "final_temperature": 6.25 if slb else "",
                    "hard_from_epoch": 3 if slb else "",
                    "fold_max_difference": 1e-7 if slb else "",
                    "seconds": 600 + seed,
                    "commit": "abc1234",
                }
            )
            with open(folder / "curves" / f"{arm}_s{seed}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                header = ["epoch", "accuracy", "val_accuracy"]
                writer.writerow(header + ["temperature"] if slb else header)
                for epoch in range(4):
                    logs = [epoch, 0.5 + 0.1 * epoch, accuracy - 0.01 * (3 - epoch)]
                    writer.writerow(logs + [2.5 ** min(epoch + 1, 2)] if slb else logs)
    with open(folder / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_report_statistics_match_scipy_and_the_page_says_what_they_say(tmp_path):
    _synthetic_results(tmp_path / "results")
    page = tmp_path / "docs" / "results-slb.md"
    plots = tmp_path / "docs" / "results"
    text = report.main(
        ["--results_dir", str(tmp_path / "results"), "--page", str(page), "--plots_dir", str(plots)]
    )
    assert page.read_text() == text

    for arm, accuracies in SYNTHETIC.items():
        mean, std = 100 * np.mean(accuracies), 100 * np.std(accuracies, ddof=1)
        line = next(r for r in text.splitlines() if r.startswith(f"| {report.ARM_NAMES[arm]} |"))
        assert f"| 3 | {mean:.2f} ± {std:.2f} | {100 * max(accuracies):.2f} | 4, 3, 4 |" in line

    found = {c.bits: c for c in report.comparisons(report.read_rows(str(tmp_path / "results")))}
    assert sorted(found) == [1, 2, 4]
    for bits, c in found.items():
        slb, ste = SYNTHETIC[f"slb_w{bits}a{bits}"], SYNTHETIC[f"ste_w{bits}a{bits}"]
        expected = stats.ttest_ind(slb, ste, equal_var=False)
        interval = expected.confidence_interval(0.95)
        assert c.difference == pytest.approx(statistics.mean(slb) - statistics.mean(ste))
        assert (c.low, c.high) == (pytest.approx(interval.low), pytest.approx(interval.high))
        assert c.p_value == pytest.approx(expected.pvalue)
        assert (
            f"| W{bits}/A{bits} | 3 vs 3 | {100 * c.difference:+.2f} "
            f"| [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}] "
            f"| {report.p_text(expected.pvalue)} |"
        ) in text
    assert found[1].p_value < 0.05 < found[2].p_value and found[4].p_value < 0.05
    assert "**W1/A1**: **SLB beats the straight-through baseline**" in text
    assert "**W2/A2**: no difference between SLB and its straight-through baseline" in text
    assert "**W4/A4**: **SLB is worse than the straight-through baseline**" in text
    assert "incomplete" not in text and "abc1234" in text
    assert "4 epochs for every arm" in text and "first 50,000" in text and "last 10,000" in text
    # Training minus validation accuracy per epoch: the synthetic curves' 0.5 + 0.1 e
    # against accuracy - 0.01 (3 - e), averaged over the seeds.
    for arm, accuracies in SYNTHETIC.items():
        row = next(
            r
            for r in text.splitlines()
            if r.startswith(f"| {report.ARM_NAMES[arm]} | ")
            and "Epoch" not in r
            and r.count("|") == 6
        )
        expected = [
            100 * (0.5 + 0.1 * e - (np.mean(accuracies) - 0.01 * (3 - e))) for e in range(4)
        ]
        assert (
            row
            == f"| {report.ARM_NAMES[arm]} | " + " | ".join(f"{g:+.1f}" for g in expected) + " |"
        )

    for name in ("slb_accuracy.png", "slb_temperature.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
        assert f"](results/{name})" in text


def test_report_marks_an_incomplete_grid_and_refuses_no_rows(tmp_path):
    _synthetic_results(tmp_path / "results")
    rows = report.read_rows(str(tmp_path / "results"))
    text = report.page(
        [r for r in rows if r["seed"] != "2"],
        "a.png",
        "t.png",
        results_dir=str(tmp_path / "results"),
    )
    assert "**incomplete: 14 of the grid's 21 runs**" in text
    with pytest.raises(SystemExit, match="No runs"):
        report.main(["--results_dir", str(tmp_path / "nothing"), "--page", str(tmp_path / "p.md")])


def test_report_says_whether_the_code_changed_between_the_rows_commits(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "lns_keras").mkdir()
    commits = []
    for path, text in (
        ("lns_keras/a.py", "x = 1\n"),
        ("runs.csv", "row\n"),
        ("lns_keras/a.py", "x = 2\n"),
    ):
        (tmp_path / path).write_text(text)
        git("add", "-A")
        git("commit", "-q", "-m", path)
        commits.append(git("rev-parse", "--short", "HEAD"))
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    a, b, c = commits
    assert report.code_note([{"commit": a}, {"commit": a}]) == f"code at commit {a}"
    same = report.code_note([{"commit": a}, {"commit": b}])
    assert same.startswith(f"rows written at commits {a} to {b}, 2 in all;")
    assert same.endswith("are the same at every one of them")
    changed = report.code_note([{"commit": a}, {"commit": b}, {"commit": c}])
    assert changed.endswith(f"differ from {a} at {c}")
    # A commit git does not know: the note lists the commits and claims nothing.
    assert report.code_note([{"commit": a}, {"commit": "0000000"}]) == (
        f"code at commits {a}, 0000000"
    )


def test_report_includes_the_reading_written_after_the_runs(tmp_path):
    _synthetic_results(tmp_path / "results")
    page = tmp_path / "page.md"
    args = ["--results_dir", str(tmp_path / "results"), "--page", str(page)]
    args += ["--plots_dir", str(tmp_path / "plots")]
    assert "## Reading" not in report.main(args)
    (tmp_path / "results" / "reading.md").write_text("SLB needs more epochs here.\n")
    text = report.main(args)
    assert "## Reading" in text and "SLB needs more epochs here.\n" in text
    assert text.index("## Reading") < text.index("## Per epoch")
