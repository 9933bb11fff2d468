"""The paper's ablation (Table 1), α / ρ sweeps (Figs. 4-5) and curves (Fig. 3) on
Fashion-MNIST with a ResNet-20 BNN, sized for 2 CPU cores.

    python experiments/fashion_mnist/run.py [--only table|sweep|float] [--seeds 0,1,2]

Every arm starts from the same pretrained baseline and gets the same fine-tuning budget.
Each finished run appends a row to `runs.csv` beside this file (rewritten atomically) and
copies its per-epoch `metrics.csv` to `curves/`; a run whose row exists is skipped, and an
interrupted run resumes from its last finished epoch (`BackupAndRestore` in
`apps/pipeline.py`), so the command can simply be started again.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from apps import pipeline  # noqa: E402
from lns_keras.export import atomic_write_bytes  # noqa: E402

RUNS_CSV = os.path.join(HERE, "runs.csv")
CURVES = os.path.join(HERE, "curves")
MODEL_DIR = os.path.join(ROOT, "runs", "fashion_mnist_ablation")
# Claims of runs in progress: delete this folder after a crash, before starting again.
CLAIMS = os.path.join(MODEL_DIR, "claims")
FIELDS = [
    "arm",
    "seed",
    "alpha",
    "rho",
    "epochs",
    "test_accuracy",
    "best_val_accuracy",
    "pretrained_accuracy",
    "agreement_after_warm_start",
    "flip_rate_last",
    "flip_rate_total",
    "seconds",
]

# The budget: the first TRAIN_LIMIT training images, the whole test set.
COMMON = dict(
    dataset="fashion_mnist",
    model="resnet20",
    batch_size=128,
    train_limit=8000,
    jit_compile=True,
    export_tflite=False,
    verbose=2,
)
BASELINE = dict(stage="baseline", epochs=8, optimizer="adam", learning_rate=1e-3, schedule="cosine")
FINETUNE = dict(
    epochs=3,
    optimizer="adam",
    learning_rate=1e-4,
    schedule="cosine",
    warm_start_epochs=1,
    warm_start_learning_rate=1e-3,
)
TABLE_ARMS = {  # arm: (stage, alpha, rho)
    "finetune": ("finetune", None, None),
    "lns_alpha0": ("lns", 0.0, 0.005),
    "lns": ("lns", 1.0, 0.005),
}
# Figs. 4 and 5: alpha swept at rho = 0.005, rho swept at alpha = 1 (seed 0). The points
# alpha = 0 and alpha = 1, rho = 0.005 are the table's arms "lns_alpha0" and "lns".
ALPHAS = (0.1, 2.0, 5.0)
RHOS = (0.0, 0.05, 0.2)


def read_rows() -> list[dict]:
    if not os.path.isfile(RUNS_CSV):
        return []
    with open(RUNS_CSV) as f:
        return list(csv.DictReader(f))


def append_row(row: dict) -> None:
    import fcntl

    with open(RUNS_CSV + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other runners append too
        _append_row(row)


def _append_row(row: dict) -> None:
    rows = read_rows() + [row]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(RUNS_CSV, buffer.getvalue().encode())


def done(arm: str, seed: int) -> bool:
    return any(r["arm"] == arm and int(r["seed"]) == seed for r in read_rows())


def baseline_path() -> str:
    return os.path.join(MODEL_DIR, "baseline_s0", "baseline", "final.keras")


def claim(arm: str, seed: int) -> bool:
    """Claim a run for this process (several runners may share the work); False if taken."""
    os.makedirs(CLAIMS, exist_ok=True)
    try:
        os.close(os.open(os.path.join(CLAIMS, f"{arm}_s{seed}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def run_arm(arm: str, seed: int, config: dict, alpha=None, rho=None) -> None:
    if done(arm, seed) or not claim(arm, seed):
        return
    print(f"\n=== {arm} seed {seed} ===", flush=True)
    model_dir = os.path.join(MODEL_DIR, f"{arm}_s{seed}")
    summary = pipeline.run(pipeline.TrainConfig(**COMMON, **config, seed=seed, model_dir=model_dir))
    ((stage, result),) = summary["stages"].items()
    history = result["history"]
    flips = history.get("flip_rate") or [float("nan")]
    totals = history.get("flip_rate_total") or [float("nan")]
    os.makedirs(CURVES, exist_ok=True)
    shutil.copyfile(
        os.path.join(model_dir, stage, "metrics.csv"), os.path.join(CURVES, f"{arm}_s{seed}.csv")
    )
    append_row(
        {
            "arm": arm,
            "seed": seed,
            "alpha": "" if alpha is None else alpha,
            "rho": "" if rho is None else rho,
            "epochs": result["epochs"],
            "test_accuracy": result["test_accuracy"],
            "best_val_accuracy": max(history.get("val_accuracy") or [float("nan")]),
            "pretrained_accuracy": result.get("pretrained_accuracy", ""),
            "agreement_after_warm_start": result.get("agreement_after", ""),
            "flip_rate_last": flips[-1],
            "flip_rate_total": totals[-1],
            "seconds": round(result["seconds"], 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("table", "sweep", "float"), default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--reverse", action="store_true", help="take the runs in reverse order (a second runner)"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = list(_jobs(args.only, seeds))
    for arm, seed, config, alpha, rho in reversed(jobs) if args.reverse else jobs:
        run_arm(arm, seed, config, alpha, rho)


def _jobs(only, seeds):
    """(arm, seed, config, alpha, rho) of every run, baseline first."""
    if not done("baseline", 0):  # every other run starts from it
        yield "baseline", 0, BASELINE, None, None
        return
    if only in (None, "table"):
        for seed in seeds:
            for arm, (stage, alpha, rho) in TABLE_ARMS.items():
                extra = {} if alpha is None else {"alpha": alpha, "rho": rho}
                config = {**FINETUNE, **extra, "stage": stage, "pretrained": baseline_path()}
                yield arm, seed, config, alpha, rho
    if only in (None, "float"):
        yield "float", 0, {**BASELINE, "stage": "float"}, None, None
    if only in (None, "sweep"):
        lns = {**FINETUNE, "stage": "lns", "pretrained": baseline_path()}
        for alpha in ALPHAS:
            yield f"alpha={alpha}", 0, {**lns, "alpha": alpha, "rho": 0.005}, alpha, 0.005
        for rho in RHOS:
            yield f"rho={rho}", 0, {**lns, "alpha": 1.0, "rho": rho}, 1.0, rho


if __name__ == "__main__":
    main()
