"""Model statistics for binary networks: 1-bit and 32-bit parameters, memory, MACs, FLOPs.

FLOPs are counted as in the LNS paper (§4.3, after Bi-Real Net): real-valued
multiply-accumulates plus 1/64 of the binary ones, since a 64-bit CPU computes 64 binary
products with one XNOR and one popcount. Only convolutions (plain, depthwise, separable,
transposed, locally connected) and dense layers are counted; batch normalization,
activations and additions are left out, as in the paper's tables. A kernel element takes
part in one multiply-accumulate per output position (per input position in a transposed
convolution, once in a locally connected layer).
A parameter is 1-bit when it is the kernel of a layer whose `kernel_quantizer` has
precision 1, and k-bit (counted at k bits) when that precision is k, 1 < k < 32; every
other weight (biases, batch normalization, mapping networks) is 32-bit. An SLB layer counts
as the kernel it deploys, `weight_bits` bits a weight, as its folded layer does: its
logits, temperature and hard flag are search state that folding removes.
A layer's multiply-accumulates are binary when both its input and kernel quantizers are
1-bit; a separable convolution's pointwise products never are (they multiply the
depthwise output, which is not binarized; larq counts them at the layer input's
precision).
"""

from __future__ import annotations

import dataclasses
import math

import keras

__all__ = ["LayerStats", "ModelStats", "model_stats", "summary"]

BINARY_OPS_PER_FLOP = 64  # paper §4.3


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Statistics of one layer, as [`model_stats`][lns_keras.summary.model_stats] builds it.

    Each argument is kept as the attribute of the same name.

    Args:
        name: The layer's name.
        layer_type: Its class name.
        output_shape: Its output shape (batch axis `None`).
        params_1bit: Number of 1-bit parameters.
        params_32bit: Number of 32-bit parameters.
        binary_macs: Binary multiply-accumulates per example.
        float_macs: Real-valued multiply-accumulates per example.
        params_kbit: Number of parameters of a k-bit kernel, 1 < k < 32.
        kernel_bits: The bits k of such a kernel (32 when there is none).

    Raises:
        TypeError: If an argument is missing.
        dataclasses.FrozenInstanceError: On assignment to an attribute; the statistics
            are frozen.

    Example:
        ```python
        for layer in lns_keras.model_stats(model).layers:
            print(layer.name, layer.params_1bit, layer.memory_mbit, layer.flops)
        ```
    """

    name: str
    layer_type: str
    output_shape: tuple
    params_1bit: int
    params_32bit: int
    binary_macs: int
    float_macs: int
    params_kbit: int = 0
    kernel_bits: int = 32

    @property
    def memory_bits(self) -> int:
        """Memory of the parameters in bits."""
        return self.params_1bit + self.kernel_bits * self.params_kbit + 32 * self.params_32bit

    @property
    def memory_mbit(self) -> float:
        """Memory of the parameters in Mbit (10^6 bits)."""
        return self.memory_bits / 1e6

    @property
    def flops(self) -> float:
        """Real MACs plus 1/64 of the binary ones (paper §4.3)."""
        return self.float_macs + self.binary_macs / BINARY_OPS_PER_FLOP


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Statistics of a model: totals and a `LayerStats` per layer.

    Args:
        layers: One [`LayerStats`][lns_keras.summary.LayerStats] per layer, in order;
            kept as the attribute `layers`.

    Raises:
        TypeError: If `layers` is missing.
        dataclasses.FrozenInstanceError: On assignment to `layers`; the statistics are
            frozen.

    Example:
        ```python
        stats = lns_keras.model_stats(model)
        print(stats.params_1bit, stats.params_32bit, stats.memory_mbit, stats.flops)
        ```
    """

    layers: tuple[LayerStats, ...]

    @property
    def params_1bit(self) -> int:
        """Total 1-bit parameters."""
        return sum(s.params_1bit for s in self.layers)

    @property
    def params_32bit(self) -> int:
        """Total 32-bit parameters."""
        return sum(s.params_32bit for s in self.layers)

    @property
    def params_kbit(self) -> int:
        """Total parameters of k-bit kernels, 1 < k < 32 (each layer's own k)."""
        return sum(s.params_kbit for s in self.layers)

    @property
    def memory_mbit(self) -> float:
        """Total memory of the parameters in Mbit (10^6 bits)."""
        return sum(s.memory_bits for s in self.layers) / 1e6

    @property
    def binary_macs(self) -> int:
        """Total binary multiply-accumulates per example."""
        return sum(s.binary_macs for s in self.layers)

    @property
    def float_macs(self) -> int:
        """Total real-valued multiply-accumulates per example."""
        return sum(s.float_macs for s in self.layers)

    @property
    def flops(self) -> float:
        """Real MACs plus 1/64 of the binary ones (paper §4.3)."""
        return self.float_macs + self.binary_macs / BINARY_OPS_PER_FLOP


def _precision(quantizer) -> int:
    return getattr(quantizer, "precision", None) or 32


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


def _kernels(layer) -> list[tuple[str, tuple, int]]:
    """(attribute, shape, bits) of each kernel of `layer`."""
    from lns_keras.layers.slb import is_slb_layer

    if is_slb_layer(layer):
        # Counted as folded: the logits, temperature and hard flag become one k-bit kernel.
        return [("kernel", tuple(layer.kernel_shape), layer.weight_bits)]
    # Every lns_keras quantized layer lists its kernels and their quantizers.
    quantized = getattr(layer, "_quantized_weights", None)
    if quantized is not None:
        return [
            (weight, tuple(getattr(layer, weight).shape), _precision(getattr(layer, quantizer)))
            for weight, quantizer, _ in quantized
        ]
    return [
        (weight, tuple(getattr(layer, weight).shape), 32)
        for weight in ("kernel", "depthwise_kernel", "pointwise_kernel")
        if getattr(layer, weight, None) is not None
    ]


def _spatial_size(layer, shape: tuple) -> int:
    """The number of positions in `shape` (batch and channel axes left out)."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return math.prod(shape[2:])
    return math.prod(shape[1:-1])


def _uses_per_kernel_element(layer, output_shape: tuple) -> int:
    """How many multiply-accumulates each kernel element takes part in, per example."""
    from lns_keras.layers.zoo import QuantLocallyConnected1D, QuantLocallyConnected2D

    if isinstance(layer, QuantLocallyConnected1D | QuantLocallyConnected2D):
        return 1  # unshared: one slice of the kernel per output position
    if isinstance(layer, (keras.layers.Dense, *_CONVOLUTIONS)):
        return _spatial_size(layer, output_shape)
    if isinstance(layer, _TRANSPOSED_CONVOLUTIONS):
        return _spatial_size(layer, _input_shape(layer))
    return 0


def _layer_stats(layer) -> LayerStats:
    from lns_keras.layers.slb import is_slb_layer

    kernels = _kernels(layer)
    if is_slb_layer(layer):
        search_state = {id(v) for v in (layer.logits, layer.temperature, layer.hard_flag)}
        other = [w for w in layer.weights if id(w) not in search_state]
        n_weights = math.prod(kernels[0][1]) + sum(math.prod(w.shape) for w in other)
    else:
        n_weights = sum(math.prod(w.shape) for w in layer.weights)
    input_bits = _precision(getattr(layer, "input_quantizer", None))
    output_shape = tuple(layer.output.shape) if _has_output(layer) else ()
    uses = _uses_per_kernel_element(layer, output_shape)

    params_1bit = params_kbit = binary_macs = float_macs = 0
    kbit_widths = []
    for weight, shape, bits in kernels:
        size = math.prod(shape)
        if bits == 1:
            params_1bit += size
        elif bits < 32:
            params_kbit += size
            kbit_widths.append(bits)
        # A separable convolution's pointwise kernel multiplies the depthwise output,
        # which no quantizer binarizes: its products are never binary.
        if bits == 1 and input_bits == 1 and weight != "pointwise_kernel":
            binary_macs += size * uses
        else:
            float_macs += size * uses
    return LayerStats(
        name=layer.name,
        layer_type=type(layer).__name__,
        output_shape=output_shape,
        params_1bit=params_1bit,
        params_32bit=n_weights - params_1bit - params_kbit,
        binary_macs=binary_macs,
        float_macs=float_macs,
        params_kbit=params_kbit,
        # One width a layer: two k-bit kernels of different k count at the larger.
        kernel_bits=max(kbit_widths, default=32),
    )


def _input_shape(layer) -> tuple:
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return ()


def _has_output(layer) -> bool:
    try:
        layer.output  # noqa: B018
    except (AttributeError, ValueError):
        return False
    return True


def _flatten(model) -> list:
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_flatten(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            layers.append(layer)
    return layers


def model_stats(model: keras.Model) -> ModelStats:
    """Count the parameters, memory, MACs and FLOPs of a built model.

    Args:
        model: A built Keras model (functional or Sequential with a known input shape).

    Returns:
        A [`ModelStats`][lns_keras.summary.ModelStats] with totals and per-layer entries.

    Raises:
        ValueError: If `model` is not built.

    Example:
        ```python
        stats = lns_keras.model_stats(model)
        print(stats.memory_mbit, stats.flops)
        ```
    """
    if not model.built:
        raise ValueError(
            f"`model` must be built to count its parameters, got unbuilt {model.name!r}."
        )
    return ModelStats(layers=tuple(_layer_stats(layer) for layer in _flatten(model)))


def _fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def summary(model: keras.Model, print_fn=print) -> ModelStats:
    """Print a per-layer table of 1-bit/(k-bit/)32-bit parameters, memory and MACs, then totals.

    The layout follows larq's `lq.models.summary`.

    Args:
        model: A built Keras model.
        print_fn: Where each line goes (default `print`).

    Returns:
        The [`ModelStats`][lns_keras.summary.ModelStats] printed.

    Raises:
        ValueError: If `model` is not built.

    Example:
        ```python
        lns_keras.summary(model)
        ```
    """
    stats = model_stats(model)
    # A "# k-bit" column (count and bits) only when some kernel has 1 < k < 32 bits.
    kbit = stats.params_kbit > 0

    def kbit_cell(count: int, bits: int | None) -> list[str]:
        if not kbit:
            return []
        return [f"{_fmt(count)} ({bits}-bit)" if count and bits else _fmt(count)]

    header = (
        "Layer",
        "Outputs",
        "# 1-bit",
        *(["# k-bit"] if kbit else []),
        "# 32-bit",
        "Mem (Mbit)",
        "1-bit MACs",
        "32-bit MACs",
    )
    rows = [
        (
            f"{s.name} ({s.layer_type})",
            str(s.output_shape),
            _fmt(s.params_1bit),
            *kbit_cell(s.params_kbit, s.kernel_bits),
            _fmt(s.params_32bit),
            f"{s.memory_mbit:.4f}",
            _fmt(s.binary_macs),
            _fmt(s.float_macs),
        )
        for s in stats.layers
    ]
    total = (
        "Total",
        "",
        _fmt(stats.params_1bit),
        *kbit_cell(stats.params_kbit, None),
        _fmt(stats.params_32bit),
        f"{stats.memory_mbit:.4f}",
        _fmt(stats.binary_macs),
        _fmt(stats.float_macs),
    )
    widths = [max(len(r[i]) for r in [header, *rows, total]) for i in range(len(header))]

    def line(row):
        return " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
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
    print_fn(
        f"Memory: {stats.memory_mbit:.2f} Mbit ({stats.memory_mbit / 8:.2f} MB) | "
        f"FLOPs (32-bit MACs + 1-bit MACs / 64): {stats.flops / 1e6:.2f} M"
    )
    return stats
