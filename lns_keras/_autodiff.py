"""Reverse-mode derivatives on every Keras backend.

Keras 3 has no backend-neutral gradient function: each backend differentiates its own
way (`tf.GradientTape`, `jax.vjp`, `torch.autograd`). The tools that read a quantizer's
pseudo-gradient outside of training (`callbacks.gradient_reach`) go through `vjp`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def vjp(fn: Callable, x, upstream=None) -> np.ndarray:
    """The vector-Jacobian product of `fn` at `x`: the gradient of `sum(upstream * fn(x))`.

    Args:
        fn: A function of one tensor, written with `keras.ops` (custom gradients count).
        x: Where to differentiate: an array or a tensor.
        upstream: The output's gradient, of `fn(x)`'s shape; default all ones.

    Returns:
        The gradient with respect to `x`, a NumPy array of `x`'s shape (zeros where
        `fn(x)` does not depend on `x`).

    Raises:
        NotImplementedError: Under a Keras backend other than TensorFlow, JAX and PyTorch.
    """
    x = np.asarray(keras.ops.convert_to_numpy(x))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x_tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x_tensor)
            y = fn(x_tensor)
        dy = tf.ones_like(y) if upstream is None else tf.convert_to_tensor(upstream, y.dtype)
        grad = tape.gradient(y, x_tensor, output_gradients=dy)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        y, pullback = jax.vjp(fn, jnp.asarray(x))
        dy = jnp.ones_like(y) if upstream is None else jnp.asarray(upstream, y.dtype)
        (grad,) = pullback(dy)
    elif backend == "torch":
        import torch

        x_tensor = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        y = fn(x_tensor)
        if not y.requires_grad:  # nothing in `fn` depends on `x`
            return np.zeros_like(x)
        dy = torch.ones_like(y) if upstream is None else torch.as_tensor(upstream, dtype=y.dtype)
        (grad,) = torch.autograd.grad(y, x_tensor, grad_outputs=dy.to(y.device), allow_unused=True)
    else:
        # Keras's other backends (numpy, openvino) have no automatic differentiation.
        raise NotImplementedError(
            f"No gradient for the Keras backend {backend!r}: lns_keras differentiates under "
            "'tensorflow', 'jax' and 'torch'."
        )
    if grad is None:
        return np.zeros_like(x)
    return np.asarray(keras.ops.convert_to_numpy(grad))
