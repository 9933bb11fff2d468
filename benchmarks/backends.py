"""Training-step time of the ResNet-20 BNN and its LNS version on each Keras backend (CPU).

    python benchmarks/backends.py [--rounds 6] [--steps 1] [--batch 128] [--networks bnn lns]

The network is `apps.models.resnet20` on 32x32x3 inputs, in mode `bnn` (the baseline BNN)
and `lns` (the same BNN with LNS layers), trained with SGD (momentum 0.9) and sparse
categorical cross-entropy by `train_on_batch` on one random batch. Each (network, backend)
is a worker subprocess (`benchmarks/paired.py`) started with its `KERAS_BACKEND`:

- `tensorflow xla`: TensorFlow with `jit_compile=True`, the reference;
- `tensorflow`: TensorFlow with `jit_compile=False` (graph mode, no XLA);
- `jax`: JAX, whose train step Keras always compiles with XLA (`jit_compile=True`);
- `torch`: PyTorch, eager (Keras's default on torch; `torch.compile` is not measured).

The workers of one network warm up (tracing, compilation), then take turns, `--steps`
steps each, for `--rounds` rounds, the order reversed every other round. The script
prints each worker's median step time and the ratio of each backend's step time to
TensorFlow+XLA's, per round then summarised (median, quartiles, range), and writes the
raw times to `benchmarks/results/backends.json` and the printed summary to
`benchmarks/results/backends.txt`.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import paired  # noqa: E402

# name: (KERAS_BACKEND, jit_compile)
BACKENDS = {
    "tensorflow xla": ("tensorflow", True),
    "tensorflow": ("tensorflow", False),
    "jax": ("jax", True),
    "torch": ("torch", False),
}
REFERENCE = "tensorflow xla"
NETWORKS = ("bnn", "lns")


def worker(network: str, jit: bool, batch: int) -> None:
    """Build, compile and warm up one model, then serve `paired`'s timing requests."""
    import keras
    import numpy as np

    from apps.models import resnet20

    keras.utils.set_random_seed(0)
    model = resnet20((32, 32, 3), 10, mode=network)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),  # the head ends in a softmax
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch).astype("int32")
    for _ in range(3):  # warm-up: tracing, XLA compilation
        model.train_on_batch(x, y)
    versions = {"keras": keras.__version__, keras.backend.backend(): _version()}
    info = {
        "backend": keras.backend.backend(),
        "versions": versions,
        # What compile() kept: Keras may turn jit_compile off for a model it cannot compile.
        "jit_compile": bool(getattr(model, "jit_compile", None)),
        "params": int(model.count_params()),
    }
    paired.serve(info, lambda: model.train_on_batch(x, y))


def _version() -> str:
    import keras

    backend = keras.backend.backend()
    module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend])
    return module.__version__


def commands(network: str, batch: int) -> dict:
    """`paired.start`'s commands: one worker per backend for `network`."""
    script = os.path.abspath(__file__)
    result = {}
    for name, (backend, jit) in BACKENDS.items():
        argv = [sys.executable, script, "--worker", network, "--batch", str(batch)]
        argv += ["--jit", "on" if jit else "off"]
        env = {"KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
        result[f"{network} {name}"] = (argv, env)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--worker", choices=NETWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--jit", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "backends"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.jit == "on", args.batch)
        return

    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    record = {"command": ["python", "benchmarks/backends.py", *sys.argv[1:]], "networks": {}}
    for network in args.networks:
        before = paired.machine_state()
        # One network at a time: four workers of ResNet-20 fit in memory beside a training run.
        workers = paired.start(commands(network, args.batch))
        try:
            infos = {n: w.info for n, w in workers.items()}
            params = {info["params"] for info in infos.values()}
            if len(params) != 1:
                print(f"The backends built different {network} models: {infos}")
                sys.exit(1)
            wrong_jit = [
                n
                for n, info in infos.items()
                if info["jit_compile"] != BACKENDS[n[len(network) + 1 :]][1]
            ]
            if wrong_jit:
                print(f"compile() did not keep the requested jit_compile in: {wrong_jit}")
                sys.exit(1)
            say(
                f"ResNet-20 {network.upper()}, 32x32x3, batch {args.batch}, SGD: "
                f"{params.pop():,} parameters"
            )
            for n, info in infos.items():
                say(f"  {n:22s} jit_compile={info['jit_compile']} {info['versions']}")
            times = paired.interleave(workers, args.rounds, args.steps)
        finally:
            paired.close(workers)
        after = paired.machine_state()
        paired.report_steps(
            say, times, args.rounds, args.steps, args.batch, before, after, width=22
        )
        wall = times["wall"]
        reference = f"{network} {REFERENCE}"
        ratios = {}
        for kind, label in (("wall", "step time"), ("cpu", "CPU time per step")):
            say(f"{label} / TensorFlow+XLA's, over the rounds' medians:")
            for n in wall:
                if n != reference:
                    ratios[f"{n} {kind}"] = r = paired.ratio(times[kind], n, reference)
                    say(f"  {n:22s} {paired.describe(r)}")
        record["networks"][network] = {
            "machine": {"before": before, "after": after},
            "workers": paired.workers_record(infos, times),
            "ratios": ratios,
        }
    paired.write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
