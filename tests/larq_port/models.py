"""larq's `lq.models` for the ported tests: `summary`, and `ModelProfile` read from ours.

larq's summary tests read its internal `ModelProfile`: per top-level layer the input
precision, output shape, parameter counts and bit widths, memory and MACs. Here each of
those attributes is read from `lns_keras.model_stats(model, compat="larq")` (larq's
figures), under larq's attribute names; a nested model is one profile summing its
layers, as in larq. `summary` is `lns_keras.models.summary` with `compat="larq"`:
what a larq user calling `lq.models.summary` expects to see.
"""

from __future__ import annotations

import functools

import keras

from lns_keras import models as lns_models
from lns_keras.summary import LayerStats, _readable_number, model_stats

summary = functools.partial(lns_models.summary, compat="larq")
_number_as_readable_str = _readable_number

__all__ = ["ModelProfile", "summary"]


class LayerProfile:
    """larq's profile of one layer, from its `LayerStats`."""

    def __init__(self, stats: LayerStats):
        self._stats = stats
        self.name = stats.name

    @property
    def input_precision(self) -> int | None:
        return self._stats.input_bits

    @property
    def output_shape(self) -> tuple | None:
        shape = self._stats.output_shape
        return None if shape is None else tuple(-1 if d is None else d for d in shape)

    @property
    def output_pixels(self) -> int | None:
        """Pixels of one feature map: larq reads them from the output's rank."""
        shape = self.output_shape
        if not shape:
            return None
        if len(shape) == 4:
            return shape[1] * shape[2]
        return shape[1] if len(shape) == 3 else 1

    def weight_count(self, bitwidth: int | None = None, trainable: bool | None = None) -> int:
        if bitwidth is not None and trainable is not None:
            # larq's tests never ask for both; refusing beats answering a wrong count.
            raise NotImplementedError("LayerStats keeps no trainable count per bit width.")
        if bitwidth is not None:
            return self._stats.params.get(bitwidth, 0)
        if trainable is None:
            return self._stats.total_params
        trainable_count = self._stats.trainable_params
        return trainable_count if trainable else self._stats.total_params - trainable_count

    @property
    def unique_param_bidtwidths(self) -> list[int]:
        return sorted(self._stats.params)

    @property
    def unique_op_precisions(self) -> list[int]:
        return sorted(self._stats.macs or {})

    @property
    def memory(self) -> int:
        return self._stats.memory_bits

    @property
    def fp_equivalent_memory(self) -> int:
        return self._stats.fp32_memory_bits

    @property
    def int8_fp_weights_memory(self) -> int:
        return self._stats.int8_fp_weights_memory_bits

    def op_count(self, op_type: str | None = None, precision: int | None = None) -> int | None:
        if op_type != "mac":
            raise ValueError(f"only MACs are counted, got op_type={op_type!r}.")
        macs = self._stats.macs
        if macs is None:
            return None
        return sum(macs.values()) if precision is None else macs.get(precision, 0)


class ModelProfile(LayerProfile):
    """larq's profile of a model: one profile per top-level layer (a nested model's sums)."""

    def __init__(self, model: keras.Model):
        self.name = model.name
        self._model = model
        by_name = {s.name: s for s in model_stats(model, compat="larq").layers}
        self.layer_profiles = [
            ModelProfile(layer)
            if isinstance(layer, keras.Model)
            else LayerProfile(by_name[layer.name])
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]

    def _sum(self, read) -> int:
        return sum(read(profile) or 0 for profile in self.layer_profiles)

    @property
    def input_precision(self) -> int | None:
        return self.layer_profiles[0].input_precision

    @property
    def output_shape(self) -> tuple | None:
        return self.layer_profiles[-1].output_shape

    def weight_count(self, bitwidth: int | None = None, trainable: bool | None = None) -> int:
        return self._sum(lambda p: p.weight_count(bitwidth, trainable))

    @property
    def unique_param_bidtwidths(self) -> list[int]:
        return sorted({b for p in self.layer_profiles for b in p.unique_param_bidtwidths})

    @property
    def unique_op_precisions(self) -> list[int]:
        return sorted({b for p in self.layer_profiles for b in p.unique_op_precisions})

    @property
    def memory(self) -> int:
        return self._sum(lambda p: p.memory)

    @property
    def fp_equivalent_memory(self) -> int:
        return self._sum(lambda p: p.fp_equivalent_memory)

    @property
    def int8_fp_weights_memory(self) -> int:
        return self._sum(lambda p: p.int8_fp_weights_memory)

    def op_count(self, op_type: str | None = None, precision: int | None = None) -> int:
        return self._sum(lambda p: p.op_count(op_type, precision))

    def generate_summary(self, include_macs: bool = True) -> list[str]:
        """The totals our summary prints (the lines after its table)."""
        lines: list[str] = []
        summary(self._model, print_fn=lines.append, include_macs=include_macs)
        return lines[lines.index("") + 1 :]
