"""Tables and plots of the Fashion-MNIST ablation from `runs.csv` and `curves/`.

    python experiments/fashion_mnist/report.py

Writes `table1.md` (best (mean ± std) per arm) and `sweeps.md` beside this file (the
results page includes them) and the PNG plots `alpha.png`, `rho.png`, `curves.png` into
`docs/results/`.
"""

from __future__ import annotations

import csv
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "docs", "results")
ARM_NAMES = {
    "float": "Full precision (reference)",
    "baseline": "Baseline BNN (pretrained)",
    "finetune": "Fine-tuning",
    "lns_alpha0": "LNS w/o noisy supervision (α = 0)",
    "lns": "LNS (α = 1, ρ = 0.005)",
}


def rows() -> list[dict]:
    with open(os.path.join(HERE, "runs.csv")) as f:
        return list(csv.DictReader(f))


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(all_rows: list[dict]) -> str:
    lines = [
        "| Method | Seeds | Test accuracy (%): best (mean ± std) | Flip rate vs pretrained, last epoch |",
        "|---|---|---|---|",
    ]
    for arm, name in ARM_NAMES.items():
        accs = [float(r["test_accuracy"]) for r in all_rows if r["arm"] == arm]
        flips = [
            float(r["flip_rate_total"])
            for r in all_rows
            if r["arm"] == arm and r["flip_rate_total"] not in ("", "nan")
        ]
        if not accs:
            continue
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        flip = (
            f"{statistics.mean(flips):.4f}" if flips and arm not in ("float", "baseline") else "–"
        )
        spread = f"{pct(max(accs))} ({pct(statistics.mean(accs))} ± {pct(std)})"
        if len(accs) == 1:
            spread = f"{pct(accs[0])} (one run)"
        lines.append(f"| {name} | {len(accs)} | {spread} | {flip} |")
    return "\n".join(lines) + "\n"


def sweep_points(all_rows, key):
    """(value, accuracy) pairs of the alpha or rho sweep, including the table arms of seed 0."""
    points = []
    for r in all_rows:
        if int(r["seed"]) != 0 or r["alpha"] == "":
            continue
        alpha, rho = float(r["alpha"]), float(r["rho"])
        in_alpha_sweep = r["arm"].startswith("alpha=") or r["arm"] in ("lns", "lns_alpha0")
        in_rho_sweep = r["arm"].startswith("rho=") or r["arm"] == "lns"
        if key == "alpha" and in_alpha_sweep and rho == 0.005:
            points.append((alpha, float(r["test_accuracy"])))
        if key == "rho" and in_rho_sweep and alpha == 1.0:
            points.append((rho, float(r["test_accuracy"])))
    return sorted(points)


def plot_sweep(points, key, reference, path):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = list(range(len(points)))
    ax.plot(xs, [100 * a for _, a in points], marker="o", label="LNS")
    ax.set_xticks(xs, [f"{v:g}" for v, _ in points])
    for name, value, style in reference:
        ax.axhline(100 * value, linestyle=style, color="gray", label=name)
    ax.set_xlabel("α" if key == "alpha" else "ρ")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy vs {'α (ρ = 0.005)' if key == 'alpha' else 'ρ (α = 1)'}, seed 0")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def read_curve(name):
    path = os.path.join(HERE, "curves", f"{name}.csv")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def plot_curves(seeds, path):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for arm, color in (("finetune", "tab:orange"), ("lns", "tab:blue")):
        for seed in seeds:
            curve = read_curve(f"{arm}_s{seed}")
            if not curve:
                continue
            epochs = [int(r["epoch"]) + 1 for r in curve]
            label = ARM_NAMES[arm] if seed == seeds[0] else None
            for ax, key in zip(axes, ("loss", "val_accuracy", "flip_rate")):
                scale = 100 if key == "val_accuracy" else 1
                ax.plot(
                    epochs,
                    [scale * float(r[key]) for r in curve],
                    marker="o",
                    color=color,
                    alpha=0.8,
                    label=label,
                )
    titles = ("training loss (LNS: CE + α Σ ℓ̃ᵢ)", "test accuracy (%)", "flip rate (per epoch)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("fine-tuning epoch")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    all_rows = rows()
    with open(os.path.join(HERE, "table1.md"), "w") as f:
        f.write(table(all_rows))
    reference = []
    for arm, style in (("baseline", ":"), ("finetune", "--")):
        accs = [
            float(r["test_accuracy"]) for r in all_rows if r["arm"] == arm and int(r["seed"]) == 0
        ]
        if accs:
            reference.append((ARM_NAMES[arm] + ", seed 0", accs[0], style))
    lines = []
    for key in ("alpha", "rho"):
        points = sweep_points(all_rows, key)
        if points:
            plot_sweep(points, key, reference, os.path.join(OUT, f"{key}.png"))
            lines.append(
                f"| {'α' if key == 'alpha' else 'ρ'} | "
                + " | ".join(f"{v:g}" for v, _ in points)
                + " |"
            )
            lines.append("|---|" + "---|" * len(points))
            lines.append("| test accuracy (%) | " + " | ".join(pct(a) for _, a in points) + " |")
            lines.append("")
    with open(os.path.join(HERE, "sweeps.md"), "w") as f:
        f.write("\n".join(lines))
    seeds = sorted({int(r["seed"]) for r in all_rows})
    plot_curves(seeds, os.path.join(OUT, "curves.png"))
    print(open(os.path.join(HERE, "table1.md")).read())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
