"""The training pipeline behind `apps/train.py`: stages, strategy, callbacks, outputs.

Stages (paper §4.1-4.3), each in its own folder of `model_dir`:

- `float`: the full-precision network, for reference.
- `baseline`: the baseline BNN (binary but the first conv, the last dense and the
  down-sampling shortcuts), trained from scratch.
- `finetune`: plain fine-tuning of a pretrained baseline (the paper's "Fine-tuning").
- `lns`: a pretrained baseline converted to LNS, warm-started, fine-tuned with
  `L = ℓ_cls + α Σ ℓ̃_i`, folded back into a plain BNN and exported.
- `all`: `baseline` then `lns` from it.

Every stage writes atomically into `model_dir/<stage>/`: `final.keras` (the trained model;
for `lns` the folded one, plus `lns.keras` unfolded), `checkpoint.keras` (after every
epoch), `backup/` (`BackupAndRestore` state: an interrupted run started again with the
same command continues from the last finished epoch), `tensorboard/`, `metrics.csv`
(accuracy, losses and flip rates per epoch), `curves.png`, `flip_rate.png` and
`metrics.json`. A stage whose `metrics.json` exists is done and is not run again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import keras
import tensorflow as tf

import lns_keras
from apps import data, models
from lns_keras.callbacks import FlipRate, GradientReach, binary_signs
from lns_keras.export import atomic_path, atomic_write_bytes, save_model, to_tflite

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STAGES",
    "STRATEGIES",
    "AtomicBackupAndRestore",
    "AtomicCheckpoint",
    "BestOnValidation",
    "GRADIENT_PATHS",
    "TrainConfig",
    "load_pretrained",
    "make_strategy",
    "run",
]

STAGES = ("float", "baseline", "finetune", "lns", "all")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")
GRADIENT_PATHS = {
    # How the classification gradient reaches the unbounded Q̂ (docs/concepts.md, "The
    # gradient path"): LNS-layer arguments of each choice.
    "identity": {"kernel_quantizer": None},  # the LNS default: SteSign(clip_value=None)
    "window": {"kernel_quantizer": "ste_sign"},  # |Q̂| <= 1 only, the former default
    "tanh": {"kernel_quantizer": "ste_sign", "mapping_activation": "tanh"},  # bounded Q̂
}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; `apps/train.py` fills it from flags.

    Attributes:
        dataset: One of `apps.data.DATASETS`.
        model: One of `apps.models.BUILDERS`.
        stage: One of `STAGES`.
        model_dir: Output folder.
        pretrained: A baseline `.keras` model to start `finetune` / `lns` from.
        epochs: Epochs of the stage (`finetune` / `lns` for `all`).
        baseline_epochs: Epochs of the baseline in `all` (default: `epochs`).
        warm_start_epochs: Epochs of the warm start (mapping only).
        batch_size: Global batch size.
        learning_rate: Initial learning rate.
        baseline_learning_rate: Learning rate of the baseline in `all` (default:
            `learning_rate`).
        schedule: `constant`, `step` (× `decay_factor` at each of `decay_epochs`) or
            `cosine`.
        decay_epochs: Epochs at which the step schedule decays.
        decay_factor: Factor of the step schedule.
        optimizer: `sgd` (momentum `momentum`) or `adam`.
        momentum: SGD momentum.
        weight_decay: Decoupled weight decay (0: none).
        warm_start_learning_rate: Adam learning rate of the warm start.
        alpha: α of Eq. 21.
        rho: ρ, or `(ρ₊₁, ρ₋₁)`.
        loss_reduction: `mean` (Eq. 16) or `sum` (Eq. 17).
        noisy_labels: `latent` or `pretrained`.
        mapping_width: Channel multiplier of the mappings.
        gradient_path: One of `GRADIENT_PATHS`: `identity` (default), `window` or `tanh`.
        validation_examples: Hold out the last examples of the training split to validate
            on, and test once at the end (0: validate on the test split, as before). With a
            hold-out, each stage also keeps the model of its best validation epoch
            (`best.keras`) and reports its test accuracy.
        seed: Random seed of weights, data order and augmentation.
        strategy: One of `STRATEGIES`.
        jit_compile: XLA-compile the train step.
        data_dir: tfds data folder.
        fashion_mnist_dir: Folder with the Fashion-MNIST IDX files.
        train_limit: Use only the first examples of the training split.
        test_limit: Use only the first examples of the test split.
        export_tflite: Whether to write the `.tflite` files of the final model.
        verbose: Keras progress-bar verbosity.
    """

    dataset: str = "fashion_mnist"
    model: str = "fashion_net"
    stage: str = "all"
    model_dir: str = "runs/demo"
    pretrained: str | None = None
    epochs: int = 2
    baseline_epochs: int | None = None
    warm_start_epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.01
    baseline_learning_rate: float | None = None
    schedule: str = "constant"
    decay_epochs: tuple[int, ...] = ()
    decay_factor: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    warm_start_learning_rate: float = 1e-3
    alpha: float = 1.0
    rho: float | tuple[float, float] = 0.005
    loss_reduction: str = "mean"
    noisy_labels: str = "latent"
    mapping_width: int = 2
    gradient_path: str = "identity"
    validation_examples: int = 0
    seed: int = 0
    strategy: str = "auto"
    jit_compile: bool = False
    data_dir: str | None = None
    fashion_mnist_dir: str = data.FASHION_MNIST_DIR
    train_limit: int | None = None
    test_limit: int | None = None
    export_tflite: bool = True
    verbose: int | str = "auto"

    def validate(self) -> None:
        """Check every field; raise `ValueError` naming the flag and the bad value."""

        def bad(flag, value, accepted):
            raise ValueError(f"--{flag}={value!r} is invalid: {accepted}.")

        if self.dataset not in data.DATASETS:
            bad("dataset", self.dataset, f"expected one of {list(data.DATASETS)}")
        if self.model not in models.BUILDERS:
            bad("model", self.model, f"expected one of {list(models.BUILDERS)}")
        if self.stage not in STAGES:
            bad("stage", self.stage, f"expected one of {list(STAGES)}")
        if self.strategy not in STRATEGIES:
            bad("strategy", self.strategy, f"expected one of {list(STRATEGIES)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", self.optimizer, f"expected one of {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("schedule", self.schedule, f"expected one of {list(SCHEDULES)}")
        if self.gradient_path not in GRADIENT_PATHS:
            bad("gradient_path", self.gradient_path, f"expected one of {list(GRADIENT_PATHS)}")
        if self.validation_examples < 0:
            bad("validation_examples", self.validation_examples, "expected an integer >= 0")
        for flag in ("epochs", "warm_start_epochs"):
            if getattr(self, flag) < 0:
                bad(flag, getattr(self, flag), "expected an integer >= 0")
        if self.baseline_epochs is not None and self.baseline_epochs < 0:
            bad("baseline_epochs", self.baseline_epochs, "expected an integer >= 0")
        if self.batch_size < 1:
            bad("batch_size", self.batch_size, "expected an integer >= 1")
        for flag in ("learning_rate", "warm_start_learning_rate"):
            if not getattr(self, flag) > 0:
                bad(flag, getattr(self, flag), "expected a number > 0")
        if self.alpha < 0:
            bad("alpha", self.alpha, "expected a number >= 0")
        rates = self.rho if isinstance(self.rho, list | tuple) else (self.rho, self.rho)
        if len(rates) != 2 or min(rates) < 0 or sum(rates) >= 1:
            bad("rho", self.rho, "expected rates >= 0 with rho_pos + rho_neg < 1")
        if self.stage in ("finetune", "lns"):
            if not self.pretrained:
                bad("pretrained", self.pretrained, f"--stage={self.stage} needs a baseline model")
            load_pretrained(self.pretrained)  # fails early, naming the flag


def load_pretrained(path: str | None) -> keras.Model:
    """Load the `--pretrained` baseline, with a one-line error if it is missing or bad.

    Args:
        path: A `.keras` file.

    Returns:
        The model.

    Raises:
        ValueError: Naming `--pretrained` when the file does not exist or is not a model.
    """
    if not path or not os.path.isfile(path):
        raise ValueError(f"--pretrained={path!r} is invalid: no such file.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure means "not a model"
        raise ValueError(
            f"--pretrained={path!r} is invalid: not a Keras model ({type(error).__name__})."
        ) from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`.

    `auto` is `MirroredStrategy` over every GPU when there are several, else the default
    strategy on the one device. `multi_worker_mirrored` reads the cluster from `TF_CONFIG`.

    Args:
        name: One of `STRATEGIES`.

    Returns:
        The strategy.

    Raises:
        ValueError: For an unknown name.
    """
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        return _reduce_like_mirrored(tf.distribute.MultiWorkerMirroredStrategy())
    raise ValueError(f"--strategy={name!r} is invalid: expected one of {list(STRATEGIES)}.")


def _reduce_like_mirrored(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
    """Let `strategy.reduce` take what Keras 3's `fit` hands it under MultiWorkerMirrored.

    Keras 3 reduces a whole `(x, y)` batch at once when it builds a model under a
    strategy, and reduces scalar metrics with `axis=0`; `MirroredStrategy` accepts both,
    `MultiWorkerMirroredStrategy` rejects both (keras-team/keras#20585,
    tensorflow/tensorflow#72388). Reduce each element of a structure on its own, and
    scalars across replicas only.
    """
    reduce = strategy.reduce

    def reduce_each(reduce_op, value, axis=None):
        def reduce_one(v):
            local = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            rank = getattr(local, "shape", tf.TensorShape([])).rank
            return reduce(reduce_op, v, axis=axis if rank else None)

        return tf.nest.map_structure(reduce_one, value)

    strategy.reduce = reduce_each
    return strategy


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose weights and metadata are written to temporary names and
    renamed, so an interruption never leaves a half-written backup."""

    def _save_model(self):
        with atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        atomic_write_bytes(self._training_metadata_path, json.dumps(metadata).encode())


class BestOnValidation(keras.callbacks.Callback):
    """Keep the model of the best validation epoch: `best.keras` and `best.json` in `folder`.

    `best.json` holds the epoch (counted from 1) and its `val_accuracy`; it is read back
    when the callback is created, so a resumed run keeps comparing against the best
    epoch before the interruption. Both files are written atomically.

    Args:
        folder: The stage's folder.
        monitor: The epoch log to maximise.
    """

    def __init__(self, folder: str, monitor: str = "val_accuracy"):
        super().__init__()
        self.folder = folder
        self.monitor = monitor
        self.best = self.read(folder)

    @staticmethod
    def read(folder: str) -> dict | None:
        path = os.path.join(folder, "best.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best["val_accuracy"]):
            return
        save_model(self.model, os.path.join(self.folder, "best.keras"))
        self.best = {"epoch": epoch + 1, "val_accuracy": float(value)}
        atomic_write_bytes(os.path.join(self.folder, "best.json"), json.dumps(self.best).encode())


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the whole model to `path` after every epoch, atomically.

    Args:
        path: A `.keras` file.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model(self.model, self.path)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


class _Run:
    """One invocation: the config, the strategy, the data; runs the stages."""

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config = config
        self.strategy = make_strategy(config.strategy)
        self.chief = _is_chief(self.strategy)
        worker = getattr(getattr(self.strategy, "cluster_resolver", None), "task_id", 0)
        # Workers other than the chief write into their own scratch folder.
        model_dir = os.path.abspath(config.model_dir)
        self.model_dir = model_dir if self.chief else os.path.join(model_dir, f".worker{worker}")
        os.makedirs(self.model_dir, exist_ok=True)
        keras.utils.set_random_seed(config.seed)
        self.input_shape, self.num_classes = data.info(config.dataset)
        common = dict(data_dir=config.data_dir, fashion_mnist_dir=config.fashion_mnist_dir)
        held_out = config.validation_examples
        self.train_ds = data.load(
            config.dataset,
            f"train[:-{held_out}]" if held_out else "train",
            config.batch_size,
            seed=config.seed,
            limit=config.train_limit,
            training=True,
            **common,
        )
        self.test_ds = data.load(
            config.dataset,
            "test" if config.dataset != "imagenet2012" else "validation",
            config.batch_size,
            limit=config.test_limit,
            **common,
        )
        # A tfds split may have fewer files than there are workers, so multi-worker
        # strategies shard by batch (every worker reads the same seeded pipeline and
        # keeps its share) instead of by file, which would fail.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        self.train_ds = self.train_ds.with_options(options)
        self.test_ds = self.test_ds.with_options(options)
        self.val_ds = self.test_ds
        if held_out:
            self.val_ds = data.load(
                config.dataset,
                f"train[-{held_out}:]",
                config.batch_size,
                training=False,
                **common,
            ).with_options(options)
        cardinality = int(self.train_ds.cardinality())
        self.steps_per_epoch = max(cardinality, 1)

    # --- pieces ---------------------------------------------------------------------

    def _optimizer(self, learning_rate: float, epochs: int) -> keras.optimizers.Optimizer:
        config = self.config
        total = max(epochs * self.steps_per_epoch, 1)
        if config.schedule == "step":
            boundaries = [e * self.steps_per_epoch for e in config.decay_epochs if 0 < e < epochs]
            values = [learning_rate * config.decay_factor**i for i in range(len(boundaries) + 1)]
            rate = (
                keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
                if boundaries
                else learning_rate
            )
        elif config.schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(learning_rate, total)
        else:
            rate = learning_rate
        decay = config.weight_decay or None
        if config.optimizer == "adam":
            return keras.optimizers.Adam(rate, weight_decay=decay)
        return keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=decay)

    def _compile(self, model, optimizer):
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                # The classification loss alone: an LNS model's `loss` also holds α·Σℓ̃.
                keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy"),
            ],
            jit_compile=self.config.jit_compile,
        )

    def _callbacks(self, stage_dir: str, flip_reference=None) -> list:
        callbacks = [
            AtomicBackupAndRestore(os.path.join(stage_dir, "backup")),
            FlipRate(reference=flip_reference),
            GradientReach(),
            keras.callbacks.CSVLogger(os.path.join(stage_dir, "metrics.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(stage_dir, "tensorboard")),
        ]
        if self.config.validation_examples:
            callbacks.append(BestOnValidation(stage_dir))
        if self.chief:
            callbacks.append(AtomicCheckpoint(os.path.join(stage_dir, "checkpoint.keras")))
        return callbacks

    def _fit(self, model, stage_dir, epochs, flip_reference=None):
        start = time.time()
        history = model.fit(
            self.train_ds,
            validation_data=self.val_ds,
            epochs=epochs,
            callbacks=self._callbacks(stage_dir, flip_reference),
            verbose=self.config.verbose,
        )
        return history, time.time() - start

    def _evaluate(self, model, dataset=None) -> float:
        dataset = self.test_ds if dataset is None else dataset
        return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])

    def _finish_stage(self, stage_dir: str, model: keras.Model, results: dict[str, Any]) -> dict:
        results["test_accuracy"] = self._evaluate(model)
        best = BestOnValidation.read(stage_dir)
        if self.config.validation_examples and best is not None:
            # The model of the epoch chosen on validation, tested once (an LNS model
            # unfolded: folding is exact).
            selected = keras.models.load_model(
                os.path.join(stage_dir, "best.keras"), safe_mode=True, compile=False
            )
            with self.strategy.scope():
                self._compile(selected, "sgd")
            results["selected_epoch"] = best["epoch"]
            results["selected_val_accuracy"] = best["val_accuracy"]
            results["test_accuracy_selected"] = self._evaluate(selected)
        results["model_stats"] = _stats(model)
        # Every worker saves its (identical) model and metrics into its own folder: the
        # next stage and a restarted run must find the same files on every worker, or
        # their collective ops would diverge. Only the chief exports and plots.
        save_model(model, os.path.join(stage_dir, "final.keras"))
        results["files"] = {"keras": os.path.join(stage_dir, "final.keras")}
        if self.chief:
            if self.config.export_tflite and self.config.stage in ("lns", "all", "baseline"):
                results["files"].update(self._export(model, stage_dir))
            _plot(os.path.join(stage_dir, "metrics.csv"), stage_dir)
        results["sizes_bytes"] = {k: os.path.getsize(v) for k, v in results["files"].items()}
        atomic_write_bytes(
            os.path.join(stage_dir, "metrics.json"), json.dumps(results, indent=2).encode()
        )
        return results

    def _export(self, model, stage_dir) -> dict[str, str]:
        files = {}
        if not any(lns_keras.convert.is_binary_layer(layer) for layer in model.layers):
            return files
        files["tflite_float"] = to_tflite(
            model, os.path.join(stage_dir, "model_float.tflite"), lce=False
        )
        files["tflite_1bit"] = to_tflite(
            model, os.path.join(stage_dir, "model_1bit.tflite"), lce=True
        )
        return files

    def _done(self, stage_dir):
        path = os.path.join(stage_dir, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        return None

    # --- stages ---------------------------------------------------------------------

    def train_from_scratch(self, stage: str) -> dict:
        config = self.config
        stage_dir = os.path.join(self.model_dir, stage)
        if (done := self._done(stage_dir)) is not None:
            return done
        epochs = (
            config.epochs if config.stage == stage else (config.baseline_epochs or config.epochs)
        )
        learning_rate = config.learning_rate
        if config.stage == "all" and config.baseline_learning_rate:
            learning_rate = config.baseline_learning_rate
        builder = models.get_builder(config.model)
        with self.strategy.scope():
            model = builder(
                self.input_shape, self.num_classes, mode="float" if stage == "float" else "bnn"
            )
            self._compile(model, self._optimizer(learning_rate, epochs))
        history, seconds = self._fit(model, stage_dir, epochs)
        return self._finish_stage(
            stage_dir, model, _history_results(stage, history, seconds, epochs)
        )

    def finetune(self, pretrained_path: str) -> dict:
        config = self.config
        stage_dir = os.path.join(self.model_dir, "finetune")
        if (done := self._done(stage_dir)) is not None:
            return done
        with self.strategy.scope():
            model = load_pretrained(pretrained_path)
            reference = binary_signs(model)
            self._compile(model, self._optimizer(config.learning_rate, config.epochs))
        results = {
            "pretrained": pretrained_path,
            "pretrained_accuracy": self._evaluate(model, self.val_ds),
        }
        history, seconds = self._fit(model, stage_dir, config.epochs, flip_reference=reference)
        results.update(_history_results("finetune", history, seconds, config.epochs))
        return self._finish_stage(stage_dir, model, results)

    def lns(self, pretrained_path: str) -> dict:
        config = self.config
        stage_dir = os.path.join(self.model_dir, "lns")
        if (done := self._done(stage_dir)) is not None:
            return done
        lns_kwargs = dict(
            alpha=config.alpha,
            rho=config.rho,
            loss_reduction=config.loss_reduction,
            noisy_labels=config.noisy_labels,
            mapping_width=config.mapping_width,
            **GRADIENT_PATHS[config.gradient_path],
        )
        warm_path = os.path.join(stage_dir, "warm_start.keras")
        with self.strategy.scope():
            baseline = load_pretrained(pretrained_path)
            reference = binary_signs(baseline)
            if os.path.isfile(warm_path):  # the warm start finished in an earlier run
                model = keras.models.load_model(warm_path, safe_mode=True, compile=False)
                warm = json.loads(open(os.path.join(stage_dir, "warm_start.json")).read())
            else:
                model = lns_keras.convert.to_lns(
                    baseline, **{**models.LNS_DEFAULTS.get(config.model, {}), **lns_kwargs}
                )
                self._compile(model, "sgd")
                warm = {
                    "pretrained": pretrained_path,
                    # the converted model, before the warm start
                    "pretrained_accuracy": self._evaluate(model, self.val_ds),
                    "agreement_before": lns_keras.convert.sign_agreement(model),
                }
                if config.warm_start_epochs:
                    lns_keras.convert.warm_start(
                        model,
                        self.train_ds,
                        epochs=config.warm_start_epochs,
                        loss=keras.losses.SparseCategoricalCrossentropy(),
                        optimizer=keras.optimizers.Adam(config.warm_start_learning_rate),
                        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                        jit_compile=config.jit_compile,
                        verbose=config.verbose,
                    )
                warm["agreement_after"] = lns_keras.convert.sign_agreement(model)
                self._compile(model, "sgd")
                warm["warm_start_accuracy"] = self._evaluate(model, self.val_ds)
                save_model(model, warm_path)  # on every worker, see _finish_stage
                atomic_write_bytes(
                    os.path.join(stage_dir, "warm_start.json"), json.dumps(warm).encode()
                )
            self._compile(model, self._optimizer(config.learning_rate, config.epochs))
        history, seconds = self._fit(model, stage_dir, config.epochs, flip_reference=reference)
        results = {**warm, **_history_results("lns", history, seconds, config.epochs)}
        results["lns_accuracy"] = self._evaluate(model)
        results["agreement_final"] = lns_keras.convert.sign_agreement(model)
        save_model(model, os.path.join(stage_dir, "lns.keras"))
        with self.strategy.scope():
            folded = lns_keras.convert.fold(model)
            self._compile(folded, "sgd")
        return self._finish_stage(stage_dir, folded, results)


def _history_results(stage, history, seconds, epochs) -> dict:
    logs = {k: [float(x) for x in v] for k, v in history.history.items() if "/" not in k}
    return {"stage": stage, "epochs": epochs, "seconds": seconds, "history": logs}


def _stats(model) -> dict:
    stats = lns_keras.model_stats(model)
    return {
        "params_1bit": stats.params_1bit,
        "params_32bit": stats.params_32bit,
        "memory_mbit": stats.memory_mbit,
        "binary_macs": stats.binary_macs,
        "float_macs": stats.float_macs,
        "flops": stats.flops,
    }


def _plot(csv_path: str, out_dir: str) -> None:
    """PNG plots of accuracy/loss and flip rate per epoch from the stage's CSV."""
    if not os.path.isfile(csv_path):
        return
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]

    def series(key):
        return [float(r[key]) for r in rows] if key in rows[0] and rows[0][key] != "" else None

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("accuracy", "val_accuracy"):
        if (values := series(key)) is not None:
            ax_acc.plot(epochs, values, marker="o", label=key)
    for key in ("loss", "val_loss"):
        if (values := series(key)) is not None:
            ax_loss.plot(epochs, values, marker="o", label=key)
    for ax, title in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    _save_figure(fig, os.path.join(out_dir, "curves.png"))
    if series("flip_rate") is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(epochs, series("flip_rate"), marker="o", label="since previous epoch")
        ax.plot(epochs, series("flip_rate_total"), marker="o", label="since pretrained")
        ax.set_xlabel("epoch")
        ax.set_ylabel("flip rate")
        ax.legend()
        _save_figure(fig, os.path.join(out_dir, "flip_rate.png"))


def _save_figure(fig, path):
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def run(config: TrainConfig) -> dict[str, Any]:
    """Run `config.stage` and return what `metrics.json` of the run holds.

    Args:
        config: The run's configuration.

    Returns:
        A dict with one entry per stage run (test accuracy, model stats, history, files).

    Raises:
        ValueError: For an invalid configuration (naming the flag).
        apps.data.DataNotFoundError: When the dataset is missing.
    """
    job = _Run(config)
    results: dict[str, Any] = {}
    if config.stage in ("float", "baseline"):
        results[config.stage] = job.train_from_scratch(config.stage)
    elif config.stage == "finetune":
        results["finetune"] = job.finetune(config.pretrained)
    elif config.stage == "lns":
        results["lns"] = job.lns(config.pretrained)
    else:  # all
        results["baseline"] = job.train_from_scratch("baseline")
        results["lns"] = job.lns(os.path.join(job.model_dir, "baseline", "final.keras"))
    summary = {"config": dataclasses.asdict(config), "stages": results}
    if job.chief:
        atomic_write_bytes(
            os.path.join(job.model_dir, "metrics.json"), json.dumps(summary, indent=2).encode()
        )
    return summary


def final_table(summary: dict[str, Any]) -> str:
    """The closing table of a run: accuracies, flip rates, sizes, where the files are.

    Args:
        summary: What [`run`][apps.pipeline.run] returned.

    Returns:
        The table as text.
    """
    lines = []
    stages = summary["stages"]

    def size(stage, key):
        value = stages[stage].get("sizes_bytes", {}).get(key)
        return f"{value / 1024:.1f} KiB" if value is not None else "-"

    rows = [
        (
            "stage",
            "test acc",
            "flip/epoch (last)",
            "flip vs pretrained",
            "Mbit",
            "MFLOPs",
            ".keras",
            "float .tflite",
            "1-bit .tflite",
        )
    ]
    for name, result in stages.items():
        history = result.get("history", {})
        flips = history.get("flip_rate") or [math.nan]
        total = history.get("flip_rate_total") or [math.nan]
        rows.append(
            (
                name,
                f"{100 * result['test_accuracy']:.2f}%",
                f"{flips[-1]:.4f}",
                f"{total[-1]:.4f}",
                f"{result['model_stats']['memory_mbit']:.3f}",
                f"{result['model_stats']['flops'] / 1e6:.2f}",
                size(name, "keras"),
                size(name, "tflite_float"),
                size(name, "tflite_1bit"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if "lns" in stages:
        lns = stages["lns"]
        lines.append("")
        lines.append(
            f"LNS: converted {100 * lns['pretrained_accuracy']:.2f}% (sign(Q̂) = sign(W) on "
            f"{100 * lns['agreement_before']:.2f}%) -> after warm start "
            f"{100 * lns['warm_start_accuracy']:.2f}% (sign(Q̂) = sign(W) on "
            f"{100 * lns['agreement_after']:.2f}% of weights) -> fine-tuned {100 * lns['lns_accuracy']:.2f}% "
            f"-> folded {100 * lns['test_accuracy']:.2f}%"
        )
    lines.append("")
    lines.append("Files:")
    for name, result in stages.items():
        for key, path in result.get("files", {}).items():
            lines.append(f"  {name:9s} {key:13s} {path}")
    return "\n".join(lines)
