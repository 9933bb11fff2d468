"""Callbacks for binary training: the flip rate of binary weights (paper Fig. 3c) and the
reach of the classification gradient through the LNS layers' kernel quantizers."""

from __future__ import annotations

import keras
import numpy as np

from lns_keras import _autodiff, context
from lns_keras.layers.slb import is_slb_layer

__all__ = ["FlipRate", "GradientReach", "HyperparameterScheduler", "binary_signs", "gradient_reach"]


def binary_signs(model: keras.Model) -> dict[str, np.ndarray]:
    r"""The signs of every 1-bit kernel: `sign(W)` for plain layers, `sign(Q̂)` for LNS ones.

    Every quantized kernel whose quantizer has precision 1 counts, in every quantized
    layer ([`quantized_kernels`][lns_keras.context.quantized_kernels] finds them): the
    kernel of `QuantConv2D`, `QuantDense`, `QuantConv1D`, the transposed and locally
    connected layers, a `QuantDepthwiseConv2D`'s depthwise kernel, and both kernels of a
    separable convolution. A kernel's binary value is what its layer computes with
    (`binary_kernel()`: $q(\hat Q)$ for an LNS layer); its sign is `True` where that
    value is positive. A 1-bit SLB layer counts with its hard kernel (`hard_kernel()`:
    the value of the larger logit), the binary weight it folds to.

    Args:
        model: A Keras model or layer.

    Returns:
        A dict from layer name to a boolean array (`True` where the binary weight is +1).
        A layer with two binary kernels (a separable convolution) gives two entries,
        `"<layer>/depthwise_kernel"` and `"<layer>/pointwise_kernel"`.

    Raises:
        ValueError: If `model` is not a Keras model or layer.

    Example:
        ```python
        signs = lns_keras.callbacks.binary_signs(model)
        {name: s.shape for name, s in signs.items()}  # {"quant_conv2d": (3, 3, 16, 16), ...}
        ```
    """
    binary = [
        (layer, variable, quantizer, direct)
        for layer, variable, quantizer, direct in context.quantized_kernels(model)
        if getattr(quantizer, "precision", None) == 1
    ]
    per_layer: dict[int, int] = {}
    for layer, *_ in binary:
        per_layer[id(layer)] = per_layer.get(id(layer), 0) + 1
    signs = {}
    for layer, variable, quantizer, direct in binary:
        # An LNS layer's quantizer reads Q̂ = f_θ(W), which its binary_kernel() computes.
        value = quantizer(variable) if direct else layer.binary_kernel()
        name = layer.name
        if per_layer[id(layer)] > 1:
            name = f"{layer.name}/{variable.name}"
        signs[name] = keras.ops.convert_to_numpy(value) > 0
    for layer in model._flatten_layers(include_self=True):
        if is_slb_layer(layer) and layer.weight_bits == 1:
            signs[layer.name] = keras.ops.convert_to_numpy(layer.hard_kernel()) > 0
    return signs


def _rate(before: dict, after: dict, names) -> float:
    changed = sum(int(np.sum(before[n] != after[n])) for n in names)
    total = sum(after[n].size for n in names)
    return changed / total if total else 0.0


class FlipRate(keras.callbacks.Callback):
    """Log the fraction of binary weights whose sign changed, each epoch.

    Adds to the epoch logs (so `CSVLogger`, `TensorBoard` and `History` see them, when
    this callback comes before them in the list):

    - `flip_rate`: changed since the previous epoch (paper Fig. 3c), over all 1-bit kernels
      (those [`binary_signs`][lns_keras.callbacks.binary_signs] finds: every quantized
      layer's, the zoo layers' included);
    - `flip_rate_total`: changed since training began (or since `reference`);
    - `flip_rate/<layer>` and `flip_rate_total/<layer>`: the same per layer (per kernel
      for a separable convolution: `flip_rate/<layer>/depthwise_kernel`, ...).

    Args:
        reference: Signs to measure `flip_rate_total` against, e.g.
            `binary_signs(pretrained_baseline)`; default: the signs when training begins.
        per_layer: Whether to log the per-layer rates.

    Raises:
        ValueError: From NumPy, at the end of an epoch, if `reference` holds signs whose
            shape does not broadcast against the layer's binary kernel.

    Example:
        ```python
        model.fit(ds, epochs=10, callbacks=[lns_keras.callbacks.FlipRate(),
                                            keras.callbacks.CSVLogger("log.csv")])
        ```
    """

    def __init__(self, reference: dict[str, np.ndarray] | None = None, per_layer: bool = True):
        super().__init__()
        self.reference = reference
        self.per_layer = per_layer
        self._previous: dict[str, np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        self._previous = binary_signs(self.model)
        if self.reference is None:
            self.reference = dict(self._previous)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        current = binary_signs(self.model)
        names = [n for n in current if n in self._previous and n in self.reference]
        logs["flip_rate"] = _rate(self._previous, current, names)
        logs["flip_rate_total"] = _rate(self.reference, current, names)
        if self.per_layer:
            for name in names:
                logs[f"flip_rate/{name}"] = _rate(self._previous, current, [name])
                logs[f"flip_rate_total/{name}"] = _rate(self.reference, current, [name])
        self._previous = current


def _local_derivative(layer):
    """∂ q(a(z)) / ∂z elementwise at the mapping's raw output z, with `q` the layer's kernel
    quantizer (its pseudo-gradient) and `a` the mapping's output activation."""
    # The pseudo-gradients are custom gradients: read them by autodiff.
    z = layer.mapping.pre_activation(layer.kernel)
    return _autodiff.vjp(lambda z: layer.kernel_quantizer(layer.mapping.activate(z)), z)


def gradient_reach(model: keras.Model) -> dict[str, dict[str, float]]:
    """How much of the classification gradient reaches each LNS layer's mapping output.

    The classification loss reaches $\\hat Q$ only through the kernel quantizer's
    pseudo-gradient (and, with `mapping_activation="tanh"`, through `tanh`'). For each LNS
    layer this measures that local derivative at every entry of the mapping's output.

    Args:
        model: A model with LNS layers (others are ignored).

    Returns:
        For each LNS layer's name: `reach`, the fraction of entries whose local derivative
        is non-zero (the fraction of mapped weights the classification gradient reaches);
        `scale`, its mean magnitude; `outside`, the fraction of entries with
        $|\\hat Q| > 1$ (where `ste_sign`'s default window passes nothing).

    Raises:
        AttributeError: If `model` is not a Keras model.
    """
    from lns_keras.layers.lns import is_lns_layer

    stats = {}
    for layer in model._flatten_layers(include_self=False):
        if is_lns_layer(layer) and layer.built:
            derivative = np.abs(_local_derivative(layer))
            q_hat = keras.ops.convert_to_numpy(layer.binary_estimate())
            stats[layer.name] = {
                "reach": float(np.mean(derivative > 0)),
                "scale": float(np.mean(derivative)),
                "outside": float(np.mean(np.abs(q_hat) > 1)),
                "size": int(q_hat.size),
            }
    return stats


class GradientReach(keras.callbacks.Callback):
    """Log [`gradient_reach`][lns_keras.callbacks.gradient_reach] at the end of each epoch.

    Adds `gradient_reach` (over all LNS layers, weighted by size), `q_hat_outside` (the
    fraction of $|\\hat Q| > 1$) and, with `per_layer`, `gradient_reach/<layer>` to the
    epoch logs. Models without LNS layers log nothing.

    Args:
        per_layer: Whether to log the per-layer fractions too.

    Raises:
        AttributeError: At the end of an epoch, if the callback is not attached to a
            Keras model.

    Example:
        ```python
        lns_model.fit(ds, epochs=3, callbacks=[lns_keras.callbacks.GradientReach(),
                                               keras.callbacks.CSVLogger("log.csv")])
        ```
    """

    def __init__(self, per_layer: bool = True):
        super().__init__()
        self.per_layer = per_layer

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        stats = gradient_reach(self.model)
        if not stats:
            return
        total = sum(s["size"] for s in stats.values())
        logs["gradient_reach"] = sum(s["reach"] * s["size"] for s in stats.values()) / total
        logs["q_hat_outside"] = sum(s["outside"] * s["size"] for s in stats.values()) / total
        if self.per_layer:
            for name, s in stats.items():
                logs[f"gradient_reach/{name}"] = s["reach"]


def _takes_current_value(schedule) -> bool:
    """Whether `schedule` takes `(t, current_value)` rather than `(t)`."""
    import inspect

    try:
        parameters = inspect.signature(schedule).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


# Keras 2's names of Keras 3 hyperparameters, as larq's schedules use them.
_KERAS2_HYPERPARAMETERS = {"lr": "learning_rate"}


class HyperparameterScheduler(keras.callbacks.Callback):
    """Set an optimizer's hyperparameter from a schedule, each epoch or each step (larq's).

    At the start of epoch $e$ (or of each training step, with `update_freq="step"`) the
    hyperparameter becomes `schedule(t)`, with $t = e$ counted from 0 (or $t$ = the
    optimizer's `iterations`, the global step). A schedule that takes two arguments gets
    the current value too: `schedule(t, current_value)`. At the end of each epoch the
    value is added to the logs as `log_name`, so that `History`, `CSVLogger` and
    `TensorBoard` record it (place this callback before them).

    Only hyperparameters held in variables can change during a compiled `fit`:
    `learning_rate` of the Keras optimizers (when it is a number, not a schedule), and
    [`Bop`][lns_keras.optimizers.Bop]'s `gamma` and `threshold`. Others (Adam's `beta_1`,
    a Python number) are compiled into the training step; asking for one is an error.
    `"lr"`, the Keras 2 name larq's examples use, means `learning_rate` (Keras 3 dropped
    the alias); the value is logged as `learning_rate`.

    Args:
        schedule: A function of the epoch (or step) index, or of the index and the
            current value, that returns the new value.
        hyperparameter: The attribute name of the hyperparameter (`"gamma"`,
            `"threshold"`, `"learning_rate"`, or its Keras 2 name `"lr"`).
        optimizer: The optimizer that holds it, e.g. one of a `CaseOptimizer`'s
            `optimizers`; `None`: the model's optimizer.
        update_freq: `"epoch"` or `"step"`.
        verbose: 0: quiet; 1: print each change.
        log_name: The name it is logged under; `None`: `hyperparameter`. Use it when
            several schedules set the same hyperparameter of different optimizers.

    Raises:
        ValueError: If `schedule` is not callable, `hyperparameter` or `log_name` is not a
            string, `update_freq` is neither `"epoch"` nor `"step"`, `verbose` is not an
            integer; when training starts, if the optimizer has no such hyperparameter or
            does not hold it in a variable.

    Example:
        ```python
        bop = lns_keras.optimizers.Bop(threshold=1e-6, gamma=1e-3)
        optimizer = lns_keras.optimizers.CaseOptimizer(
            (lns_keras.optimizers.Bop.is_binary_variable, bop),
            default_optimizer=keras.optimizers.Adam(0.01),
        )
        gamma_decay = lns_keras.callbacks.HyperparameterScheduler(
            lambda epoch: 1e-3 * 0.1 ** (epoch // 30), "gamma", bop
        )
        model.fit(ds, epochs=90, callbacks=[gamma_decay])
        ```
    """

    def __init__(
        self,
        schedule,
        hyperparameter: str,
        optimizer=None,
        update_freq: str = "epoch",
        verbose: int = 0,
        log_name: str | None = None,
    ):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"`schedule` must be callable, got schedule={schedule!r}.")
        if not isinstance(hyperparameter, str):
            raise ValueError(
                f"`hyperparameter` must be an attribute name, got hyperparameter={hyperparameter!r}."
            )
        if update_freq not in ("epoch", "step"):
            raise ValueError(
                f"`update_freq` must be 'epoch' or 'step', got update_freq={update_freq!r}."
            )
        if isinstance(verbose, bool) or not isinstance(verbose, int):
            raise ValueError(f"`verbose` must be an integer, got verbose={verbose!r}.")
        if log_name is not None and not isinstance(log_name, str):
            raise ValueError(f"`log_name` must be a string or None, got log_name={log_name!r}.")
        self.schedule = schedule
        self.hyperparameter = _KERAS2_HYPERPARAMETERS.get(hyperparameter, hyperparameter)
        self.optimizer = optimizer
        self.update_freq = update_freq
        self.verbose = verbose
        self.log_name = log_name or self.hyperparameter

    def set_model(self, model) -> None:
        super().set_model(model)
        if self.optimizer is None:
            self.optimizer = model.optimizer
        value = getattr(self.optimizer, self.hyperparameter, None)
        if value is None:
            raise ValueError(
                f"Optimizer {getattr(self.optimizer, 'name', self.optimizer)!r} has no "
                f"hyperparameter {self.hyperparameter!r} (`hyperparameter`)."
            )
        if not isinstance(value, keras.Variable):
            raise ValueError(
                f"Optimizer {self.optimizer.name!r} does not hold {self.hyperparameter!r} "
                f"in a variable (it is {value!r}), so a compiled training step would not "
                "see a change. For a CaseOptimizer, pass one of its `optimizers`."
            )

    def _variable(self):
        return getattr(self.optimizer, self.hyperparameter)

    def set_hyperparameter(self, t: int):
        """Set the hyperparameter to the schedule's value at `t`.

        Args:
            t: The epoch (from 0) or the global step.

        Returns:
            The variable holding the hyperparameter.

        Raises:
            ValueError: From the optimizer, if it rejects the value (e.g. a negative
                `gamma`).
        """
        variable = self._variable()
        if _takes_current_value(self.schedule):
            value = self.schedule(t, float(keras.ops.convert_to_numpy(variable)))
        else:
            value = self.schedule(t)
        prop = getattr(type(self.optimizer), self.hyperparameter, None)
        if isinstance(prop, property) and prop.fset is not None:
            setattr(self.optimizer, self.hyperparameter, value)  # the optimizer checks it
        else:
            variable.assign(value)
        return variable

    def _value(self) -> float:
        return float(keras.ops.convert_to_numpy(self._variable()))

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq != "step":
            return
        # The global step, not `batch`, which restarts each epoch.
        step = int(keras.ops.convert_to_numpy(self.optimizer.iterations))
        self.set_hyperparameter(step)
        if self.verbose > 0:
            print(f"Batch {step}: {self.log_name} is now {self._value()}.")

    def on_epoch_begin(self, epoch, logs=None):
        if self.update_freq != "epoch":
            return
        self.set_hyperparameter(epoch)
        if self.verbose > 0:
            print(f"Epoch {epoch}: {self.log_name} is now {self._value()}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self._value()
