"""The noise-corrected loss of LNS (Han et al., ICML 2020, §3.2).

The signs of a pretrained BNN's latent weights, $\\tilde q = \\operatorname{sign}(W)$, are
taken as *noisy labels* of the unknown ideal binary weights $q$, with class-conditional
flip rates (Eq. 8-9)

$$\\rho_{+1} = P(\\tilde q = -1 \\mid q = +1), \\qquad
\\rho_{-1} = P(\\tilde q = +1 \\mid q = -1).$$

The corrected loss (Natarajan et al., 2013) is unbiased: its expectation over the noise
equals the clean loss $\\ell(\\hat q, q) = (\\hat q - q)^2$ (Eq. 10).
"""

from __future__ import annotations

from keras import ops

__all__ = ["check_noise_rates", "corrected_loss", "squared_error"]


def check_noise_rates(rho_pos: float, rho_neg: float) -> None:
    """Validate the noise rates: both ≥ 0 and `rho_pos + rho_neg < 1` (Eq. 8-9).

    Args:
        rho_pos: $\\rho_{+1}$.
        rho_neg: $\\rho_{-1}$.

    Raises:
        ValueError: If a rate is not a number ≥ 0 or `rho_pos + rho_neg >= 1`; the
            message names the bad value.
    """
    for name, value in (("rho_pos", rho_pos), ("rho_neg", rho_neg)):
        if not (isinstance(value, int | float) and value >= 0):
            raise ValueError(f"Noise rate `{name}` must be a number >= 0, got {name}={value!r}.")
    if not rho_pos + rho_neg < 1:
        raise ValueError(
            f"Noise rates must satisfy rho_pos + rho_neg < 1, got rho_pos={rho_pos!r}, "
            f"rho_neg={rho_neg!r} (sum {rho_pos + rho_neg!r})."
        )


def squared_error(q_hat, y):
    """The base loss $\\ell(\\hat q, y) = (\\hat q - y)^2$ (Eq. 6).

    Args:
        q_hat: Predictions $\\hat q$: a tensor or an array.
        y: Targets, broadcastable against `q_hat`.

    Returns:
        The element-wise squared error, of the broadcast shape.

    Raises:
        tensorflow.errors.InvalidArgumentError: From TensorFlow, if the shapes of two
            tensors do not broadcast (two NumPy arrays raise `ValueError` instead).
        TypeError: If `q_hat` and `y` cannot be subtracted, e.g. two Python lists.
    """
    return ops.square(q_hat - y)


def corrected_loss(q_hat, q_noisy, rho_pos: float, rho_neg: float):
    r"""Per-element noise-corrected loss (Eq. 15).

    $$\tilde\ell(\hat q, \tilde q) = \frac{(1 - \rho_{-\tilde q})\,\ell(\hat q, \tilde q)
      - \rho_{\tilde q}\,\ell(\hat q, -\tilde q)}{1 - \rho_{+1} - \rho_{-1}}$$

    where $\rho_{\tilde q}$ is $\rho_{+1}$ for $\tilde q = +1$ and $\rho_{-1}$ for
    $\tilde q = -1$. With $\rho_{+1} = \rho_{-1} = \rho$ its derivative is Eq. 18,
    $2(\hat q - \tilde q) - 4\rho\tilde q / (1 - 2\rho)$; with $\rho = 0$ it is the plain
    squared error of Eq. 7.

    Args:
        q_hat: Predicted real-valued binary weights $\hat Q = f_\theta(W)$.
        q_noisy: Noisy labels $\tilde Q \in \{-1, +1\}$, same shape.
        rho_pos: $\rho_{+1}$, the rate at which a true $+1$ is observed as $-1$.
        rho_neg: $\rho_{-1}$, the rate at which a true $-1$ is observed as $+1$.

    Returns:
        The element-wise loss, same shape as `q_hat`.

    Raises:
        ValueError: If a rate is not a number ≥ 0 or `rho_pos + rho_neg >= 1`.
        AttributeError: If `q_hat` has no `dtype`, e.g. a Python list (pass a tensor or
            an array).
        tensorflow.errors.InvalidArgumentError: From TensorFlow, if the shapes of
            `q_hat` and `q_noisy` do not broadcast.

    Example:
        ```python
        from lns_keras.losses import corrected_loss
        corrected_loss(keras.ops.array([0.3]), keras.ops.array([1.0]), 0.005, 0.005)
        ```
    """
    check_noise_rates(rho_pos, rho_neg)
    q_noisy = ops.cast(q_noisy, q_hat.dtype)
    positive = ops.greater(q_noisy, 0)
    rho_same = ops.where(positive, rho_pos, rho_neg)  # ρ_{q̃}
    rho_other = ops.where(positive, rho_neg, rho_pos)  # ρ_{−q̃}
    numerator = (1.0 - rho_other) * squared_error(q_hat, q_noisy) - rho_same * squared_error(
        q_hat, -q_noisy
    )
    return numerator / (1.0 - rho_pos - rho_neg)  # Eq. 15
