"""Tables and plots of the converged-baseline ablation, from `runs.csv` and `curves/`.

    python experiments/fashion_mnist_converged/report.py

Writes beside this file `tables.md` (the arms, the comparisons with fine-tuning, the
gradient paths and factors, the sweeps), which `docs/results.md` includes, and into
`docs/results/` the plots `converged_baseline.png` (the baseline's validation curve and
its convergence check), `converged_curves.png` (the Fig. 3 analog: cross-entropy alone,
validation accuracy, flip rate and gradient reach per fine-tuning epoch) and
`converged_sum_alpha.png`.

Statistics: per arm the mean ± sample std over seeds and the best run; for an arm against
fine-tuning, the difference of means with a 95% confidence interval and the p-value of
Welch's t-test (unequal variances; scipy). Accuracy is the test accuracy of the epoch
chosen on validation, unless a column says "last epoch".
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "docs", "results")
ARM_NAMES = {
    "float": "Full precision (reference, trained like the baseline)",
    "baseline": "Baseline BNN (pretrained)",
    "finetune": "Fine-tuning",
    "lns_alpha0": "LNS w/o noisy supervision (α = 0)",
    "lns": "LNS (α = 1, ρ = 0.005; identity gradient path)",
    "lns_window": "LNS, gradient window Q̂ ∈ [−1, 1] (former default)",
    "lns_tanh": "LNS, Q̂ = tanh(·) bounded",
    "lns_pretrained_labels": "LNS, noisy labels frozen at the pretrained W",
}
GAIN = 0.003  # the bar for "LNS beats fine-tuning": p < 0.05 and >= 0.3 points


def read_rows() -> list[dict]:
    path = os.path.join(HERE, "runs.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def read_curve(name: str) -> list[dict] | None:
    path = os.path.join(HERE, "curves", f"{name}.csv")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def atomic_write_text(path: str, text: str) -> None:
    """Write through a temporary file in the same folder and a rename, so that an
    interrupted report never leaves a half-written table (the mode follows the umask)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tables.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def accuracies(rows, arm, key="test_accuracy_selected") -> list[float]:
    return [float(r[key]) for r in rows if r["arm"] == arm and r[key] not in ("", "nan")]


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{pct(values[0])} (one run)"
    return f"{pct(statistics.mean(values))} ± {pct(statistics.stdev(values))}"


def mean_of(rows, arm, key, fmt="{:.4f}") -> str:
    values = [float(r[key]) for r in rows if r["arm"] == arm and r[key] not in ("", "nan")]
    return fmt.format(statistics.mean(values)) if values else "–"


def welch(a: list[float], b: list[float]) -> tuple[float, float, float, float] | None:
    """mean(a) - mean(b), its 95% CI (Welch-Satterthwaite), and Welch's two-sided p."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, 0.0 if diff else 1.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * se
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return diff, diff - half, diff + half, float(p)


def sum_arm(rows) -> str | None:
    """The summed-loss arm (Eq. 17) run at more than one seed: the α best at seed 0."""
    arms = {r["arm"] for r in rows if r["arm"].startswith("lns_sum_alpha=") and r["seed"] != "0"}
    return sorted(arms)[0] if arms else None


def arm_names(rows) -> dict[str, str]:
    names = dict(ARM_NAMES)
    if arm := sum_arm(rows):
        alpha = arm.split("=")[1]
        names[arm] = f"LNS, layer loss summed (Eq. 17), α = {alpha} (best of the sweep)"
    return names


def arms_table(rows) -> str:
    lines = [
        "| Method | Seeds | Test acc. (%), epoch chosen on validation: mean ± std | best "
        "| Test acc. (%), last epoch: mean ± std | Epochs chosen | Flip rate vs pretrained "
        "| Gradient reach | Q̂ beyond ±1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, name in arm_names(rows).items():
        selected = accuracies(rows, arm)
        if not selected:
            continue
        last = accuracies(rows, arm, "test_accuracy")
        chosen = [r["selected_epoch"] for r in rows if r["arm"] == arm]
        fine_tuned = arm not in ("float", "baseline")
        lns = arm.startswith("lns")
        lines.append(
            f"| {name} | {len(selected)} | {mean_std(selected)} | {pct(max(selected))} "
            f"| {mean_std(last)} | {', '.join(chosen)} "
            f"| {mean_of(rows, arm, 'flip_rate_total') if fine_tuned else '–'} "
            f"| {mean_of(rows, arm, 'gradient_reach_last', '{:.3f}') if lns else '–'} "
            f"| {mean_of(rows, arm, 'q_hat_outside_last', '{:.3f}') if lns else '–'} |"
        )
    return "\n".join(lines) + "\n"


def comparison_table(rows, pairs) -> str:
    lines = [
        "| Comparison | Seeds | Difference (points) | 95% CI | Welch p |",
        "|---|---|---|---|---|",
    ]
    for a, b in pairs:
        xa, xb = accuracies(rows, a), accuracies(rows, b)
        result = welch(xa, xb)
        if result is None:
            continue
        diff, low, high, p = result
        lines.append(
            f"| {a} − {b} | {len(xa)} vs {len(xb)} | {100 * diff:+.2f} "
            f"| [{100 * low:+.2f}, {100 * high:+.2f}] | {p:.3f} |"
        )
    return "\n".join(lines) + "\n"


def sweep_table(rows, prefix, label, defaults: tuple[tuple[str, float], ...] = ()) -> str:
    """One row per swept value at seed 0; `defaults` = ((arm, value), ...) adds that arm's
    seed-0 run as the sweep's point at `value` (the `lns` arm at the library's default,
    `lns_alpha0` at α = 0)."""
    points = []
    for r in rows:
        if r["arm"].startswith(prefix) and r["seed"] == "0":
            points.append((float(r["arm"].split("=")[1]), r))
    if not points:
        return ""
    for arm, value in defaults:
        points += [(value, r) for r in rows if r["arm"] == arm and r["seed"] == "0"]
    points.sort(key=lambda p: p[0])

    def line(name, key, fmt):
        return f"| {name} | " + " | ".join(fmt(float(r[key])) for _, r in points) + " |"

    lines = [
        f"| {label} | " + " | ".join(f"{v:g}" for v, _ in points) + " |",
        "|---|" + "---|" * len(points),
        line("best validation accuracy (%)", "best_val_accuracy", pct),
        line("test accuracy (%), chosen epoch", "test_accuracy_selected", pct),
        line("binary weights flipped vs pretrained (%)", "flip_rate_total", pct),
    ]
    return "\n".join(lines) + "\n"


def verdict(rows) -> str:
    result = welch(accuracies(rows, "lns"), accuracies(rows, "finetune"))
    if result is None:
        return "Not enough seeds yet for a verdict.\n"
    diff, low, high, p = result
    n = len(accuracies(rows, "lns"))
    wins = p < 0.05 and diff >= GAIN
    return (
        f"LNS − fine-tuning over {n} seeds: {100 * diff:+.2f} points, 95% CI "
        f"[{100 * low:+.2f}, {100 * high:+.2f}], Welch p = {p:.3f}: "
        + (
            "**LNS beats fine-tuning** (p < 0.05, gain ≥ 0.3 points).\n"
            if wins
            else "**LNS does not beat fine-tuning here** (the bar: p < 0.05 and a gain ≥ 0.3 "
            "points).\n"
        )
    )


def convergence(curve: list[dict], window: int = 3) -> tuple[float, int]:
    """Validation-accuracy gain over the last quarter of epochs, and that quarter's length.

    The gain is the mean of the last `window` epochs minus the mean of the `window`
    epochs that end where the last quarter begins: single epochs move by a few tenths of
    a point on 10,000 images, which would decide the rule by noise alone.
    """
    values = [float(r["val_accuracy"]) for r in curve]
    quarter = max(len(values) // 4, 1)
    end = statistics.mean(values[-window:])
    start = statistics.mean(values[max(len(values) - quarter - window, 0) : len(values) - quarter])
    return end - start, quarter


def plot_baseline(path) -> str:
    lines = []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, color in (("baseline", "tab:gray"), ("float", "tab:green")):
        curve = read_curve(f"{arm}_s0")
        if not curve:
            continue
        epochs = [int(r["epoch"]) + 1 for r in curve]
        ax.plot(epochs, [100 * float(r["val_accuracy"]) for r in curve], color=color, label=arm)
        gain, quarter = convergence(curve)
        lines.append(
            f"- {ARM_NAMES[arm]}: {len(curve)} epochs; validation accuracy gained "
            f"{100 * gain:+.2f} points over the last {quarter} epochs (mean of the last 3 "
            f"epochs against the 3 before that quarter) "
            f"({'converged' if gain < 0.002 else 'NOT converged'} by the < 0.2-point rule)."
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Training from scratch (10,000 held-out images)")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "\n".join(lines) + "\n"


def mean_curve(arm, seeds, key):
    curves = [c for s in seeds if (c := read_curve(f"{arm}_s{s}"))]
    if not curves or key not in curves[0][0]:
        return None
    length = min(len(c) for c in curves)
    return [statistics.mean(float(c[i][key]) for c in curves) for i in range(length)]


def plot_curves(rows, path) -> None:
    keys = (
        ("cross_entropy", "training cross-entropy (alone)", 1),
        ("val_accuracy", "validation accuracy (%)", 100),
        ("flip_rate", "flip rate (per epoch)", 1),
        ("flip_rate_total", "flip rate vs pretrained", 1),
        ("gradient_reach", "gradient reach (fraction of Q̂)", 1),
    )
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.6))
    colors = {"finetune": "tab:orange", "lns": "tab:blue", "lns_alpha0": "tab:purple"}
    colors["lns_window"] = "tab:red"
    colors["lns_tanh"] = "tab:green"
    colors["lns_pretrained_labels"] = "tab:brown"
    for arm, color in colors.items():
        seeds = sorted({int(r["seed"]) for r in rows if r["arm"] == arm})
        for ax, (key, _, scale) in zip(axes, keys):
            values = mean_curve(arm, seeds, key)
            if values:
                ax.plot(
                    range(1, len(values) + 1),
                    [scale * v for v in values],
                    marker="o",
                    color=color,
                    label=f"{arm} ({len(seeds)} seeds)",
                )
    for ax, (_, title, _) in zip(axes, keys):
        ax.set_xlabel("fine-tuning epoch")
        ax.set_title(title, fontsize=10)
    if axes[0].lines:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncol=len(labels),
            fontsize=9,
            bbox_to_anchor=(0.5, 0.0),
            frameon=False,
        )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rows = read_rows()
    pairs = [
        ("lns", "finetune"),
        ("lns_alpha0", "finetune"),
        ("lns_window", "finetune"),
        ("lns", "lns_window"),
        ("lns", "lns_tanh"),
        ("lns", "lns_alpha0"),
        ("lns", "lns_pretrained_labels"),
    ]
    if arm := sum_arm(rows):
        pairs += [(arm, "lns"), (arm, "finetune")]
    parts = [
        "### Baseline convergence\n",
        plot_baseline(os.path.join(OUT, "converged_baseline.png")),
        "### The arms\n",
        arms_table(rows),
        "### Against fine-tuning, and between gradient paths\n",
        comparison_table(rows, pairs),
        "### Verdict\n",
        verdict(rows),
    ]
    for prefix, label, defaults in (
        ("lns_sum_alpha=", "α, layer loss summed (Eq. 17), seed 0", ()),
        (
            "lns_alpha=",
            "α, mean (Eq. 16), ρ = 0.005, seed 0",
            (("lns_alpha0", 0.0), ("lns", 1.0)),
        ),
        ("lns_rho=", "ρ, α = 1, seed 0", (("lns", 0.005),)),
    ):
        if table := sweep_table(rows, prefix, label, defaults):
            parts += [f"### Sweep: {label}\n", table]
    text = "\n".join(parts)
    atomic_write_text(os.path.join(HERE, "tables.md"), text)
    plot_curves(rows, os.path.join(OUT, "converged_curves.png"))
    print(text)


if __name__ == "__main__":
    main()
