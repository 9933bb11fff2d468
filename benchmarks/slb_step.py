"""Training-step time and trainable memory of SLB against its straight-through baseline.

    python benchmarks/slb_step.py [--rounds 20] [--steps 1] [--batch 128] [--jit on|off]
    python benchmarks/slb_step.py --check   # memory only: build the models, no timing

ResNet-20 (32x32x3, 10 classes; SLB's CIFAR-10 ResNet recipe) from `apps.models` in
mode `"slb"` (`SLBQuantConv2D`: softmax over 2^b logits per weight) and in mode
`"dorefa"` (`QuantConv2D` with DoReFa's b-bit weights through the straight-through
estimator, `sign(W)·mean|W|` for 1 bit), at W1A1, W2A2 and W4A4: both use the same
activation quantizer (`ste_sign` for 1 bit, PACT otherwise), so they differ only in how
the weights are found. The first conv, the down-sampling shortcuts and the classifier
are full precision in both. SGD with momentum 0.9 (SLB's ResNet-20 recipe), sparse
categorical cross-entropy, `train_on_batch` on one random batch.

Every (method, bits) pair is a worker subprocess (`benchmarks/paired.py`); after the
warm-up they take turns, `--steps` steps each, for `--rounds` rounds, and the SLB / STE
ratio of the round medians is taken per bit width and round, for the wall-clock time and
for the worker's CPU time.

Memory: the trainable variables of the quantized layers (SLB's logits against the
latent kernels; PACT's clip level counted apart), of the whole network, and the
optimizer's variables, in parameters and bytes, SLB / STE per bit width; and the same
for one hidden dense layer, 512 -> 512 (`SLBQuantDense` against `QuantDense`), since
ResNet-20 has none. SLB's logits are `kernel_shape + (2**b,)`, so the quantized layers'
weights grow 2^b-fold: 2 logits per weight at 1 bit (a softmax over {-1, +1}).

Writes the raw step times and every count to `benchmarks/results/slb_step_<xla|no-xla>.json`
and the printed summary to the `.txt` beside it.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import paired  # noqa: E402

BITS = (1, 2, 4)
METHODS = {"slb": "slb", "ste": "dorefa"}  # name here: apps.models mode
DENSE_UNITS = 512


def variable_bytes(variables) -> tuple[int, int]:
    """(parameters, bytes) of `variables`."""
    import numpy as np

    count = size = 0
    for v in variables:
        n = int(np.prod(v.shape))
        count += n
        size += n * np.dtype(v.dtype).itemsize
    return count, size


def quantized_layers(model) -> list:
    from lns_keras.layers import QuantConv2D, QuantDense

    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, QuantConv2D | QuantDense)
    ]


def layer_memory(layer) -> dict:
    """The weights (SLB's logits or the latent kernel) and other trainable variables of a layer."""
    weights = [v for v in layer.trainable_variables if v.name in ("logits", "kernel")]
    others = [v for v in layer.trainable_variables if v.name not in ("logits", "kernel")]
    return {"weights": list(variable_bytes(weights)), "other": list(variable_bytes(others))}


def build(method: str, bits: int):
    from apps.models import resnet20

    return resnet20((32, 32, 3), 10, mode=METHODS[method], weight_bits=bits, activation_bits=bits)


def dense(method: str, bits: int):
    """One hidden dense layer of the mode, built on 512 inputs, as the apps make it."""
    from apps.models import modes

    layer = modes.dense(modes.layer_mode(METHODS[method], bits, bits), DENSE_UNITS)
    layer.build((None, DENSE_UNITS))
    return layer


def memory(model, dense_layer) -> dict:
    """Trainable memory of the quantized layers, the network and one dense layer."""
    layers = quantized_layers(model)
    per_layer = {layer.name: layer_memory(layer) for layer in layers}
    return {
        "quantized_layers": per_layer,
        "quantized_weights": [sum(m["weights"][i] for m in per_layer.values()) for i in (0, 1)],
        "quantized_other": [sum(m["other"][i] for m in per_layer.values()) for i in (0, 1)],
        "network_trainable": list(variable_bytes(model.trainable_variables)),
        "dense": layer_memory(dense_layer),
    }


def worker(method: str, bits: int, jit: bool, batch: int) -> None:
    """Build, compile and warm up one model, then serve `paired`'s timing requests."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = build(method, bits)
    info = {"method": method, "bits": bits, "model": model.name}
    info["memory"] = memory(model, dense(method, bits))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit,
    )
    info["jit_compile"] = bool(model.jit_compile)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch).astype("int32")
    for _ in range(3):  # warm-up: tracing, XLA compilation, optimizer variables
        model.train_on_batch(x, y)
    info["memory"]["optimizer"] = list(variable_bytes(model.optimizer.variables))
    paired.serve(info, lambda: model.train_on_batch(x, y))


def name(method: str, bits: int) -> str:
    return f"{method} w{bits}a{bits}"


def commands(bits: list[int], jit: bool, batch: int) -> dict:
    """`paired.start`'s commands: one worker per (bits, method)."""
    script = os.path.abspath(__file__)
    result = {}
    for b in bits:
        for method in METHODS:
            argv = [sys.executable, script, "--worker", method, "--bits", str(b)]
            argv += ["--batch", str(batch), "--jit", "on" if jit else "off"]
            result[name(method, b)] = (argv, {})
    return result


def memory_problems(infos: dict, bits: list[int]) -> list[str]:
    """Where SLB's quantized weights are not 2^b times the STE kernels, layer by layer."""
    problems = []
    for b in bits:
        slb = infos[name("slb", b)]["memory"]
        ste = infos[name("ste", b)]["memory"]
        pairs = [
            (n, slb["quantized_layers"][n], ste["quantized_layers"].get(n))
            for n in slb["quantized_layers"]
        ]
        pairs.append(("dense", slb["dense"], ste["dense"]))
        if set(slb["quantized_layers"]) != set(ste["quantized_layers"]):
            problems.append(f"w{b}: quantized layers differ")
        for layer, s, t in pairs:
            if t is None or s["weights"][0] != 2**b * t["weights"][0] or s["other"] != t["other"]:
                problems.append(f"w{b} {layer}: SLB {s} against STE {t}")
    return problems


def memory_lines(infos: dict, bits: list[int]) -> list[str]:
    lines = [
        "Trainable memory, parameters (MiB): STE, SLB, SLB / STE",
        f"{'bits':5s} {'part':34s} {'STE':>18s} {'SLB':>18s} {'SLB/STE':>8s}",
    ]
    parts = [
        ("quantized layers' kernels / logits", lambda m: m["quantized_weights"]),
        ("quantized layers' other (PACT)", lambda m: m["quantized_other"]),
        ("whole network", lambda m: m["network_trainable"]),
        ("optimizer variables", lambda m: m.get("optimizer")),
        (f"dense {DENSE_UNITS}->{DENSE_UNITS} kernel / logits", lambda m: m["dense"]["weights"]),
    ]
    for b in bits:
        slb = infos[name("slb", b)]["memory"]
        ste = infos[name("ste", b)]["memory"]
        for part, get in parts:
            s, t = get(slb), get(ste)
            if s is None:
                continue
            ratio = f"{s[0] / t[0]:8.2f}" if t[0] else f"{'-':>8s}"
            lines.append(
                f"w{b}a{b}  {part:34s} {t[0]:9,d} ({t[1] / 2**20:5.2f}) "
                f"{s[0]:9,d} ({s[1] / 2**20:5.2f}) {ratio}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bits", type=int, nargs="+", choices=BITS, default=list(BITS))
    parser.add_argument("--jit", choices=("on", "off"), default="on")
    parser.add_argument("--check", action="store_true", help="memory only, no timing")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help="results path without suffix")
    args = parser.parse_args()
    jit = args.jit == "on"
    if args.worker:
        worker(args.worker, args.bits[0], jit, args.batch)
        return
    xla = "xla" if jit else "no-xla"
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"slb_step_{xla}")

    if args.check:
        infos = {
            name(m, b): {"memory": memory(build(m, b), dense(m, b))}
            for b in args.bits
            for m in METHODS
        }
        problems = memory_problems(infos, args.bits)
        print("\n".join(problems or memory_lines(infos, args.bits)))
        sys.exit(1 if problems else 0)

    before = paired.machine_state()
    workers = paired.start(commands(args.bits, jit, args.batch))
    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        infos = {n: w.info for n, w in workers.items()}
        problems = memory_problems(infos, args.bits)
        if problems:
            print("SLB's weights are not 2^b times the STE kernels:\n  " + "\n  ".join(problems))
            sys.exit(1)
        wrong_jit = [n for n, info in infos.items() if info["jit_compile"] != jit]
        if wrong_jit:
            print(f"compile() did not keep jit_compile={jit} in: {wrong_jit}")
            sys.exit(1)
        times = paired.interleave(workers, args.rounds, args.steps)
    finally:
        paired.close(workers)

    after = paired.machine_state()
    say(
        f"ResNet-20, 32x32x3, batch {args.batch}, SGD momentum, jit_compile={jit}: SLB "
        "(SLBQuantConv2D) against STE (QuantConv2D, DoReFa weights), same activation quantizer"
    )
    paired.report_steps(say, times, args.rounds, args.steps, args.batch, before, after, width=10)
    ratios = {}
    for kind, label in (("wall", "step time"), ("cpu", "CPU time per step")):
        say(f"SLB / STE {label}, over the rounds' medians:")
        for b in args.bits:
            r = ratios[f"w{b}a{b} {kind}"] = paired.ratio(
                times[kind], name("slb", b), name("ste", b)
            )
            say(f"  w{b}a{b}  {paired.describe(r)}")
    for line in memory_lines(infos, args.bits):
        say(line)
    record = {
        "command": ["python", "benchmarks/slb_step.py", *sys.argv[1:]],
        "machine": {"before": before, "after": after},
        "workers": paired.workers_record(infos, times),
        "ratios": ratios,
    }
    paired.write_results(out, record, lines)


if __name__ == "__main__":
    main()
