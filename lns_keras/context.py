"""Quantized values of the weights, and the training metrics in scope (larq's `larq.context`).

In larq, a quantized layer wraps its kernel in a `QuantizedVariable`, which reads as the
latent kernel normally and as `kernel_quantizer(kernel)` inside `quantized_scope(True)`;
`model.get_weights()` and `model.save()` in that scope give the binary weights. Keras 3
has no variable wrapper to hook into, so lns_keras asks for the model instead:

```python
fp_weights = model.get_weights()  # the latent weights

binary_weights = lns_keras.context.get_quantized_weights(model)  # no scope needed

with lns_keras.context.quantized_scope(True, model):
    model.save("binary_model.keras")  # the quantized values, saved
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), binary_weights))
# back to the latent weights here
```

The quantized value of a kernel is the kernel the layer computes with: the output of its
quantizer (`binary_kernel()`, which for an LNS layer is $q(\\hat Q)$), times the layer's
`kernel_scale` when it has one (with `kernel_scale=None`, larq's case, exactly larq's
values). For a plain quantized layer with a sign-like quantizer
these values are a fixed point: a model holding them predicts what the latent model
predicts. An LNS layer holding them does not (its mapping runs again on them): fold it
first (`lns_keras.convert.fold`). SLB layers keep their logits (they have no latent
kernel). Full-precision layers and kernels without a quantizer keep their values.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

__all__ = [
    "get_quantized_weights",
    "get_training_metrics",
    "metrics_scope",
    "quantized_kernels",
    "quantized_scope",
    "should_quantize",
]

# (latent weight attribute, quantizer attribute) in larq's names, for layers that do not
# list theirs in `_quantized_weights` as lns_keras's quantized layers do. Keras 3's
# DepthwiseConv keeps its depthwise kernel as `kernel`; SeparableConv as `depthwise_kernel`.
_QUANTIZED_KERNELS = (
    ("kernel", "kernel_quantizer"),
    ("kernel", "depthwise_quantizer"),
    ("depthwise_kernel", "depthwise_quantizer"),
    ("pointwise_kernel", "pointwise_quantizer"),
)

_state = threading.local()
# The variables that a `quantized_scope(True, model)` made hold their quantized values, by
# `id(variable)`, with their latent values. Variables are shared between threads: so is this.
_swapped: dict[int, tuple[keras.Variable, np.ndarray]] = {}


def should_quantize() -> bool:
    """Whether the innermost `quantized_scope` of this thread asks for quantized values.

    Returns:
        `False` outside any scope.

    Raises:
        Nothing: It only reads a flag.
    """
    return getattr(_state, "should_quantize", False)


def _check_model(model) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model or layer, got model={model!r}.")


def _variable(layer, attribute: str):
    try:  # an SLB layer's `kernel` is a property that raises: it has logits instead
        value = getattr(layer, attribute, None)
    except AttributeError:
        return None
    return value if isinstance(value, keras.Variable) else None


def quantized_kernels(model) -> list[tuple[keras.layers.Layer, keras.Variable, Any, bool]]:
    """Every latent weight of `model` that a quantizer reads, with its layer and quantizer.

    lns_keras's quantized layers list their quantized weights (`kernel` read by
    `kernel_quantizer`; a separable convolution's `depthwise_kernel` and
    `pointwise_kernel` read by `depthwise_quantizer` and `pointwise_quantizer`); other
    layers are searched for those attributes, larq's names. Layers that are not built
    yet, and weights whose quantizer is `None`, are left out.

    Args:
        model: A Keras model or layer (its sublayers are searched too).

    Returns:
        A list of `(layer, variable, quantizer, direct)`; `direct` is `False` where the
        quantizer reads a function of the variable rather than the variable itself (an
        LNS layer quantizes $\\hat Q = f_\\theta(W)$, not `W`).

    Raises:
        ValueError: If `model` is not a Keras model or layer.
    """
    from lns_keras.layers.lns import is_lns_layer  # the layers may one day import this module

    _check_model(model)
    found = []
    for layer in model._flatten_layers(include_self=True):
        pairs = getattr(layer, "_quantized_weights", None)
        pairs = [p[:2] for p in pairs] if pairs else _QUANTIZED_KERNELS
        seen = set()
        for variable_name, quantizer_name in pairs:
            quantizer = getattr(layer, quantizer_name, None)
            variable = _variable(layer, variable_name)
            if variable is None or quantizer is None or id(variable) in seen:
                continue
            seen.add(id(variable))
            direct = not (variable_name == "kernel" and is_lns_layer(layer))
            found.append((layer, variable, quantizer, direct))
    return found


def _scale(layer, variable):
    """The layer's `kernel_scale` factor of `variable`, shaped to broadcast against it."""
    from lns_keras.layers.quantized import kernel_scale_factor

    kernel_scale = getattr(layer, "kernel_scale", None)
    if kernel_scale is None:
        return None
    channel_axes = getattr(layer, "_output_channel_axes", -1)
    scale = kernel_scale_factor(variable, kernel_scale, channel_axes)
    if len(scale.shape) == 0:
        return scale
    rank = len(variable.shape)
    axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
    kept = {axis % rank for axis in axes}
    shape = [variable.shape[a] if a in kept else 1 for a in range(rank)]
    return keras.ops.reshape(scale, shape)


def _quantized_value(layer, variable, quantizer, direct: bool) -> np.ndarray:
    # q(W), or q(Q̂) = q(f_θ(W)) for an LNS layer
    value = quantizer(variable) if direct else layer.binary_kernel()
    scale = _scale(layer, variable)
    if scale is not None:
        value = value * scale
    return keras.ops.convert_to_numpy(keras.ops.cast(value, variable.dtype))


def _quantized_values(model) -> dict[int, tuple[keras.Variable, np.ndarray]]:
    """`id(variable)` -> (variable, quantized value), for `model`'s quantized kernels.

    A variable that a scope made hold its quantized value already holds it.
    """
    values = {}
    for layer, variable, quantizer, direct in quantized_kernels(model):
        if id(variable) in _swapped:
            values[id(variable)] = (variable, keras.ops.convert_to_numpy(variable))
        else:
            value = _quantized_value(layer, variable, quantizer, direct)
            values[id(variable)] = (variable, value)
    return values


def get_quantized_weights(model) -> list[np.ndarray]:
    """`model.get_weights()` with every quantized kernel replaced by its quantized value.

    The quantized value of a kernel is $q(W) \\cdot s$: the layer's quantizer applied to
    its latent kernel (to $\\hat Q = f_\\theta(W)$ for an LNS layer), times the layer's
    `kernel_scale` $s$ when it has one (`None`, larq's behaviour, gives $q(W)$: ±1 for
    `ste_sign`).

    Args:
        model: A built Keras model or layer.

    Returns:
        A list of NumPy arrays, in the order and shapes of `model.get_weights()`.

    Raises:
        ValueError: If `model` is not a Keras model or layer.

    Example:
        ```python
        weights = lns_keras.context.get_quantized_weights(model)
        np.unique(weights[0])  # array([-1., 1.], dtype=float32) for a ste_sign kernel
        ```
    """
    quantized = _quantized_values(model)
    return [
        quantized[id(v)][1] if id(v) in quantized else keras.ops.convert_to_numpy(v)
        for v in model.weights
    ]


def _check_quantize(quantize) -> None:
    if not isinstance(quantize, bool | np.bool_):
        raise ValueError(f"`quantize` must be True or False, got quantize={quantize!r}.")


def _hold_quantized(model, only: set[int] | None = None) -> list[keras.Variable]:
    """Make `model`'s quantized kernels (those in `only`, if given) hold their quantized
    values; return those that changed."""
    # Every value first: a layer's quantized kernel and its scale both read the latent one.
    targets = [
        (variable, value)
        for key, (variable, value) in _quantized_values(model).items()
        if key not in _swapped and (only is None or key in only)
    ]
    for variable, value in targets:
        _swapped[id(variable)] = (variable, keras.ops.convert_to_numpy(variable))
        variable.assign(value)
    return [variable for variable, _ in targets]


def _hold_latent(variables: list[keras.Variable]) -> None:
    for variable in variables:
        entry = _swapped.pop(id(variable), None)
        if entry is not None:
            variable.assign(entry[1])


@contextlib.contextmanager
def quantized_scope(quantize: bool, model: keras.layers.Layer | None = None) -> Iterator[bool]:
    """A scope in which quantized weights read as their quantized values (larq's scope).

    With `model`, the scope makes every reader see the quantized values: inside
    `quantized_scope(True, model)` each quantized kernel of `model` *holds* its quantized
    value (see [`get_quantized_weights`][lns_keras.context.get_quantized_weights]), so
    `model.get_weights()`, `layer.get_weights()`, `model.save(...)` and
    `model.save_weights(...)` give the quantized weights; the latent values are put back
    when the scope ends, also on an exception. `quantized_scope(False, model)` inside it
    holds the latent values for its duration. Do not train inside a `True` scope: the
    latent values put back at its end would undo the updates.

    Without `model` the scope only sets the flag that `should_quantize()` reads (larq's
    `QuantizedVariable` read it; Keras 3 variables cannot), and changes no weights.

    Args:
        quantize: Whether to read quantized values (`True`) or latent ones (`False`).
        model: The Keras model or layer whose quantized kernels the scope applies to.

    Returns:
        A context manager; its `as` target is `quantize`.

    Raises:
        ValueError: If `quantize` is not a bool, or `model` is not a Keras model or layer.

    Example:
        ```python
        with lns_keras.context.quantized_scope(True, model):
            model.save("binary_model.keras")  # binarized kernels
            weights = model.get_weights()  # binarized kernels
        model.get_weights()  # the latent weights again
        ```
    """
    _check_quantize(quantize)
    if model is not None:
        _check_model(model)
    previous = should_quantize()
    _state.should_quantize = bool(quantize)
    changed: list[keras.Variable] = []
    try:
        if model is not None and quantize:
            changed = _hold_quantized(model)
        elif model is not None:
            changed = [v for _, v, _, _ in quantized_kernels(model) if id(v) in _swapped]
            _hold_latent(changed)
        yield quantize
    finally:
        if quantize:
            _hold_latent(changed)
        elif changed:
            _hold_quantized(model, only={id(v) for v in changed})
        _state.should_quantize = previous


# Training metrics in scope (larq's metrics_scope).
_AVAILABLE_METRICS = frozenset({"flip_ratio"})
_training_metrics: set[str] = set()


@contextlib.contextmanager
def metrics_scope(metrics: Iterable[str] = ()) -> Iterator[set[str]]:
    """A scope that names the training metrics to track (larq's `metrics_scope`).

    Inside it, `get_training_metrics()` holds `metrics` besides those of enclosing scopes.
    The only training metric is `"flip_ratio"` ([`FlipRatio`][lns_keras.metrics.FlipRatio]);
    layers that track it read this set when they are constructed.

    Args:
        metrics: Names of training metrics; only `"flip_ratio"` exists.

    Returns:
        A context manager; its `as` target is the live set of training metrics in scope.

    Raises:
        ValueError: If a name is not a known training metric.

    Example:
        ```python
        with lns_keras.context.metrics_scope(["flip_ratio"]):
            assert "flip_ratio" in lns_keras.context.get_training_metrics()
        ```
    """
    metrics = list(metrics)
    for metric in metrics:
        if metric not in _AVAILABLE_METRICS:
            raise ValueError(
                f"Unknown training metric {metric!r} in `metrics`; available: "
                f"{sorted(_AVAILABLE_METRICS)}."
            )
    backup = set(_training_metrics)
    _training_metrics.update(metrics)
    try:
        yield _training_metrics
    finally:
        _training_metrics.clear()
        _training_metrics.update(backup)


def get_training_metrics() -> set[str]:
    """The training metrics in scope: a live reference, as in larq.

    Returns:
        The set of metric names set by the enclosing `metrics_scope`s (empty outside).

    Raises:
        Nothing: It only returns the set.
    """
    return _training_metrics
