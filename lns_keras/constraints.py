"""Weight constraints for binary networks.

`WeightClip` keeps latent weights inside `[-clip_value, clip_value]`, where the
straight-through estimator still passes gradients (Courbariaux et al., 2016). Use it by
name: `QuantConv2D(..., kernel_constraint="weight_clip")`.

Plain Keras layers take the name too, as they did under larq and tf.keras 2:

```python
keras.layers.Dense(3, kernel_constraint="weight_clip")  # once lns_keras is imported
```

Keras 3's `keras.constraints.get` resolves a string only from its own table of built-in
constraints, which neither `register_keras_serializable` nor `custom_object_scope`
reaches (a registered name such as `"lns_keras>WeightClip"` does not work as a string
either); importing lns_keras adds `"weight_clip"` and `"WeightClip"` to that table. The
object form `kernel_constraint=lns_keras.constraints.WeightClip()` needs nothing. Either
way a saved model stores the constraint as `"lns_keras>WeightClip"` and loads with
`safe_mode=True`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lns_keras._keras_names import add_builtin_name

__all__ = ["WeightClip", "get", "weight_clip"]


@keras.saving.register_keras_serializable(package="lns_keras")
class WeightClip(keras.constraints.Constraint):
    r"""Clip weights to $[-\text{clip\_value}, \text{clip\_value}]$ after each update.

    Args:
        clip_value: The bound; must be positive.

    Raises:
        ValueError: If `clip_value` is not positive.
        TypeError: If `clip_value` cannot be compared with 0 (e.g. `None` or a string).

    Example:
        ```python
        layer = lns_keras.QuantDense(10, kernel_constraint="weight_clip")
        ```
    """

    def __init__(self, clip_value: float = 1.0):
        if not clip_value > 0:
            raise ValueError(f"`clip_value` must be positive, got clip_value={clip_value!r}.")
        self.clip_value = clip_value

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


# larq's lower-case name of the class (`lq.constraints.weight_clip(clip_value=0.5)`).
weight_clip = WeightClip

_ALIASES = {"weight_clip": WeightClip}
for _name, _cls in {**_ALIASES, "WeightClip": WeightClip}.items():
    add_builtin_name("constraints", _name, _cls)


def get(identifier: Any) -> keras.constraints.Constraint | None:
    """Resolve a constraint: our aliases (`"weight_clip"`) first, then Keras's own.

    Args:
        identifier: A name, a config, a constraint object or `None`.

    Returns:
        The constraint, or `None`.

    Raises:
        ValueError: If `identifier` cannot be interpreted.
    """
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    return keras.constraints.get(identifier)
