"""The training pipeline behind `apps/train.py`: stages, strategy, callbacks, outputs.

Stages (paper §4.1-4.3), each in its own folder of `model_dir`:

- `float`: the full-precision network, for reference.
- `baseline`: the baseline BNN (binary but the first conv, the last dense and the
  down-sampling shortcuts), trained from scratch.
- `finetune`: plain fine-tuning of a pretrained baseline (the paper's "Fine-tuning").
- `lns`: a pretrained baseline converted to LNS, warm-started, fine-tuned with
  `L = ℓ_cls + α Σ ℓ̃_i`, folded back into a plain BNN and exported.
- `slb`: SLB, the second method (slb.md): the network with searched `weight_bits`-bit
  weights and `activation_bits`-bit activations, trained from scratch with the
  temperature schedule and batch-norm recalibration, folded into plain quantized
  layers and exported.
- `all`: `baseline` then `lns` from it.

With `weight_bits` or `activation_bits` above 1, `baseline` is SLB's straight-through
baseline instead of the BNN: DoReFa k-bit weights with the activation quantizer of the
`slb` stage (mode `"dorefa"` of [`apps.models.modes`][apps.models.modes]).

Every stage writes atomically into `model_dir/<stage>/`: `config.json` (the values that
decide the stage's result, written when it starts), `final.keras` (the trained model;
for `lns` and `slb` the folded one, plus `lns.keras` / `slb.keras` unfolded),
`checkpoint.keras` (after every epoch), `backup/` (`BackupAndRestore` state: an
interrupted run started again with the same command continues from the last finished
epoch), `tensorboard/`, `metrics.csv` (accuracy, losses, flip rates and, for `slb`, the
temperature per epoch), `curves.png`, `flip_rate.png` (`temperature.png` for `slb`) and
`metrics.json`. A stage whose `metrics.json` exists is done and is not run again.

A stage folder is only ever continued with the values it was started with: a run whose
flags give a stage other values (`STAGE_FLAGS`) is refused before any work, naming the
flags, unless `overwrite` asks to delete that stage and run it again. A resumed stage
reports what an uninterrupted one would: its flip rates keep their reference (saved
with the backup), its history is read back from `metrics.csv`, and its `seconds` add up
the time of every sitting.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import lns_keras
from apps import data, models
from lns_keras.callbacks import FlipRate, GradientReach, binary_signs
from lns_keras.export import atomic_path, atomic_write_bytes, save_model, to_tflite
from lns_keras.layers.lns import is_lns_layer
from lns_keras.slb import BatchNormRecalibration, SLBTemperatureScheduler

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STAGES",
    "STAGE_FLAGS",
    "STRATEGIES",
    "VERBOSE",
    "AtomicBackupAndRestore",
    "AtomicCheckpoint",
    "BestOnValidation",
    "GRADIENT_PATHS",
    "TrainConfig",
    "check_backend",
    "load_pretrained",
    "make_strategy",
    "run",
    "stage_mode",
]

STAGES = ("float", "baseline", "finetune", "lns", "slb", "all")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")
VERBOSE = ("auto", 0, 1, 2)
_QUANTIZED_LAYERS = (lns_keras.QuantConv2D, lns_keras.QuantDense)
# Test batches on which the slb stage compares the SLB model's predictions with the folded
# model's (fold parity).
_PARITY_BATCHES = 8
GRADIENT_PATHS = {
    # How the classification gradient reaches the unbounded Q̂ (docs/concepts.md, "The
    # gradient path"): LNS-layer arguments of each choice.
    "identity": {"kernel_quantizer": None},  # the LNS default: SteSign(clip_value=None)
    "window": {"kernel_quantizer": "ste_sign"},  # |Q̂| <= 1 only, the former default
    "tanh": {"kernel_quantizer": "ste_sign", "mapping_activation": "tanh"},  # bounded Q̂
}
LNS_FLAGS = ("alpha", "rho", "loss_reduction", "noisy_labels", "mapping_width")
BIT_FLAGS = ("weight_bits", "activation_bits")
SLB_FLAGS = (
    "temperature_factor",
    "temperature_start",
    "temperature_end",
    "bn_recalibration_steps",
)
# The flags that decide a stage's result, stored in its config.json: a stage folder is
# continued only with the same values. Not among them, since they change where or how
# the run goes but not what it computes: model_dir, stage, strategy, jit_compile,
# data_dir, fashion_mnist_dir, export_tflite, verbose, overwrite.
_TRAINING_FLAGS = (
    "dataset",
    "model",
    "seed",
    "batch_size",
    "train_limit",
    "test_limit",
    "validation_examples",
    "epochs",
    "learning_rate",
    "schedule",
    "decay_epochs",
    "decay_factor",
    "optimizer",
    "momentum",
    "weight_decay",
)
STAGE_FLAGS = {
    "float": _TRAINING_FLAGS,
    "baseline": (*_TRAINING_FLAGS, *BIT_FLAGS),
    "finetune": (*_TRAINING_FLAGS, "pretrained"),
    "lns": (
        *_TRAINING_FLAGS,
        "pretrained",
        "warm_start_epochs",
        "warm_start_learning_rate",
        *LNS_FLAGS,
        "gradient_path",
    ),
    "slb": (*_TRAINING_FLAGS, *BIT_FLAGS, *SLB_FLAGS),
}
# Flags added to a stage's STAGE_FLAGS after its config.json was first written, with the
# value every run had before: a config.json without them holds that value.
_VALUES_BEFORE_THE_FLAG = {"weight_bits": 1, "activation_bits": 1}


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
        weight_bits: Bits of a weight of the quantized layers of `slb` (1, 2 or 4) and
            `baseline` (1 to 8: DoReFa weights above 1 bit); 1 for `all`.
        activation_bits: Bits of their inputs, 1 to 8 (1: `ste_sign`, more: PACT) or 32
            (full precision); 1 for `all`.
        temperature_factor: `slb`: the factor f >= 1 by which the inverse temperature
            grows each epoch of the schedule's window (slb.md §3.3).
        temperature_start: `slb`: t_start, the fraction of the epochs after which the
            temperature starts growing.
        temperature_end: `slb`: t_end >= t_start, the fraction of the epochs at which it
            stops growing and the layers switch to their hard kernels.
        bn_recalibration_steps: `slb`: training batches with which batch normalization is
            recalibrated on the hard kernels after every epoch (slb.md §4.4-4.5); 0: none.
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
        verbose: Keras verbosity, one of `VERBOSE`: `"auto"` (a progress bar on a
            terminal, one line per epoch otherwise, e.g. into a log file), `0` (silent,
            stage headers too), `1` (progress bar) or `2` (one line per epoch).
        overwrite: Delete and run again a stage whose folder holds a run with other
            values of `STAGE_FLAGS` (otherwise such a run is refused).
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
    weight_bits: int = 1
    activation_bits: int = 1
    temperature_factor: float = 1.2
    temperature_start: float = 0.2
    temperature_end: float = 0.6
    bn_recalibration_steps: int = 100
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
    overwrite: bool = False

    def validate(self) -> None:
        """Check every field before any work; raise `ValueError` naming the flag and value.

        Loads `pretrained` for the stages that use it (a baseline BNN that fits the
        dataset) and checks that `model_dir` can be written; reads no data.

        Raises:
            ValueError: For the first invalid field, as `--<flag>=<value> is invalid: ...`.
        """

        def bad(flag, value, accepted):
            raise ValueError(f"--{flag}={value!r} is invalid: {accepted}.")

        def integer(flag, minimum, optional=False):
            value = getattr(self, flag)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                bad(flag, value, f"expected an integer >= {minimum}")
            if value < minimum:
                bad(flag, value, f"expected an integer >= {minimum}")

        def real(flag, low, high=math.inf, low_open=False, optional=False):
            value = getattr(self, flag)
            if optional and value is None:
                return
            interval = f"{'(' if low_open else '['}{low}, {high}{']' if high < math.inf else ')'}"
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value < low
                or (low_open and value == low)
                or value > high
            ):
                bad(flag, value, f"expected a finite number in {interval}")

        for flag, choices in (
            ("dataset", data.DATASETS),
            ("model", tuple(models.BUILDERS)),
            ("stage", STAGES),
            ("strategy", STRATEGIES),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("gradient_path", tuple(GRADIENT_PATHS)),
        ):
            if getattr(self, flag) not in choices:
                bad(flag, getattr(self, flag), f"expected one of {list(choices)}")
        if isinstance(self.verbose, bool) or self.verbose not in VERBOSE:
            bad("verbose", self.verbose, f"expected one of {list(VERBOSE)}")
        for flag in ("jit_compile", "export_tflite", "overwrite"):
            if not isinstance(getattr(self, flag), bool):
                bad(flag, getattr(self, flag), "expected true or false")
        check_backend(self)
        integer("epochs", 0)
        integer("baseline_epochs", 0, optional=True)
        integer("warm_start_epochs", 0)
        integer("batch_size", 1)
        integer("validation_examples", 0)
        integer("train_limit", 1, optional=True)
        integer("test_limit", 1, optional=True)
        integer("seed", 0)
        if self.seed >= 2**32:
            bad("seed", self.seed, "expected an integer below 2**32")
        real("learning_rate", 0, low_open=True)
        real("baseline_learning_rate", 0, low_open=True, optional=True)
        real("warm_start_learning_rate", 0, low_open=True)
        real("decay_factor", 0, 1, low_open=True)
        real("momentum", 0, 1)
        real("weight_decay", 0)
        integer("weight_bits", 1)
        integer("activation_bits", 1)
        integer("bn_recalibration_steps", 0)
        real("temperature_factor", 1)
        real("temperature_start", 0, 1)
        real("temperature_end", 0, 1)
        decay = list(self.decay_epochs)
        if any(isinstance(e, bool) or not isinstance(e, numbers.Integral) for e in decay) or (
            decay and (min(decay) < 1 or decay != sorted(set(decay)))
        ):
            bad("decay_epochs", ",".join(map(str, decay)), "expected increasing integers >= 1")
        self._validate_lns_arguments()
        self._validate_slb_arguments()
        _check_writable_folder("model_dir", self.model_dir)
        if self.stage in ("finetune", "lns"):
            if not self.pretrained:
                bad("pretrained", self.pretrained, f"--stage={self.stage} needs a baseline model")
            self._check_pretrained(load_pretrained(self.pretrained))

    def _validate_slb_arguments(self) -> None:
        # After the checks of each value on its own, in `validate`.
        def bad(flag, accepted):
            raise ValueError(f"--{flag}={getattr(self, flag)!r} is invalid: {accepted}.")

        if self.temperature_start > self.temperature_end:
            bad(
                "temperature_start",
                f"the window cannot begin after --temperature_end={self.temperature_end!r}",
            )
        if self.stage == "all" and (self.weight_bits, self.activation_bits) != (1, 1):
            flag = "weight_bits" if self.weight_bits != 1 else "activation_bits"
            bad(
                flag,
                "--stage=all converts its baseline to LNS, which needs 1-bit weights and activations",
            )
        if self.stage in ("baseline", "slb"):
            # The builders judge the bit widths of their modes; one at a time, so the
            # error names the flag.
            mode = stage_mode(self.stage, self.weight_bits, self.activation_bits)
            for flag in BIT_FLAGS:
                try:
                    models.modes.layer_mode(mode, **{flag: getattr(self, flag)})
                except ValueError as error:
                    bad(flag, f"{error} (--stage={self.stage})")
        if self.stage == "slb" and self.pretrained:
            bad(
                "pretrained",
                "--stage=slb trains from scratch, as the authors' recipes do (slb.md §1.5); "
                "to start SLB's logits from a trained kernel, use the library's "
                "SLBQuantConv2D.init_logits_from_kernel",
            )

    def _validate_lns_arguments(self) -> None:
        # The LNS layer judges its own arguments; one at a time, so the error names the flag.
        for flag in LNS_FLAGS:
            value = getattr(self, flag)
            try:
                lns_keras.LNSQuantDense(1, **{flag: value})
            except (ValueError, TypeError) as error:
                shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
                raise ValueError(f"--{flag}={shown!r} is invalid: {error}") from None

    def _check_pretrained(self, model: keras.Model) -> None:
        def bad(accepted):
            raise ValueError(f"--pretrained={self.pretrained!r} is invalid: {accepted}.")

        layers = list(model._flatten_layers(include_self=False))
        if not any(lns_keras.convert.is_binary_layer(layer) for layer in layers):
            bad(
                f"it has no binary layer, so it is not a baseline BNN (a float model?); "
                f"--stage={self.stage} starts from a binary network, such as what "
                "--stage=baseline writes into <model_dir>/baseline/final.keras"
            )
        if self.stage == "lns" and any(is_lns_layer(layer) for layer in layers):
            bad("it is already an LNS model; --stage=lns starts from a baseline BNN")
        input_shape, num_classes = data.info(self.dataset)
        if tuple(model.input_shape[1:]) != tuple(input_shape):
            bad(
                f"its input shape {tuple(model.input_shape[1:])} does not fit "
                f"--dataset={self.dataset!r} {tuple(input_shape)}"
            )
        if model.output_shape[-1] != num_classes:
            bad(
                f"it has {model.output_shape[-1]} outputs, --dataset={self.dataset!r} "
                f"{num_classes} classes"
            )


def _check_writable_folder(flag: str, path: str) -> None:
    """Raise a `ValueError` naming `flag` unless `path` is, or can become, a writable folder."""
    folder = os.path.abspath(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "it is a file" if existing == folder else f"{existing!r} is a file"
        raise ValueError(f"--{flag}={path!r} is invalid: {what}, not a folder.")
    try:  # a real write: permissions bits do not stop root, read-only file systems do
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"--{flag}={path!r} is invalid: cannot write in {existing!r} ({error.strerror})."
        ) from None


def stage_mode(stage: str, weight_bits: int = 1, activation_bits: int = 1) -> str:
    """The builder's `mode` a stage trains from scratch in.

    Args:
        stage: `"float"`, `"baseline"` or `"slb"`.
        weight_bits: `--weight_bits`.
        activation_bits: `--activation_bits`.

    Returns:
        `"float"`; `"slb"`; for `"baseline"`, `"bnn"` with 1-bit weights and activations
        (the LNS paper's baseline), else `"dorefa"` (SLB's straight-through baseline).

    Raises:
        ValueError: For a stage that does not build its model (`finetune`, `lns`, `all`).
    """
    if stage in ("float", "slb"):
        return stage
    if stage == "baseline":
        return "bnn" if (weight_bits, activation_bits) == (1, 1) else "dorefa"
    raise ValueError(f"--stage={stage!r} does not build its model from scratch.")


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


def check_backend(config: TrainConfig, backend: str | None = None) -> None:
    """Refuse the settings that need TensorFlow when Keras runs another backend.

    The `tf.distribute` strategies (`strategy` other than `"auto"`) and the TFLite export
    (`export_tflite`) are TensorFlow's; under JAX and PyTorch the apps train on one
    device, or on JAX with `keras.distribution.DataParallel` over every device when
    there are several (`strategy="auto"`), and leave the export to a TensorFlow process
    (docs/guide/installation.md).

    Args:
        config: The run's configuration.
        backend: The Keras backend; default: the one Keras runs.

    Raises:
        ValueError: For a TensorFlow-only setting off TensorFlow, naming the flag.
    """
    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        return
    if config.strategy != "auto":
        raise ValueError(
            f"--strategy={config.strategy!r} is invalid: tf.distribute strategies need "
            f"KERAS_BACKEND=tensorflow, and Keras runs {backend!r}. Under {backend!r} use "
            "--strategy=auto (on JAX: keras.distribution.DataParallel over every device "
            "when there are several)."
        )
    if config.export_tflite:
        raise ValueError(
            f"--export_tflite=True is invalid: the TFLite converters need "
            f"KERAS_BACKEND=tensorflow, and Keras runs {backend!r}. Pass "
            "--export_tflite=false (the default off TensorFlow), then export final.keras in "
            "a TensorFlow process: lns_keras.export.to_tflite(keras.saving.load_model("
            "'final.keras'), 'model.tflite')."
        )


class _KerasDistribution:
    """`strategy="auto"` off TensorFlow, where tf.distribute has no say: `scope()` does
    nothing, and on JAX with several devices Keras's `DataParallel` distribution splits
    each batch across them."""

    def __init__(self):
        self.num_replicas_in_sync = 1
        if keras.backend.backend() == "jax":
            devices = keras.distribution.list_devices()
            if len(devices) > 1:
                keras.distribution.set_distribution(
                    keras.distribution.DataParallel(devices=devices)
                )
                self.num_replicas_in_sync = len(devices)

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`.

    `auto` is `MirroredStrategy` over every GPU when there are several, else the default
    strategy on the one device. `multi_worker_mirrored` reads the cluster from `TF_CONFIG`.
    Off TensorFlow only `auto` is accepted (see [`check_backend`][apps.pipeline.check_backend]):
    an object whose `scope()` does nothing, which on JAX with several devices sets
    `keras.distribution.DataParallel` over all of them.

    Args:
        name: One of `STRATEGIES`.

    Returns:
        The strategy.

    Raises:
        ValueError: For an unknown name, or a name other than `auto` off TensorFlow.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if name != "auto":
            raise ValueError(
                f"--strategy={name!r} is invalid: tf.distribute strategies need "
                f"KERAS_BACKEND=tensorflow, and Keras runs {backend!r}; use --strategy=auto."
            )
        return _KerasDistribution()
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
    """`BackupAndRestore` written atomically, keeping what a resumed run's metrics need.

    The weights, the callbacks' state and last the metadata (the epoch to resume from)
    are each written to a temporary name and renamed, so an interruption never leaves a
    half-written backup. Besides the weights and the epoch, the backup holds:

    - the seconds spent training up to it, so that [`seconds`][apps.pipeline.AtomicBackupAndRestore.seconds]
      adds up every sitting;
    - with `flip_rate`, that callback's reference and previous signs (`flip_rate.npz`),
      so that after a restart `flip_rate_total` is still measured against the signs when
      training first began (or the given reference) and `flip_rate` against the last
      finished epoch.

    Put it after `flip_rate` in the callback list: it saves the state `flip_rate` has at
    the end of an epoch, and restores it after `flip_rate`'s own `on_train_begin`.

    Args:
        backup_dir: The backup folder; removed when training finishes.
        flip_rate: The `FlipRate` callback of the same `fit`, or `None`.
    """

    def __init__(self, backup_dir: str, flip_rate: FlipRate | None = None):
        super().__init__(backup_dir)
        self.flip_rate = flip_rate
        self._flip_rate_path = os.path.join(backup_dir, "flip_rate.npz")
        self._seconds_before = 0.0
        self._sitting_start = time.monotonic()

    def seconds(self) -> float:
        """Seconds of training: the earlier sittings' (up to their last backup) and this one's."""
        return self._seconds_before + time.monotonic() - self._sitting_start

    def on_train_begin(self, logs=None):
        self._sitting_start = time.monotonic()
        super().on_train_begin(logs)  # restores the weights and the epoch
        if os.path.isfile(self._training_metadata_path):
            with open(self._training_metadata_path) as f:
                self._seconds_before = float(json.load(f).get("seconds", 0.0))
        if self.flip_rate is not None and os.path.isfile(self._flip_rate_path):
            state = {"reference": {}, "previous": {}}
            with np.load(self._flip_rate_path) as saved:
                for key in saved.files:
                    part, layer = key.split("/", 1)
                    state[part][layer] = saved[key]
            self.flip_rate.reference = state["reference"]
            self.flip_rate._previous = state["previous"]

    def _save_model(self):
        with atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
        if self.flip_rate is not None:
            arrays = {f"reference/{k}": v for k, v in self.flip_rate.reference.items()}
            arrays.update({f"previous/{k}": v for k, v in self.flip_rate._previous.items()})
            with atomic_path(self._flip_rate_path, suffix=".npz") as tmp:
                np.savez(tmp, **arrays)
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "seconds": self.seconds(),
        }
        atomic_write_bytes(self._training_metadata_path, json.dumps(metadata).encode())

    @staticmethod
    def finished_epochs(backup_dir: str) -> int:
        """The epochs a backup in `backup_dir` holds (0 if there is none)."""
        path = os.path.join(backup_dir, "training_metadata.json")
        if not os.path.isfile(path):
            return 0
        with open(path) as f:
            return int(json.load(f)["epoch"])


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


class _ProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras's progress bar without the per-layer logs (`flip_rate/<layer>`, ...).

    Those go to `metrics.csv` and TensorBoard; printed, one or two per binary layer
    would make every progress line hundreds of characters long.
    """

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, _overall(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, _overall(logs))


def _overall(logs: dict | None) -> dict:
    return {k: v for k, v in (logs or {}).items() if "/" not in k}


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
        self.verbose = _keras_verbose(config.verbose)
        self.strategy = make_strategy(config.strategy)
        backend = keras.backend.backend()
        if backend != "tensorflow" and self.verbose:
            replicas = self.strategy.num_replicas_in_sync
            spread = f", DataParallel over {replicas} devices" if replicas > 1 else ""
            print(f"Keras backend: {backend}{spread}", flush=True)
        self.chief = _is_chief(self.strategy)
        worker = getattr(getattr(self.strategy, "cluster_resolver", None), "task_id", 0)
        # Workers other than the chief write into their own scratch folder.
        model_dir = os.path.abspath(config.model_dir)
        self.model_dir = model_dir if self.chief else os.path.join(model_dir, f".worker{worker}")
        # Still before any work: the stages already in model_dir must have been run with
        # this run's values (the `lns` stage of `all` is checked again once its baseline
        # exists).
        for stage, pretrained in self._plan():
            if pretrained is None or os.path.isfile(pretrained):
                self._claim_stage(stage, pretrained, start=False)
        os.makedirs(self.model_dir, exist_ok=True)
        keras.utils.set_random_seed(config.seed)
        self.input_shape, self.num_classes = data.info(config.dataset)
        common = dict(data_dir=config.data_dir, fashion_mnist_dir=config.fashion_mnist_dir)
        held_out = config.validation_examples
        self._train_split = f"train[:-{held_out}]" if held_out else "train"
        self._common = common
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
        self._options = options
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
        self.steps_per_epoch = int(self.train_data(first_epoch=None).cardinality())
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"The training split {self._train_split!r} of {config.dataset} "
                f"(--train_limit={config.train_limit}) has fewer examples than "
                f"--batch_size={config.batch_size}: no full batch to train on."
            )

    def train_data(self, first_epoch: int | None = 0) -> tf.data.Dataset:
        """The training batches from epoch `first_epoch` on (see `apps.data.load`).

        Epoch $e$ (from 0) holds a shuffle and augmentations drawn from `--seed` and $e$
        alone, so a fit resumed at epoch $e$ reads what an uninterrupted one reads there,
        and a stage's data does not depend on what ran before it in the same process.

        Args:
            first_epoch: The first epoch of an endless dataset, which `fit` reads with
                `steps_per_epoch=self.steps_per_epoch`; `None`: one epoch.

        Returns:
            The batched training dataset.

        Raises:
            apps.data.DataNotFoundError: If the dataset is missing.
        """
        config = self.config
        return data.load(
            config.dataset,
            self._train_split,
            config.batch_size,
            seed=config.seed,
            first_epoch=first_epoch,
            limit=config.train_limit,
            training=True,
            **self._common,
        ).with_options(self._options)

    # --- what runs, with which values ------------------------------------------------

    def _plan(self) -> list[tuple[str, str | None]]:
        """The stages this run goes through, with the model each starts from."""
        config = self.config
        if config.stage == "all":
            return [
                ("baseline", None),
                ("lns", os.path.join(self.model_dir, "baseline", "final.keras")),
            ]
        return [(config.stage, config.pretrained if config.stage in ("finetune", "lns") else None)]

    def _epochs(self, stage: str) -> tuple[str, int]:
        """The flag that sets `stage`'s epochs, and their number."""
        config = self.config
        if config.stage == "all" and stage == "baseline" and config.baseline_epochs is not None:
            return "baseline_epochs", config.baseline_epochs
        return "epochs", config.epochs

    def _learning_rate(self, stage: str) -> tuple[str, float]:
        """The flag that sets `stage`'s learning rate, and its value."""
        config = self.config
        if config.stage == "all" and stage == "baseline" and config.baseline_learning_rate:
            return "baseline_learning_rate", config.baseline_learning_rate
        return "learning_rate", config.learning_rate

    def _stage_values(self, stage: str, pretrained: str | None) -> dict[str, tuple[str, Any]]:
        """`STAGE_FLAGS[stage]` as this run sets them: name -> (flag, JSON value)."""
        values = {}
        for name in STAGE_FLAGS[stage]:
            if name == "epochs":
                flag, value = self._epochs(stage)
            elif name == "learning_rate":
                flag, value = self._learning_rate(stage)
            elif name == "pretrained":
                flag, value = "pretrained", {"sha256": _sha256(pretrained)}
            else:
                flag, value = name, getattr(self.config, name)
            values[name] = (flag, json.loads(json.dumps(value)))
        return values

    def _claim_stage(self, stage: str, pretrained: str | None, start: bool = True) -> str:
        """Check `stage`'s folder against this run's values; with `start`, record them.

        A folder holding a run of the stage with other values (or of unknown values:
        no `config.json`) is refused, or with `--overwrite` deleted.

        Returns:
            The stage's folder.

        Raises:
            ValueError: Naming the flags whose values differ.
        """
        stage_dir = os.path.join(self.model_dir, stage)
        path = os.path.join(stage_dir, "config.json")
        values = self._stage_values(stage, pretrained)
        wanted = {name: value for name, (_, value) in values.items()}
        if os.path.isdir(stage_dir) and os.listdir(stage_dir):
            stored = None
            if os.path.isfile(path):
                with open(path) as f:
                    stored = json.load(f)
                later = {n: v for n, v in _VALUES_BEFORE_THE_FLAG.items() if n in wanted}
                stored = {**later, **stored}
            if stored == wanted:
                return stage_dir
            if not self.config.overwrite:
                raise ValueError(_refusal(stage_dir, stage, values, stored, self.config.stage))
            self._header(f"{stage}: --overwrite: deleting the earlier run in {stage_dir}")
            shutil.rmtree(stage_dir)
        if start:
            os.makedirs(stage_dir, exist_ok=True)
            atomic_write_bytes(path, json.dumps(wanted, indent=2).encode())
        return stage_dir

    # --- pieces ---------------------------------------------------------------------

    def _header(self, text: str) -> None:
        if self.verbose:
            print(f"\n== Stage: {text} ==", flush=True)

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

    def _callbacks(
        self, stage_dir: str, flip_reference=None, method_callbacks=(), flip_rates=True
    ) -> list:
        # Flip rates only for a model with 1-bit kernels: elsewhere they would read 0.
        flip_rate = FlipRate(reference=flip_reference) if flip_rates else None
        callbacks = [
            # First, the method's own (SLB's schedule and recalibration): the temperature
            # must be set before an epoch's first step, the statistics recalibrated before
            # validation, backup and checkpoint, and what they log reach the CSV.
            *method_callbacks,
            *([flip_rate] if flip_rate else []),  # before the loggers, which log the rates
            GradientReach(),
            keras.callbacks.CSVLogger(os.path.join(stage_dir, "metrics.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(stage_dir, "tensorboard")),
        ]
        if self.config.validation_examples:
            callbacks.append(BestOnValidation(stage_dir))
        if self.chief:
            callbacks.append(AtomicCheckpoint(os.path.join(stage_dir, "checkpoint.keras")))
        # After the others: it backs up the epoch once they have seen it, and restores
        # FlipRate's state after FlipRate began.
        callbacks.append(AtomicBackupAndRestore(os.path.join(stage_dir, "backup"), flip_rate))
        callbacks.append(_ProgbarLogger())
        return callbacks

    def _fit(self, model, stage_dir, epochs, flip_reference=None, method_callbacks=()) -> float:
        """Train (or resume) the stage; return the seconds of training of every sitting."""
        callbacks = self._callbacks(
            stage_dir, flip_reference, method_callbacks, flip_rates=bool(binary_signs(model))
        )
        # The backup's epochs are skipped by `fit`; the data starts where `fit` does.
        finished = AtomicBackupAndRestore.finished_epochs(os.path.join(stage_dir, "backup"))
        model.fit(
            self.train_data(first_epoch=finished),
            steps_per_epoch=self.steps_per_epoch,  # one iterator across the epochs
            validation_data=self.val_ds,
            epochs=epochs,
            callbacks=callbacks,
            verbose=self.verbose,
            shuffle=False,  # the dataset is shuffled already
        )
        backup = next(c for c in callbacks if isinstance(c, AtomicBackupAndRestore))
        return backup.seconds()

    def _build(self, stage: str) -> keras.Model:
        """The `--model` network in the mode of `stage` (see `stage_mode`)."""
        config = self.config
        mode = stage_mode(stage, config.weight_bits, config.activation_bits)
        bits = {}
        if mode in ("slb", "dorefa"):
            bits = dict(weight_bits=config.weight_bits, activation_bits=config.activation_bits)
        return models.get_builder(config.model)(
            self.input_shape, self.num_classes, mode=mode, **bits
        )

    def _training_header(self, stage_dir: str, text: str, epochs: int) -> None:
        done = AtomicBackupAndRestore.finished_epochs(os.path.join(stage_dir, "backup"))
        resuming = f", resuming after epoch {done}" if done else ""
        self._header(f"{text} ({epochs} epoch{'s' if epochs != 1 else ''}{resuming})")

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
            if self.config.export_tflite and self.config.stage in ("lns", "all", "baseline", "slb"):
                results["files"].update(self._export(model, stage_dir))
            _plot(os.path.join(stage_dir, "metrics.csv"), stage_dir)
        results["sizes_bytes"] = {k: os.path.getsize(v) for k, v in results["files"].items()}
        atomic_write_bytes(
            os.path.join(stage_dir, "metrics.json"), json.dumps(results, indent=2).encode()
        )
        return results

    def _export(self, model, stage_dir) -> dict[str, str]:
        """The float TFLite file of a quantized model, and the LCE one of a binary model.

        larq-compute-engine turns a layer into a 1-bit `LceBconv2d` only when both its
        input and its kernel are binary. A k-bit layer stays a float `CONV_2D` with its
        quantizer's ops (`ROUND`, `MINIMUM`, ...) in front, in an LCE file as in the float
        one, so a model without a binary layer gets the float file only.
        """
        files = {}
        layers = model.layers
        if not any(isinstance(layer, _QUANTIZED_LAYERS) for layer in layers):
            return files
        files["tflite_float"] = to_tflite(
            model, os.path.join(stage_dir, "model_float.tflite"), lce=False
        )
        if any(lns_keras.convert.is_binary_layer(layer) for layer in layers):
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
        stage_dir = self._claim_stage(stage, None)
        if (done := self._done(stage_dir)) is not None:
            self._header(f"{stage}: finished earlier, results read from {stage_dir}")
            return done
        config = self.config
        _, epochs = self._epochs(stage)
        _, learning_rate = self._learning_rate(stage)
        mode = stage_mode(stage, config.weight_bits, config.activation_bits)
        what = stage
        if mode == "dorefa":
            what = (
                f"baseline: straight-through W{config.weight_bits}/A{config.activation_bits} "
                "(DoReFa weights)"
            )
        self._training_header(stage_dir, what, epochs)
        with self.strategy.scope():
            model = self._build(stage)
            self._compile(model, self._optimizer(learning_rate, epochs))
        seconds = self._fit(model, stage_dir, epochs)
        results = _history_results(stage, stage_dir, seconds, epochs)
        if stage == "baseline":
            results.update(
                mode=mode, weight_bits=config.weight_bits, activation_bits=config.activation_bits
            )
        return self._finish_stage(stage_dir, model, results)

    def slb(self) -> dict:
        """SLB from scratch: search, recalibrate, fold, export (slb.md §2-4, §6.1)."""
        config = self.config
        stage_dir = self._claim_stage("slb", None)
        if (done := self._done(stage_dir)) is not None:
            self._header(f"slb: finished earlier, results read from {stage_dir}")
            return done
        first, last = lns_keras.slb.schedule_window(
            max(config.epochs, 1), config.temperature_start, config.temperature_end
        )
        self._training_header(
            stage_dir,
            f"slb: search {config.weight_bits}-bit weights (W{config.weight_bits}/"
            f"A{config.activation_bits}), temperature x{config.temperature_factor:g} per epoch "
            f"after epoch {first}, hard kernels from epoch {last}",
            config.epochs,
        )
        schedule = SLBTemperatureScheduler(
            t0=1.0,
            factor=config.temperature_factor,
            start=config.temperature_start,
            end=config.temperature_end,
        )
        method_callbacks = [schedule]
        if config.bn_recalibration_steps:
            # Every epoch, as the authors' code (slb.md §4.4), before the validation. Each
            # recalibration reads the first batches of epoch 0 again: the same batches in
            # every sitting, so that a resumed run recalibrates as an uninterrupted one.
            method_callbacks.append(
                BatchNormRecalibration(
                    self.train_data(first_epoch=0), config.bn_recalibration_steps, start=0.0
                )
            )
        with self.strategy.scope():
            model = self._build("slb")
            self._compile(model, self._optimizer(config.learning_rate, config.epochs))
        seconds = self._fit(model, stage_dir, config.epochs, method_callbacks=method_callbacks)
        searched = lns_keras.slb.slb_layers(model)
        results = {
            "weight_bits": config.weight_bits,
            "activation_bits": config.activation_bits,
            "schedule_window": [first, last],
            "final_temperature": float(keras.ops.convert_to_numpy(searched[0].temperature)),
            "hard": searched[0].hard,
            **_history_results("slb", stage_dir, seconds, config.epochs),
        }
        results["slb_accuracy"] = self._evaluate(model)
        save_model(model, os.path.join(stage_dir, "slb.keras"))
        self._header("slb: fold the hard kernels into plain quantized layers, export")
        with self.strategy.scope():
            folded = lns_keras.slb.fold(model)
            self._compile(folded, "sgd")
        results["fold_max_difference"] = _max_difference(
            model, folded, self.test_ds.take(_PARITY_BATCHES)
        )
        return self._finish_stage(stage_dir, folded, results)

    def finetune(self, pretrained_path: str) -> dict:
        config = self.config
        stage_dir = self._claim_stage("finetune", pretrained_path)
        if (done := self._done(stage_dir)) is not None:
            self._header(f"finetune: finished earlier, results read from {stage_dir}")
            return done
        self._training_header(stage_dir, f"finetune {pretrained_path}", config.epochs)
        with self.strategy.scope():
            model = load_pretrained(pretrained_path)
            reference = binary_signs(model)
            self._compile(model, self._optimizer(config.learning_rate, config.epochs))
        results = {
            "pretrained": pretrained_path,
            "pretrained_accuracy": self._evaluate(model, self.val_ds),
        }
        seconds = self._fit(model, stage_dir, config.epochs, flip_reference=reference)
        results.update(_history_results("finetune", stage_dir, seconds, config.epochs))
        return self._finish_stage(stage_dir, model, results)

    def lns(self, pretrained_path: str) -> dict:
        config = self.config
        stage_dir = self._claim_stage("lns", pretrained_path)
        if (done := self._done(stage_dir)) is not None:
            self._header(f"lns: finished earlier, results read from {stage_dir}")
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
                self._header(f"lns: warm start finished earlier, read from {warm_path}")
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
                    self._training_header(
                        stage_dir,
                        f"lns: convert {pretrained_path}, warm start the mappings",
                        config.warm_start_epochs,
                    )
                    lns_keras.convert.warm_start(
                        model,
                        self.train_data(first_epoch=0),  # not resumed: from its epoch 0
                        epochs=config.warm_start_epochs,
                        steps_per_epoch=self.steps_per_epoch,
                        loss=keras.losses.SparseCategoricalCrossentropy(),
                        optimizer=keras.optimizers.Adam(config.warm_start_learning_rate),
                        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                        jit_compile=config.jit_compile,
                        verbose=self.verbose,
                        shuffle=False,  # the dataset is shuffled already
                    )
                warm["agreement_after"] = lns_keras.convert.sign_agreement(model)
                self._compile(model, "sgd")
                warm["warm_start_accuracy"] = self._evaluate(model, self.val_ds)
                save_model(model, warm_path)  # on every worker, see _finish_stage
                atomic_write_bytes(
                    os.path.join(stage_dir, "warm_start.json"), json.dumps(warm).encode()
                )
            self._compile(model, self._optimizer(config.learning_rate, config.epochs))
        self._training_header(stage_dir, "lns: fine-tune with Eq. 21", config.epochs)
        seconds = self._fit(model, stage_dir, config.epochs, flip_reference=reference)
        results = {**warm, **_history_results("lns", stage_dir, seconds, config.epochs)}
        results["lns_accuracy"] = self._evaluate(model)
        results["agreement_final"] = lns_keras.convert.sign_agreement(model)
        save_model(model, os.path.join(stage_dir, "lns.keras"))
        self._header("lns: fold the mappings into a plain BNN, export")
        with self.strategy.scope():
            folded = lns_keras.convert.fold(model)
            self._compile(folded, "sgd")
        return self._finish_stage(stage_dir, folded, results)


def _max_difference(model, other, dataset) -> float:
    """The largest difference between the two models' predicted probabilities on `dataset`."""
    images = dataset.map(lambda x, y: x)
    return float(
        np.max(np.abs(model.predict(images, verbose=0) - other.predict(images, verbose=0)))
    )


def _keras_verbose(verbose: int | str) -> int:
    """Keras's verbosity for `verbose`: `"auto"` is a progress bar on a terminal and one
    line per epoch otherwise (a progress bar written to a file is one long line)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flag_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _refusal(stage_dir, stage, values, stored, run_stage) -> str:
    """Why a stage folder from another run cannot be continued, naming the flags."""
    state = "finished" if os.path.isfile(os.path.join(stage_dir, "metrics.json")) else "unfinished"
    advice = "Use another --model_dir, or add --overwrite to delete that stage and run it again."
    if stored is None:
        return (
            f"--model_dir holds an {state} {stage!r} stage in {stage_dir} without its "
            f"config.json (an older version wrote it), so its flags are unknown. {advice}"
        )
    differences = []
    for name, (flag, value) in values.items():
        if name not in stored:
            differences.append(f"{name} (not recorded there)")
        elif stored[name] != value:
            if name == "pretrained":
                model = "the baseline stage's model" if run_stage == "all" else "--pretrained"
                differences.append(f"{model} (another model than that run's)")
            else:
                differences.append(
                    f"--{flag}={_flag_text(value)} (that run: {_flag_text(stored[name])})"
                )
    differences += [
        f"{name} (not a value of this version)" for name in stored if name not in values
    ]
    return (
        f"--model_dir holds an {state} {stage!r} stage in {stage_dir} run with other "
        f"values: {', '.join(differences)}. {advice}"
    )


def _history_results(stage: str, stage_dir: str, seconds: float, epochs: int) -> dict:
    """The stage's per-epoch logs from its `metrics.csv`, every sitting of it included."""
    rows: dict[int, dict[str, str]] = {}
    path = os.path.join(stage_dir, "metrics.csv")
    if os.path.isfile(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[int(row["epoch"])] = row  # an epoch logged twice: its later run counts
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, text in rows[epoch].items():
            if key != "epoch" and "/" not in key:
                history.setdefault(key, []).append(_float(text))
    return {"stage": stage, "epochs": epochs, "seconds": seconds, "history": history}


def _float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _stats(model) -> dict:
    stats = lns_keras.model_stats(model)
    return {
        "params_1bit": stats.params_1bit,
        "params_kbit": stats.params_kbit,
        "params_32bit": stats.params_32bit,
        "memory_mbit": stats.memory_mbit,
        "binary_macs": stats.binary_macs,
        "float_macs": stats.float_macs,
        "flops": stats.flops,
    }


def _plot(csv_path: str, out_dir: str) -> None:
    """PNG plots of accuracy/loss, flip rate and SLB's temperature per epoch from the CSV."""
    if not os.path.isfile(csv_path):
        return
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
    if series("temperature") is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(epochs, series("temperature"), marker="o")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("inverse temperature T")
        _save_figure(fig, os.path.join(out_dir, "temperature.png"))


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
    elif config.stage == "slb":
        results["slb"] = job.slb()
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
    if "slb" in stages:
        slb = stages["slb"]
        first, last = slb["schedule_window"]
        lines.append("")
        lines.append(
            f"SLB W{slb['weight_bits']}/A{slb['activation_bits']}: temperature 1 -> "
            f"{slb['final_temperature']:.4g} (growing after epoch {first}, hard from epoch "
            f"{last}) -> searched {100 * slb['slb_accuracy']:.2f}% -> folded "
            f"{100 * slb['test_accuracy']:.2f}% (largest probability difference "
            f"{slb['fold_max_difference']:.2g})"
        )
    lines.append("")
    lines.append("Files:")
    for name, result in stages.items():
        for key, path in result.get("files", {}).items():
            lines.append(f"  {name:9s} {key:13s} {path}")
    return "\n".join(lines)
