"""Sign agreement after a warm start, with the noisy-supervision loss averaged or summed.

    python benchmarks/warm_start_agreement.py

A `fashion_net` BNN is trained for 2 epochs on 3,000 Fashion-MNIST images (seed 0),
converted with `to_lns`, and warm-started for one epoch with Adam at each learning rate,
once with the per-layer mean (Eq. 16) and once with the sum (Eq. 17). Prints the fraction
of weights where sign(Q̂) = sign(W) before and after: why `warm_start` sums by default.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from apps import data, models  # noqa: E402
from lns_keras import convert  # noqa: E402


def main() -> None:
    keras.utils.set_random_seed(0)
    train = data.load("fashion_mnist", "train", 128, seed=0, limit=3000)
    baseline = models.fashion_net((28, 28, 1), 10, mode="bnn")
    baseline.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    baseline.fit(train, epochs=2, verbose=0)
    print(f"{'reduction':9s} {'Adam lr':>8s} {'before':>8s} {'after 1 epoch':>14s}")
    for reduction in ("mean", "sum"):
        for learning_rate in (1e-2, 1e-3):
            keras.utils.set_random_seed(0)
            lns_model = convert.to_lns(baseline)
            before = convert.sign_agreement(lns_model)
            convert.warm_start(
                lns_model,
                train,
                epochs=1,
                loss="sparse_categorical_crossentropy",
                optimizer=keras.optimizers.Adam(learning_rate),
                loss_reduction=reduction,
                verbose=0,
            )
            after = convert.sign_agreement(lns_model)
            print(f"{reduction:9s} {learning_rate:8.0e} {before:8.4f} {after:14.4f}", flush=True)


if __name__ == "__main__":
    main()
