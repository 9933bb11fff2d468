"""Training-step speed of full precision vs baseline BNN vs LNS, and the mapping's cost.

    python benchmarks/train_step.py [--steps 5] [--rounds 4] [--batch 128] [--jit]

A ResNet-20-shaped network on 32x32x3 inputs at batch 128 in three modes: `float`, `bnn`
(the baseline BNN) and `lns` (the same BNN with LNS layers). After a warm-up, the modes
take turns, `--steps` steps each, for `--rounds` rounds, in one process, so that they see
the same machine state; the median step time of each mode gives images/s and the ratio
of LNS to BNN step time.

It also prints the multiply-accumulates the mappings cost per training step (forward
only, for each LNS layer: n filters as k x k images through the c -> 2c -> 2c -> c
convolutions) against the network's forward MACs on the batch, for ResNet-20 (32x32,
batch 128) and Bi-Real ResNet-18 (224x224, batch 256). The mapping runs once per step
whatever the batch size, so its share falls as the batch grows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lns_keras  # noqa: E402
from apps.models import resnet18_bireal, resnet20  # noqa: E402
from lns_keras.layers import is_lns_layer  # noqa: E402


def mapping_macs(model: keras.Model) -> int:
    """Forward multiply-accumulates of every mapping network for one training step."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if not is_lns_layer(layer):
            continue
        for conv_kernel in layer.mapping.conv_kernels:
            taps, _, c_in, c_out = conv_kernel.shape
            kernel = layer.kernel.shape
            n, positions = kernel[-1], (kernel[0] * kernel[1] if len(kernel) == 4 else 1)
            total += n * positions * taps * taps * c_in * c_out
    return total


def network_macs(model: keras.Model, batch: int) -> int:
    stats = lns_keras.model_stats(model)
    return (stats.binary_macs + stats.float_macs) * batch


def time_steps(model, x, y, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jit", action="store_true", help="jit_compile=True (XLA)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch)
    models = {}
    for mode in ("float", "bnn", "lns"):
        model = resnet20((32, 32, 3), 10, mode=mode)
        model.compile(
            keras.optimizers.SGD(0.01, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=args.jit,
        )
        time_steps(model, x, y, 3)  # warm-up: tracing, compilation
        models[mode] = model

    samples = {mode: [] for mode in models}
    for _ in range(args.rounds):
        for mode, model in models.items():
            samples[mode].extend(time_steps(model, x, y, args.steps))
    median = {mode: statistics.median(t) for mode, t in samples.items()}

    print(
        f"ResNet-20, 32x32x3, batch {args.batch}, jit_compile={args.jit}, "
        f"{args.rounds} rounds x {args.steps} steps per mode, interleaved"
    )
    print(f"{'mode':6s} {'median step (ms)':>17s} {'images/s':>9s}")
    for mode in models:
        print(f"{mode:6s} {1000 * median[mode]:17.1f} {args.batch / median[mode]:9.1f}")
    print(f"LNS / BNN step time: {median['lns'] / median['bnn']:.3f}")
    print(f"BNN / float step time: {median['bnn'] / median['float']:.3f}")

    print("\nMapping MACs per training step (forward) vs the network's forward MACs on the batch")
    cases = [("ResNet-20", models["lns"], 128), ("Bi-Real ResNet-18", None, 256)]
    for name, model, batch in cases:
        if model is None:
            model = resnet18_bireal((224, 224, 3), 1000, mode="lns")
        mapping, network = mapping_macs(model), network_macs(model, batch)
        print(
            f"{name:18s} batch {batch}: mapping {mapping / 1e9:8.3f} G, network "
            f"{network / 1e9:8.3f} G, ratio {mapping / network:.4f}"
        )


if __name__ == "__main__":
    main()
