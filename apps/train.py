"""Train a BNN, convert it to LNS, warm start, fine-tune, fold and export.

    python apps/train.py --flagfile=apps/configs/fashion_mnist_demo.flags
    python apps/train.py --dataset=cifar10 --model=resnet20 --stage=baseline --epochs=400 ...

Flags are listed by `python apps/train.py --help`; the paper's recipes are flagfiles in
`apps/configs/`. The work is done by [`apps.pipeline.run`][apps.pipeline.run].
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from apps import data, models, pipeline  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "fashion_mnist", f"One of {list(data.DATASETS)}.")
flags.DEFINE_string("model", "fashion_net", f"One of {list(models.BUILDERS)}.")
flags.DEFINE_string("stage", "all", f"One of {list(pipeline.STAGES)}.")
flags.DEFINE_string("pretrained", None, "Baseline .keras model for --stage=finetune/lns.")
flags.DEFINE_string("model_dir", "runs/demo", "Output folder (checkpoints, logs, models).")
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
flags.DEFINE_float("decay_factor", 0.1, "Factor of the step schedule.")
flags.DEFINE_string("optimizer", "sgd", f"One of {list(pipeline.OPTIMIZERS)}.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
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
flags.DEFINE_string("strategy", "auto", f"One of {list(pipeline.STRATEGIES)}.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_string("data_dir", None, "tfds data folder.")
flags.DEFINE_string(
    "fashion_mnist_dir", data.FASHION_MNIST_DIR, "Folder of the Fashion-MNIST IDX files."
)
flags.DEFINE_integer("train_limit", None, "Use only the first N training examples.")
flags.DEFINE_integer("test_limit", None, "Use only the first N test examples.")
flags.DEFINE_boolean("export_tflite", True, "Write float and 1-bit .tflite files.")
flags.DEFINE_string("verbose", "auto", "Keras verbosity: auto, 0, 1 or 2.")


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--{flag}={text!r} is invalid: expected a number.") from None


def config_from_flags() -> pipeline.TrainConfig:
    """Build the [`TrainConfig`][apps.pipeline.TrainConfig] from the parsed flags."""
    rho = [_number("rho", r) for r in FLAGS.rho]
    if len(rho) not in (1, 2):
        raise ValueError(
            f"--rho={','.join(FLAGS.rho)!r} is invalid: expected rho or rho_pos,rho_neg."
        )
    return pipeline.TrainConfig(
        dataset=FLAGS.dataset,
        model=FLAGS.model,
        stage=FLAGS.stage,
        model_dir=FLAGS.model_dir,
        pretrained=FLAGS.pretrained,
        epochs=FLAGS.epochs,
        baseline_epochs=FLAGS.baseline_epochs,
        warm_start_epochs=FLAGS.warm_start_epochs,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        baseline_learning_rate=FLAGS.baseline_learning_rate,
        schedule=FLAGS.schedule,
        decay_epochs=tuple(int(_number("decay_epochs", e)) for e in FLAGS.decay_epochs),
        decay_factor=FLAGS.decay_factor,
        optimizer=FLAGS.optimizer,
        momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay,
        warm_start_learning_rate=FLAGS.warm_start_learning_rate,
        alpha=FLAGS.alpha,
        rho=rho[0] if len(rho) == 1 else (rho[0], rho[1]),
        loss_reduction=FLAGS.loss_reduction,
        noisy_labels=FLAGS.noisy_labels,
        mapping_width=FLAGS.mapping_width,
        gradient_path=FLAGS.gradient_path,
        validation_examples=FLAGS.validation_examples,
        seed=FLAGS.seed,
        strategy=FLAGS.strategy,
        jit_compile=FLAGS.jit_compile,
        data_dir=FLAGS.data_dir,
        fashion_mnist_dir=FLAGS.fashion_mnist_dir,
        train_limit=FLAGS.train_limit,
        test_limit=FLAGS.test_limit,
        export_tflite=FLAGS.export_tflite,
        verbose=int(FLAGS.verbose) if FLAGS.verbose.isdigit() else FLAGS.verbose,
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
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


if __name__ == "__main__":
    app.run(main)
