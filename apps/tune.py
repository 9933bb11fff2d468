"""Search LNS's α and ρ with KerasTuner; every trial fine-tunes the same baseline.

    python apps/tune.py --pretrained=runs/demo/baseline/final.keras --model_dir=runs/tune \\
        --tuner=bayesian --max_trials=20 --epochs=5

Each trial converts the `--pretrained` baseline BNN to LNS with its own α (the weight of
the noisy-supervision loss, Eq. 21; log scale in [0.01, 5]) and ρ (ρ₊₁ = ρ₋₁ = ρ of
Eq. 15, in [0, 0.2]), warm-starts the mappings, fine-tunes end to end, and is scored by
its best validation accuracy. Validation uses the last `--validation_split` of the
training split, not the test split, so that the test accuracy of the chosen α and ρ
(run them with `apps/train.py --alpha=... --rho=...`) is not biased by the search.

Outputs, in `--model_dir`:

- `tune_results.csv`: one row per trial (rank, trial id, α, ρ, val_accuracy, val_loss,
  accuracy, loss, flip rate against the baseline, best epoch, status), sorted by
  validation accuracy, best first; written atomically.
- `tuner/`: KerasTuner's state. A search started again with the same command continues
  where it stopped; finished trials are kept.

`--tuner=random` and `--tuner=bayesian` run `--max_trials` trials of `--epochs` epochs;
`--tuner=hyperband` ignores `--max_trials` and plays brackets of up to `--epochs` epochs
(factor 3), continuing promising trials from their weights without a new warm start.

Distributed search (KerasTuner's chief/worker mode): start the same command once per
process, with these environment variables:

    KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000   # on every process
    KERASTUNER_TUNER_ID=chief          # the one process that runs the oracle
    KERASTUNER_TUNER_ID=tuner0         # each worker: its own id (tuner0, tuner1, ...)

The chief hands out trials and records results but trains nothing; each worker runs
trials until the oracle has no more. When the search ends, the chief writes
`tune_results.csv` into its `--model_dir`; the workers keep their trials' checkpoints in
theirs (no shared file system is needed).

One model over several machines is `apps/train.py --strategy=multi_worker_mirrored`,
started on every machine with the cluster in `TF_CONFIG` (the same everywhere but the
task index; worker 0 is the chief and writes `--model_dir`):

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python apps/train.py --flagfile=... --strategy=multi_worker_mirrored

See `docs/distributed.md` for both.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import logs  # noqa: E402  (imports no TensorFlow)

if __name__ == "__main__":
    logs.quiet_tensorflow(sys.argv)  # before TensorFlow is imported

import keras  # noqa: E402
import keras_tuner  # noqa: E402
from absl import app, flags  # noqa: E402

import lns_keras  # noqa: E402
from apps import data, models, pipeline  # noqa: E402
from lns_keras.callbacks import FlipRate, binary_signs  # noqa: E402
from lns_keras.export import atomic_write_bytes  # noqa: E402

__all__ = [
    "ALPHA_RANGE",
    "RESULT_COLUMNS",
    "RHO_RANGE",
    "TUNERS",
    "LNSHyperModel",
    "TuneConfig",
    "make_tuner",
    "results_table",
    "search",
    "trial_results",
]

TUNERS = ("random", "bayesian", "hyperband")
ALPHA_RANGE = (0.01, 5.0)  # searched on a log scale
RHO_RANGE = (0.0, 0.2)
RESULTS_FILE = "tune_results.csv"
RESULT_COLUMNS = (
    "rank",
    "trial_id",
    "alpha",
    "rho",
    "val_accuracy",
    "val_loss",
    "accuracy",
    "loss",
    "flip_rate_total",
    "best_epoch",
    "status",
)


@dataclasses.dataclass
class TuneConfig:
    """Everything a search needs; `apps/tune.py` fills it from flags.

    Attributes:
        pretrained: The baseline `.keras` model every trial starts from.
        model_dir: Output folder (`tune_results.csv`, `tuner/`).
        dataset: One of `apps.data.DATASETS`.
        model: The architecture of `pretrained`, one of `apps.models.BUILDERS`; picks its
            conversion defaults (`apps.models.LNS_DEFAULTS`: AlexNet maps its
            convolutions only), as `apps/train.py` does.
        tuner: One of `TUNERS`.
        max_trials: Trials of the random and Bayesian searches.
        epochs: Fine-tuning epochs of a trial (the largest budget for Hyperband).
        warm_start_epochs: Warm-start epochs of a trial (mappings only).
        batch_size: Batch size.
        learning_rate: Fine-tuning learning rate.
        warm_start_learning_rate: Adam learning rate of the warm start.
        optimizer: `sgd` (momentum `momentum`) or `adam`, for fine-tuning.
        momentum: SGD momentum.
        loss_reduction: `mean` (Eq. 16) or `sum` (Eq. 17).
        noisy_labels: `latent` or `pretrained`.
        mapping_width: Channel multiplier of the mappings.
        validation_split: Fraction at the end of the training split used to validate;
            0 validates on the test split.
        seed: Random seed of the search, the weights and the data order.
        train_limit: Use only the first training examples.
        val_limit: Use only the first validation examples.
        data_dir: tfds data folder.
        fashion_mnist_dir: Folder with the Fashion-MNIST IDX files.
        jit_compile: XLA-compile the train step.
        verbose: Keras progress-bar verbosity.
    """

    pretrained: str | None = None
    model_dir: str = "runs/tune"
    dataset: str = "fashion_mnist"
    model: str = "fashion_net"
    tuner: str = "random"
    max_trials: int = 10
    epochs: int = 2
    warm_start_epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.01
    warm_start_learning_rate: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    loss_reduction: str = "mean"
    noisy_labels: str = "latent"
    mapping_width: int = 2
    validation_split: float = 0.1
    seed: int = 0
    train_limit: int | None = None
    val_limit: int | None = None
    data_dir: str | None = None
    fashion_mnist_dir: str = data.FASHION_MNIST_DIR
    jit_compile: bool = False
    verbose: int | str = "auto"

    def validate(self) -> None:
        """Check the fields; raise `ValueError` naming the flag and the bad value."""

        def bad(flag, value, accepted):
            raise ValueError(f"--{flag}={value!r} is invalid: {accepted}.")

        if self.tuner not in TUNERS:
            bad("tuner", self.tuner, f"expected one of {list(TUNERS)}")
        if self.tuner == "bayesian" and not all(
            importlib.util.find_spec(m) for m in ("scipy", "sklearn")
        ):
            bad("tuner", self.tuner, "it needs pip install 'keras-tuner[bayesian]'")
        if self.dataset not in data.DATASETS:
            bad("dataset", self.dataset, f"expected one of {list(data.DATASETS)}")
        if self.model not in models.BUILDERS:
            bad("model", self.model, f"expected one of {list(models.BUILDERS)}")
        if self.optimizer not in pipeline.OPTIMIZERS:
            bad("optimizer", self.optimizer, f"expected one of {list(pipeline.OPTIMIZERS)}")
        for flag in ("max_trials", "epochs", "batch_size"):
            if getattr(self, flag) < 1:
                bad(flag, getattr(self, flag), "expected an integer >= 1")
        if self.warm_start_epochs < 0:
            bad("warm_start_epochs", self.warm_start_epochs, "expected an integer >= 0")
        for flag in ("learning_rate", "warm_start_learning_rate"):
            if not getattr(self, flag) > 0:
                bad(flag, getattr(self, flag), "expected a number > 0")
        if not 0 <= self.validation_split < 1:
            bad("validation_split", self.validation_split, "expected a number in [0, 1)")
        if not self.pretrained:
            bad("pretrained", self.pretrained, "a baseline .keras model is needed")


class LNSHyperModel(keras_tuner.HyperModel):
    """A trial: the baseline converted to LNS with the trial's α and ρ, warm-started and
    fine-tuned.

    Args:
        baseline: The pretrained baseline BNN (left unchanged).
        config: The search's configuration.
    """

    def __init__(self, baseline: keras.Model, config: TuneConfig):
        super().__init__(name="lns")
        self.baseline = baseline
        self.config = config
        self.reference = binary_signs(baseline)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        alpha = hp.Float("alpha", *ALPHA_RANGE, sampling="log")
        rho = hp.Float("rho", *RHO_RANGE)
        return lns_keras.convert.to_lns(
            self.baseline,
            **models.LNS_DEFAULTS.get(self.config.model, {}),
            alpha=alpha,
            rho=rho,
            loss_reduction=self.config.loss_reduction,
            noisy_labels=self.config.noisy_labels,
            mapping_width=self.config.mapping_width,
        )

    def fit(self, hp, model, x, *, epochs=1, initial_epoch=0, callbacks=(), **kwargs):
        config = self.config
        verbose = kwargs.pop("verbose", config.verbose)
        # Hyperband continues a trial from its weights (initial_epoch > 0): the mappings
        # are warm already.
        if initial_epoch == 0 and config.warm_start_epochs:
            lns_keras.convert.warm_start(
                model,
                x,
                epochs=config.warm_start_epochs,
                loss=keras.losses.SparseCategoricalCrossentropy(),
                optimizer=keras.optimizers.Adam(config.warm_start_learning_rate),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                jit_compile=config.jit_compile,
                verbose=verbose,
                shuffle=False,  # the dataset is shuffled already
            )
        if config.optimizer == "adam":
            optimizer = keras.optimizers.Adam(config.learning_rate)
        else:
            optimizer = keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=config.jit_compile,
        )
        # FlipRate first, so that the tuner's callbacks see flip_rate_total in the logs.
        return model.fit(
            x,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[FlipRate(reference=self.reference, per_layer=False), *callbacks],
            verbose=verbose,
            **kwargs,
        )


def make_tuner(config: TuneConfig, hypermodel: keras_tuner.HyperModel) -> keras_tuner.Tuner:
    """The KerasTuner tuner called `config.tuner`, maximising `val_accuracy`.

    Args:
        config: The search's configuration.
        hypermodel: What builds and fits a trial.

    Returns:
        The tuner, keeping its state in `config.model_dir/tuner` (a search started again
        continues).
    """
    common = dict(
        objective=keras_tuner.Objective("val_accuracy", direction="max"),
        directory=config.model_dir,
        project_name="tuner",
        seed=config.seed + 1,  # KerasTuner draws a random seed for 0
        overwrite=False,
    )
    if config.tuner == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=config.max_trials, **common)
    if config.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=config.max_trials, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=config.epochs, factor=3, **common)


def _is_tuner_worker() -> bool:
    """Whether this process is a worker of a distributed search (not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _datasets(config: TuneConfig):
    common = dict(
        data_dir=config.data_dir,
        fashion_mnist_dir=config.fashion_mnist_dir,
        batch_size=config.batch_size,
    )
    if config.validation_split:
        percent = round(100 * (1 - config.validation_split))
        train_split, val_split = f"train[:{percent}%]", f"train[{percent}%:]"
    else:
        train_split = "train"
        val_split = "test" if config.dataset != "imagenet2012" else "validation"
    train = data.load(
        config.dataset,
        train_split,
        seed=config.seed,
        limit=config.train_limit,
        training=True,
        **common,
    )
    validation = data.load(
        config.dataset, val_split, limit=config.val_limit, training=False, **common
    )
    return train, validation


def _metric_at(trial, name: str, step: int) -> float | None:
    if not trial.metrics.exists(name):
        return None
    for observation in trial.metrics.get_history(name):
        if observation.step == step:
            return float(observation.mean())
    return None


def trial_results(oracle: keras_tuner.Oracle) -> list[dict[str, Any]]:
    """One row per trial of a search, sorted by validation accuracy, best first.

    Args:
        oracle: The tuner's oracle (`tuner.oracle`).

    Returns:
        Dicts with the keys of `RESULT_COLUMNS`; the metrics are those of the trial's
        best epoch; trials without a score (failed) come last.
    """
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial_id": trial.trial_id,
                "alpha": values.get("alpha"),
                "rho": values.get("rho"),
                "val_accuracy": None if trial.score is None else float(trial.score),
                **{
                    name: _metric_at(trial, name, trial.best_step)
                    for name in ("val_loss", "accuracy", "loss", "flip_rate_total")
                },
                "best_epoch": trial.best_step + 1 if trial.score is not None else None,
                "status": trial.status,
            }
        )
    rows.sort(key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0), r["trial_id"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in RESULT_COLUMNS})
    return buffer.getvalue().encode()


def results_table(rows: list[dict[str, Any]]) -> str:
    """The search's results as a text table (rank, trial, α, ρ, accuracies, flip rate).

    Args:
        rows: What [`search`][apps.tune.search] returned.

    Returns:
        The table as text.
    """

    def number(value, spec):
        return "-" if value is None or math.isnan(value) else format(value, spec)

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    header = ("rank", "trial", "alpha", "rho", "val acc", "train acc", "flip vs base", "status")
    lines = [header]
    for r in rows:
        lines.append(
            (
                str(r["rank"]),
                r["trial_id"],
                number(r["alpha"], ".4g"),
                number(r["rho"], ".4f"),
                percent(r["val_accuracy"]),
                percent(r["accuracy"]),
                number(r["flip_rate_total"], ".4f"),
                r["status"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def search(config: TuneConfig) -> list[dict[str, Any]]:
    """Run the search and write `tune_results.csv` into `config.model_dir`.

    Args:
        config: The search's configuration.

    Returns:
        The rows of the results table (see [`trial_results`][apps.tune.trial_results]),
        best first; empty on the workers of a distributed search, where the chief writes
        the table.

    Raises:
        ValueError: For an invalid configuration (naming the flag), a `--pretrained` file
            that is missing or not a model, or a model whose input does not fit the data.
        apps.data.DataNotFoundError: When the dataset is missing.

    Example:
        ```python
        rows = search(TuneConfig(pretrained="runs/demo/baseline/final.keras",
                                 model_dir="runs/tune", max_trials=4, epochs=1))
        print(rows[0]["alpha"], rows[0]["rho"], rows[0]["val_accuracy"])
        ```
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    baseline = pipeline.load_pretrained(config.pretrained)
    input_shape, _ = data.info(config.dataset)
    if tuple(baseline.input_shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"--pretrained={config.pretrained!r} is invalid: its input shape "
            f"{tuple(baseline.input_shape[1:])} does not fit --dataset={config.dataset!r} "
            f"{tuple(input_shape)}."
        )
    train, validation = _datasets(config)
    tuner = make_tuner(config, LNSHyperModel(baseline, config))
    tuner.search(
        train,
        validation_data=validation,
        epochs=config.epochs,
        verbose=config.verbose,
        shuffle=False,  # the dataset is shuffled already
    )
    if _is_tuner_worker():
        return []
    rows = trial_results(tuner.oracle)
    atomic_write_bytes(os.path.join(config.model_dir, RESULTS_FILE), _csv_bytes(rows))
    return rows


# --- command line ---------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags (names and defaults as in `apps/train.py`)."""
    flags.DEFINE_string("pretrained", None, "Baseline .keras model every trial starts from.")
    flags.DEFINE_string("model_dir", "runs/tune", "Output folder (results CSV, tuner state).")
    flags.DEFINE_string("dataset", "fashion_mnist", f"One of {list(data.DATASETS)}.")
    flags.DEFINE_string("model", "fashion_net", f"One of {list(models.BUILDERS)}, as --pretrained.")
    flags.DEFINE_string("tuner", "random", f"One of {list(TUNERS)}.")
    flags.DEFINE_integer("max_trials", 10, "Trials of the random and Bayesian searches.")
    flags.DEFINE_integer("epochs", 2, "Fine-tuning epochs per trial (Hyperband: at most).")
    flags.DEFINE_integer("warm_start_epochs", 1, "Warm-start epochs per trial (mappings only).")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_float("learning_rate", 0.01, "Fine-tuning learning rate.")
    flags.DEFINE_float("warm_start_learning_rate", 1e-3, "Adam learning rate of the warm start.")
    flags.DEFINE_string("optimizer", "sgd", f"One of {list(pipeline.OPTIMIZERS)}.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_string("loss_reduction", "mean", "mean (Eq. 16) or sum (Eq. 17).")
    flags.DEFINE_string("noisy_labels", "latent", "latent (sign of current W) or pretrained.")
    flags.DEFINE_integer("mapping_width", 2, "Channel multiplier of the mapping networks.")
    flags.DEFINE_float(
        "validation_split", 0.1, "Validate on this last fraction of the training split (0: test)."
    )
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("train_limit", None, "Use only the first N training examples.")
    flags.DEFINE_integer("val_limit", None, "Use only the first N validation examples.")
    flags.DEFINE_string("data_dir", None, "tfds data folder.")
    flags.DEFINE_string(
        "fashion_mnist_dir", data.FASHION_MNIST_DIR, "Folder of the Fashion-MNIST IDX files."
    )
    flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step.")
    flags.DEFINE_string("verbose", "auto", "Keras verbosity: auto, 0, 1 or 2.")


def config_from_flags() -> TuneConfig:
    """Build the [`TuneConfig`][apps.tune.TuneConfig] from the parsed flags."""
    names = [f.name for f in dataclasses.fields(TuneConfig)]
    values = {name: getattr(FLAGS, name) for name in names}
    verbose = values["verbose"]
    values["verbose"] = int(verbose) if verbose.isdigit() else verbose
    return TuneConfig(**values)


def main(argv: list[str]) -> int:
    verbosity = FLAGS.verbosity if FLAGS["verbosity"].present else logs.DEFAULT_VERBOSITY
    logs.apply_verbosity(verbosity)
    if len(argv) > 1:
        print(
            f"error: unexpected argument {' '.join(map(repr, argv[1:]))}: settings are flags "
            "such as --epochs=3 (see --help).",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_flags()
        rows = search(config)
    except (ValueError, data.DataNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if rows:
        print()
        print(results_table(rows))
        path = os.path.abspath(os.path.join(config.model_dir, RESULTS_FILE))
        print(f"\nResults: {path}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
