"""Training-step time of a ResNet-20 BNN in lns_keras (Keras 3) against larq 0.14 (tf.keras 2).

    python benchmarks/larq_step.py [--rounds 30] [--steps 1] [--batch 128] [--jit on off]
                                   [--model resnet20|binarynet] [--control]
    python benchmarks/larq_step.py --check   # build both, compare the layers, no timing

`--model binarynet` times larq's BinaryNet CIFAR-10 example instead (six wide binary
convs, two binary dense layers: `binarynet`). `--control` adds a third worker per jit
setting, the same network in plain Keras 3 with every layer full precision: the floor a
Keras 3 BNN built from float convolutions could reach, against which the quantizers' own
cost is read (`lns_keras/keras float`).

The same network is written once (`resnet20_bnn`) and built twice: with
`lns_keras.QuantConv2D` on Keras 3, and with `larq.layers.QuantConv2D` on tf.keras 2 in
the interpreter that runs larq (`tests/larq_oracle.py`'s `python()`, with
`TF_USE_LEGACY_KERAS=1`). It is a ResNet-20 as larq users write a BNN: a full-precision
3x3 stem conv with batch normalization, three stages of three basic blocks (16, 32, 64
channels) whose two 3x3 convs are binary (`input_quantizer="ste_sign"`,
`kernel_quantizer="ste_sign"`, `kernel_constraint="weight_clip"`, no bias, no scale),
each followed by batch normalization, full-precision 1x1 down-sampling shortcuts, global
average pooling and a dense softmax head. Both are compiled with Adam (1e-3) and sparse
categorical cross-entropy, with and without `jit_compile=True`, and trained with
`train_on_batch` on the same random 32x32x3 batch.

Every (framework, jit) pair is a worker subprocess (`benchmarks/paired.py`); after the
warm-up they take turns, `--steps` steps each, for `--rounds` rounds. The script checks
that both frameworks built the same layers with the same weight shapes and parameter
counts, prints the median step times (wall clock and the worker's CPU time) and the
lns_keras / larq ratios per jit setting (median over the rounds, quartiles, range), and
writes the raw step times to `benchmarks/results/larq_step.json` (`--out`) and the printed
summary to `larq_step.txt`.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import paired  # noqa: E402

FRAMEWORKS = ("lns_keras", "larq")
CONTROL = "keras_float"
"""The `--control` worker: the same network in plain Keras 3, every layer full precision."""
QUANTIZER_ARGS = ("input_quantizer", "kernel_quantizer", "kernel_constraint")
BINARY_CONV_ARGS = {
    "input_quantizer": "ste_sign",
    "kernel_quantizer": "ste_sign",
    "kernel_constraint": "weight_clip",
    "use_bias": False,
    "padding": "same",
}


def resnet20_bnn(layers, quant_conv, input_shape=(32, 32, 3), num_classes: int = 10):
    """ResNet-20 BNN from a Keras `layers` module and a `QuantConv2D` class (either library).

    Only names both Keras 2 and Keras 3 share, so that one definition builds both models.
    """

    def batch_norm(name):
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)

    inputs = layers.Input(input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = batch_norm("stem_bn")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = layers.Conv2D(
                    filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv"
                )(x)
                shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
            y = quant_conv(filters, 3, strides=strides, name=f"{name}_conv1", **BINARY_CONV_ARGS)(x)
            y = batch_norm(f"{name}_bn1")(y)
            y = quant_conv(filters, 3, name=f"{name}_conv2", **BINARY_CONV_ARGS)(y)
            y = batch_norm(f"{name}_bn2")(y)
            x = layers.Add(name=f"{name}_add")([y, shortcut])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(num_classes, name="classifier")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return inputs, outputs


def binarynet(layers, quant_conv, quant_dense, input_shape=(32, 32, 3), num_classes: int = 10):
    """BinaryNet for CIFAR-10 (Courbariaux et al., 2016) as larq's own example writes it.

    Six binary 3x3 convs (128, 128, 256, 256, 512, 512 filters; the first with a float
    input), max pooling after every second, two binary dense layers of 1024 units and a
    binary classifier, each followed by batch normalization without scale; `ste_sign` on
    inputs and kernels, `weight_clip`, no bias. The issue's "6-conv BNN".
    """
    kwargs = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip", "use_bias": False}
    binary = {"input_quantizer": "ste_sign", **kwargs}

    def batch_norm(name):
        return layers.BatchNormalization(momentum=0.999, scale=False, name=name)

    inputs = layers.Input(input_shape, name="image")
    x = inputs
    for i, filters in enumerate((128, 128, 256, 256, 512, 512)):
        args = kwargs if i == 0 else binary
        x = quant_conv(filters, 3, padding="same", name=f"conv{i + 1}", **args)(x)
        if i % 2 == 1:
            x = layers.MaxPool2D(2, name=f"pool{i // 2 + 1}")(x)
        x = batch_norm(f"conv{i + 1}_bn")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate((1024, 1024, num_classes)):
        x = quant_dense(units, name=f"dense{i + 1}", **binary)(x)
        x = batch_norm(f"dense{i + 1}_bn")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return inputs, outputs


MODELS = {"resnet20": "ResNet-20 BNN", "binarynet": "BinaryNet (6 binary convs)"}


def _shapes(weights) -> list[list[int]]:
    return [[int(d) for d in w.shape] for w in weights]


def _size(weights) -> int:
    total = 0
    for shape in _shapes(weights):
        size = 1
        for d in shape:
            size *= d
        total += size
    return total


def worker(framework: str, jit: bool, batch: int, check: bool, model_name: str) -> None:
    """Build, compile and warm up one model, then serve `paired`'s timing requests."""
    import numpy as np

    if framework == "larq":
        import larq
        import tensorflow as tf
        import tf_keras

        keras, quant_conv, quant_dense = tf.keras, larq.layers.QuantConv2D, larq.layers.QuantDense
        versions = {"larq": larq.__version__, "keras": tf_keras.__version__}
    elif framework == CONTROL:
        import keras

        def _float(layer_class):
            def build(*args, **kwargs):
                for key in QUANTIZER_ARGS:
                    kwargs.pop(key, None)
                return layer_class(*args, **kwargs)

            return build

        quant_conv, quant_dense = _float(keras.layers.Conv2D), _float(keras.layers.Dense)
        versions = {"keras": keras.__version__}
    else:
        import keras

        import lns_keras

        quant_conv, quant_dense = lns_keras.QuantConv2D, lns_keras.QuantDense
        versions = {"keras": keras.__version__}
    import tensorflow as tf

    versions["tensorflow"] = tf.__version__
    keras.utils.set_random_seed(0)
    if model_name == "binarynet":
        graph = binarynet(keras.layers, quant_conv, quant_dense)
    else:
        graph = resnet20_bnn(keras.layers, quant_conv)
    model = keras.Model(*graph, name=f"{model_name}_{framework}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch).astype("int32")
    if not check:
        for _ in range(3):  # warm-up: tracing, XLA compilation
            model.train_on_batch(x, y)
    info = {
        "framework": framework,
        "versions": versions,
        # What compile() kept: Keras turns jit_compile off for a model it cannot compile.
        "jit_compile": bool(getattr(model, "jit_compile", getattr(model, "_jit_compile", None))),
        "params": _size(model.weights),
        "trainable_params": _size(model.trainable_weights),
        "layers": [
            [layer.name, type(layer).__name__, _shapes(layer.weights)] for layer in model.layers
        ],
    }
    paired.serve(info, lambda: model.train_on_batch(x, y))


def larq_python() -> str:
    """The interpreter that has larq, as the larq oracle tests decide it."""
    from tests.larq_oracle import python

    return python()


def commands(
    jits: list[bool], batch: int, check: bool, model: str = "resnet20", control: bool = False
) -> dict:
    """`paired.start`'s commands: one worker per (framework, jit), `CONTROL` if `control`."""
    script = os.path.abspath(__file__)
    interpreters = {"lns_keras": sys.executable, "larq": larq_python(), CONTROL: sys.executable}
    keras3 = {"TF_USE_LEGACY_KERAS": "0"}
    envs = {"lns_keras": keras3, "larq": {"TF_USE_LEGACY_KERAS": "1"}, CONTROL: keras3}
    result = {}
    for jit in jits:
        for framework in FRAMEWORKS + ((CONTROL,) if control else ()):
            argv = [interpreters[framework], script, "--worker", framework, "--batch", str(batch)]
            argv += ["--model", model]
            argv += ["--jit", "on" if jit else "off"] + (["--check"] if check else [])
            result[name(framework, jit)] = (argv, envs[framework])
    return result


def name(framework: str, jit: bool) -> str:
    return f"{framework} {'xla' if jit else 'no-xla'}"


def compare(workers: dict) -> list[str]:
    """What differs between the lns_keras and larq models (empty when they are the same).

    Layer by layer: the name, the weight shapes, and the class for the quantized convs
    (both `QuantConv2D`); then the parameter counts. The `CONTROL` worker is left out.
    """
    problems = []
    infos = [info for info in workers.values() if info["framework"] in FRAMEWORKS]
    for info in infos:
        if info["framework"] != infos[0]["framework"]:
            a, b = infos[0], info
            for key in ("params", "trainable_params"):
                if a[key] != b[key]:
                    problems.append(
                        f"{key}: {a['framework']} {a[key]} != {b['framework']} {b[key]}"
                    )
            if len(a["layers"]) != len(b["layers"]):
                problems.append(f"layer count {len(a['layers'])} != {len(b['layers'])}")
            for la, lb in zip(a["layers"], b["layers"]):
                if la != lb:
                    problems.append(f"layer {la} != {lb}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jit", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--model", choices=tuple(MODELS), default="resnet20")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also time the same network in plain Keras 3 with every layer full precision",
    )
    parser.add_argument("--check", action="store_true", help="build and compare, no timing")
    parser.add_argument("--worker", choices=FRAMEWORKS + (CONTROL,), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "larq_step"))
    args = parser.parse_args()
    jits = [j == "on" for j in args.jit]
    if args.worker:
        worker(args.worker, jits[0], args.batch, args.check, args.model)
        return

    before = paired.machine_state()
    workers = paired.start(
        commands(jits[:1] if args.check else jits, args.batch, args.check, args.model, args.control)
    )
    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        infos = {n: w.info for n, w in workers.items()}
        first = next(iter(infos.values()))
        say(
            f"{MODELS[args.model]}, 32x32x3, batch {args.batch}, Adam: {first['params']:,} parameters "
            f"({first['trainable_params']:,} trainable), {len(first['layers'])} layers"
        )
        for n, info in infos.items():
            say(f"  {n:18s} jit_compile={info['jit_compile']} {info['versions']}")
        problems = compare(infos)
        if problems:
            print("The lns_keras and larq models differ:\n  " + "\n  ".join(problems))
            sys.exit(1)
        say("  lns_keras and larq models: same layers, weight shapes and parameter counts")
        wrong_jit = [n for n, info in infos.items() if info["jit_compile"] != ("no-xla" not in n)]
        if wrong_jit:
            print(f"compile() did not keep the requested jit_compile in: {wrong_jit}")
            sys.exit(1)
        if args.check:
            return
        times = paired.interleave(workers, args.rounds, args.steps)
    finally:
        paired.close(workers)

    after = paired.machine_state()
    paired.report_steps(say, times, args.rounds, args.steps, args.batch, before, after, width=18)
    pairs = {
        f"lns_keras/larq {'xla' if j else 'no-xla'}": (name("lns_keras", j), name("larq", j))
        for j in jits
    }
    if args.control:
        for j in jits:
            tag = "xla" if j else "no-xla"
            pairs[f"keras float/larq {tag}"] = (name(CONTROL, j), name("larq", j))
            pairs[f"lns_keras/keras float {tag}"] = (name("lns_keras", j), name(CONTROL, j))
    if len(jits) == 2:
        for framework in FRAMEWORKS:
            pairs[f"{framework} xla/no-xla"] = (name(framework, True), name(framework, False))
    ratios = {}
    for kind, label in (("wall", "step time"), ("cpu", "CPU time per step")):
        say(f"{label} ratio, over the rounds' medians:")
        for key, (a, b) in pairs.items():
            ratios[f"{key} {kind}"] = r = paired.ratio(times[kind], a, b)
            say(f"  {key:28s} {paired.describe(r)}")
    record = {
        "command": ["python", "benchmarks/larq_step.py", *sys.argv[1:]],
        "machine": {"before": before, "after": after},
        "workers": paired.workers_record(infos, times),
        "ratios": ratios,
    }
    paired.write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
