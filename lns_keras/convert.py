"""The LNS pipeline around a baseline BNN: convert, warm start, fold (paper §4.1).

1. `to_lns(baseline)`: the same network with every binary `QuantConv2D` / `QuantDense`
   replaced by its LNS twin, every weight copied; the mapping networks are new.
2. `warm_start(lns_model, data, ...)`: train only the mappings, everything else frozen,
   until `sign(Q̂)` agrees with `sign(W)`.
3. Fine-tune end to end with `model.fit` (the layers add the noisy-supervision loss).
4. `fold(lns_model)`: a plain binary model holding `sign(Q̂)` and its scale; the
   mappings are gone and inference costs what the baseline's does.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from lns_keras import _checks
from lns_keras.layers.lns import LNSQuantConv2D, LNSQuantDense, is_lns_layer
from lns_keras.layers.quantized import (
    QuantConv2D,
    QuantDense,
    _QuantizedMixin,
    kernel_scale_factor,
)

__all__ = ["fold", "is_binary_layer", "sign_agreement", "to_lns", "warm_start"]

_LNS_KEYS = (
    "alpha",
    "rho",
    "loss_reduction",
    "noisy_labels",
    "mapping_width",
    "mapping_activation",
)


def is_binary_layer(layer) -> bool:
    """Whether `layer` is a quantized layer with a 1-bit input and 1-bit kernels.

    Every quantized layer of lns_keras counts: `QuantConv2D`, `QuantDense`, the layers
    of [`lns_keras.layers.zoo`][lns_keras.layers.zoo] (`QuantConv1D`,
    `QuantDepthwiseConv2D`, `QuantSeparableConv2D`, ...) and the LNS layers. Its
    `input_quantizer` and each weight quantizer (`kernel_quantizer`; a depthwise
    layer's `depthwise_quantizer`; a separable layer's `depthwise_quantizer` and
    `pointwise_quantizer`) must have precision 1. Only the binary `QuantConv2D` and
    `QuantDense` have LNS twins: those are what [`to_lns`][lns_keras.convert.to_lns]
    converts.

    Args:
        layer: Any object.

    Returns:
        `True` for a quantized layer whose input and weight quantizers all have
        precision 1, else `False`.

    Raises:
        Nothing: Any object is accepted; everything else gives `False`.

    Example:
        ```python
        layer = lns_keras.QuantConv1D(8, 3, input_quantizer="ste_sign",
                                      kernel_quantizer="ste_sign")
        lns_keras.convert.is_binary_layer(layer)  # True
        ```
    """
    weights = getattr(layer, "_quantized_weights", None)
    if not isinstance(layer, _QuantizedMixin) or not weights:
        return False
    quantizers = [layer.input_quantizer, *(getattr(layer, q) for _, q, _ in weights)]
    return all(getattr(quantizer, "precision", None) == 1 for quantizer in quantizers)


def _has_lns_twin(layer) -> bool:
    """A `QuantConv2D` or `QuantDense` (not a zoo layer), not already an LNS layer."""
    return isinstance(layer, QuantConv2D | QuantDense) and not is_lns_layer(layer)


def _check_model(model) -> None:
    """`model` can be rebuilt layer by layer: a built functional or Sequential model."""
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"`model` must be a built keras.Model, got {model!r}.")
    # A functional model is a keras.Model that is also a keras.Function (its graph of
    # layers); a subclassed model has only its Python `call`, which cannot be rewired.
    if not isinstance(model, keras.Sequential | keras.Function):
        raise ValueError(
            "Only functional and Sequential models can be converted, got `model` "
            f"{model.name!r} of the subclassed class {type(model).__name__}; build the "
            "network with keras.Input and layer calls, or with keras.Sequential."
        )


def _clone(model, clone_function):
    # keras.models.clone_model compiles the clone of a compiled model with a copy of its
    # optimizer, built on the clone's new variables (a CaseOptimizer then warns that its
    # saved routing does not fit them). The clone is returned uncompiled instead.
    compiled = model.compiled
    model.compiled = False
    try:
        clone = keras.models.clone_model(model, clone_function=clone_function)
    finally:
        model.compiled = compiled
    for old, new in zip(model.layers, clone.layers):
        if type(old) is type(new):
            new.set_weights(old.get_weights())
    return clone


def to_lns(model: keras.Model, *, include_dense: bool = True, **lns_kwargs: Any) -> keras.Model:
    """Clone a trained baseline BNN with every binary layer replaced by its LNS twin.

    Binary `QuantConv2D` and `QuantDense` layers (1-bit input and kernel quantizers)
    become `LNSQuantConv2D` / `LNSQuantDense` with the same configuration plus
    `lns_kwargs`; their kernels and biases are copied, their mappings freshly
    initialised. Every other layer is cloned with its weights. Full-precision layers
    (the first conv, the last dense, the down-sampling shortcuts) stay as they are.

    The binary layers of [`lns_keras.layers.zoo`][lns_keras.layers.zoo]
    (`QuantConv1D`, `QuantDepthwiseConv2D`, `QuantSeparableConv2D`, ...) have no LNS
    twin: the mapping network reads a `(k, k, c_in)` filter of a 2D convolution or a
    column of a dense kernel. They are cloned as they are, binary, with a warning that
    names them; a model whose only binary layers are such layers is refused.

    Args:
        model: A built baseline model.
        include_dense: Whether binary `QuantDense` layers are converted too. A dense
            kernel `(c, n)` gets a mapping of about `8c²` weights, so for very wide dense
            layers (AlexNet's fc6/fc7, c = 9216 and 4096: ~0.8 G weights) converting only
            the convolutions is the practical choice.
        **lns_kwargs: LNS arguments for every converted layer (`alpha`, `rho`,
            `loss_reduction`, `noisy_labels`, `mapping_width`, `mapping_activation`,
            `kernel_scale`, `kernel_quantizer`). The baseline's `kernel_quantizer` is not
            carried over: it acted on latent weights in $[-1, 1]$, the LNS layer's acts on
            the unbounded Q̂, so the LNS default (`SteSign(clip_value=None)`)
            applies unless `kernel_quantizer` is given.

    Returns:
        A new, uncompiled model.

    Raises:
        ValueError: If `model` is not a built `keras.Model`, is a subclassed model (only
            functional and Sequential models can be converted), has no binary
            `QuantConv2D` / `QuantDense` to convert (the message names its binary layers
            that have no LNS twin, if any), or an LNS argument is unknown or invalid.

    Warns:
        UserWarning: Naming the binary layers left as they are because they have no LNS
            twin (the zoo layers); not for the binary `QuantDense` layers that
            `include_dense=False` leaves out, which the caller asked for.

    Example:
        ```python
        lns_model = lns_keras.convert.to_lns(baseline, alpha=1.0, rho=0.005)
        ```
    """
    _check_model(model)

    def convertible(layer) -> bool:
        if not is_binary_layer(layer) or not _has_lns_twin(layer):
            return False
        return include_dense or isinstance(layer, QuantConv2D)

    layers = _all_layers(model)
    without_twin = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in layers
        if is_binary_layer(layer) and not is_lns_layer(layer) and not _has_lns_twin(layer)
    ]
    if not any(convertible(layer) for layer in layers):
        others = (
            f"; its binary layers {without_twin} have no LNS twin (only QuantConv2D and "
            "QuantDense do)"
            if without_twin
            else ""
        )
        raise ValueError(
            f"`model` {model.name!r} has no binary QuantConv2D/QuantDense to convert{others}."
        )
    known = [*_LNS_KEYS, "kernel_scale", "kernel_quantizer"]
    unknown = set(lns_kwargs) - set(known)
    if unknown:
        raise ValueError(f"Unknown LNS arguments {sorted(unknown)}; known: {known}.")
    LNSQuantDense(1, **lns_kwargs)  # validates the arguments with a clear ValueError

    def clone_function(layer):
        if not convertible(layer):
            return layer.__class__.from_config(layer.get_config())
        cls = LNSQuantConv2D if isinstance(layer, QuantConv2D) else LNSQuantDense
        # The baseline's kernel quantizer acted on W in [-1, 1]; the LNS layer's acts on
        # the unbounded Q̂ and takes the LNS default unless `lns_kwargs` name one.
        return cls.from_config({**layer.get_config(), "kernel_quantizer": None, **lns_kwargs})

    if without_twin:
        warnings.warn(
            f"to_lns leaves the binary layers {without_twin} of `model` {model.name!r} as "
            "they are (binary, weights copied): only QuantConv2D and QuantDense have LNS "
            "twins.",
            stacklevel=2,
        )
    clone = _clone(model, clone_function)
    for old, new in zip(model.layers, clone.layers):
        if is_lns_layer(new) and not is_lns_layer(old):
            # Copies: under JAX, assigning one variable to another shares its buffer,
            # which the next compiled step of either model may donate (free).
            new.kernel.assign(keras.ops.copy(old.kernel))
            if old.use_bias:
                new.bias.assign(keras.ops.copy(old.bias))
            new.snapshot_labels()
    return clone


def fold(model: keras.Model) -> keras.Model:
    """Replace every LNS layer by a plain binary layer holding `sign(Q̂)` and its scale.

    The folded layer's kernel is `sign(Q̂) · s` with the LNS layer's scale `s`, so the
    folded layer's own `kernel_quantizer` and `kernel_scale` give back exactly
    `sign(Q̂)` and `s`. Predictions equal the LNS model's in inference. Every other
    layer, binary ones included (`QuantConv2D` layers left binary, the zoo layers that
    [`to_lns`][lns_keras.convert.to_lns] left as they are), is cloned with its weights.

    Args:
        model: A built model with LNS layers.

    Returns:
        A new, uncompiled model without mapping networks.

    Raises:
        ValueError: If `model` is not a built `keras.Model`, is a subclassed model (only
            functional and Sequential models can be converted), has no LNS layer, or a
            layer's `kernel_quantizer` does not produce ±1 values.

    Example:
        ```python
        folded = lns_keras.convert.fold(lns_model)
        ```
    """
    _check_model(model)
    if not any(is_lns_layer(layer) for layer in _all_layers(model)):
        raise ValueError(f"`model` {model.name!r} has no LNS layer to fold.")

    def clone_function(layer):
        config = layer.get_config()
        if not is_lns_layer(layer):
            return layer.__class__.from_config(config)
        for key in _LNS_KEYS:
            config.pop(key)
        # The folded kernel is ±s: plain `ste_sign` gives back ±1, as in the baseline.
        config["kernel_quantizer"] = "ste_sign"
        cls = QuantConv2D if isinstance(layer, LNSQuantConv2D) else QuantDense
        return cls.from_config(config)

    clone = _clone(model, clone_function)
    for old, new in zip(model.layers, clone.layers):
        if not is_lns_layer(old):
            continue
        binary = keras.ops.convert_to_numpy(old.binary_kernel())
        if not np.all(np.abs(binary) == 1):
            raise ValueError(
                f"Layer {old.name!r}: fold needs a sign kernel_quantizer, got "
                f"{type(old.kernel_quantizer).__name__} with values other than ±1."
            )
        scale = kernel_scale_factor(old.kernel, old.kernel_scale)
        new.kernel.assign(binary if scale is None else binary * keras.ops.convert_to_numpy(scale))
        if old.use_bias:
            new.bias.assign(keras.ops.copy(old.bias))  # a copy, as in to_lns
    return clone


def _all_layers(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False)]


def sign_agreement(model: keras.Model) -> float:
    """Fraction of binary weights where `sign(Q̂)` equals `sign(W)`, over all LNS layers.

    Args:
        model: A model with LNS layers.

    Returns:
        A number in [0, 1].

    Raises:
        ValueError: If the model has no LNS layer.
        AttributeError: If `model` is not a Keras model.
    """
    agree = total = 0
    for layer in _all_layers(model):
        if is_lns_layer(layer):
            q_hat = keras.ops.convert_to_numpy(layer.binary_estimate())
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            agree += int(np.sum((q_hat >= 0) == (kernel >= 0)))
            total += kernel.size
    if total == 0:
        raise ValueError(f"`model` {model.name!r} has no LNS layer.")
    return agree / total


def warm_start(
    model: keras.Model,
    data,
    *,
    epochs: int,
    loss,
    optimizer: keras.optimizers.Optimizer | str = "adam",
    metrics: list | None = None,
    alpha: float | None = 1.0,
    loss_reduction: str | None = "sum",
    jit_compile: bool | str = "auto",
    **fit_kwargs: Any,
) -> keras.callbacks.History:
    """Warm start (paper §4.1): train only the mapping networks, everything else frozen.

    Every layer but the LNS layers' mappings is frozen (batch normalization therefore
    runs in inference mode), the model is compiled with `loss` and `optimizer`, and
    fitted on `data` for `epochs`. The training loss is the classification loss plus each
    LNS layer's `alpha · ℓ̃_i`; `alpha` and `loss_reduction` here override the layers'
    own (so that an α = 0 arm still starts from a mapping that reproduces `sign(W)`);
    `None` keeps theirs. Trainability and the layers' `alpha` and `loss_reduction` are
    restored afterwards; compile the model again before fine-tuning.

    Args:
        model: A model with LNS layers (from [`to_lns`][lns_keras.convert.to_lns]).
        data: What `model.fit` takes as `x` (a `tf.data.Dataset`, arrays, ...).
        epochs: Number of warm-start epochs, ≥ 0.
        loss: The classification loss.
        optimizer: Optimizer for the mapping parameters.
        metrics: Metrics to compile with.
        alpha: Weight of the noisy-supervision loss during warm start, or `None`.
        loss_reduction: Reduction of the noisy-supervision loss during warm start:
            `"sum"` (Eq. 17, as in Algorithm 1; default), `"mean"` (Eq. 16) or `None`
            for the layers' own. With the mean, each weight's supervision is divided by
            the layer's size and the classification loss's noise outweighs it: measured
            on a Fashion-MNIST BNN, one epoch of Adam(1e-3) took agreement from 98.3% to
            95.4% with the mean and to 99.3% with the sum
            (`benchmarks/warm_start_agreement.py`).
        jit_compile: Passed to `model.compile`.
        **fit_kwargs: Passed to `model.fit` (`y`, `batch_size`, `callbacks`, ...).

    Returns:
        The `History` of the warm-start fit.

    Raises:
        ValueError: If `epochs` is not an integer ≥ 0, `alpha` is neither `None` nor a
            finite real number ≥ 0, `loss_reduction` is unknown, or the model has no LNS
            layer; from Keras, e.g. if `data` does not fit the model. Whatever `compile`
            or `fit` raise propagates after the trainability and the layers' `alpha` and
            `loss_reduction` are restored.

    Example:
        ```python
        lns_keras.convert.warm_start(lns_model, train_ds, epochs=2,
                                     loss="sparse_categorical_crossentropy")
        lns_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        ```
    """
    epochs = _checks.integer("epochs", epochs, minimum=0)
    if alpha is not None:
        alpha = _checks.nonnegative_real("alpha", alpha)
    if loss_reduction not in ("mean", "sum", None):
        raise ValueError(
            f"`loss_reduction` must be 'mean', 'sum' or None, got loss_reduction={loss_reduction!r}."
        )
    lns_layers = [layer for layer in _all_layers(model) if is_lns_layer(layer)]
    if not lns_layers:
        raise ValueError(f"`model` {model.name!r} has no LNS layer to warm start.")

    layer_flags = {id(layer): layer.trainable for layer in _all_layers(model)}
    saved_alpha = {id(layer): layer.alpha for layer in lns_layers}
    saved_reduction = {id(layer): layer.loss_reduction for layer in lns_layers}
    variable_flags = {}
    try:
        for layer in _all_layers(model):
            if not is_lns_layer(layer) and not _inside_lns(layer, lns_layers):
                layer.trainable = False
        for layer in lns_layers:
            for variable in layer._trainable_variables:
                variable_flags[id(variable)] = (variable, variable.trainable)
                variable.trainable = False
            if alpha is not None:
                layer.alpha = alpha
            if loss_reduction is not None:
                layer.loss_reduction = loss_reduction
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
        return model.fit(data, epochs=epochs, **fit_kwargs)
    finally:
        for layer in _all_layers(model):
            layer.trainable = layer_flags[id(layer)]
        for variable, flag in variable_flags.values():
            variable.trainable = flag
        for layer in lns_layers:
            layer.alpha = saved_alpha[id(layer)]
            layer.loss_reduction = saved_reduction[id(layer)]


def _inside_lns(layer, lns_layers) -> bool:
    return any(layer is lns.mapping for lns in lns_layers)
