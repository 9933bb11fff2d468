"""Names that Keras 3's own `get` functions resolve (`keras.constraints.get("weight_clip")`).

Keras 3's `keras.constraints.get` and `keras.activations.get` read a string from one
table only, the built-in objects of their module (`ALL_OBJECTS_DICT`); neither
`keras.saving.register_keras_serializable` nor `keras.utils.get_custom_objects` reaches
it, and Keras has no public way to add to it. lns_keras adds its few larq names there
when it is imported, so that plain Keras layers take them by name as they did under
larq and tf.keras 2 (`keras.layers.Dense(3, kernel_constraint="weight_clip")`). A Keras
name is never replaced; if a Keras version moves the table, the name is simply not
added (tests/test_constraints.py then fails, rather than a user's import).
"""

from __future__ import annotations

import importlib


def add_builtin_name(module_name: str, name: str, obj) -> bool:
    """Make `keras.<module_name>.get(name)` return `obj` (a new object for a class).

    Args:
        module_name: The Keras module whose `get` should know the name, e.g.
            `"constraints"` or `"activations"`.
        name: The name to add.
        obj: The class or function it stands for.

    Returns:
        Whether the name was added (or was already there for `obj`).

    Raises:
        ModuleNotFoundError: Never for a Keras 3 module name; for a misspelt one.
    """
    table = getattr(importlib.import_module(f"keras.src.{module_name}"), "ALL_OBJECTS_DICT", None)
    if not isinstance(table, dict):
        return False
    existing = table.setdefault(name, obj)
    return existing is obj
