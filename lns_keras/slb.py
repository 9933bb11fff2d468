"""SLB around its layers: the temperature schedule, batch-norm recalibration, folding.

The layers ([`SLBQuantConv2D`][lns_keras.SLBQuantConv2D],
[`SLBQuantDense`][lns_keras.SLBQuantDense]) hold the searched distributions; this
module holds what the training recipe of SLB does to them (specification: `slb.md`):

1. [`SLBTemperatureScheduler`][lns_keras.slb.SLBTemperatureScheduler] raises the inverse
   temperature $T$ once per epoch, exponentially, inside a window of the epochs, then
   switches every SLB layer to its hard kernel (slb.md §3.3, §2.3).
2. [`BatchNormRecalibration`][lns_keras.slb.BatchNormRecalibration] re-estimates every
   batch normalization's moving statistics with the hard kernels after each epoch,
   before the validation (slb.md §4.4-4.5).
3. [`fold`][lns_keras.slb.fold] replaces each SLB layer by a plain `QuantConv2D` /
   `QuantDense` holding its hard kernel, for export.

```python
epochs = 100
model.fit(
    train_ds, epochs=epochs, validation_data=val_ds,
    callbacks=[
        lns_keras.slb.SLBTemperatureScheduler(t0=1.0, factor=1.2, start=0.2, end=0.6),
        lns_keras.slb.BatchNormRecalibration(train_ds, steps=100, start=0.2),
    ],
)
folded = lns_keras.slb.fold(model)
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import keras
import numpy as np

from lns_keras import kbit
from lns_keras.layers.quantized import QuantConv2D, QuantDense
from lns_keras.layers.slb import SLBQuantConv2D, is_slb_layer

__all__ = [
    "BatchNormRecalibration",
    "SLBTemperatureScheduler",
    "fold",
    "recalibrate_batch_norm",
    "schedule_window",
    "scheduled_temperature",
    "slb_layers",
]

# A fraction of the epochs is floored after this much slack, so that 100 × 0.29 is 29
# and not the 28.999… of floating point.
_FLOOR_SLACK = 1e-9


def slb_layers(model) -> list:
    """Every SLB layer of `model`, nested models and layers included.

    Args:
        model: A Keras model or layer.

    Returns:
        The SLB layers, in the order Keras lists them.

    Raises:
        AttributeError: If `model` is not a Keras model or layer.
    """
    return [layer for layer in model._flatten_layers(include_self=False) if is_slb_layer(layer)]


def _check_fraction(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(
            f"`{name}` must be a fraction of the epochs in [0, 1], got {name}={value!r}."
        )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}.")


def _check_schedule(t0, factor, start, end) -> None:
    if (
        isinstance(t0, bool)
        or not isinstance(t0, int | float)
        or not (math.isfinite(t0) and t0 > 0)
    ):
        raise ValueError(f"`t0` must be a positive finite temperature, got t0={t0!r}.")
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not (math.isfinite(factor) and factor >= 1)
    ):
        raise ValueError(
            f"`factor` must be a finite number >= 1 (the inverse temperature grows), got "
            f"factor={factor!r}."
        )
    _check_fraction("start", start)
    _check_fraction("end", end)
    if start > end:
        raise ValueError(f"`start` must not exceed `end`, got start={start!r} and end={end!r}.")


def schedule_window(epochs: int, start: float, end: float) -> tuple[int, int]:
    """The epochs $E_s = \\lfloor E\\,t_{start} \\rfloor$ and $E_e = \\lfloor E\\,t_{end} \\rfloor$.

    Args:
        epochs: The number of epochs $E$, ≥ 1.
        start: $t_{start}$, a fraction of the epochs in $[0, 1]$.
        end: $t_{end}$, a fraction in $[start, 1]$.

    Returns:
        `(E_s, E_e)`.

    Raises:
        ValueError: If `epochs` is not a positive integer or a fraction is out of range.
    """
    _check_positive_int("epochs", epochs)
    _check_fraction("start", start)
    _check_fraction("end", end)
    if start > end:
        raise ValueError(f"`start` must not exceed `end`, got start={start!r} and end={end!r}.")
    return math.floor(epochs * start + _FLOOR_SLACK), math.floor(epochs * end + _FLOOR_SLACK)


def scheduled_temperature(
    epoch: float,
    epochs: int,
    *,
    t0: float = 1.0,
    factor: float = 1.2,
    start: float = 0.2,
    end: float = 0.6,
) -> float:
    """The inverse temperature of epoch `epoch` (1-based), the rule of slb.md §3.3.

    $$T_e = \\begin{cases} T_0 & e \\le E_s \\\\ T_0 \\cdot f^{\\,\\min(e, E_e) - E_s} &
    e > E_s \\end{cases}$$

    with $E_s$, $E_e$ from [`schedule_window`][lns_keras.slb.schedule_window]: constant
    before the window, growing by `factor` each epoch inside it, constant after it. A
    fractional `epoch` (the per-step schedule) gives the same formula with a fractional
    exponent.

    Args:
        epoch: The 1-based epoch $e$ (≥ 1).
        epochs: The number of epochs $E$.
        t0: $T_0 > 0$.
        factor: $f \\ge 1$.
        start: $t_{start}$.
        end: $t_{end}$.

    Returns:
        $T_e$.

    Raises:
        ValueError: For a `t0`, `factor`, `start`, `end` or `epochs` out of range.

    Example:
        ```python
        # Bi-Real ResNet-18 on ImageNet (slb.md §3.4): 1.05 ** 120 at the end
        lns_keras.slb.scheduled_temperature(240, 240, factor=1.05, start=0.4, end=0.9)
        ```
    """
    _check_schedule(t0, factor, start, end)
    first, last = schedule_window(epochs, start, end)
    exponent = min(max(epoch - first, 0), last - first)
    return float(t0 * factor**exponent)


class SLBTemperatureScheduler(keras.callbacks.Callback):
    """Raise every SLB layer's inverse temperature, then switch the layers to hard.

    At the beginning of each epoch $e$ (1-based, counted from the start of training even
    when resuming with `initial_epoch`), each SLB layer gets
    $T_e$ = [`scheduled_temperature`][lns_keras.slb.scheduled_temperature]$(e)$, and from
    epoch $E_e$ on its `hard` flag is set, so training continues with the hard kernels:
    the logits get no gradient and the rest of the network adapts to the discrete
    weights (slb.md §2.3, the MindSpore port; whether the paper does so is not known,
    hence `hard_at_end`). The epoch's $T$ is added to the epoch logs as `temperature`.

    The paper changes the temperature at every iteration, by a formula nobody published;
    the released recipes change it once per epoch (slb.md §3.2). With `per_step=True`
    the exponent grows linearly over each epoch's steps instead, equal to the per-epoch
    value at each epoch's first step (a choice of this library).

    Defaults are the MindSpore port's ($T_0 = 1$, $f = 1.2$, $t_{start} = 0.2$,
    $t_{end} = 0.6$). The authors' recipes: VGG-Small on CIFAR-10 `start=0.3, end=0.9`,
    ResNet-20 `start=0.4, end=0.9`, both with $f$ from 1.03 (W1) to 1.06 (W4/A32);
    Bi-Real ResNet-18 on ImageNet `factor=1.05, start=0.4, end=0.9` (slb.md §3.4).

    Args:
        t0: The initial inverse temperature $T_0 > 0$.
        factor: The growth factor $f \\ge 1$ per epoch.
        start: $t_{start}$: the window begins after epoch $\\lfloor E\\,t_{start}\\rfloor$.
        end: $t_{end}$: the window ends at epoch $\\lfloor E\\,t_{end}\\rfloor$.
        epochs: $E$; `None` (default): the `epochs` given to `fit`.
        per_step: Whether to update $T$ at every training step.
        hard_at_end: Whether to switch the layers to hard from epoch $E_e$ on.

    Raises:
        ValueError: At construction, for `t0` ≤ 0, `factor` < 1, fractions outside
            $[0, 1]$ or `start > end`, or `epochs` that is not a positive integer; when
            training begins, if the model has no SLB layer, or if `per_step=True` and
            the number of steps per epoch is unknown (pass `steps_per_epoch` to `fit`).

    Example:
        ```python
        scheduler = lns_keras.slb.SLBTemperatureScheduler(
            t0=1.0, factor=1.05, start=0.4, end=0.9)
        model.fit(train_ds, epochs=240, callbacks=[scheduler])
        ```
    """

    def __init__(
        self,
        t0: float = 1.0,
        factor: float = 1.2,
        start: float = 0.2,
        end: float = 0.6,
        *,
        epochs: int | None = None,
        per_step: bool = False,
        hard_at_end: bool = True,
    ):
        super().__init__()
        _check_schedule(t0, factor, start, end)
        if epochs is not None:
            _check_positive_int("epochs", epochs)
        self.t0 = t0
        self.factor = factor
        self.start = start
        self.end = end
        self.epochs = epochs
        self.per_step = per_step
        self.hard_at_end = hard_at_end
        self._layers: list = []
        self._epoch = 1
        self._temperature = float(t0)

    def _total_epochs(self) -> int | None:
        return self.epochs or (self.params or {}).get("epochs")

    def temperature(self, epoch: float) -> float:
        """$T$ at the 1-based `epoch` of this schedule (fractional with `per_step`).

        Args:
            epoch: The 1-based epoch.

        Returns:
            The inverse temperature.

        Raises:
            ValueError: If the number of epochs is not known yet (pass `epochs`, or call
                this once training has begun).
        """
        total = self._total_epochs()
        if total is None:
            raise ValueError("The number of epochs is unknown: pass `epochs`.")
        return scheduled_temperature(
            epoch, total, t0=self.t0, factor=self.factor, start=self.start, end=self.end
        )

    def _apply(self, temperature: float) -> None:
        self._temperature = temperature
        for layer in self._layers:
            layer.set_temperature(temperature)

    def on_train_begin(self, logs=None):
        self._layers = slb_layers(self.model)
        if not self._layers:
            raise ValueError(f"`model` {self.model.name!r} has no SLB layer to schedule.")
        if self.per_step and not (self.params or {}).get("steps"):
            raise ValueError(
                "SLBTemperatureScheduler(per_step=True) needs the number of steps per "
                "epoch: pass `steps_per_epoch` to `fit`."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1  # Keras counts from 0, slb.md §3.3 from 1
        self._apply(self.temperature(self._epoch))
        if self.hard_at_end:
            _, last = schedule_window(self._total_epochs(), self.start, self.end)
            for layer in self._layers:
                layer.hard = self._epoch >= last

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            self._apply(self.temperature(self._epoch + batch / self.params["steps"]))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = self._temperature


def _batch_inputs(batch):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(batch if isinstance(batch, tuple) else (batch,))
    return x


def recalibrate_batch_norm(model: keras.Model, data: Iterable, steps: int | None = None) -> int:
    """Re-estimate every batch normalization's moving statistics with the hard kernels.

    slb.md §4.5: every SLB layer computes with its hard kernel; each trainable
    `BatchNormalization` layer forgets its moving statistics and takes the average,
    over `steps` batches of `data` run forward in training mode without gradients, of
    the batch means and variances it sees. A single batch gives exactly that batch's
    statistics. Frozen (`trainable=False`) and renormalizing layers are left as they
    are. The SLB layers' `hard` flags and every momentum are restored afterwards.

    The forward pass runs in training mode, as the released code's calibration does
    (slb.md §4.4): a dropout layer, if the model has one, drops.

    Args:
        model: A built model.
        data: A re-iterable source of training batches: a `tf.data.Dataset`, a list of
            arrays, ...; each batch is the inputs or an `(x, y)` / `(x, y, w)` tuple.
        steps: How many batches to use; `None`: all of `data` (which must be finite).

    Returns:
        The number of batches used.

    Raises:
        ValueError: If `steps` is not a positive integer or `None`, or `data` gave no
            batch.

    Example:
        ```python
        lns_keras.slb.recalibrate_batch_norm(model, train_ds, steps=100)
        ```
    """
    if steps is not None:
        _check_positive_int("steps", steps)
    layers = list(model._flatten_layers(include_self=False))
    batch_norms = [
        layer
        for layer in layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.trainable
        and not layer.renorm
    ]
    slb = [layer for layer in layers if is_slb_layer(layer)]
    saved_hard = [layer.hard for layer in slb]
    saved_momentum = [layer.momentum for layer in batch_norms]
    sums = [
        [np.zeros(bn.moving_mean.shape), np.zeros(bn.moving_variance.shape)] for bn in batch_norms
    ]
    used = 0
    try:
        for layer in slb:
            layer.hard = True
        for bn in batch_norms:
            bn.momentum = 0.0  # the moving statistics become the batch's own
        forward = _training_forward(model)
        for batch in data:
            if steps is not None and used >= steps:
                break
            forward(_batch_inputs(batch))
            for bn, (mean, variance) in zip(batch_norms, sums):
                mean += keras.ops.convert_to_numpy(bn.moving_mean)
                variance += keras.ops.convert_to_numpy(bn.moving_variance)
            used += 1
    finally:
        for layer, hard in zip(slb, saved_hard):
            layer.hard = hard
        for bn, momentum in zip(batch_norms, saved_momentum):
            bn.momentum = momentum
    if used == 0:
        raise ValueError("`data` gave no batch to recalibrate the batch normalization with.")
    for bn, (mean, variance) in zip(batch_norms, sums):
        bn.moving_mean.assign(mean / used)
        bn.moving_variance.assign(variance / used)
    return used


def _training_forward(model: keras.Model) -> Callable:
    """`model(x, training=True)`, traced once by `tf.function` under TensorFlow.

    Traced after the `hard` flags and momenta are set, so the trace computes with them.
    The other backends run it eagerly.
    """

    def forward(inputs):
        return model(inputs, training=True)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(forward, reduce_retracing=True)
    return forward


class BatchNormRecalibration(keras.callbacks.Callback):
    """Recalibrate batch normalization with the hard kernels before each validation.

    The moving statistics that training accumulates come from the soft kernels, while
    inference uses the hard ones (slb.md §4.2). After each epoch $e > E_s$
    ($E_s = \\lfloor E\\,\\text{start} \\rfloor$) this callback runs
    [`recalibrate_batch_norm`][lns_keras.slb.recalibrate_batch_norm]: before the epoch's
    validation if `fit` validates, else at the epoch's end; and once when training ends,
    if the last epoch was not recalibrated (slb.md §4.5). The authors use as many
    training batches as the validation set has (100 on CIFAR-10, ≈196 on ImageNet),
    the MindSpore port the whole training set from $E_s$ on (slb.md §4.4). The number of
    batches used is logged as `bn_recalibration_steps`.

    Args:
        data: A re-iterable source of training batches (see `recalibrate_batch_norm`).
        steps: Batches per recalibration; `None`: all of `data`.
        start: Fraction of the epochs after which recalibration begins (0: every epoch,
            as the authors' code; the MindSpore port uses its temperature `start`).
        epochs: $E$; `None` (default): the `epochs` given to `fit`.

    Raises:
        ValueError: At construction, if `steps` is not a positive integer or `None`,
            `start` is outside $[0, 1]$ or `epochs` is not a positive integer; during
            training, if `data` gives no batch.

    Example:
        ```python
        recalibration = lns_keras.slb.BatchNormRecalibration(train_ds, steps=100)
        model.fit(train_ds, epochs=500, validation_data=val_ds, callbacks=[
            lns_keras.slb.SLBTemperatureScheduler(factor=1.03, start=0.3, end=0.9),
            recalibration,
        ])
        ```
    """

    def __init__(
        self,
        data: Iterable,
        steps: int | None = None,
        *,
        start: float = 0.0,
        epochs: int | None = None,
    ):
        super().__init__()
        if steps is not None:
            _check_positive_int("steps", steps)
        _check_fraction("start", start)
        if epochs is not None:
            _check_positive_int("epochs", epochs)
        self.data = data
        self.steps = steps
        self.start = start
        self.epochs = epochs
        self._epoch = 0
        self._in_epoch = False
        self._done = False  # recalibrated since the last training step
        self._used = 0

    def _due(self) -> bool:
        first, _ = schedule_window(
            self.epochs or (self.params or {}).get("epochs") or 1, self.start, self.start
        )
        return self._epoch > first

    def _recalibrate(self) -> None:
        self._used = recalibrate_batch_norm(self.model, self.data, self.steps)
        self._done = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._in_epoch = True
        self._done = False
        self._used = 0

    def on_test_begin(self, logs=None):
        # fit validates before on_epoch_end: recalibrate first, so validation sees it.
        if self._in_epoch and not self._done and self._due():
            self._recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        if not self._done and self._due():
            self._recalibrate()
        self._in_epoch = False
        if logs is not None:
            logs["bn_recalibration_steps"] = self._used

    def on_train_end(self, logs=None):
        if not self._done:
            self._recalibrate()


def _clone(model, clone_function):
    clone = keras.models.clone_model(model, clone_function=clone_function)
    for old, new in zip(model.layers, clone.layers):
        if type(old) is type(new):
            new.set_weights(old.get_weights())
    return clone


def _folded_kernel_quantizer(weight_bits: int):
    # 1 bit: ste_sign, so that LCE still finds conv(sign(x), sign(w)) and emits
    # LceBconv2d; otherwise a quantizer that leaves the value set exactly as it is.
    return "ste_sign" if weight_bits == 1 else kbit.SteUniform(k_bit=weight_bits)


def fold(model: keras.Model) -> keras.Model:
    """Replace every SLB layer by a plain quantized layer holding its hard kernel.

    An `SLBQuantConv2D` becomes a `QuantConv2D` (an `SLBQuantDense` a `QuantDense`) with
    the same configuration and input quantizer, `kernel` $= W_d$ (S3) and a
    `kernel_quantizer` that returns $W_d$ unchanged: `"ste_sign"` for 1 bit (so a 1-bit
    layer with a 1-bit input exports to larq-compute-engine's `LceBconv2d`),
    [`SteUniform`][lns_keras.kbit.SteUniform]`(k_bit=b)` for 2 and 4 bits, and
    `kernel_constraint="weight_clip"`, which leaves $W_d$ as it is. The logits,
    temperature and hard flag are gone; predictions in inference equal the SLB model's
    (slb.md §2.3, "export"). Every other layer is cloned with its weights.

    Args:
        model: A built Sequential or functional model.

    Returns:
        A new, uncompiled model without SLB layers.

    Raises:
        ValueError: If `model` is not a built `keras.Model`, is a subclassed model (only
            functional and Sequential models can be rebuilt), or has no SLB layer.

    Example:
        ```python
        folded = lns_keras.slb.fold(slb_model)
        lns_keras.export.to_tflite(folded, "model.tflite")
        ```
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"`model` must be a built keras.Model, got {model!r}.")
    if not isinstance(model, keras.Sequential | keras.Function):
        raise ValueError(
            "Only functional and Sequential models can be folded, got `model` "
            f"{model.name!r} of the subclassed class {type(model).__name__}."
        )
    if not slb_layers(model):
        raise ValueError(f"`model` {model.name!r} has no SLB layer to fold.")

    def clone_function(layer):
        config = layer.get_config()
        if not is_slb_layer(layer):
            return layer.__class__.from_config(config)
        for key in ("weight_bits", "logits_initializer", "logits_regularizer"):
            config.pop(key)
        config["kernel_quantizer"] = _folded_kernel_quantizer(layer.weight_bits)
        # W_d lies in [-1, 1]; the clip keeps it there if the folded model is trained on.
        config["kernel_constraint"] = "weight_clip"
        cls = QuantConv2D if isinstance(layer, SLBQuantConv2D) else QuantDense
        return cls.from_config(config)

    clone = _clone(model, clone_function)
    for old, new in zip(model.layers, clone.layers):
        if not is_slb_layer(old):
            continue
        new.kernel.assign(old.hard_kernel())
        if old.use_bias:
            # A copy: under JAX a shared buffer may be donated (freed) by either model.
            new.bias.assign(keras.ops.copy(old.bias))
        if old.input_quantizer is not None and hasattr(old.input_quantizer, "get_weights"):
            new.input_quantizer.set_weights(old.input_quantizer.get_weights())
    return clone
