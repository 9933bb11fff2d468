"""Train a BNN, convert it to LNS, warm start, fine-tune, fold and export; or train SLB.

    python apps/train.py --flagfile=apps/configs/fashion_mnist_demo.flags
    python apps/train.py --dataset=cifar10 --model=resnet20 --stage=baseline --epochs=400 ...
    python apps/train.py --flagfile=apps/configs/fashion_mnist_slb.flags

Flags are listed by `python apps/train.py --help` (`--helpfull` adds absl's, among them
`--verbosity`, which brings back TensorFlow's logs); the paper's recipes are flagfiles in
`apps/configs/`. `apps/train_imagenet.py` and `apps/train_cifar10.py` are this command
with `--dataset` fixed. The work is done by [`apps.pipeline.run`][apps.pipeline.run].
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import logs  # noqa: E402  (imports no TensorFlow)

if __name__ == "__main__":
    logs.quiet_tensorflow(sys.argv)  # before TensorFlow is imported

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

from apps import data, models, pipeline  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "fashion_mnist", f"One of {list(data.DATASETS)}.")
flags.DEFINE_string("model", "fashion_net", f"One of {list(models.BUILDERS)}.")
flags.DEFINE_string("stage", "all", f"One of {list(pipeline.STAGES)}.")
flags.DEFINE_string("pretrained", None, "Baseline .keras model for --stage=finetune/lns.")
flags.DEFINE_integer(
    "weight_bits",
    1,
    "Bits of a weight of the quantized layers: --stage=slb 1, 2 or 4; --stage=baseline "
    "1 (the BNN) or up to 8 (DoReFa weights, SLB's straight-through baseline).",
)
flags.DEFINE_integer(
    "activation_bits",
    1,
    "Bits of the quantized layers' inputs for --stage=slb/baseline: 1 (ste_sign), 2 to 8 "
    "(PACT) or 32 (full precision).",
)
flags.DEFINE_float(
    "temperature_factor",
    1.2,
    "--stage=slb: factor (>= 1) by which the inverse temperature grows each epoch.",
)
flags.DEFINE_float(
    "temperature_start",
    0.2,
    "--stage=slb: fraction of the epochs after which the temperature starts growing.",
)
flags.DEFINE_float(
    "temperature_end",
    0.6,
    "--stage=slb: fraction of the epochs at which it stops growing and the layers switch "
    "to their hard kernels (>= --temperature_start).",
)
flags.DEFINE_integer(
    "bn_recalibration_steps",
    100,
    "--stage=slb: training batches that recalibrate batch normalization on the hard "
    "kernels after every epoch (0: none).",
)
flags.DEFINE_string("model_dir", "runs/demo", "Output folder (checkpoints, logs, models).")
flags.DEFINE_boolean(
    "overwrite",
    False,
    "Delete and run again a stage of --model_dir that an earlier run started with other "
    "values (without it, such a run is refused).",
)
flags.DEFINE_integer("epochs", 2, "Epochs of the stage (of the fine-tune for --stage=all).")
flags.DEFINE_integer("baseline_epochs", None, "Baseline epochs for --stage=all (default --epochs).")
flags.DEFINE_integer("warm_start_epochs", 1, "Warm-start epochs (mappings only).")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_float("learning_rate", 0.01, "Initial learning rate.")
flags.DEFINE_float("baseline_learning_rate", None, "Baseline learning rate for --stage=all.")
flags.DEFINE_string("schedule", "constant", f"One of {list(pipeline.SCHEDULES)}.")
flags.DEFINE_list(
    "decay_epochs", [], "Epochs where the step schedule multiplies by --decay_factor."
)
flags.DEFINE_float("decay_factor", 0.1, "Factor of the step schedule, in (0, 1].")
flags.DEFINE_string("optimizer", "sgd", f"One of {list(pipeline.OPTIMIZERS)}.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum, in [0, 1].")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (>= 0).")
flags.DEFINE_float("warm_start_learning_rate", 1e-3, "Adam learning rate of the warm start.")
flags.DEFINE_float("alpha", 1.0, "alpha of Eq. 21 (>= 0).")
flags.DEFINE_list("rho", ["0.005"], "Noise rate rho, or rho_pos,rho_neg.")
flags.DEFINE_string("loss_reduction", "mean", "mean (Eq. 16) or sum (Eq. 17).")
flags.DEFINE_string("noisy_labels", "latent", "latent (sign of current W) or pretrained.")
flags.DEFINE_integer("mapping_width", 2, "Channel multiplier of the mapping networks.")
flags.DEFINE_string(
    "gradient_path",
    "identity",
    f"How the classification gradient reaches Q̂: one of {list(pipeline.GRADIENT_PATHS)}.",
)
flags.DEFINE_integer(
    "validation_examples",
    0,
    "Hold out the last N training examples for validation (0: validate on the test split).",
)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string(
    "strategy",
    "auto",
    f"One of {list(pipeline.STRATEGIES)}; all but auto are tf.distribute strategies, "
    "TensorFlow only (on JAX, auto spreads each batch over every device when there are "
    "several).",
)
flags.DEFINE_boolean(
    "jit_compile",
    False,
    "XLA-compile the train step. Default: false, but true under KERAS_BACKEND=jax, where "
    "a step that is not compiled runs op by op.",
)
flags.DEFINE_string("data_dir", None, "tfds data folder.")
flags.DEFINE_string(
    "fashion_mnist_dir", data.FASHION_MNIST_DIR, "Folder of the Fashion-MNIST IDX files."
)
flags.DEFINE_integer("train_limit", None, "Use only the first N training examples.")
flags.DEFINE_integer("test_limit", None, "Use only the first N test examples.")
flags.DEFINE_boolean(
    "export_tflite",
    True,
    "Write the float .tflite file, and the 1-bit one of a binary model. TensorFlow only: "
    "off by default under other Keras backends (KERAS_BACKEND).",
)
flags.DEFINE_string(
    "verbose",
    "auto",
    "Keras verbosity: auto (a progress bar on a terminal, one line per epoch otherwise), "
    "0 (silent), 1 (progress bar) or 2 (one line per epoch). TensorFlow's own logs: "
    "--verbosity.",
)


def _numbers(flag: str, texts: list[str], kind: type) -> tuple:
    try:
        return tuple(kind(text) for text in texts)
    except ValueError:
        expected = "integers" if kind is int else "numbers"
        raise ValueError(
            f"--{flag}={','.join(texts)!r} is invalid: expected comma-separated {expected}."
        ) from None


def config_from_flags() -> pipeline.TrainConfig:
    """Build the [`TrainConfig`][apps.pipeline.TrainConfig] from the parsed flags."""
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(pipeline.TrainConfig)}
    rho = _numbers("rho", FLAGS.rho, float)
    if len(rho) not in (1, 2):
        raise ValueError(
            f"--rho={','.join(FLAGS.rho)!r} is invalid: expected rho or rho_pos,rho_neg."
        )
    values["rho"] = rho[0] if len(rho) == 1 else rho
    values["decay_epochs"] = _numbers("decay_epochs", FLAGS.decay_epochs, int)
    values["verbose"] = int(FLAGS.verbose) if FLAGS.verbose.isdigit() else FLAGS.verbose
    # Defaults that depend on the Keras backend; a value given on the command line or in
    # a flagfile stands (and a TensorFlow-only one is refused by pipeline.check_backend).
    backend = keras.backend.backend()
    if backend != "tensorflow" and not FLAGS["export_tflite"].present:
        values["export_tflite"] = False
    if backend == "jax" and not FLAGS["jit_compile"].present:
        values["jit_compile"] = True
    return pipeline.TrainConfig(**values)


def main(argv: list[str], dataset: str | None = None) -> int:
    """Run the pipeline from the parsed flags and print its final table.

    Args:
        argv: What absl left of the command line: the program name only, or the run is
            refused.
        dataset: The only dataset this entry point trains on (`apps/train_imagenet.py`,
            `apps/train_cifar10.py`); `None`: any.

    Returns:
        The exit status: 0, or 2 after a one-line `error: ...` on stderr (a bad flag,
        missing data, an unexpected argument).
    """
    verbosity = FLAGS.verbosity if FLAGS["verbosity"].present else logs.DEFAULT_VERBOSITY
    logs.apply_verbosity(verbosity)
    program = os.path.basename(argv[0]) if argv else "train.py"
    if len(argv) > 1:
        print(
            f"error: unexpected argument {' '.join(map(repr, argv[1:]))}: settings are flags "
            "such as --epochs=3 (see --help).",
            file=sys.stderr,
        )
        return 2
    if dataset is not None and FLAGS.dataset != dataset:
        print(
            f"error: --dataset={FLAGS.dataset!r} is invalid: {program} trains on {dataset} "
            "only; apps/train.py takes any dataset.",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_flags()
        summary = pipeline.run(config)
    except (ValueError, data.DataNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(pipeline.final_table(summary))
    print(
        f"\nEverything is in {os.path.abspath(config.model_dir)} (metrics.json, metrics.csv, plots, models)."
    )
    return 0


_HELP_FLAGS = {"help", "?", "helpfull", "helpshort", "helpxml"}


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, except that help asked for is a success (absl exits with 1)."""
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as exit:
        asked = {arg.lstrip("-").split("=")[0] for arg in argv[1:] if arg.startswith("-")}
        if exit.code == 1 and asked & _HELP_FLAGS:
            raise SystemExit(0) from None
        raise


def run_script(dataset: str | None = None) -> None:
    """Parse the command line and run [`main`][apps.train.main]; exits with its status.

    Args:
        dataset: For an entry point that trains on one dataset only: `--dataset`
            defaults to it and any other value is refused.
    """
    if dataset is not None:
        FLAGS.set_default("dataset", dataset)
        FLAGS["dataset"].help = f"Fixed to {dataset} here (apps/train.py takes any dataset)."
    app.run(functools.partial(main, dataset=dataset), flags_parser=_parse_flags)


if __name__ == "__main__":
    run_script()
