"""Diagnostics of the gradient path on the converged baseline (issue 9).

    python experiments/fashion_mnist_converged/diagnose.py [--batches 20]

Converts `baseline.keras` to LNS (the library's defaults), runs the pipeline's warm start
(one epoch, mappings only, Adam 10⁻³, summed supervision) and then reports, per LNS layer:

- the distribution of Q̂ = f_θ(W): the fraction beyond ±1 (where `ste_sign`'s window
  passes nothing) and quantiles of |Q̂|, before and after the warm start;
- the classification gradient arriving at Q̂, ∂ℓ_cls/∂Q̂ (read through a zero probe added
  to Q̂, which the identity straight-through estimator passes unchanged), over
  `--batches` training batches: its largest magnitude and quantiles. Eq. 3 clips this
  value to [-1, 1]; where it never reaches 1, Eq. 3 is the identity estimator.

Writes `diagnose.txt` beside this file.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lns_keras  # noqa: E402
from apps import data  # noqa: E402
from lns_keras.layers import is_lns_layer  # noqa: E402


def q_hat_lines(model, when: str) -> list[str]:
    lines = []
    for layer in model.layers:
        if is_lns_layer(layer):
            q = np.abs(keras.ops.convert_to_numpy(layer.binary_estimate()))
            quantiles = np.quantile(q, [0.5, 0.9, 0.99])
            lines.append(
                f"{when:18s} {layer.name}: |Q̂| > 1 on {100 * np.mean(q > 1):.1f}% of "
                f"{q.size} entries; |Q̂| median {quantiles[0]:.2f}, 90% {quantiles[1]:.2f}, "
                f"99% {quantiles[2]:.2f}, max {q.max():.2f}"
            )
    return lines


def upstream_gradients(model, dataset, batches: int) -> dict[str, np.ndarray]:
    """∂ℓ_cls/∂Q̂ per LNS layer over `batches` batches (mean cross-entropy per batch)."""
    layers = [layer for layer in model.layers if is_lns_layer(layer)]
    probes = {layer.name: tf.Variable(tf.zeros(layer.kernel.shape)) for layer in layers}
    originals = {}
    for layer in layers:
        originals[layer.name] = layer.binary_estimate
        layer.binary_estimate = lambda layer=layer: layer.mapping(layer.kernel) + probes[layer.name]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    grads = {name: [] for name in probes}
    try:
        for x, y in dataset.take(batches):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False))
            for name, g in zip(probes, tape.gradient(loss, list(probes.values()))):
                grads[name].append(g.numpy().ravel())
    finally:
        for layer in layers:
            layer.binary_estimate = originals[layer.name]
    return {name: np.concatenate(g) for name, g in grads.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--baseline", default=os.path.join(HERE, "baseline.keras"))
    parser.add_argument("--limit", type=int, default=None, help="training images (a quick check)")
    parser.add_argument("--out", default=os.path.join(HERE, "diagnose.txt"))
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    baseline = keras.models.load_model(args.baseline, safe_mode=True)
    train = data.load(
        "fashion_mnist", "train[:-10000]", 128, seed=0, training=True, limit=args.limit
    )
    model = lns_keras.convert.to_lns(baseline, alpha=1.0, rho=0.005)
    lines = q_hat_lines(model, "converted")
    lns_keras.convert.warm_start(
        model,
        train,
        epochs=1,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=True,
        verbose=2,
    )
    lines += q_hat_lines(model, "after warm start")
    for name, g in upstream_gradients(model, train, args.batches).items():
        a = np.abs(g)
        quantiles = np.quantile(a, [0.5, 0.99])
        lines.append(
            f"∂ℓ_cls/∂Q̂ {name} over {args.batches} batches of 128: max |g| = {a.max():.2e}, "
            f"median {quantiles[0]:.2e}, 99% {quantiles[1]:.2e}; "
            f"|g| > 1 on {100 * np.mean(a > 1):.4f}%"
        )
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
