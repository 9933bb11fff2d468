"""Issue 10's results: SLB against its straight-through baseline on Fashion-MNIST.

    python experiments/fashion_mnist_slb/run.py [--only ARM[,ARM]] [--seeds S[,S]] [--dry_run]

Arms, each trained from scratch at seeds 0, 1 and 2 (`ARMS`, `SEEDS`):

- `slb_w1a1`, `slb_w2a2`, `slb_w4a4`: SLB (`--stage=slb`), the weights searched among
  the k-bit values, activations quantized to the same k bits;
- `ste_w1a1`, `ste_w2a2`, `ste_w4a4`: SLB's straight-through baseline (`--stage=baseline`
  with the same bit flags: mode `"dorefa"` of `apps.models.modes`, DoReFa k-bit weights
  with the activation quantizer of the SLB arm, `ste_sign` at 1 bit and PACT above; at
  W1/A1 the stage builds mode `"bnn"`, which is that same network);
- `float`: the full-precision network (`--stage=float`).

Every arm is the same network (`fashion_net`: the two middle convolutions quantized, the
first conv and the classifier full precision), trained for the same epochs with the same
optimizer and schedule (Adam 10⁻³, constant, batch 128, no weight decay: the recipe of
`apps/configs/fashion_mnist_slb.flags`). SLB adds its own schedule: the inverse
temperature ×`temperature_factor` per epoch from 0.2 to 0.9 of the epochs, hard kernels
after that, and 100 batches of batch-norm recalibration with the hard kernels before
every validation.

Protocol: train on the first 50,000 training images, validate on the last 10,000 of the
training split after every epoch, test once per run at the end on the 10,000 test
images. Each stage keeps the model of its best validation epoch and tests it
(`test_accuracy_selected`, the number the report compares); the last epoch's model is
tested too (`test_accuracy_last`; for SLB the folded model).

Size: 6 epochs, the epochs of `fashion_mnist_slb.flags`, so its temperature schedule
holds unchanged (T = 1, 2.5, 6.25, 15.6, 39; hard kernels in epochs 5 and 6). One SLB
W4/A4 epoch of `fashion_net` (390 training steps of batch 128, 100 recalibration
batches, 79 validation batches) was measured part by part over a few dozen steps and
extrapolated, on this project's 2-core machine while other jobs kept it loaded (load
average 2.5-8): a training step costs 0.21 CPU-seconds (the same for SLB, STE and float;
0.009 of it the input pipeline) and took 0.13 s at best on the wall, a recalibration
batch 0.11 s, the validation 2.3 s; about 65 s per SLB epoch and 55 s per STE or float
epoch on 2 quiet cores (97 and 85 CPU-seconds: the most they take if the two threads
give no speed-up). With about 30 s per run besides (compilation, tests, folding,
files), the 21 runs take about 2.25 hours (at most 3.3); 7 epochs would take 2.6.

Runs go in order of seed, so three complete seeds of every arm come before anything
else. Each finished run appends a row to `runs.csv` (rewritten atomically) and copies
its per-epoch `metrics.csv` (accuracy, validation accuracy and, for SLB, the
temperature) to `curves/<arm>_s<seed>.csv`. A run whose row exists is skipped; a run in
progress holds an exclusive lock (released by the OS if the process dies), so several
runners may share the grid; an interrupted run resumes from its last finished epoch
(`BackupAndRestore`), and a run that finished without its row being written gets the
row from its `metrics.json` without training again. Start the command again to go on.
Rows record the git commit of the code that produced them.

Environment: `LNS_SLB_EXPERIMENT_DIR` sets the folder of the runs' model directories
(default `runs/fashion_mnist_slb_grid`), `LNS_SLB_RESULTS_DIR` the folder of `runs.csv`
and `curves/` (default: beside this file). `LNS_SLB_TEST_OVERRIDE`, for tests only, is a
JSON object of `apps.pipeline.TrainConfig` fields that replace the grid's (a smaller
run); it is refused unless `LNS_SLB_RESULTS_DIR` points elsewhere, so that its rows never
reach the committed `runs.csv`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from apps import logs  # noqa: E402  (imports neither TensorFlow nor Keras)

logs.quiet_tensorflow(sys.argv)  # TensorFlow's C++ start-up lines, as in apps/train.py

import keras  # noqa: E402

from apps import pipeline  # noqa: E402
from lns_keras.export import atomic_write_bytes  # noqa: E402

# arm: (stage, weight bits, activation bits), in the order a seed runs them.
ARMS = {
    "slb_w1a1": ("slb", 1, 1),
    "ste_w1a1": ("baseline", 1, 1),
    "slb_w2a2": ("slb", 2, 2),
    "ste_w2a2": ("baseline", 2, 2),
    "slb_w4a4": ("slb", 4, 4),
    "ste_w4a4": ("baseline", 4, 4),
    "float": ("float", 32, 32),
}
SEEDS = (0, 1, 2)
EPOCHS = 6  # see the docstring's "Size"
COMMON = dict(
    dataset="fashion_mnist",
    model="fashion_net",
    batch_size=128,
    validation_examples=10000,
    jit_compile=True,
    export_tflite=False,
    verbose=2,
)
# The same for every arm: apps/configs/fashion_mnist_slb.flags' optimizer and schedule.
TRAINING = dict(
    epochs=EPOCHS, optimizer="adam", learning_rate=1e-3, schedule="constant", weight_decay=0.0
)
SLB = dict(
    temperature_factor=2.5,
    temperature_start=0.2,
    temperature_end=0.9,
    bn_recalibration_steps=100,
)
FIELDS = [
    "arm",
    "method",
    "seed",
    "stage",
    "mode",
    "weight_bits",
    "activation_bits",
    "epochs",
    "optimizer",
    "learning_rate",
    "schedule",
    "batch_size",
    "validation_examples",
    "temperature_factor",
    "test_accuracy_selected",
    "selected_epoch",
    "best_val_accuracy",
    "test_accuracy_last",
    "val_accuracy_last",
    "final_temperature",
    "hard_from_epoch",
    "fold_max_difference",
    "seconds",
    "commit",
]
DEFAULT_MODEL_ROOT = os.path.join(ROOT, "runs", "fashion_mnist_slb_grid")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Where the grid writes, and the test override of its training values."""

    results_dir: str
    model_root: str
    override: dict

    @classmethod
    def from_environment(cls) -> Grid:
        results_dir = os.path.abspath(os.environ.get("LNS_SLB_RESULTS_DIR", HERE))
        override = json.loads(os.environ.get("LNS_SLB_TEST_OVERRIDE") or "{}")
        if override and results_dir == HERE:
            raise ValueError(
                f"LNS_SLB_TEST_OVERRIDE={json.dumps(override)} would write its rows into "
                f"{HERE}/runs.csv: set LNS_SLB_RESULTS_DIR to another folder."
            )
        model_root = os.environ.get("LNS_SLB_EXPERIMENT_DIR", DEFAULT_MODEL_ROOT)
        return cls(results_dir, os.path.abspath(model_root), override)

    @property
    def runs_csv(self) -> str:
        return os.path.join(self.results_dir, "runs.csv")

    @property
    def curves(self) -> str:
        return os.path.join(self.results_dir, "curves")


def method(arm: str) -> str:
    return arm.split("_")[0]


def read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def done(grid: Grid, arm: str, seed: int) -> bool:
    return any(r["arm"] == arm and int(r["seed"]) == seed for r in read_rows(grid.runs_csv))


def append_row(grid: Grid, row: dict) -> None:
    with open(os.path.join(grid.model_root, "runs.csv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other runners append too
        rows = read_rows(grid.runs_csv) + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(grid.runs_csv, buffer.getvalue().encode())


def commit() -> str:
    """The short git commit, `+dirty` if the code that trains differs from it."""
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "lns_keras", "apps", __file__],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def jobs(only: set[str] | None = None, seeds: tuple[int, ...] = SEEDS) -> list[tuple[str, int]]:
    """(arm, seed) of every run in order: every arm of a seed before the next seed."""
    return [(arm, seed) for seed in seeds for arm in ARMS if only is None or arm in only]


def train_config(grid: Grid, arm: str, seed: int) -> pipeline.TrainConfig:
    stage, weight_bits, activation_bits = ARMS[arm]
    values = {**COMMON, **TRAINING}
    if stage != "float":
        values.update(weight_bits=weight_bits, activation_bits=activation_bits)
    if stage == "slb":
        values.update(SLB)
    values.update(grid.override)
    return pipeline.TrainConfig(
        **values, stage=stage, seed=seed, model_dir=os.path.join(grid.model_root, f"{arm}_s{seed}")
    )


def run_arm(grid: Grid, arm: str, seed: int) -> None:
    """Train `arm` at `seed` unless its row exists or another runner holds it."""
    if done(grid, arm, seed):
        return
    os.makedirs(os.path.join(grid.model_root, "claims"), exist_ok=True)
    with open(os.path.join(grid.model_root, "claims", f"{arm}_s{seed}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another runner has it
        if done(grid, arm, seed):
            return
        _run_locked(grid, arm, seed)


def _run_locked(grid: Grid, arm: str, seed: int) -> None:
    print(f"\n=== {arm} seed {seed} ===", flush=True)
    config = train_config(grid, arm, seed)
    summary = pipeline.run(config)
    keras.utils.clear_session()  # 21 models in one process
    ((stage_name, result),) = summary["stages"].items()
    history = result["history"]
    os.makedirs(grid.curves, exist_ok=True)
    shutil.copyfile(
        os.path.join(config.model_dir, stage_name, "metrics.csv"),
        os.path.join(grid.curves, f"{arm}_s{seed}.csv"),
    )
    _, weight_bits, activation_bits = ARMS[arm]
    slb = stage_name == "slb"
    append_row(
        grid,
        {
            "arm": arm,
            "method": method(arm),
            "seed": seed,
            "stage": stage_name,
            "mode": result.get("mode", stage_name),
            "weight_bits": weight_bits,
            "activation_bits": activation_bits,
            "epochs": result["epochs"],
            "optimizer": config.optimizer,
            "learning_rate": config.learning_rate,
            "schedule": config.schedule,
            "batch_size": config.batch_size,
            "validation_examples": config.validation_examples,
            "temperature_factor": config.temperature_factor if slb else "",
            "test_accuracy_selected": result["test_accuracy_selected"],
            "selected_epoch": result["selected_epoch"],
            "best_val_accuracy": result["selected_val_accuracy"],
            "test_accuracy_last": result["test_accuracy"],
            "val_accuracy_last": history["val_accuracy"][-1],
            "final_temperature": result["final_temperature"] if slb else "",
            "hard_from_epoch": result["schedule_window"][1] if slb else "",
            "fold_max_difference": result["fold_max_difference"] if slb else "",
            "seconds": round(result["seconds"], 1),
            "commit": commit(),
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated arms of {list(ARMS)}")
    parser.add_argument("--seeds", default=None, help=f"comma-separated seeds (default {SEEDS})")
    parser.add_argument("--dry_run", action="store_true", help="list the runs still to do")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(ARMS):
        parser.error(
            f"--only={args.only!r} names no arm of {list(ARMS)}: {sorted(only - set(ARMS))}"
        )
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else SEEDS
    grid = Grid.from_environment()
    if args.dry_run:
        for arm, seed in jobs(only, seeds):
            if not done(grid, arm, seed):
                print(f"{arm} seed {seed}")
        return
    logs.apply_verbosity(logs.DEFAULT_VERBOSITY)  # warnings; no tfds progress bars
    os.makedirs(grid.model_root, exist_ok=True)
    while True:
        todo = [job for job in jobs(only, seeds) if not done(grid, *job)]
        if not todo:
            print("Every run is done.")
            return
        before = len(read_rows(grid.runs_csv))
        for arm, seed in todo:
            run_arm(grid, arm, seed)
        if len(read_rows(grid.runs_csv)) == before:  # the rest is held by other runners
            return


if __name__ == "__main__":
    main()
