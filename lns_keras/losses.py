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

import keras
import numpy as np
from keras import ops

from lns_keras import _checks

__all__ = ["check_noise_rates", "corrected_loss", "squared_error"]


def check_noise_rates(rho_pos: float, rho_neg: float) -> None:
    """Validate the noise rates: both ≥ 0 and `rho_pos + rho_neg < 1` (Eq. 8-9).

    Args:
        rho_pos: $\\rho_{+1}$, a real number (NumPy scalars included).
        rho_neg: $\\rho_{-1}$, a real number (NumPy scalars included).

    Raises:
        ValueError: If a rate is not a finite real number ≥ 0 (`True`, `nan` and `inf`
            are not) or `rho_pos + rho_neg >= 1`; the message names the bad value.
    """
    rho_pos = _checks.nonnegative_real("rho_pos", rho_pos)
    rho_neg = _checks.nonnegative_real("rho_neg", rho_neg)
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
        ValueError: If a rate is not a finite real number ≥ 0 or
            `rho_pos + rho_neg >= 1`; if the shapes of `q_hat` and `q_noisy` differ
            (compared as known before running: a dimension unknown while tracing
            matches any); or if `q_noisy` holds a value other than ±1 (checked where its
            values are concrete, i.e. eagerly; inside `tf.function` or XLA there are no
            values to check). Each message names the argument and the bad value.
        AttributeError: If `q_hat` has no `dtype`, e.g. a Python list (pass a tensor or
            an array).
        tensorflow.errors.InvalidArgumentError: From TensorFlow, inside a traced
            function, if dimensions unknown while tracing turn out not to broadcast.

    Example:
        ```python
        from lns_keras.losses import corrected_loss
        corrected_loss(keras.ops.array([0.3]), keras.ops.array([1.0]), 0.005, 0.005)
        ```
    """
    check_noise_rates(rho_pos, rho_neg)
    _check_labels(q_hat, q_noisy)
    return _corrected_loss(q_hat, q_noisy, float(rho_pos), float(rho_neg))


def _corrected_loss(q_hat, q_noisy, rho_pos: float, rho_neg: float):
    """Eq. 15 without the checks of `corrected_loss`, for callers whose labels are ±1 by
    construction (the LNS layers pass `sign(W)`), so nothing runs outside the math."""
    if isinstance(q_hat, np.ndarray):  # an array minus a torch tensor is a TypeError
        q_hat = ops.convert_to_tensor(q_hat)
    q_noisy = ops.cast(q_noisy, q_hat.dtype)
    positive = ops.greater(q_noisy, 0)
    rho_same = ops.where(positive, rho_pos, rho_neg)  # ρ_{q̃}
    rho_other = ops.where(positive, rho_neg, rho_pos)  # ρ_{−q̃}
    numerator = (1.0 - rho_other) * squared_error(q_hat, q_noisy) - rho_same * squared_error(
        q_hat, -q_noisy
    )
    return numerator / (1.0 - rho_pos - rho_neg)  # Eq. 15


def _check_labels(q_hat, q_noisy) -> None:
    """`q_noisy` has the shape of `q_hat` and, where its values are concrete, only ±1."""
    hat_shape, noisy_shape = _static_shape(q_hat), _static_shape(q_noisy)
    if hat_shape is not None and noisy_shape is not None:
        if len(hat_shape) != len(noisy_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(hat_shape, noisy_shape)
        ):
            # Broadcasting would silently pair each estimate with the wrong label.
            raise ValueError(
                f"`q_noisy` must have the shape of `q_hat`, got q_noisy of shape "
                f"{noisy_shape} and q_hat of shape {hat_shape}."
            )
    values = _concrete_values(q_noisy)
    if values is not None and not np.all(np.abs(values) == 1):
        wrong = np.unique(values[np.abs(values) != 1])
        raise ValueError(
            "`q_noisy` must hold only -1 and +1 (noisy labels sign(W)), got q_noisy with "
            f"the values {wrong[:5].tolist()}{' ...' if wrong.size > 5 else ''}."
        )


def _static_shape(x) -> tuple | None:
    """The shape known before running (`None` for an unknown dimension), or `None` if even
    the rank is unknown."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return np.shape(x)  # a Python list or number
    if getattr(shape, "rank", 0) is None:  # a tf.TensorShape of unknown rank
        return None
    return tuple(None if dim is None else int(dim) for dim in shape)


def _concrete_values(x) -> np.ndarray | None:
    """The values of `x` as a NumPy array, or `None` when `x` is symbolic or being traced."""
    if keras.backend.is_keras_tensor(x):
        return None
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except (NotImplementedError, TypeError):
        # A tensor being traced has no values: TensorFlow's graph tensors (tf.function,
        # XLA) raise NotImplementedError, JAX's tracers a TypeError.
        return None
