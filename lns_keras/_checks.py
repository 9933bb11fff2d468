"""Checks of scalar arguments, shared so that every argument is judged and named alike.

NumPy scalars (`np.float32(1)`, `np.int64(2)`) are numbers like any other and come back
as Python `float` / `int`, so that configs stay JSON-serialisable. `bool` is not a
number here, although Python counts `True` as `1`: `alpha=True` is a mistake, not a weight.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def shown(value) -> str:
    """`repr(value)`, a NumPy scalar shown as the number it holds (`inf`, not NumPy 2's
    `np.float32(inf)`)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def nonnegative_real(name: str, value) -> float:
    """`value` as a Python float if it is a finite real number >= 0, else `ValueError`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite real number >= 0, got {name}={shown(value)}.")
    return float(value)


def integer(name: str, value, *, minimum: int) -> int:
    """`value` as a Python int if it is an integer >= `minimum`, else `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {name}={shown(value)}.")
    return int(value)
