r"""Activations of binary networks (larq's `larq.activations`): `hard_tanh`, `leaky_tanh`.

Use them as any Keras activation, by object or by name:

```python
y = lns_keras.QuantDense(64, activation=lns_keras.activations.leaky_tanh)(x)
y = keras.layers.Activation("leaky_tanh")(y)  # the name works once lns_keras is imported
```

`hard_tanh` is Keras 3's own `keras.activations.hard_tanh` (the same function as larq's,
$\operatorname{clip}(x, -1, 1)$). `"leaky_tanh"` is added to the names
`keras.activations.get` knows when lns_keras is imported (Keras 3 reads activation
names from its own table only); in a saved model it is stored as
`"lns_keras>leaky_tanh"` and loads with `safe_mode=True`.
"""

from __future__ import annotations

import keras
from keras import ops

from lns_keras._keras_names import add_builtin_name

__all__ = ["leaky_tanh"]

# Keras 3's own function (documented there), under larq's module name.
hard_tanh = keras.activations.hard_tanh


@keras.saving.register_keras_serializable(package="lns_keras")
def leaky_tanh(x, alpha: float = 0.2):
    r"""Hard tanh with slope `alpha` outside $[-1, 1]$, as leaky ReLU has below 0 (larq's).

    $$f(x) = \operatorname{clip}(x, -1, 1) + \alpha\,(\max(x, 1) - 1)
    + \alpha\,(\min(x, -1) + 1)$$

    that is $x$ on $[-1, 1]$, $1 + \alpha (x - 1)$ above and $-1 + \alpha (x + 1)$ below;
    its derivative is 1 inside and $\alpha$ outside.

    Args:
        x: Input tensor.
        alpha: The slope outside $[-1, 1]$.

    Returns:
        A tensor of the shape and dtype of `x`.

    Raises:
        ValueError: From the backend, if `x` cannot be converted to a tensor.

    Example:
        ```python
        lns_keras.activations.leaky_tanh(keras.ops.convert_to_tensor([-3.0, 0.5, 2.0]))
        # [-1.4, 0.5, 1.2]
        ```
    """
    return ops.clip(x, -1, 1) + (ops.maximum(x, 1) - 1) * alpha + (ops.minimum(x, -1) + 1) * alpha


add_builtin_name("activations", "leaky_tanh", leaky_tanh)
