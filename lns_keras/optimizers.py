r"""Optimizers for binary networks: Bop and CaseOptimizer (larq's `larq.optimizers`).

A binary network holds 1-bit weights beside higher-precision ones (the first and last
layers, batch normalization). `CaseOptimizer` trains each group with its own optimizer:
given `(predicate, optimizer)` pairs, a predicate decides, variable by variable, whether
its optimizer trains it; a `default_optimizer` trains the rest. `Bop` is the optimizer
made for the 1-bit weights: it flips signs instead of updating latent real weights.

```python
model = keras.Sequential([
    keras.Input((784,)),
    lns_keras.QuantDense(256, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                         kernel_constraint="weight_clip"),
    keras.layers.BatchNormalization(),
    keras.layers.Dense(10),
])
model.compile(
    optimizer=lns_keras.optimizers.CaseOptimizer(
        (lns_keras.optimizers.Bop.is_binary_variable, lns_keras.optimizers.Bop()),
        default_optimizer=keras.optimizers.Adam(0.01),
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
```

**Which variables are binary.** In larq a quantized layer wraps its kernel in a
`QuantizedVariable` that carries the kernel quantizer's `precision`, and
`Bop.is_binary_variable` reads it. Keras 3 variables carry nothing of the kind, so
lns_keras's quantized layers write that attribute (`variable.precision`) on each latent
weight a quantizer reads when they are built (a `.keras` model loaded back too);
[`mark_precisions`][lns_keras.optimizers.mark_precisions] does the same for a whole model,
for a quantizer swapped after building, or for layers of your own that keep larq's
attribute names (`kernel` and `kernel_quantizer`, ...). A `CaseOptimizer` remembers which
optimizer trains which variable in its config, so a model saved after training loads
back (`keras.models.load_model`, `safe_mode=True`) with the same routing and optimizer
state, without marking again. A model saved before its first training step has no
routing yet: load it with `compile=False` and compile it again.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from lns_keras import context, quantizers

__all__ = ["Bop", "CaseOptimizer", "is_binary_variable", "mark_precisions"]


def mark_precisions(model) -> dict[str, int]:
    """Write each quantized latent weight's precision on the variable, as larq did.

    lns_keras's quantized layers already do this for their own kernels when built; call
    it after swapping a quantizer on a built layer, or for layers of your own that keep
    larq's attribute names. Every variable that a quantizer reads directly (a quantized
    layer's `kernel`, found as in [`quantized_kernels`][lns_keras.context.quantized_kernels])
    gets the attribute `precision`, the quantizer's `precision` (1 for `ste_sign` and the
    other binary quantizers, functions included, 2 for `ste_tern`, `k_bit` for `DoReFa`;
    `NoOp(precision=1)` marks a full-precision kernel as binary, larq's way to train it
    with Bop). A quantizer without a precision (a function of your own without a
    `precision` attribute) marks nothing. An LNS layer's kernel is not marked: its
    quantizer reads the mapping's output $\\hat Q$, not the kernel.

    Args:
        model: A built Keras model or layer.

    Returns:
        The variables marked, as `{variable.path: precision}`.

    Raises:
        ValueError: If `model` is not a Keras model or layer.

    Example:
        ```python
        lns_keras.optimizers.mark_precisions(model)  # {"sequential/quant_dense/kernel": 1}
        ```
    """
    marked = {}
    for _, variable, quantizer, direct in context.quantized_kernels(model):
        precision = getattr(quantizer, "precision", None)
        if direct and precision is not None:
            variable.precision = precision
            marked[variable.path] = precision
    return marked


@keras.saving.register_keras_serializable(package="lns_keras")
def is_binary_variable(variable) -> bool:
    """Whether `variable` is a 1-bit weight: `variable.precision == 1` (larq's predicate).

    The attribute is written by [`mark_precisions`][lns_keras.optimizers.mark_precisions].
    Also reachable as `Bop.is_binary_variable`, larq's name; registered with Keras, so
    a `CaseOptimizer` that uses it saves and loads with `safe_mode=True`.

    Args:
        variable: A Keras variable.

    Returns:
        `True` for a variable marked with precision 1, else `False`.

    Raises:
        Nothing: Any object is accepted; one without `precision` gives `False`.
    """
    return getattr(variable, "precision", None) == 1


def _no_learning_rate():
    # Keras optimizers require a learning rate; these two have none. A callable keeps
    # Keras from creating a variable for it, so that no scheduler can set it to no effect.
    return 0.0


class _ArgumentError(TypeError, ValueError):
    """A wrong kind of argument: a `ValueError` as everywhere in lns_keras, and the
    `TypeError` that larq raised for it."""


def _check_hyperparameter(name: str, value, maximum: float | None = None):
    schedule = keras.optimizers.schedules.LearningRateSchedule
    if isinstance(value, schedule):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (maximum is not None and value > maximum)
    ):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(
            f"`{name}` must be a finite real number >= 0{upper}, or a "
            f"keras.optimizers.schedules.LearningRateSchedule; got {name}={value!r}."
        )
    return float(value)


_GAMMA_MAXIMUM = 1.0  # gamma is the rate of an exponential moving average


@keras.saving.register_keras_serializable(package="lns_keras")
class Bop(keras.optimizers.Optimizer):
    r"""Binary optimizer (Bop): flips the sign of a binary weight when its gradients agree.

    Bop keeps no latent real weights. For each binary weight $w \in \{-1, +1\}$ it keeps
    an exponential moving average $m$ of the gradient $g$, and flips $w$ when $m$ is
    large and has $w$'s sign (a step of gradient descent would move $w$ towards $-w$):

    $$m_t = m_{t-1} + \gamma\,(g_t - m_{t-1}) = (1 - \gamma)\, m_{t-1} + \gamma\, g_t$$

    $$w_t = \operatorname{sign}\bigl(-\operatorname{sign}(w_{t-1} m_t - \tau)\,
    w_{t-1}\bigr)
    = \begin{cases} -w_{t-1} & |m_t| > \tau \text{ and } \operatorname{sign}(m_t)
    = \operatorname{sign}(w_{t-1}) \\ w_{t-1} & \text{otherwise} \end{cases}$$

    with $\operatorname{sign}(0) = +1$, computed as larq computes it: a weight that is not
    ±1 (a fresh initialisation) becomes ±1 at its first step, and at $w m = \tau$ exactly
    the weight becomes $+1$. $\gamma$ (`gamma`) plays the part of a learning rate: a large
    one converges fast and trains noisily. $\tau$ (`threshold`) too high learns little,
    too low flips noisily. Both are variables, so that
    [`HyperparameterScheduler`][lns_keras.callbacks.HyperparameterScheduler] can change
    them during a compiled `fit`, or `LearningRateSchedule`s of the step.

    Bop updates every variable it is given: use it through a
    [`CaseOptimizer`][lns_keras.optimizers.CaseOptimizer] with
    `Bop.is_binary_variable`, which selects the binary weights
    (see [`mark_precisions`][lns_keras.optimizers.mark_precisions]).

    Reference: Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural
    Network Optimization", NeurIPS 2019.

    Args:
        threshold: $\tau \ge 0$: how large the average gradient must be to flip a weight.
        gamma: $\gamma \in [0, 1]$: the adaptivity rate of the moving average.
        name: Name of the optimizer.
        **kwargs: Keras optimizer arguments that act on the gradient (`clipnorm`,
            `clipvalue`, `global_clipnorm`, `loss_scale_factor`,
            `gradient_accumulation_steps`); Bop has no `learning_rate` and no
            `weight_decay`.

    Raises:
        ValueError: If `threshold` or `gamma` is negative, not finite or not a number
            (`gamma` also above 1), or `learning_rate` / `weight_decay` is given; from
            Keras, for other arguments it does not know.

    Example:
        ```python
        optimizer = lns_keras.optimizers.CaseOptimizer(
            (lns_keras.optimizers.Bop.is_binary_variable,
             lns_keras.optimizers.Bop(threshold=1e-6, gamma=1e-3)),
            default_optimizer=keras.optimizers.Adam(0.01),
        )
        ```
    """

    is_binary_variable = staticmethod(is_binary_variable)

    def __init__(self, threshold: float = 1e-8, gamma: float = 1e-4, name: str = "Bop", **kwargs):
        for argument in ("learning_rate", "weight_decay"):
            if kwargs.get(argument) is not None:
                raise ValueError(
                    f"Bop has no `{argument}` (it flips weights; `gamma` and `threshold` "
                    f"set how often), got {argument}={kwargs[argument]!r}."
                )
            kwargs.pop(argument, None)
        threshold = _check_hyperparameter("threshold", threshold)
        gamma = _check_hyperparameter("gamma", gamma, maximum=_GAMMA_MAXIMUM)
        super().__init__(learning_rate=_no_learning_rate, name=name, **kwargs)
        self._threshold = self._hyperparameter_variable("threshold", threshold)
        self._gamma = self._hyperparameter_variable("gamma", gamma)

    def _hyperparameter_variable(self, name: str, value):
        if not isinstance(value, float):
            return value  # a schedule
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                value,
                name=name,
                dtype=keras.config.floatx(),
                trainable=False,
                aggregation="only_first_replica",
            )
        self._track_variable(variable)
        return variable

    def _current(self, hyperparameter):
        if isinstance(hyperparameter, keras.optimizers.schedules.LearningRateSchedule):
            return hyperparameter(self.iterations)
        return hyperparameter

    def _set(self, name: str, value, maximum: float | None = None) -> None:
        current = getattr(self, f"_{name}")
        if not isinstance(current, keras.Variable):
            raise ValueError(
                f"Bop {self.name!r} was created with a schedule for `{name}`, which cannot "
                f"be set; got {name}={value!r}."
            )
        current.assign(_check_hyperparameter(name, value, maximum))

    @property
    def threshold(self):
        """$\\tau$: the variable (or a schedule's value at the current step)."""
        return self._current(self._threshold)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._set("threshold", value)

    @property
    def gamma(self):
        """$\\gamma$: the variable (or a schedule's value at the current step)."""
        return self._current(self._gamma)

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._set("gamma", value, maximum=_GAMMA_MAXIMUM)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._moving_averages = [
            self.add_variable_from_reference(variable, name="m") for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gamma = ops.cast(self.gamma, dtype)
        threshold = ops.cast(self.threshold, dtype)
        m = self._moving_averages[self._get_variable_index(variable)]
        # larq's form m + γ(g − m): the same rounding as larq's.
        m_t = ops.add(m, ops.multiply(gamma, ops.subtract(ops.cast(gradient, dtype), m)))
        self.assign(m, m_t)
        agreement = ops.subtract(ops.multiply(variable, m_t), threshold)
        self.assign(variable, quantizers.sign(-ops.sign(agreement) * variable))

    def _serialize_hyperparameter(self, hyperparameter):
        if isinstance(hyperparameter, keras.Variable):
            return float(ops.convert_to_numpy(hyperparameter))
        return keras.optimizers.schedules.serialize(hyperparameter)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for argument in ("learning_rate", "weight_decay"):
            config.pop(argument, None)
        return {
            **config,
            "threshold": self._serialize_hyperparameter(self._threshold),
            "gamma": self._serialize_hyperparameter(self._gamma),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for name in ("threshold", "gamma"):
            if isinstance(config.get(name), dict):
                config[name] = keras.optimizers.schedules.deserialize(
                    config[name], custom_objects=custom_objects
                )
        return cls(**config)


def _registered(predicate: Callable) -> bool:
    """Whether Keras can save `predicate` and load it back with `safe_mode=True`."""
    try:
        name = keras.saving.get_registered_name(predicate)
    except AttributeError:  # a callable object without a __name__
        return False
    return keras.saving.get_registered_object(name) is predicate


@keras.saving.register_keras_serializable(package="lns_keras")
class CaseOptimizer(keras.optimizers.Optimizer):
    """Trains different variables with different optimizers, chosen by predicates.

    Modelled on `tf.case`: each `(predicate, optimizer)` pair claims the variables for
    which `predicate(variable)` is true; `default_optimizer` trains the variables no
    predicate claims. As in larq:

    - a variable claimed by two predicates is an error;
    - a predicate that claims no variable is an error, at the first training step;
    - without `default_optimizer`, unclaimed variables are not trained, with a warning.

    The routing is decided once, when the optimizer is built (by `model.fit`, or when a
    saved model is loaded), and kept in the optimizer's config: a model saved after its
    first step loads back with the same routing even where the predicates cannot be
    saved. Predicates registered with `keras.saving.register_keras_serializable` (as
    `Bop.is_binary_variable` is) are saved with the optimizer; others (lambdas, local
    functions) are not: the loaded optimizer routes by the saved routing only, so a model
    saved before its optimizer was built cannot be trained with them after loading.
    Works under `jit_compile=True`: the routing is plain Python, fixed before tracing.

    Args:
        *predicate_optimizer_pairs: `(predicate, optimizer)` pairs: `predicate` takes a
            Keras variable and returns a bool; `optimizer` is a Keras optimizer. Each
            optimizer may appear once.
        default_optimizer: The optimizer for the variables no predicate claims, or
            `None` (they are not trained). Keyword only.
        name: Name of the optimizer.

    Raises:
        ValueError: If a pair is not a `(predicate, optimizer)` pair, a predicate is not
            callable, an optimizer or `default_optimizer` is not a Keras optimizer (these
            are also `TypeError`s, as in larq), or an optimizer appears twice; when built,
            if two predicates claim the same variable; at the first training step, if a
            predicate claimed no variable.

    Example:
        ```python
        lns_keras.optimizers.mark_precisions(model)
        model.compile(
            optimizer=lns_keras.optimizers.CaseOptimizer(
                (lns_keras.optimizers.Bop.is_binary_variable, lns_keras.optimizers.Bop()),
                default_optimizer=keras.optimizers.Adam(0.01),
            ),
            loss="sparse_categorical_crossentropy",
        )
        ```
    """

    def __init__(
        self,
        *predicate_optimizer_pairs: tuple[Callable[[keras.Variable], bool], Any],
        default_optimizer: keras.optimizers.Optimizer | None = None,
        name: str = "optimizer_case",
    ):
        pairs = []
        for i, pair in enumerate(predicate_optimizer_pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise _ArgumentError(
                    f"`predicate_optimizer_pairs[{i}]` must be a (predicate, optimizer) "
                    f"pair, got {pair!r}."
                )
            predicate, optimizer = pair
            # None: a predicate that was not saved (see from_config); it claims nothing.
            if predicate is not None and not callable(predicate):
                raise _ArgumentError(
                    f"The predicate `predicate_optimizer_pairs[{i}][0]` must be callable, "
                    f"got {predicate!r}."
                )
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                raise _ArgumentError(
                    f"`predicate_optimizer_pairs[{i}][1]` must be a Keras optimizer, got "
                    f"{optimizer!r}."
                )
            pairs.append((predicate, optimizer))
        if default_optimizer is not None and not isinstance(
            default_optimizer, keras.optimizers.Optimizer
        ):
            raise _ArgumentError(
                "`default_optimizer` must be a Keras optimizer or None, got "
                f"default_optimizer={default_optimizer!r}."
            )
        optimizers = [optimizer for _, optimizer in pairs]
        if default_optimizer is not None:
            optimizers.append(default_optimizer)
        if len({id(o) for o in optimizers}) != len(optimizers):
            raise ValueError(
                "Each optimizer may appear once in a CaseOptimizer (one optimizer cannot be "
                f"built on two sets of variables), got {optimizers!r}."
            )
        super().__init__(learning_rate=_no_learning_rate, name=name)
        self._predicates = [predicate for predicate, _ in pairs]
        self._pair_optimizers = [optimizer for _, optimizer in pairs]
        self.default_optimizer = default_optimizer
        self._routing_key: dict[Any, int] = {}
        self._routing: list[int | None] | None = None
        self._saved_routing: dict | None = None
        self._claims_checked = False

    @property
    def pred_opt_pairs(self) -> list[tuple[Callable | None, keras.optimizers.Optimizer]]:
        """The `(predicate, optimizer)` pairs (larq's attribute name)."""
        return list(zip(self._predicates, self._pair_optimizers, strict=True))

    @property
    def optimizers(self) -> list[keras.optimizers.Optimizer]:
        """The optimizers of the pairs, then `default_optimizer` if there is one."""
        optimizers = list(self._pair_optimizers)
        if self.default_optimizer is not None:
            optimizers.append(self.default_optimizer)
        return optimizers

    @property
    def variables(self):
        # Its own (the step count), then every inner optimizer's: JAX's stateless training
        # step hands over exactly these.
        variables = self._variables[:]
        for optimizer in self.optimizers:
            variables.extend(optimizer.variables)
        return variables

    def _route(self, variables) -> list[int | None]:
        """The index into `optimizers` of each variable's optimizer (`None`: untrained)."""
        saved = self._saved_routing
        if saved is not None:
            shapes = [list(v.shape) for v in variables]
            if saved["shapes"] == shapes:
                return list(saved["optimizers"])
            warnings.warn(
                f"CaseOptimizer {self.name!r}: the saved routing was for other variables "
                f"(shapes {saved['shapes']}, now {shapes}); routing by the predicates.",
                stacklevel=3,
            )
        default = len(self._pair_optimizers) if self.default_optimizer is not None else None
        routing = []
        for variable in variables:
            claims = [
                i
                for i, predicate in enumerate(self._predicates)
                if predicate is not None and predicate(variable)
            ]
            if len(claims) > 1:
                names = [self._pair_optimizers[i].name for i in claims]
                raise ValueError(
                    f"Variable {variable.path!r} is claimed by several optimizers of "
                    f"CaseOptimizer {self.name!r}: {names} (predicates {claims})."
                )
            if not claims and default is None:
                warnings.warn(
                    f"CaseOptimizer {self.name!r} has no `default_optimizer`: variable "
                    f"{variable.path!r}, claimed by no predicate, will not be trained.",
                    stacklevel=3,
                )
            routing.append(claims[0] if claims else default)
        return routing

    def build(self, variables):
        if self.built:
            return
        variables = list(variables)
        self._routing = self._route(variables)
        for index, optimizer in enumerate(self.optimizers):
            own = [v for v, i in zip(variables, self._routing, strict=True) if i == index]
            if own:
                optimizer.build(own)
        self._routing_key = {
            self._var_key(v): i for v, i in zip(variables, self._routing, strict=True)
        }
        super().build(variables)

    def _check_claims(self) -> None:
        for index, optimizer in enumerate(self._pair_optimizers):
            if index not in self._routing:
                raise ValueError(
                    f"Optimizer {optimizer.name!r} (predicate_optimizer_pairs[{index}]) of "
                    f"CaseOptimizer {self.name!r} claimed no variable. For "
                    "`Bop.is_binary_variable`, mark the binary variables with "
                    "`lns_keras.optimizers.mark_precisions(model)` before the optimizer is "
                    "built (before the first fit; for a loaded model, load it with "
                    "compile=False, mark it, then compile)."
                )
        self._claims_checked = True

    def apply(self, grads, trainable_variables=None):
        if len(grads) == 0:
            return
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, the optimizer must "
                    "already be built: call `optimizer.build(trainable_variables)` first."
                )
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
            self._check_variables_are_known(trainable_variables)
        if not self._claims_checked:
            self._check_claims()
        groups = [([], []) for _ in self.optimizers]
        for grad, variable in zip(grads, trainable_variables, strict=True):
            index = self._routing_key[self._var_key(variable)]
            if index is not None:
                groups[index][0].append(grad)
                groups[index][1].append(variable)
        for optimizer, (own_grads, own_variables) in zip(self.optimizers, groups, strict=True):
            if own_variables:
                optimizer.apply(own_grads, own_variables)
        self._iterations.assign_add(1)

    def finalize_variable_values(self, var_list):
        for index, optimizer in enumerate(self.optimizers):
            own = [v for v in var_list if self._routing_key.get(self._var_key(v)) == index]
            if own:
                optimizer.finalize_variable_values(own)

    def set_weights(self, weights):
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"CaseOptimizer {self.name!r} has {len(variables)} variables, got "
                f"{len(weights)} weights."
            )
        for variable, weight in zip(variables, weights, strict=True):
            variable.assign(weight)

    def save_own_variables(self, store):
        # Only its own: Keras saves the inner optimizers' as their own objects.
        for i, variable in enumerate(self._variables):
            store[str(i)] = ops.convert_to_numpy(variable)

    def load_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        routing = None
        if self._routing is not None:
            routing = {
                "optimizers": self._routing,
                "shapes": [list(v.shape) for v in self._trainable_variables],
            }
        elif self._saved_routing is not None:
            routing = self._saved_routing
        return {
            "name": self.name,
            "predicate_optimizer_pairs": [
                [serialize(predicate) if _registered(predicate) else None, serialize(opt)]
                for predicate, opt in self.pred_opt_pairs
            ],
            "default_optimizer": (
                None if self.default_optimizer is None else serialize(self.default_optimizer)
            ),
            "routing": routing,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        def deserialize(item):
            if item is None:
                return None
            return keras.saving.deserialize_keras_object(item, custom_objects=custom_objects)

        pairs = [
            (deserialize(predicate), deserialize(optimizer))
            for predicate, optimizer in config["predicate_optimizer_pairs"]
        ]
        optimizer = cls(
            *pairs,
            default_optimizer=deserialize(config.get("default_optimizer")),
            name=config.get("name", "optimizer_case"),
        )
        optimizer._saved_routing = config.get("routing")
        return optimizer
