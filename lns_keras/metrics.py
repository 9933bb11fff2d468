r"""Metrics of binary training (larq's `larq.metrics`): the per-step flip ratio.

A flip ratio needs a layer's binary kernel, not the `y_true` and `y_pred` that Keras
hands to the metrics of `model.compile`. So `FlipRatio` is updated with the tensor to
watch, by the layer that owns it, and Keras reports it like any metric a layer holds
(as `flip_ratio/<layer>` in the logs of `fit`); the quantized layers do it when asked
(`metrics=["flip_ratio"]`, or `lns_keras.context.metrics_scope(["flip_ratio"])`). The epoch-level flip rate of the LNS
paper (Fig. 3c) is the callback [`FlipRate`][lns_keras.callbacks.FlipRate].
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["FlipRatio"]


@keras.saving.register_keras_serializable(package="lns_keras")
class FlipRatio(keras.metrics.Metric):
    r"""The mean, over steps, of the fraction of values that changed since the last step.

    Each `update_state(values)` compares `values` (cast to `values_dtype`, so that a
    binary kernel's ±1 compare exactly) with those of the previous update:

    $$r_t = 1 - \frac{\#\{i : v_{t,i} = v_{t-1,i}\}}{n}, \qquad
    \text{result} = \frac{1}{T - 1} \sum_{t=2}^{T} r_t$$

    over the $T$ updates since the last `reset_state()`. The first update after a reset
    only records the values (it has nothing to compare with); `reset_state()` keeps the
    last values, as larq's does, so Keras's reset at each epoch's start drops one step.

    lns_keras's quantized layers own and update it themselves, larq's way: pass
    `metrics=["flip_ratio"]` to the layer or to its kernel quantizer, or create the layer
    inside `lns_keras.context.metrics_scope(["flip_ratio"])`; `fit` then logs
    `flip_ratio/<layer name>`:

    ```python
    layer = lns_keras.QuantDense(
        64, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
        metrics=["flip_ratio"],
    )
    ```

    A layer of your own does what they do: build the metric in `build` (variables cannot
    be created inside a compiled step) and update it in training calls:

    ```python
    class Tracked(keras.layers.Layer):
        def build(self, input_shape):
            ...  # create self.kernel
            self.flip_ratio = lns_keras.metrics.FlipRatio(name=f"flip_ratio/{self.name}")
            self.flip_ratio.build(self.kernel.shape)

        def call(self, inputs, training=None):
            if training:
                self.flip_ratio.update_state(keras.ops.sign(self.kernel))
            ...
    ```

    Tested with the TensorFlow backend, compiled or not. Under JAX, Keras does not carry
    the state of a metric that a layer updates in its `call` (its training step maps only
    the layers' weights); there, use the epoch-level
    [`FlipRate`][lns_keras.callbacks.FlipRate] callback.

    Args:
        values_dtype: The dtype the values are compared in (`"int8"`: exact for ±1).
        name: Name of the metric.
        dtype: The dtype of the result.

    Raises:
        ValueError: From Keras, for an unknown dtype; from `update_state`, if the values'
            shape is not the one the metric was built for, or if it is first called
            while being traced without `build` (build it first).

    Example:
        ```python
        m = lns_keras.metrics.FlipRatio()
        m.update_state(np.array([1, 1]))  # result: 0
        m.update_state(np.array([2, 2]))  # result: 1
        m.update_state(np.array([1, 2]))  # result: 0.75
        ```
    """

    # Keras 2's flag for a metric that keeps state between updates (larq's `stateful`);
    # Keras 3 metrics carry no such attribute.
    stateful = True

    def __init__(self, values_dtype="int8", name: str = "flip_ratio", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.values_dtype = keras.backend.standardize_dtype(values_dtype)
        self.built = False

    def build(self, input_shape) -> None:
        """Create the state for values of shape `input_shape`.

        Args:
            input_shape: The shape of the values to watch, fully defined.

        Raises:
            ValueError: If `input_shape` has an unknown dimension.
        """
        shape = tuple(input_shape)
        if any(d is None for d in shape):
            raise ValueError(f"FlipRatio needs a fully defined shape, got input_shape={shape}.")
        self._previous_values = self.add_variable(
            shape=shape,
            initializer="zeros",
            dtype=self.values_dtype,
            aggregation="only_first_replica",
            name="previous_values",
        )
        self.total = self.add_variable(
            shape=(), initializer="zeros", aggregation="only_first_replica", name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", aggregation="only_first_replica", name="count"
        )
        self._size = int(np.prod(shape))
        self.built = True

    def update_state(self, values, sample_weight=None) -> None:
        """Record `values` and the fraction of them that changed since the last update.

        Args:
            values: The tensor to watch, e.g. a layer's binary kernel.
            sample_weight: Ignored (larq's signature).

        Raises:
            ValueError: If the shape of `values` is not the one the metric was built for,
                or if the metric is first updated while being traced without `build`.
        """
        values = ops.cast(values, self.values_dtype)
        if not self.built:
            # Variables cannot be created inside a compiled step: a layer builds it first.
            if not _is_concrete(values):
                raise ValueError(
                    f"FlipRatio {self.name!r} must be built (`build(shape)`) before it is "
                    "updated inside a compiled function."
                )
            self.build(values.shape)
        if tuple(values.shape) != tuple(self._previous_values.shape):
            raise ValueError(
                f"FlipRatio {self.name!r} was built for values of shape "
                f"{tuple(self._previous_values.shape)}, got values of shape "
                f"{tuple(values.shape)}."
            )
        unchanged = ops.sum(ops.cast(ops.equal(self._previous_values, values), "int32"))
        ratio = 1.0 - ops.cast(unchanged, self.dtype) / float(self._size)
        # The first update after a reset has nothing to compare with: count it, add 0.
        self.total.assign_add(ratio * ops.sign(self.count))
        self.count.assign_add(ops.ones((), self.dtype))
        self._previous_values.assign(values)

    def result(self):
        if not self.built:
            return ops.zeros((), self.dtype)
        return ops.divide_no_nan(self.total, self.count - 1.0)

    def reset_state(self) -> None:
        """Zero the mean; keep the last values (larq's behaviour).

        Raises:
            Nothing: An unbuilt metric has nothing to reset.
        """
        if self.built:
            self.total.assign(ops.zeros((), self.dtype))
            self.count.assign(ops.zeros((), self.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "values_dtype": self.values_dtype}


def _is_concrete(values) -> bool:
    """Whether `values` is a concrete (eager) tensor rather than a traced one."""
    try:
        ops.convert_to_numpy(values)
    except Exception:  # symbolic: tf.function, jax.jit
        return False
    return True
