"""The page, tables and plots of issue 10's SLB results, from `runs.csv` and `curves/`.

    python experiments/fashion_mnist_slb/report.py [--results_dir DIR] [--page PATH]
        [--plots_dir DIR]

Reads the rows and per-epoch curves that `run.py` wrote (default: beside this file) and
writes `docs/results-slb.md` (every number on it comes from those rows), and into
`docs/results/` the plots `slb_accuracy.png` (validation accuracy per epoch, mean ± std
over seeds, one panel per bit width, SLB against the straight-through baseline, the
full-precision network for reference) and `slb_temperature.png` (SLB's inverse
temperature per epoch). A `reading.md` beside the rows, written by people after the
runs, is included as it is under "Reading". It refuses to write a page without rows. Page and plots are
written through a temporary file and a rename, so an interrupted report leaves the old
ones whole.

Statistics: per arm the mean ± sample standard deviation over seeds, the best run and
the epochs chosen on validation; per bit width the difference SLB − STE of the mean test
accuracies, its 95% confidence interval (Welch-Satterthwaite degrees of freedom) and the
two-sided p-value of Welch's t-test (unequal variances; scipy). The accuracy compared is
the test accuracy of the epoch chosen on validation; the test set is never used to
choose anything.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from lns_keras.export import atomic_path, atomic_write_bytes  # noqa: E402

BITS = (1, 2, 4)
ARM_NAMES = {
    "float": "Full precision",
    **{f"slb_w{b}a{b}": f"SLB W{b}/A{b}" for b in BITS},
    **{f"ste_w{b}a{b}": f"STE (DoReFa) W{b}/A{b}" for b in BITS},
}
ARM_ORDER = ["float"] + [f"{m}_w{b}a{b}" for b in BITS for m in ("slb", "ste")]
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Comparison:
    """SLB − STE at one bit width: difference of means, its 95% CI, Welch's p."""

    bits: int
    slb: list[float]
    ste: list[float]
    difference: float
    low: float
    high: float
    p_value: float


def read_rows(results_dir: str) -> list[dict]:
    path = os.path.join(results_dir, "runs.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_curve(results_dir: str, arm: str, seed: str) -> list[dict] | None:
    path = os.path.join(results_dir, "curves", f"{arm}_s{seed}.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def values(rows: list[dict], arm: str, key: str = "test_accuracy_selected") -> list[float]:
    """`key` of every run of `arm`, in the order of the rows."""
    return [float(r[key]) for r in rows if r["arm"] == arm and r[key] not in ("", "nan")]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def mean_std(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{pct(xs[0])} (one run)"
    return f"{pct(statistics.mean(xs))} ± {pct(statistics.stdev(xs))}"


def welch(a: list[float], b: list[float]) -> tuple[float, float, float, float] | None:
    """mean(a) − mean(b), its 95% CI (Welch-Satterthwaite), and Welch's two-sided p.

    `None` with fewer than two values on a side (no variance to estimate).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.mean(a) - statistics.mean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return difference, difference, difference, 0.0 if difference else 1.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * se
    p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return difference, difference - half, difference + half, p_value


def comparisons(rows: list[dict]) -> list[Comparison]:
    """SLB − STE at every bit width with at least two runs of each."""
    found = []
    for bits in BITS:
        slb, ste = values(rows, f"slb_w{bits}a{bits}"), values(rows, f"ste_w{bits}a{bits}")
        if (result := welch(slb, ste)) is not None:
            found.append(Comparison(bits, slb, ste, *result))
    return found


def arms_table(rows: list[dict]) -> str:
    lines = [
        "| Arm | Seeds | Test acc. (%), epoch chosen on validation: mean ± std | Best "
        "| Epochs chosen | Best validation acc. (%): mean | Test acc. (%), last epoch: "
        "mean ± std | Minutes per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARM_ORDER:
        selected = values(rows, arm)
        if not selected:
            continue
        chosen = [r["selected_epoch"] for r in rows if r["arm"] == arm]
        seconds = values(rows, arm, "seconds")
        lines.append(
            f"| {ARM_NAMES[arm]} | {len(selected)} | {mean_std(selected)} "
            f"| {pct(max(selected))} | {', '.join(chosen)} "
            f"| {pct(statistics.mean(values(rows, arm, 'best_val_accuracy')))} "
            f"| {mean_std(values(rows, arm, 'test_accuracy_last'))} "
            f"| {statistics.mean(seconds) / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def verdict(c: Comparison) -> str:
    if c.p_value >= ALPHA:
        return "no difference shown"
    return "SLB better" if c.difference > 0 else "STE better"


def p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def comparison_table(found: list[Comparison]) -> str:
    lines = [
        "| Bits | Seeds (SLB vs STE) | SLB − STE (points) | 95% CI | Welch p | At p < 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    for c in found:
        lines.append(
            f"| W{c.bits}/A{c.bits} | {len(c.slb)} vs {len(c.ste)} | {100 * c.difference:+.2f} "
            f"| [{100 * c.low:+.2f}, {100 * c.high:+.2f}] | {p_text(c.p_value)} | {verdict(c)} |"
        )
    return "\n".join(lines) + "\n"


def findings(rows: list[dict], found: list[Comparison]) -> str:
    """One sentence per bit width, from the numbers alone; a negative result as it is."""
    lines = []
    for c in found:
        slb = f"SLB {mean_std(c.slb)}%"
        ste = f"STE {mean_std(c.ste)}%"
        gap = (
            f"{100 * c.difference:+.2f} points, 95% CI [{100 * c.low:+.2f}, "
            f"{100 * c.high:+.2f}], p = {p_text(c.p_value)}"
        )
        if c.p_value >= ALPHA:
            text = (
                f"no difference between SLB and its straight-through baseline is shown over "
                f"{len(c.slb)} seeds ({slb} against {ste}; {gap}); the interval says how large "
                "a difference these runs cannot exclude."
            )
        elif c.difference > 0:
            text = f"**SLB beats the straight-through baseline** ({slb} against {ste}; {gap})."
        else:
            text = (
                f"**SLB is worse than the straight-through baseline** ({slb} against {ste}; {gap})."
            )
        lines.append(f"- **W{c.bits}/A{c.bits}**: {text}")
    reference = values(rows, "float")
    if len(reference) == 1:
        lines.append(f"- **Full precision**: {pct(reference[0])}% (one run).")
    elif reference:
        lines.append(f"- **Full precision**: {mean_std(reference)}% over {len(reference)} seeds.")
    if not found:
        lines.append("- Not enough seeds yet for a comparison (two runs per arm at least).")
    return "\n".join(lines) + "\n"


def _seeds(rows, arm):
    return [r["seed"] for r in rows if r["arm"] == arm]


def mean_curve(results_dir, rows, arm, key) -> tuple[list[float], list[float]] | None:
    """Mean and sample std over seeds of `key` per epoch (the epochs every seed has)."""
    curves = [c for s in _seeds(rows, arm) if (c := read_curve(results_dir, arm, s))]
    curves = [c for c in curves if c and key in c[0]]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    per_epoch = [[float(c[i][key]) for c in curves] for i in range(length)]
    means = [statistics.mean(v) for v in per_epoch]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
    return means, stds


def gap_table(results_dir: str, rows: list[dict]) -> str:
    """Training minus validation accuracy per epoch and arm, mean over seeds (points).

    The training accuracy is measured during the epoch on augmented batches, with SLB's
    soft kernels while they last; the validation accuracy after it, with SLB's hard
    kernels always. For the other arms the gap is the usual offset between the two
    measurements; what SLB's gap adds is the distance between the soft network it trains
    and the hard network it will deploy.
    """
    gaps = {}
    for arm in ARM_ORDER:
        train = mean_curve(results_dir, rows, arm, "accuracy")
        val = mean_curve(results_dir, rows, arm, "val_accuracy")
        if train is not None and val is not None:
            gaps[arm] = [100 * (t - v) for t, v in zip(train[0], val[0])]
    if not gaps:
        return ""
    epochs = max(len(g) for g in gaps.values())
    lines = [
        "| Arm | " + " | ".join(f"Epoch {e}" for e in range(1, epochs + 1)) + " |",
        "|---|" + "---|" * epochs,
    ]
    for arm, gap in gaps.items():
        cells = [f"{g:+.1f}" for g in gap] + ["–"] * (epochs - len(gap))
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(results_dir: str, rows: list[dict], path: str) -> None:
    fig, axes = plt.subplots(1, len(BITS), figsize=(15, 4), sharey=True)
    reference = mean_curve(results_dir, rows, "float", "val_accuracy")
    for ax, bits in zip(axes, BITS):
        for prefix, color in (("slb", "tab:blue"), ("ste", "tab:orange")):
            arm = f"{prefix}_w{bits}a{bits}"
            if (curve := mean_curve(results_dir, rows, arm, "val_accuracy")) is None:
                continue
            means, stds = curve
            epochs = range(1, len(means) + 1)
            ax.plot(
                epochs,
                [100 * m for m in means],
                marker="o",
                color=color,
                label=f"{ARM_NAMES[arm]} ({len(_seeds(rows, arm))} seeds)",
            )
            ax.fill_between(
                epochs,
                [100 * (m - s) for m, s in zip(means, stds)],
                [100 * (m + s) for m, s in zip(means, stds)],
                color=color,
                alpha=0.2,
            )
        hard = [int(r["hard_from_epoch"]) for r in rows if r["arm"] == f"slb_w{bits}a{bits}"]
        if hard:
            ax.axvline(
                hard[0],
                color="tab:blue",
                linestyle=":",
                label=f"SLB: hard kernels from epoch {hard[0]}",
            )
        if reference is not None:
            ax.plot(
                range(1, len(reference[0]) + 1),
                [100 * m for m in reference[0]],
                color="tab:gray",
                linestyle="--",
                label="full precision",
            )
        ax.set_title(f"W{bits}/A{bits}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("validation accuracy (%), mean ± std")
    save_figure(fig, path)


def plot_temperature(results_dir: str, rows: list[dict], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for bits, marker in zip(BITS, "os^"):
        arm = f"slb_w{bits}a{bits}"
        if (curve := mean_curve(results_dir, rows, arm, "temperature")) is None:
            continue
        means, _ = curve  # the schedule is the same at every seed
        ax.plot(range(1, len(means) + 1), means, marker=marker, label=ARM_NAMES[arm])
    hard = [int(r["hard_from_epoch"]) for r in rows if r["method"] == "slb"]
    if hard:
        ax.axvline(hard[0], color="gray", linestyle=":", label=f"hard kernels from epoch {hard[0]}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("inverse temperature T (log scale)")
    ax.set_title("SLB's temperature schedule")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Save `fig` as PNG through a temporary file and a rename (mode from the umask)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


CODE_PATHS = ("lns_keras", "apps")


def code_note(rows: list[dict]) -> str:
    """The commits the rows record, and whether the code they train with differs.

    The runner records the commit checked out when each row was written; the grid's own
    data commits move it without changing the code. `git diff` between the first and
    each later commit over `CODE_PATHS` says whether the library or the apps changed.
    """
    commits = list(dict.fromkeys(r["commit"] for r in rows))
    if len(commits) == 1:
        return f"code at commit {commits[0]}"
    changed = []
    for commit in commits[1:]:
        try:
            result = subprocess.run(
                ["git", "diff", "--quiet", commits[0], commit, "--", *CODE_PATHS],
                cwd=ROOT,
                capture_output=True,
                check=False,
            )
        except OSError:
            return f"code at commits {', '.join(commits)}"
        if result.returncode not in (0, 1):  # 1: a difference; else git could not tell
            return f"code at commits {', '.join(commits)}"
        if result.returncode == 1:
            changed.append(commit)
    paths = " and ".join(f"`{p}/`" for p in CODE_PATHS)
    if not changed:
        return (
            f"rows written at commits {commits[0]} to {commits[-1]}, {len(commits)} in all; "
            f"{paths} are the same at every one of them"
        )
    return (
        f"rows written at commits {', '.join(commits)}; {paths} differ from "
        f"{commits[0]} at {', '.join(changed)}"
    )


def reading(results_dir: str) -> str:
    """`reading.md` beside the rows, if there is one: what people wrote after the runs."""
    path = os.path.join(results_dir, "reading.md")
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        text = f.read().strip()
    return (
        "## Reading\n\nWritten after the runs (`experiments/fashion_mnist_slb/reading.md`, "
        f"included as it is); the numbers above are the report's.\n\n{text}\n\n"
    )


def _distinct(rows, key) -> str:
    return ", ".join(sorted({r[key] for r in rows}, key=lambda v: (len(v), v)))


def page(
    rows: list[dict],
    accuracy_png: str,
    temperature_png: str,
    notes: str = "",
    results_dir: str = HERE,
) -> str:
    """The Markdown page; image paths relative to the page."""
    found = comparisons(rows)
    expected = len(ARM_ORDER) * 3
    complete = (
        f"{len(rows)} runs"
        if len(rows) >= expected
        else f"**incomplete: {len(rows)} of the grid's {expected} runs**"
    )
    hours = sum(float(r["seconds"]) for r in rows) / 3600
    held_out = int(rows[0]["validation_examples"])
    slb_rows = [r for r in rows if r["method"] == "slb"]
    schedule = ""
    if slb_rows:
        schedule = (
            f" SLB's inverse temperature grows ×{_distinct(slb_rows, 'temperature_factor')} "
            f"per epoch inside its window, to {_distinct(slb_rows, 'final_temperature')} "
            f"and its kernels are hard from epoch {_distinct(slb_rows, 'hard_from_epoch')} on; "
            "largest difference between the probabilities the searched and the folded "
            f"models predict: {max(float(r['fold_max_difference']) for r in slb_rows):.2g}."
        )
    return f"""# Results: SLB against its straight-through baseline on Fashion-MNIST

Generated by `experiments/fashion_mnist_slb/report.py` from
`experiments/fashion_mnist_slb/runs.csv` ({complete}, {code_note(rows)}); do not edit
by hand, run the report again.

## Setup

Everything is in `experiments/fashion_mnist_slb/run.py` (its docstring holds the
protocol): `python experiments/fashion_mnist_slb/run.py` runs the grid (it skips the runs
already in `runs.csv` and resumes an interrupted one), and
`python experiments/fashion_mnist_slb/report.py` writes this page again.

- **Network**: `fashion_net`, the same for every arm: its two middle convolutions
  quantized, the first convolution and the classifier full precision.
- **Arms**: SLB (`--stage=slb`) and its straight-through baseline (`--stage=baseline`
  with the same bit flags: DoReFa k-bit weights, the same activation quantizer as SLB,
  `ste_sign` at 1 bit and PACT above) at W1/A1, W2/A2 and W4/A4, and the
  full-precision network.
- **Training**: {_distinct(rows, "epochs")} epochs for every arm, from scratch, optimizer
  {_distinct(rows, "optimizer")} at learning rate {_distinct(rows, "learning_rate")}
  ({_distinct(rows, "schedule")} schedule), batch {_distinct(rows, "batch_size")}, seeds
  {_distinct(rows, "seed")}.{schedule}
- **Data**: trained on the first {60000 - held_out:,} Fashion-MNIST training images,
  validated after every epoch on the last {held_out:,}, tested once per run on the
  10,000 test images.
- **Selection**: each run's model is the one of its best validation epoch; the test set
  chooses nothing. In all, {hours:.1f} hours of training on 2 CPU cores.

## Accuracy

{arms_table(rows)}
## SLB − STE at each bit width

Difference of the mean test accuracies (epoch chosen on validation), its 95% confidence
interval (Welch-Satterthwaite) and the two-sided p-value of Welch's t-test.

{comparison_table(found)}
{findings(rows, found)}
{notes}## Per epoch

Validation accuracy (mean ± std over seeds; full precision dashed):

![Validation accuracy per epoch]({accuracy_png})

Training accuracy minus validation accuracy, in points, mean over seeds. Training
accuracy is measured during the epoch, on augmented batches and, for SLB, with the soft
kernels until they turn hard; validation accuracy after it, for SLB always with the hard
kernels (after the batch-norm recalibration). Beyond the offset every arm has, SLB's gap
is the distance between the soft network it trains and the hard one it deploys.

{gap_table(results_dir, rows)}
SLB's inverse temperature per epoch:

![Temperature per epoch]({temperature_png})
"""


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results_dir", default=HERE, help="folder of runs.csv and curves/")
    parser.add_argument(
        "--page", default=os.path.join(ROOT, "docs", "results-slb.md"), help="page to write"
    )
    parser.add_argument(
        "--plots_dir", default=os.path.join(ROOT, "docs", "results"), help="folder of the plots"
    )
    args = parser.parse_args(argv)
    rows = read_rows(args.results_dir)
    if not rows:
        raise SystemExit(
            f"No runs in {os.path.join(args.results_dir, 'runs.csv')}: run "
            "experiments/fashion_mnist_slb/run.py first; the page is written from real runs only."
        )
    os.makedirs(args.plots_dir, exist_ok=True)
    accuracy_png = os.path.join(args.plots_dir, "slb_accuracy.png")
    temperature_png = os.path.join(args.plots_dir, "slb_temperature.png")
    plot_accuracy(args.results_dir, rows, accuracy_png)
    plot_temperature(args.results_dir, rows, temperature_png)
    where = os.path.dirname(os.path.abspath(args.page))
    text = page(
        rows,
        os.path.relpath(accuracy_png, where),
        os.path.relpath(temperature_png, where),
        reading(args.results_dir),
        args.results_dir,
    )
    atomic_write_bytes(args.page, text.encode())
    print(text)
    return text


if __name__ == "__main__":
    main()
