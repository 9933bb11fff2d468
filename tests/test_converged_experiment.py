"""Issue 9's experiment (`experiments/fashion_mnist_converged/`): the runner's grid and its
order, and the report's statistics (Welch's difference, CI and p-value, the convergence
rule, the verdict's bar) checked against scipy on synthetic rows. The grid itself runs for
hours; nothing here trains."""

import csv
import importlib.util
import statistics
import sys
from pathlib import Path

import pytest
from scipy import stats

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist_converged"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"fashion_mnist_converged_{name}", EXPERIMENT / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = _load("run")
report = _load("report")


def _row(arm, seed, selected, last=None, val=0.9, **extra):
    row = {field: "" for field in runner.FIELDS}
    row.update(
        arm=arm,
        seed=str(seed),
        test_accuracy=str(selected if last is None else last),
        test_accuracy_selected=str(selected),
        selected_epoch="8",
        best_val_accuracy=str(val),
        flip_rate_total="0.03",
        gradient_reach_last="1.0",
        q_hat_outside_last="0.5",
    )
    row.update({k: str(v) for k, v in extra.items()})
    return row


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """The runner's `runs.csv`, baseline file and model folder in `tmp_path`."""
    monkeypatch.setattr(runner, "RUNS_CSV", str(tmp_path / "runs.csv"))
    monkeypatch.setattr(runner, "BASELINE_KERAS", str(tmp_path / "baseline.keras"))
    monkeypatch.setattr(runner, "MODEL_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    return tmp_path


def _todo():
    return [(arm, seed) for arm, seed, *_ in runner.jobs(None) if not runner.done(arm, seed)]


def test_the_baseline_comes_first_and_alone(grid):
    assert _todo() == [("baseline", 0)]


def test_grid_order_and_size(grid):
    (grid / "baseline.keras").write_bytes(b"")
    todo = _todo()
    table = [(arm, seed) for seed in range(5) for arm in runner.TABLE_ARMS]
    factors = [(arm, seed) for seed in range(3) for arm in runner.FACTOR_ARMS]
    sums = [(f"lns_sum_alpha={a:g}", 0) for a in runner.SUM_ALPHAS]
    sweeps = [(f"lns_alpha={a:g}", 0) for a in runner.SWEEP_ALPHAS]
    sweeps += [(f"lns_rho={r:g}", 0) for r in runner.SWEEP_RHOS]
    assert todo == table + factors + [("float", 0)] + sums + sweeps
    # The bar: >= 5 seeds per table arm, and these are the arms it names.
    assert set(runner.TABLE_ARMS) == {"finetune", "lns", "lns_alpha0", "lns_window"}
    assert len(runner.TABLE_SEEDS) >= 5
    # Every fine-tuning arm gets the same budget from the same pretrained model.
    configs = {
        (arm, seed): config for arm, seed, _, config, _ in runner.jobs(None) if arm != "float"
    }
    assert all(c["pretrained"] == runner.BASELINE_KERAS for c in configs.values())
    assert len({tuple(sorted((k, str(v)) for k, v in c.items())) for c in configs.values()}) == 1


def test_the_summed_loss_runs_its_best_alpha_at_two_more_seeds(grid):
    (grid / "baseline.keras").write_bytes(b"")
    vals = {1e-4: 0.89, 1e-3: 0.90, 1e-2: 0.88, 1e-1: 0.87}
    for alpha, val in vals.items():
        runner.append_row(_row(f"lns_sum_alpha={alpha:g}", 0, 0.88, val=val, alpha=alpha))
    todo = _todo()
    assert ("lns_sum_alpha=0.001", 1) in todo and ("lns_sum_alpha=0.001", 2) in todo
    more = [(arm, seed) for arm, seed in todo if arm.startswith("lns_sum") and seed]
    assert more == [("lns_sum_alpha=0.001", 1), ("lns_sum_alpha=0.001", 2)]
    assert runner.best_sum_alpha() == pytest.approx(1e-3)


def test_welch_against_scipy():
    a = [0.8863, 0.8874, 0.8851, 0.8890, 0.8870]
    b = [0.8910, 0.8888, 0.8900, 0.8921]
    diff, low, high, p = report.welch(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert diff == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert p == pytest.approx(reference.pvalue)
    assert (low, high) == pytest.approx((interval.low, interval.high))
    assert report.welch(a[:1], b) is None  # one seed decides nothing


@pytest.mark.parametrize(
    "lns, expected",
    [
        ([0.893, 0.894, 0.895, 0.894, 0.893], "**LNS beats fine-tuning**"),  # +0.37, p < 0.05
        ([0.8915, 0.8925, 0.8935, 0.8925, 0.8915], "does not beat"),  # +0.23: gain < 0.3
        ([0.880, 0.905, 0.885, 0.905, 0.895], "does not beat"),  # +0.39 but p > 0.05
        ([0.886, 0.887, 0.885, 0.886, 0.887], "does not beat"),  # worse
    ],
)
def test_verdict_bar(lns, expected):
    finetune = [0.890, 0.8905, 0.8895, 0.890, 0.8905]
    rows = [_row("finetune", s, v) for s, v in enumerate(finetune)]
    rows += [_row("lns", s, v) for s, v in enumerate(lns)]
    text = report.verdict(rows)
    assert expected in text
    diff = 100 * (statistics.mean(lns) - statistics.mean(finetune))
    assert f"{diff:+.2f} points" in text


def test_convergence_rule():
    flat = [{"val_accuracy": str(0.9 + 0.0001 * (i % 2))} for i in range(48)]
    gain, quarter = report.convergence(flat)
    assert quarter == 12 and abs(gain) < 0.002
    rising = [{"val_accuracy": str(0.80 + 0.002 * i)} for i in range(48)]
    gain, _ = report.convergence(rising)
    # mean of epochs 45-47 against epochs 33-35: 12 epochs of 0.2 points
    assert gain == pytest.approx(0.024)


def test_report_end_to_end(tmp_path, monkeypatch):
    here, out = tmp_path / "exp", tmp_path / "docs"
    (here / "curves").mkdir(parents=True)
    monkeypatch.setattr(report, "HERE", str(here))
    monkeypatch.setattr(report, "OUT", str(out))
    rows = [_row("baseline", 0, 0.89)]
    for seed in range(3):
        rows += [
            _row("finetune", seed, 0.890 + 0.001 * seed),
            _row("lns", seed, 0.886 + 2e-4 * (0, 1, -1)[seed]),
        ]
    rows += [_row("lns_rho=0", 0, 0.887, rho=0), _row("lns_rho=0.2", 0, 0.884, rho=0.2)]
    rows += [_row("lns_alpha0", 0, 0.889, alpha=0), _row("lns_alpha=5", 0, 0.880, alpha=5)]
    with open(here / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=runner.FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(here / "curves" / "baseline_s0.csv", "w") as f:
        f.write("epoch,val_accuracy\n" + "".join(f"{i},{0.9}\n" for i in range(16)))
    report.main()
    tables = (here / "tables.md").read_text()
    assert "| Fine-tuning | 3 | 89.10 ± 0.10 | 89.20 |" in tables
    assert "| lns − finetune | 3 vs 3 | -0.50 |" in tables
    assert "**LNS does not beat fine-tuning here**" in tables
    # the ρ sweep puts the default run (ρ = 0.005, the `lns` arm's seed 0) among its points
    assert "| ρ, α = 1, seed 0 | 0 | 0.005 | 0.2 |" in tables
    assert "| test accuracy (%), chosen epoch | 88.70 | 88.60 | 88.40 |" in tables
    # the α sweep adds α = 0 (the `lns_alpha0` arm's seed 0) and α = 1 (the `lns` arm's)
    assert "| α, mean (Eq. 16), ρ = 0.005, seed 0 | 0 | 1 | 5 |" in tables
    assert "| test accuracy (%), chosen epoch | 88.90 | 88.60 | 88.00 |" in tables
    assert "| binary weights flipped vs pretrained (%) |" in tables
    assert not list(here.glob(".tables.*")), "the temporary file must be renamed away"
    assert (out / "converged_baseline.png").stat().st_size > 0
    assert (out / "converged_curves.png").stat().st_size > 0


flips = _load("flips")


def test_flip_origins_count_sign_changes_against_the_pretrained_kernel():
    import keras
    import numpy as np

    from apps.models import fashion_net
    from lns_keras.convert import to_lns

    keras.utils.set_random_seed(0)
    baseline = fashion_net((28, 28, 1), 10, mode="bnn")
    pretrained = flips.latent_kernels(baseline)
    assert set(pretrained) == {"conv2", "conv3"}  # the binary layers only

    tuned = keras.models.clone_model(baseline)
    tuned.set_weights(baseline.get_weights())
    kernel = pretrained["conv2"].copy()
    kernel.flat[:10] = -kernel.flat[:10] - 1e-3 * np.sign(kernel.flat[:10])  # 10 sign flips
    kernel.flat[10] = 0.0 if kernel.flat[10] >= 0 else kernel.flat[10]  # 0 counts as +1
    tuned.get_layer("conv2").kernel.assign(kernel)
    stats = flips.origins(tuned, pretrained)
    assert stats["conv2"]["flipped"] == pytest.approx(10 / kernel.size)
    assert stats["conv2"]["latent_crossed"] == 1.0
    assert stats["conv3"]["flipped"] == 0.0

    lns = to_lns(baseline, alpha=1.0, rho=0.005)
    stats = flips.origins(lns, pretrained)
    q = keras.ops.convert_to_numpy(lns.get_layer("conv2").binary_estimate())
    agree = np.mean((q >= 0) == (pretrained["conv2"] >= 0))
    assert stats["conv2"]["flipped"] == pytest.approx(1 - agree)
    assert stats["conv2"]["follows_latent"] == pytest.approx(agree)  # latent W is still W₀
    assert stats["conv2"]["latent_crossed"] == 0.0


def test_flip_table_lists_the_arms_found(tmp_path):
    for name in (
        "lns_rho=0_s0",
        "lns_s1",
        "finetune_s0",
        "baseline_s0",
        "lns_alpha=5_s0",
        "claims",
    ):
        (tmp_path / name).mkdir()
    assert flips.arms(str(tmp_path)) == ["finetune", "lns", "lns_alpha=5", "lns_rho=0"]
