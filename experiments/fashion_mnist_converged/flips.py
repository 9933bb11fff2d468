"""Where the fine-tuned binary weights' sign changes come from (issue 9's diagnostics).

    python experiments/fashion_mnist_converged/flips.py [--runs_dir DIR]

Reads the finished runs of `run.py` (default folder: `runs/fashion_mnist_converged`, or
`LNS_EXPERIMENT_DIR`) and compares, per binary layer of every run, the binary weights
the run ends with against those of the pretrained baseline (`baseline.keras`):

- *flipped vs pretrained*: the fraction of binary weights whose sign differs from
  sign(W₀) (W₀ the baseline's latent kernel; an LNS layer's binary weight is sign(Q̂),
  Q̂ = f_θ(W), taken from the run's LNS model before folding);
- *of those, latent crossed 0*: the fraction of those flips where the latent weight W
  itself changed sign (for plain fine-tuning every flip is one);
- *latent crossed 0 (all weights)*: the fraction of latent weights whose sign differs
  from sign(W₀), whatever the binary weight did;
- *sign(Q̂) = sign(W)*: how closely an LNS layer's binary weights follow its own latent
  weights at the end;
- *median |W₀| of flipped*: how far from zero the flipped weights started (the baseline's
  median |W₀| is printed beside it).

Signs follow `ste_sign`: 0 counts as +1. Writes `flips.md` beside this file (a table,
means over the seeds found, the seeds listed), which `docs/results.md` includes. A run
whose folder or model file is missing is left out; only the final models are read, so
this costs a few seconds per run.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lns_keras.callbacks import binary_signs  # noqa: E402
from lns_keras.export import atomic_write_bytes  # noqa: E402

ARMS = ("finetune", "lns_alpha0", "lns", "lns_window", "lns_tanh", "lns_pretrained_labels")


def latent_kernels(model) -> dict[str, np.ndarray]:
    """Latent kernels of the binary layers (those `binary_signs` counts)."""
    binary = binary_signs(model)
    return {
        layer.name: keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if layer.name in binary
    }


def origins(model, pretrained: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per binary layer of `model`: the statistics of the module docstring."""
    out = {}
    for name, binary in binary_signs(model).items():
        if name not in pretrained:
            continue
        w0 = pretrained[name]
        s0 = w0 >= 0  # ste_sign's sign: 0 counts as +1, as in binary_signs
        latent = keras.ops.convert_to_numpy(model.get_layer(name).kernel) >= 0
        flipped = binary != s0
        some = bool(flipped.any())
        out[name] = {
            "flipped": float(flipped.mean()),
            "latent_crossed": float((latent != s0)[flipped].mean()) if some else float("nan"),
            "latent_flipped": float((latent != s0).mean()),
            "follows_latent": float((binary == latent).mean()),
            "flipped_w0": float(np.median(np.abs(w0[flipped]))) if some else float("nan"),
        }
    return out


def model_path(runs_dir: str, arm: str, seed: int) -> str:
    stage = "finetune" if arm == "finetune" else "lns"
    name = "final.keras" if arm == "finetune" else "lns.keras"  # final.keras of LNS is folded
    return os.path.join(runs_dir, f"{arm}_s{seed}", stage, name)


def arms(runs_dir: str) -> list[str]:
    """The arms with a run folder in `runs_dir`: those of `ARMS` in that order, then the
    sweeps' (`lns_rho=0`, `lns_alpha=5`, `lns_sum_alpha=0.001`, ...) sorted."""
    found = set()
    if os.path.isdir(runs_dir):
        for name in os.listdir(runs_dir):
            arm, _, seed = name.rpartition("_s")
            if arm and seed.isdigit() and arm != "baseline" and arm != "float":
                found.add(arm)
    return [a for a in ARMS if a in found] + sorted(found - set(ARMS))


def table(runs_dir: str, baseline_path: str) -> str:
    pretrained = latent_kernels(keras.models.load_model(baseline_path, safe_mode=True))
    w0 = np.concatenate([np.abs(v).ravel() for v in pretrained.values()])
    lines = [
        f"Baseline: {w0.size} binary weights in {', '.join(pretrained)}; median |W₀| "
        f"{np.median(w0):.3f}; {100 * np.mean(w0 < 1e-3):.1f}% have |W₀| < 10⁻³.",
        "",
        "| Arm | Seeds | Binary weights flipped vs pretrained (%) | Of those, latent W crossed 0 (%) "
        "| Latent W crossed 0 (%, all weights) | sign(Q̂) = sign(W) (%) "
        "| Median \\|W₀\\| of flipped |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in arms(runs_dir):
        per_seed = collections.defaultdict(list)
        seeds = []
        for seed in range(10):
            path = model_path(runs_dir, arm, seed)
            if not os.path.isfile(path):
                continue
            seeds.append(seed)
            stats = origins(keras.models.load_model(path, safe_mode=True), pretrained)
            sizes = {name: pretrained[name].size for name in stats}
            total = sum(sizes.values())
            for key in (
                "flipped",
                "latent_crossed",
                "latent_flipped",
                "follows_latent",
                "flipped_w0",
            ):
                # weighted by layer size, so the figure is over all binary weights
                per_seed[key].append(sum(stats[n][key] * sizes[n] for n in stats) / total)
        if not seeds:
            continue

        def mean(key, scale=100.0, fmt="{:.2f}", values=per_seed):
            found = [v for v in values[key] if not math.isnan(v)]  # nan: no weight flipped
            return fmt.format(scale * statistics.mean(found)) if found else "–"

        lns = arm != "finetune"
        lines.append(
            f"| {arm} | {', '.join(map(str, seeds))} | {mean('flipped')} "
            f"| {mean('latent_crossed', fmt='{:.1f}')} | {mean('latent_flipped')} "
            f"| {mean('follows_latent') if lns else '–'} "
            f"| {mean('flipped_w0', 1.0, '{:.4f}')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs_dir",
        default=os.environ.get(
            "LNS_EXPERIMENT_DIR", os.path.join(ROOT, "runs", "fashion_mnist_converged")
        ),
    )
    parser.add_argument("--baseline", default=os.path.join(HERE, "baseline.keras"))
    parser.add_argument("--out", default=os.path.join(HERE, "flips.md"))
    args = parser.parse_args()
    text = table(args.runs_dir, args.baseline)
    atomic_write_bytes(args.out, text.encode())
    print(text)


if __name__ == "__main__":
    main()
