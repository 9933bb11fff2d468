r"""Model statistics for binary networks: parameters by bit width, memory, MACs, FLOPs.

`summary(model)` prints, per layer and in total, what larq's `lq.models.summary` prints
(the input precision, the parameters of each bit width, the memory, the
multiply-accumulates of each precision) and the FLOPs of the LNS paper;
`model_stats(model)` returns the same numbers. Also reachable as
`lns_keras.models.summary`, larq's name.

**Bits of a parameter.** A kernel that a quantizer reads counts at the quantizer's
`precision` (1 for `ste_sign` and the other binary quantizers, 2 for `ste_tern`, $k$ for
`DoReFa(k_bit=k)`; a quantizer without a precision counts as 32-bit). An SLB layer
counts as the kernel it deploys, `weight_bits` bits a weight, as its folded layer does:
its logits, temperature and hard flag are search state that folding removes. Every other
weight counts at its dtype's bits (32 for `float32`, 8 for the `int8` kernels of Keras's
`Model.quantize("int8")`).

**Memory** is $\sum_w \text{bits}(w)\,|w|$, shown in KiB ($8 \cdot 1024$ bits, the unit
larq prints as "kB") and in Mbit ($10^6$ bits, the unit of the LNS paper's tables).
The compression ratio is the memory over that of the same parameters at 32 bits.

**MACs.** A multiply-accumulate's precision is the larger bit width of its two operands
(larq's definition): a binary MAC needs a 1-bit input quantizer and a 1-bit kernel. A
kernel element takes part in one MAC per output position (per input position in a
transposed convolution, once in a locally connected layer). Only convolutions (plain,
depthwise, separable, transposed, locally connected) and dense layers have MACs; batch
normalization, pooling, activations and additions have none, as in the paper's tables.
FLOPs are counted as in the LNS paper (§4.3, after Bi-Real Net): the MACs that are not
binary plus 1/64 of the binary ones, since a 64-bit CPU computes 64 binary products
with one XNOR and one popcount.

**Two ways of counting** (`compat`):

| | `compat=None` (default) | `compat="larq"` (larq 0.14's figures) |
| --- | --- | --- |
| batch normalization | the 4 stored numbers a channel ($\gamma$, $\beta$, moving mean and variance), so the parameters add up to `model.count_params()` | 2 a channel: the moving statistics, which fold into a scale and an offset at inference (larq counts them, non-trainable) |
| a separable convolution's pointwise MACs | at 32 bits (or the pointwise kernel's bits, if larger): they multiply the depthwise output, which no quantizer binarizes | at the layer input's precision, as larq counts them |
| weights that no quantizer reads | their dtype's bits | 32 bits |
| MACs of a transposed convolution | kernel size × input positions | kernel size × output positions (larq counts `Conv2DTranspose` as a `Conv2D`) |
| MACs of layers larq does not count (3D and locally connected convolutions, 1D depthwise, and any layer but `Flatten`, `BatchNormalization` and 1D/2D pooling) | counted (0 for layers without MACs) | unknown (`?`), as larq prints them |

In both, a layer whose output shape is unknown (a layer of a subclassed model, which
Keras 3 runs without recording shapes) has unknown MACs, printed `?` and left out of the
totals; a layer not built yet (Keras 3's `model.build(shape)` on a subclassed model does
not build its layers: call the model once on data to build them) has unknown parameters
too. A nested model is counted layer by layer (larq shows one row for it; the totals are
the same).

```python
lns_keras.summary(model)                 # lns_keras's counting
lns_keras.summary(model, compat="larq")  # larq 0.14's figures
stats = lns_keras.model_stats(model)
stats.memory_kib, stats.compression_ratio, stats.binarized_macs_ratio, stats.flops
```
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras

__all__ = ["COMPAT_MODES", "LayerStats", "ModelStats", "model_stats", "summary"]

BINARY_OPS_PER_FLOP = 64  # paper §4.3
COMPAT_MODES = (None, "larq")
"""The values `compat` takes: `None` (lns_keras's counting) and `"larq"` (larq 0.14's)."""

_KIB_BITS = 8 * 1024


def _sum_counts(counts: list[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for count in counts:
        for bits, n in count.items():
            total[bits] = total.get(bits, 0) + n
    return dict(sorted(total.items()))


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Statistics of one layer, as [`model_stats`][lns_keras.summary.model_stats] builds it.

    Each argument is kept as the attribute of the same name; the properties derive the
    rest.

    Args:
        name: The layer's name.
        layer_type: Its class name.
        output_shape: Its output shape (batch axis `None`), or `None` when unknown.
        params: Number of parameters by bit width, `{bits: count}`.
        trainable_params: How many of them are trainable.
        macs: Multiply-accumulates per example by precision, `{bits: count}` (`{}` for
            a layer without MACs), or `None` when unknown.
        input_bits: The precision of the layer's `input_quantizer`, or `None` when it
            has none (or one without a precision).
        built: Whether the layer is built; an unbuilt layer's `params` are unknown
            (and left empty).

    Raises:
        TypeError: If an argument is missing.
        dataclasses.FrozenInstanceError: On assignment to an attribute; the statistics
            are frozen.

    Example:
        ```python
        for layer in lns_keras.model_stats(model).layers:
            print(layer.name, layer.params, layer.memory_kib, layer.macs, layer.flops)
        ```
    """

    name: str
    layer_type: str
    output_shape: tuple | None
    params: dict[int, int]
    trainable_params: int
    macs: dict[int, int] | None
    input_bits: int | None = None
    built: bool = True

    @property
    def total_params(self) -> int:
        """All parameters, at any bit width."""
        return sum(self.params.values())

    @property
    def params_1bit(self) -> int:
        """Number of 1-bit parameters."""
        return self.params.get(1, 0)

    @property
    def params_kbit(self) -> int:
        """Number of parameters of k bits, 1 < k < 32."""
        return sum(n for bits, n in self.params.items() if 1 < bits < 32)

    @property
    def kernel_bits(self) -> int:
        """The largest k of the layer's k-bit parameters, 1 < k < 32 (32 when none)."""
        return max((bits for bits in self.params if 1 < bits < 32), default=32)

    @property
    def params_32bit(self) -> int:
        """Number of parameters of 32 bits or more."""
        return sum(n for bits, n in self.params.items() if bits >= 32)

    @property
    def memory_bits(self) -> int:
        """Memory of the parameters in bits: $\\sum$ bits × count."""
        return sum(bits * n for bits, n in self.params.items())

    @property
    def memory_kib(self) -> float:
        """Memory of the parameters in KiB (8 · 1024 bits; larq's "kB")."""
        return self.memory_bits / _KIB_BITS

    @property
    def memory_mbit(self) -> float:
        """Memory of the parameters in Mbit (10^6 bits)."""
        return self.memory_bits / 1e6

    @property
    def fp32_memory_bits(self) -> int:
        """Memory of the same parameters at 32 bits each."""
        return 32 * self.total_params

    @property
    def int8_fp_weights_memory_bits(self) -> int:
        """Memory with every parameter of more than 8 bits stored in 8 (larq's figure)."""
        return sum(min(bits, 8) * n for bits, n in self.params.items())

    @property
    def binary_macs(self) -> int:
        """Binary multiply-accumulates per example (0 when unknown)."""
        return (self.macs or {}).get(1, 0)

    @property
    def float_macs(self) -> int:
        """Multiply-accumulates of more than 1 bit per example (0 when unknown)."""
        return sum(n for bits, n in (self.macs or {}).items() if bits > 1)

    @property
    def flops(self) -> float:
        """MACs of more than 1 bit plus 1/64 of the binary ones (paper §4.3)."""
        return self.float_macs + self.binary_macs / BINARY_OPS_PER_FLOP


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Statistics of a model: totals and a `LayerStats` per layer.

    Args:
        layers: One [`LayerStats`][lns_keras.summary.LayerStats] per layer, in order;
            kept as the attribute `layers`.
        compat: How they were counted: `None` (lns_keras) or `"larq"`; kept as the
            attribute `compat`.

    Raises:
        TypeError: If `layers` is missing.
        dataclasses.FrozenInstanceError: On assignment to an attribute; the statistics
            are frozen.

    Example:
        ```python
        stats = lns_keras.model_stats(model)
        print(stats.params, stats.memory_kib, stats.compression_ratio, stats.flops)
        ```
    """

    layers: tuple[LayerStats, ...]
    compat: str | None = None

    @property
    def params(self) -> dict[int, int]:
        """Total parameters by bit width, `{bits: count}`."""
        return _sum_counts([s.params for s in self.layers])

    @property
    def total_params(self) -> int:
        """All parameters of the built layers."""
        return sum(s.total_params for s in self.layers)

    @property
    def trainable_params(self) -> int:
        """Trainable parameters."""
        return sum(s.trainable_params for s in self.layers)

    @property
    def non_trainable_params(self) -> int:
        """Non-trainable parameters."""
        return self.total_params - self.trainable_params

    @property
    def params_1bit(self) -> int:
        """Total 1-bit parameters."""
        return sum(s.params_1bit for s in self.layers)

    @property
    def params_32bit(self) -> int:
        """Total parameters of 32 bits or more."""
        return sum(s.params_32bit for s in self.layers)

    @property
    def params_kbit(self) -> int:
        """Total parameters of k bits, 1 < k < 32 (each layer's own k)."""
        return sum(s.params_kbit for s in self.layers)

    @property
    def memory_bits(self) -> int:
        """Total memory of the parameters in bits."""
        return sum(s.memory_bits for s in self.layers)

    @property
    def memory_kib(self) -> float:
        """Total memory in KiB (8 · 1024 bits; larq's "kB")."""
        return self.memory_bits / _KIB_BITS

    @property
    def memory_mbit(self) -> float:
        """Total memory of the parameters in Mbit (10^6 bits)."""
        return self.memory_bits / 1e6

    @property
    def fp32_memory_bits(self) -> int:
        """Memory of the same parameters at 32 bits each (larq's "Float-32 Equivalent")."""
        return sum(s.fp32_memory_bits for s in self.layers)

    @property
    def int8_fp_weights_memory_bits(self) -> int:
        """Memory with parameters of more than 8 bits stored in 8 (larq's figure)."""
        return sum(s.int8_fp_weights_memory_bits for s in self.layers)

    @property
    def compression_ratio(self) -> float:
        """Memory over the 32-bit memory of the same parameters (larq's "Compression Ratio
        of Memory": 1/32 for a model of 1-bit weights only)."""
        return self.memory_bits / max(1e-8, self.fp32_memory_bits)

    @property
    def macs(self) -> dict[int, int]:
        """Total multiply-accumulates by precision, over the layers whose MACs are known."""
        return _sum_counts([s.macs for s in self.layers if s.macs])

    @property
    def total_macs(self) -> int:
        """All known multiply-accumulates per example."""
        return sum(self.macs.values())

    @property
    def binary_macs(self) -> int:
        """Total binary multiply-accumulates per example."""
        return sum(s.binary_macs for s in self.layers)

    @property
    def float_macs(self) -> int:
        """Total multiply-accumulates of more than 1 bit per example."""
        return sum(s.float_macs for s in self.layers)

    @property
    def binarized_macs_ratio(self) -> float:
        """The fraction of the known MACs that are binary (larq's "Ratio of MACs that are
        binarized")."""
        return self.binary_macs / max(1, self.total_macs)

    @property
    def ternarized_macs_ratio(self) -> float:
        """The fraction of the known MACs of precision 2 (larq's "ternarized" ratio)."""
        return self.macs.get(2, 0) / max(1, self.total_macs)

    @property
    def flops(self) -> float:
        """MACs of more than 1 bit plus 1/64 of the binary ones (paper §4.3)."""
        return self.float_macs + self.binary_macs / BINARY_OPS_PER_FLOP

    @property
    def unknown_macs(self) -> tuple[str, ...]:
        """Names of the layers whose MACs are unknown (left out of the totals)."""
        return tuple(s.name for s in self.layers if s.macs is None)

    @property
    def unbuilt(self) -> tuple[str, ...]:
        """Names of the layers not built yet (their parameters are left out)."""
        return tuple(s.name for s in self.layers if not s.built)


# ------------------------------------------------------------------------ layer types

# Each kernel element is used once per output position (grouped or not) ...
_CONVOLUTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
# ... and, in a transposed convolution, once per input position.
_TRANSPOSED_CONVOLUTIONS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def _larq_mac_layers() -> tuple[type, ...]:
    """The layers larq 0.14 counts MACs of, as their Keras 3 and lns_keras classes.

    larq lists `Conv1D/2D`, `SeparableConv1D/2D`, `DepthwiseConv2D` and `Dense` (and their
    quantized twins); under tf.keras 2, `Conv1DTranspose` and `Conv2DTranspose` are
    subclasses of `Conv1D` and `Conv2D`, so larq counts them too.
    """
    from lns_keras.layers import zoo

    return (
        keras.layers.Dense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.SeparableConv1D,
        keras.layers.SeparableConv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        zoo.QuantConv2DTranspose,
    )


# The layers larq counts as having no MACs (others: unknown).
_LARQ_MAC_FREE_LAYERS = (
    keras.layers.Flatten,
    keras.layers.BatchNormalization,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
)


# ---------------------------------------------------------------------------- counting


def _precision(quantizer) -> int | None:
    return getattr(quantizer, "precision", None)


def _dtype_bits(dtype) -> int:
    """Bits of one value of `dtype` (32 when unknown)."""
    name = keras.backend.standardize_dtype(dtype)
    digits = "".join(c for c in name if c.isdigit())
    if name == "bool":
        return 8
    return int(digits) if digits else 32


def _safe_attribute(layer, name: str):
    try:  # an SLB layer's `kernel` is a property that raises: it has logits instead
        return getattr(layer, name, None)
    except AttributeError:
        return None


def _kernels(layer) -> dict[int, tuple[str, int | None]]:
    """`id(variable)` -> (attribute, bits or None) of each kernel of `layer`.

    The bits are the quantizer's precision for a kernel that a quantizer reads, `None`
    for a kernel without one (counted at its dtype's bits, or 32 as larq does).
    """
    quantized = getattr(layer, "_quantized_weights", None)
    pairs = [(w, q) for w, q, _ in quantized] if quantized is not None else []
    pairs = pairs or [(w, None) for w in ("kernel", "depthwise_kernel", "pointwise_kernel")]
    kernels = {}
    for attribute, quantizer_name in pairs:
        variable = _safe_attribute(layer, attribute)
        if not isinstance(variable, keras.Variable) or id(variable) in kernels:
            continue
        quantizer = getattr(layer, quantizer_name, None) if quantizer_name else None
        bits = (_precision(quantizer) or 32) if quantizer is not None else None
        kernels[id(variable)] = (attribute, bits)
    return kernels


def _is_batch_norm_affine(layer, variable) -> bool:
    """Whether `variable` is a batch normalization's gamma or beta."""
    return isinstance(layer, keras.layers.BatchNormalization) and any(
        variable is _safe_attribute(layer, name) for name in ("gamma", "beta")
    )


def _weights(layer, larq: bool) -> tuple[dict[int, int], int, list[tuple[str, int, int]]]:
    """({bits: count}, trainable count, [(kernel attribute, size, bits)]) of `layer`."""
    from lns_keras.layers.slb import is_slb_layer

    params: dict[int, int] = {}
    trainable_ids = {id(w) for w in layer.trainable_weights}
    trainable = 0
    kernels: list[tuple[str, int, int]] = []
    variables = list(layer.weights)
    if is_slb_layer(layer):
        # Counted as folded: the logits, temperature and hard flag become one k-bit kernel.
        search_state = {id(v) for v in (layer.logits, layer.temperature, layer.hard_flag)}
        variables = [v for v in variables if id(v) not in search_state]
        size = math.prod(layer.kernel_shape)
        params[layer.weight_bits] = size
        trainable += size
        kernels.append(("kernel", size, layer.weight_bits))
    kernel_bits = _kernels(layer)
    for variable in variables:
        if larq and _is_batch_norm_affine(layer, variable):
            continue  # larq: gamma and beta fold into the moving statistics
        size = math.prod(variable.shape)
        attribute, bits = kernel_bits.get(id(variable), (None, None))
        if bits is None:
            bits = 32 if larq else _dtype_bits(variable.dtype)
        params[bits] = params.get(bits, 0) + size
        trainable += size if id(variable) in trainable_ids else 0
        if attribute is not None:
            kernels.append((attribute, size, bits))
    return dict(sorted(params.items())), trainable, kernels


def _shape_of(tensor) -> tuple | None:
    if isinstance(tensor, list | tuple):
        if len(tensor) != 1:
            return None
        tensor = tensor[0]
    shape = getattr(tensor, "shape", None)
    return tuple(shape) if shape is not None else None


def _output_shape(layer) -> tuple | None:
    try:
        return _shape_of(layer.output)
    except (AttributeError, ValueError, RuntimeError):
        return None  # never called symbolically (a subclassed model), or called twice


def _input_shape(layer) -> tuple | None:
    try:
        return _shape_of(layer.input)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _positions(layer, shape: tuple | None) -> int | None:
    """The number of spatial positions in `shape` (batch and channel axes left out)."""
    if shape is None:
        return None
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        spatial = shape[2:]
    else:
        spatial = shape[1:-1]
    if any(d is None for d in spatial):
        return None
    return math.prod(spatial)


def _uses_per_kernel_element(layer, calls: list[tuple] | None) -> int | None:
    """How many MACs each kernel element takes part in, per example (0: no MACs).

    `calls` holds the (input shape, output shape) of each time the layer runs.
    """
    from lns_keras.layers.zoo import QuantLocallyConnected1D, QuantLocallyConnected2D

    if isinstance(layer, QuantLocallyConnected1D | QuantLocallyConnected2D):
        return len(calls) if calls else 1  # unshared: one kernel slice per output position
    if isinstance(layer, (keras.layers.Dense, *_CONVOLUTIONS)):
        axis = 1  # once per output position
    elif isinstance(layer, _TRANSPOSED_CONVOLUTIONS):
        axis = 0  # once per input position
    else:
        return 0
    if not calls:
        return None
    positions = [_positions(layer, shapes[axis]) for shapes in calls]
    return None if None in positions else sum(positions)


def _larq_output_pixels(output_shape: tuple | None) -> int | None:
    """larq's "pixels of one feature map": from the output's rank, channels last."""
    if output_shape is None or any(d is None for d in output_shape[1:]):
        return None
    rank = len(output_shape)
    if rank == 4:
        return output_shape[1] * output_shape[2]
    if rank == 3:
        return output_shape[1]
    if rank == 2:
        return 1
    return None  # larq raises NotImplementedError


def _macs(layer, kernels, input_bits, calls, larq: bool) -> dict[int, int] | None:
    operand_bits = input_bits or 32
    if larq:
        output_shape = calls[0][1] if calls else None
        if not isinstance(layer, (*_larq_mac_layers(), *_LARQ_MAC_FREE_LAYERS)):
            return None
        uses = _larq_output_pixels(output_shape)
        if not uses:
            return None
        if not isinstance(layer, _larq_mac_layers()):
            return {}
    else:
        uses = _uses_per_kernel_element(layer, calls)
        if uses is None:
            return None
    macs: dict[int, int] = {}
    for attribute, size, bits in kernels:
        # A pointwise kernel multiplies the depthwise output, which nothing binarizes.
        operand = 32 if attribute == "pointwise_kernel" and not larq else operand_bits
        precision = max(operand, bits)
        if size * uses:
            macs[precision] = macs.get(precision, 0) + size * uses
    return dict(sorted(macs.items()))


def _calls(layer, probed: dict[int, list[tuple]]) -> list[tuple] | None:
    """(input shape, output shape) of each run of `layer`, or `None` when unknown."""
    output_shape = _output_shape(layer)
    if output_shape is not None:
        return [(_input_shape(layer), output_shape)]
    return probed.get(id(layer))


def _probe_shapes(model, layers: list) -> dict[int, list[tuple]]:
    """The shapes each layer of a subclassed model runs at, `{id(layer): [(in, out)]}`.

    Keras 3 records no shapes when a subclassed model runs. Its `call` is run once more
    on a symbolic input of the shape it was built with, which records one node a run in
    each layer; the nodes are removed again. Nothing is built: without every layer
    built, or when the symbolic run fails (a `call` that needs concrete tensors), the
    shapes stay unknown.
    """
    build_config = model.get_build_config() or {}
    input_shape = build_config.get("input_shape")
    if input_shape is None or not all(layer.built for layer in layers):
        return {}
    operations = [model, *model._flatten_layers(include_self=False)]
    counts = {id(op): (len(op._inbound_nodes), len(op._outbound_nodes)) for op in operations}
    probed: dict[int, list[tuple]] = {}
    try:
        shape = (None, *tuple(input_shape)[1:])  # any batch size
        model.call(keras.KerasTensor(shape, dtype=model.input_dtype))
        for op in operations:
            for node in op._inbound_nodes[counts[id(op)][0] :]:
                shapes = (
                    _shape_of(list(node.input_tensors)),
                    _shape_of(list(node.output_tensors)),
                )
                probed.setdefault(id(op), []).append(shapes)
    except Exception:  # any failure of a user's `call`: the shapes stay unknown
        return {}
    finally:
        for op in operations:
            inbound, outbound = counts[id(op)]
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]
    return probed


def _layer_stats(layer, larq: bool, probed: dict[int, list[tuple]]) -> LayerStats:
    input_bits = _precision(getattr(layer, "input_quantizer", None))
    # larq reads the shapes Keras recorded, and nothing else.
    calls = _calls(layer, {} if larq else probed)
    output_shape = calls[0][1] if calls else None
    common = {
        "name": layer.name,
        "layer_type": type(layer).__name__,
        "output_shape": output_shape,
        "input_bits": input_bits,
    }
    if not layer.built:
        return LayerStats(**common, params={}, trainable_params=0, macs=None, built=False)
    params, trainable, kernels = _weights(layer, larq)
    macs = _macs(layer, kernels, input_bits, calls, larq)
    return LayerStats(**common, params=params, trainable_params=trainable, macs=macs)


def _flatten(model) -> list:
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_flatten(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            layers.append(layer)
    return layers


def _check_compat(compat) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"`compat` must be one of {COMPAT_MODES}, got compat={compat!r}.")


def model_stats(model: keras.Model, compat: str | None = None) -> ModelStats:
    """Count the parameters, memory, MACs and FLOPs of a built model.

    Args:
        model: A built Keras model (functional, Sequential, or subclassed: see the module
            docstring for what is unknown there).
        compat: `None` for lns_keras's counting, `"larq"` for larq 0.14's figures (batch
            normalization as 2 numbers a channel, pointwise MACs at the input's
            precision, ...; the table in the module docstring).

    Returns:
        A [`ModelStats`][lns_keras.summary.ModelStats] with totals and per-layer entries.

    Raises:
        ValueError: If `model` is not built, or `compat` is neither `None` nor `"larq"`.

    Example:
        ```python
        stats = lns_keras.model_stats(model)
        print(stats.memory_kib, stats.compression_ratio, stats.flops)
        lns_keras.model_stats(model, compat="larq").params  # {1: 288, 32: 314}
        ```
    """
    _check_compat(compat)
    if not model.built:
        raise ValueError(
            f"`model` must be built to count its parameters, got unbuilt {model.name!r}: "
            "call it on data, or give its first layer an input shape."
        )
    larq = compat == "larq"
    layers = _flatten(model)
    probed = {}
    if not larq and any(_output_shape(layer) is None for layer in layers):
        probed = _probe_shapes(model, layers)
    return ModelStats(
        layers=tuple(_layer_stats(layer, larq, probed) for layer in layers), compat=compat
    )


# ---------------------------------------------------------------------------- printing


def _fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _readable_number(value: float) -> str:
    """Three significant figures with a k/M/B/T suffix, as larq's summary prints."""
    value = float(f"{value:.3g}")
    if value < 1000:
        return f"{value:g}"
    if value >= 1e15:
        return f"{value:.2E}"
    magnitude = 0
    while abs(value) >= 1000 and magnitude < 4:
        magnitude += 1
        value /= 1000.0
    return f"{value:.3g}" + ["", " k", " M", " B", " T"][magnitude]


def _readable_memory(bits: float) -> str:
    """Bytes with a binary prefix: B, KiB, MiB, GiB."""
    size = bits / 8
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:,.2f} {unit}"
        size /= 1024
    return f"{size:,.2f} GiB"


_NOTES = {
    None: (
        "Counted by lns_keras: batch normalization as its 4 stored numbers a channel "
        "(gamma, beta, moving mean and variance); a separable convolution's pointwise MACs "
        "at 32 bits (they multiply the depthwise output). compat='larq' counts as larq 0.14."
    ),
    "larq": (
        "Counted as larq 0.14 counts: batch normalization as 2 numbers a channel (the "
        "moving statistics, which fold into a scale and an offset at inference); a "
        "separable convolution's pointwise MACs at the layer input's precision; MACs only "
        "of larq's layer types (others '?')."
    ),
}


def summary(
    model: keras.Model,
    print_fn: Callable[[str], Any] = print,
    include_macs: bool = True,
    compat: str | None = None,
) -> ModelStats:
    """Print a per-layer table of parameters by bit width, memory and MACs, then totals.

    The layout follows larq's `lq.models.summary`: per layer the input precision, the
    output shape, the parameters of each bit width, the memory (KiB, larq's "kB", and
    Mbit) and the MACs of each precision; then the total, trainable and non-trainable
    parameters, the model size (also with 8-bit floats, and at 32 bits), the compression
    ratio, the number of MACs, the ratios of binarized and ternarized MACs, and the FLOPs
    of the LNS paper. A last line says how batch normalization and pointwise MACs were
    counted. Unknown values print as `?`.

    Args:
        model: A built Keras model.
        print_fn: Where each line goes (default `print`).
        include_macs: Whether to print the MACs, their ratios and the FLOPs.
        compat: `None` for lns_keras's counting, `"larq"` for larq 0.14's (see
            [`model_stats`][lns_keras.summary.model_stats]).

    Returns:
        The [`ModelStats`][lns_keras.summary.ModelStats] printed.

    Raises:
        ValueError: If `model` is not built, or `compat` is neither `None` nor `"larq"`.

    Example:
        ```python
        lns_keras.summary(model)
        lns_keras.models.summary(model, compat="larq")  # larq's figures, larq's name
        ```
    """
    stats = model_stats(model, compat=compat)
    param_bits = sorted(stats.params)
    mac_bits = sorted(stats.macs) if include_macs else []
    if include_macs and not mac_bits and stats.unknown_macs:
        mac_bits = [32]  # a column for the '?'

    def count_cells(counts: dict[int, int] | None, widths: list[int]) -> list[str]:
        if counts is None:
            return ["?"] * len(widths)
        return [_fmt(counts.get(bits, 0)) for bits in widths]

    header = (
        "Layer",
        "Input prec. (bit)",
        "Outputs",
        *(f"# {bits}-bit" for bits in param_bits),
        "Memory (KiB)",
        "Memory (Mbit)",
        *(f"{bits}-bit MACs" for bits in mac_bits),
    )
    rows = [
        (
            f"{s.name} ({s.layer_type})",
            str(s.input_bits) if s.input_bits else "-",
            str(s.output_shape) if s.output_shape is not None else "?",
            *count_cells(s.params if s.built else None, param_bits),
            f"{s.memory_kib:.2f}" if s.built else "?",
            f"{s.memory_mbit:.4f}" if s.built else "?",
            *count_cells(s.macs, mac_bits),
        )
        for s in stats.layers
    ]
    total = (
        "Total",
        "",
        "",
        *count_cells(stats.params, param_bits),
        f"{stats.memory_kib:.2f}",
        f"{stats.memory_mbit:.4f}",
        *count_cells(stats.macs, mac_bits),
    )
    widths = [max(len(r[i]) for r in [header, *rows, total]) for i in range(len(header))]

    def line(row):
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "-+-".join("-" * w for w in widths)
    print_fn(f"Model: {model.name}")
    print_fn(line(header))
    print_fn(rule)
    for row in rows:
        print_fn(line(row))
    print_fn(rule)
    print_fn(line(total))
    print_fn("")
    facts = [
        ("Total params", _readable_number(stats.total_params)),
        ("Trainable params", _readable_number(stats.trainable_params)),
        ("Non-trainable params", _readable_number(stats.non_trainable_params)),
        ("Model size", f"{_readable_memory(stats.memory_bits)} ({stats.memory_mbit:,.4f} Mbit)"),
        ("Model size (8-bit FP weights)", _readable_memory(stats.int8_fp_weights_memory_bits)),
        ("Float-32 equivalent", _readable_memory(stats.fp32_memory_bits)),
        ("Compression ratio of memory", f"{stats.compression_ratio:.2f}"),
    ]
    if include_macs:
        facts.append(("Number of MACs", _readable_number(stats.total_macs)))
        if stats.binarized_macs_ratio > 0:
            facts.append(("Ratio of MACs that are binarized", f"{stats.binarized_macs_ratio:.4f}"))
        if stats.ternarized_macs_ratio > 0:
            facts.append(
                ("Ratio of MACs that are ternarized", f"{stats.ternarized_macs_ratio:.4f}")
            )
        facts.append(("FLOPs (MACs above 1 bit + 1-bit MACs / 64)", _readable_number(stats.flops)))
    key_width = max(len(key) for key, _ in facts)
    for key, value in facts:
        print_fn(f"{key.ljust(key_width)}  {value}")
    if stats.unbuilt:
        print_fn(
            f"Not built, parameters unknown and left out: {', '.join(stats.unbuilt)} "
            "(call the model once on data to build its layers)."
        )
    if include_macs and stats.unknown_macs:
        print_fn(f"MACs unknown ('?') and left out: {', '.join(stats.unknown_macs)}.")
    print_fn(_NOTES[compat])
    return stats
