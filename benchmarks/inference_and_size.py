"""Inference of a folded LNS model against the baseline BNN, and file sizes.

    python benchmarks/inference_and_size.py [--rounds 5] [--steps 10]

1. Inference: ResNet-20 (32x32x3, batch 128) baseline BNN vs the same network converted to
   LNS and folded; `predict_on_batch` steps interleaved in one process after warm-up;
   prints the median step times, their ratio, and both models' parameter counts.
2. Sizes: `.keras`, float TFLite and 1-bit LCE TFLite files of the folded ResNet-20 and
   Bi-Real ResNet-18 (224x224x3, 1000 classes), and the `.keras` file of the unfolded LNS
   model (which still carries the mappings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lns_keras  # noqa: E402
from apps.models import resnet18_bireal, resnet20  # noqa: E402
from lns_keras.export import save_model, to_tflite  # noqa: E402


def median_step(model, x, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return times


def sizes(name: str, baseline: keras.Model, folder: str) -> None:
    lns_model = lns_keras.convert.to_lns(baseline)
    folded = lns_keras.convert.fold(lns_model)
    paths = {
        "LNS .keras (with mappings)": save_model(
            lns_model, os.path.join(folder, f"{name}_lns.keras")
        ),
        "folded .keras": save_model(folded, os.path.join(folder, f"{name}.keras")),
        "float .tflite": to_tflite(folded, os.path.join(folder, f"{name}_float.tflite"), lce=False),
        "1-bit LCE .tflite": to_tflite(
            folded, os.path.join(folder, f"{name}_1bit.tflite"), lce=True
        ),
    }
    stats = lns_keras.model_stats(folded)
    print(
        f"\n{name}: model_stats memory {stats.memory_mbit:.2f} Mbit = {stats.memory_mbit / 8:.2f} MB"
    )
    for label, path in paths.items():
        print(f"  {label:28s} {os.path.getsize(path) / 2**20:9.3f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    baseline = resnet20((32, 32, 3), 10, mode="bnn")
    folded = lns_keras.convert.fold(lns_keras.convert.to_lns(baseline))
    x = np.random.default_rng(0).normal(size=(128, 32, 32, 3)).astype("float32")
    models = {"baseline BNN": baseline, "folded LNS": folded}
    for model in models.values():
        median_step(model, x, 3)
    samples = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            samples[name].extend(median_step(model, x, args.steps))
    median = {name: statistics.median(t) for name, t in samples.items()}
    print(f"ResNet-20 inference, batch 128, {args.rounds} rounds x {args.steps} steps, interleaved")
    for name, model in models.items():
        stats = lns_keras.model_stats(model)
        print(
            f"  {name:13s} {1000 * median[name]:8.1f} ms/step  {128 / median[name]:8.1f} images/s  "
            f"params 1-bit {stats.params_1bit:,} 32-bit {stats.params_32bit:,}"
        )
    print(f"  folded / baseline step time: {median['folded LNS'] / median['baseline BNN']:.3f}")

    with tempfile.TemporaryDirectory() as folder:
        sizes("ResNet-20", baseline, folder)
        sizes("Bi-Real ResNet-18", resnet18_bireal((224, 224, 3), 1000, mode="bnn"), folder)


if __name__ == "__main__":
    main()
