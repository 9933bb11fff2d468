"""model_stats / summary: parameter, memory, MAC and FLOP counts worked out by hand.

Conventions (lns_keras/summary.py): a kernel is 1-bit when its `kernel_quantizer` has
precision 1; every other weight (biases, batch normalization, float layers) is 32-bit;
a layer's MACs are binary only when its input and kernel quantizers both have precision 1;
MACs = kernel size x output positions, per example; FLOPs = float MACs + binary MACs / 64.
larq's own figures (`compat="larq"`) are checked against larq in test_summary_larq.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import lns_keras

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _binary_conv_model(use_bias: bool) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    outputs = lns_keras.QuantConv2D(4, 3, use_bias=use_bias, name="bconv", **BINARY)(inputs)
    return keras.Model(inputs, outputs)


def test_binary_conv_without_bias():
    stats = lns_keras.model_stats(_binary_conv_model(use_bias=False))
    # kernel 3*3*3*4 = 108 one-bit weights; "valid" 3x3 on 8x8 -> 6x6 = 36 positions;
    # binary MACs = 108 * 36 = 3888; FLOPs = 3888 / 64 = 60.75.
    assert len(stats.layers) == 1
    layer = stats.layers[0]
    assert layer.name == "bconv"
    assert layer.layer_type == "QuantConv2D"
    assert layer.output_shape == (None, 6, 6, 4)
    assert (layer.params_1bit, layer.params_32bit) == (108, 0)
    assert (layer.binary_macs, layer.float_macs) == (3888, 0)
    assert layer.flops == pytest.approx(60.75)
    assert layer.memory_mbit == pytest.approx(108 / 1e6)
    assert (stats.params_1bit, stats.params_32bit) == (108, 0)
    assert (stats.binary_macs, stats.float_macs) == (3888, 0)
    assert stats.flops == pytest.approx(60.75)
    assert stats.memory_mbit == pytest.approx(108e-6)


def test_binary_conv_with_bias():
    stats = lns_keras.model_stats(_binary_conv_model(use_bias=True))
    # As above plus 4 biases, which are 32-bit: memory = (108 + 32 * 4) bits = 236 bits.
    assert (stats.params_1bit, stats.params_32bit) == (108, 4)
    assert stats.memory_mbit == pytest.approx(236e-6)
    # The bias adds no multiplications.
    assert (stats.binary_macs, stats.float_macs) == (3888, 0)
    assert stats.flops == pytest.approx(60.75)


def test_binary_dense():
    inputs = keras.Input((10,))
    outputs = lns_keras.QuantDense(5, name="bdense", **BINARY)(inputs)
    stats = lns_keras.model_stats(keras.Model(inputs, outputs))
    # kernel 10*5 = 50 one-bit; bias 5 32-bit; one position: 50 binary MACs.
    assert (stats.params_1bit, stats.params_32bit) == (50, 5)
    assert stats.memory_mbit == pytest.approx((50 + 32 * 5) / 1e6)
    assert (stats.binary_macs, stats.float_macs) == (50, 0)
    assert stats.flops == pytest.approx(50 / 64)


def _mixed_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = lns_keras.QuantConv2D(8, 3, padding="same", use_bias=False, name="bconv", **BINARY)(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = lns_keras.QuantDense(16, kernel_quantizer="ste_sign", name="kdense")(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs, name="mixed")


# Per layer, by hand (8x8 input, "same" padding keeps 8x8 = 64 positions):
#   conv   float Conv2D 3x3, 3 -> 4:  kernel 3*3*3*4 = 108, bias 4 -> 112 32-bit;
#          float MACs 108 * 64 = 6912
#   bn     4 channels x (gamma, beta, moving mean, moving variance) = 16 32-bit
#   bconv  binary 3x3, 4 -> 8, no bias: 3*3*4*8 = 288 1-bit; binary MACs 288 * 64 = 18432
#   pool   2x2 max pooling -> 4x4x8; flatten -> 128; no parameters, no MACs
#   kdense kernel quantized only: 128*16 = 2048 1-bit, bias 16 32-bit;
#          its input is real, so its MACs are float: 2048
#   head   float Dense 16 -> 10: 160 + 10 = 170 32-bit; float MACs 160
MIXED_EXPECTED = {
    # name: (params_1bit, params_32bit, binary_macs, float_macs)
    "conv": (0, 112, 0, 6912),
    "bn": (0, 16, 0, 0),
    "bconv": (288, 0, 18432, 0),
    "pool": (0, 0, 0, 0),
    "flatten": (0, 0, 0, 0),
    "kdense": (2048, 16, 0, 2048),
    "head": (0, 170, 0, 160),
}


def test_mixed_model_per_layer():
    stats = lns_keras.model_stats(_mixed_model())
    actual = {
        s.name: (s.params_1bit, s.params_32bit, s.binary_macs, s.float_macs) for s in stats.layers
    }
    assert actual == MIXED_EXPECTED
    by_name = {s.name: s for s in stats.layers}
    assert by_name["bconv"].flops == pytest.approx(18432 / 64)  # 288
    assert by_name["kdense"].flops == pytest.approx(2048)
    # (2048 + 32 * 16) bits = 2560 bits
    assert by_name["kdense"].memory_mbit == pytest.approx(2560e-6)
    assert by_name["pool"].output_shape == (None, 4, 4, 8)


def test_mixed_model_totals():
    stats = lns_keras.model_stats(_mixed_model())
    # 1-bit: 288 + 2048 = 2336; 32-bit: 112 + 16 + 16 + 170 = 314
    assert stats.params_1bit == 2336
    assert stats.params_32bit == 314
    # (2336 + 32 * 314) bits = 2336 + 10048 = 12384 bits
    assert stats.memory_mbit == pytest.approx(0.012384)
    assert stats.binary_macs == 18432
    # 6912 + 2048 + 160 = 9120
    assert stats.float_macs == 9120
    # 9120 + 18432 / 64 = 9120 + 288 = 9408
    assert stats.flops == pytest.approx(9408)
    # Every weight is counted exactly once.
    assert stats.params_1bit + stats.params_32bit == _mixed_model().count_params()


def test_non_binary_quantizers_count_at_their_precision():
    inputs = keras.Input((6, 6, 2))
    # Ternary kernel (precision 2) with binary input: 2-bit weights, MACs not binary.
    x = lns_keras.QuantConv2D(
        3, 3, use_bias=False, input_quantizer="ste_sign", kernel_quantizer="ste_tern"
    )(inputs)
    # Binary kernel but a 2-bit DoReFa input: 1-bit weights, float MACs.
    outputs = lns_keras.QuantConv2D(
        2, 1, use_bias=False, input_quantizer="dorefa_quantizer", kernel_quantizer="ste_sign"
    )(x)
    stats = lns_keras.model_stats(keras.Model(inputs, outputs))
    first, second = stats.layers
    # first: 3*3*2*3 = 54 weights at 2 bits, 4x4 = 16 positions -> 864 MACs
    assert (first.params_1bit, first.params_32bit, first.binary_macs, first.float_macs) == (
        0,
        0,
        0,
        864,
    )
    assert (first.params_kbit, first.kernel_bits, first.memory_bits) == (54, 2, 108)
    # second: 1*1*3*2 = 6 weights, 16 positions -> 96 MACs
    assert (second.params_1bit, second.params_32bit, second.binary_macs, second.float_macs) == (
        6,
        0,
        0,
        96,
    )


def test_sequential_model():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            lns_keras.QuantDense(5, use_bias=False, **BINARY),
            keras.layers.Dense(2),
        ]
    )
    stats = lns_keras.model_stats(model)
    # 10*5 = 50 1-bit, 50 binary MACs; Dense 5*2 + 2 = 12 32-bit, 10 float MACs
    assert (stats.params_1bit, stats.params_32bit) == (50, 12)
    assert (stats.binary_macs, stats.float_macs) == (50, 10)
    assert stats.flops == pytest.approx(10 + 50 / 64)


def test_unbuilt_model_is_rejected():
    model = keras.Sequential([lns_keras.QuantDense(5)])
    with pytest.raises(ValueError, match="built"):
        lns_keras.model_stats(model)


def test_summary_prints_a_table():
    model = _mixed_model()
    lines = []
    stats = lns_keras.summary(model, print_fn=lines.append)
    text = "\n".join(lines)
    assert stats.params_1bit == 2336
    assert lines[0] == "Model: mixed"
    for name, layer_type in [
        ("conv", "Conv2D"),
        ("bn", "BatchNormalization"),
        ("bconv", "QuantConv2D"),
        ("pool", "MaxPooling2D"),
        ("kdense", "QuantDense"),
        ("head", "Dense"),
    ]:
        assert f"{name} ({layer_type})" in text
    header = lines[1]
    for column in ("Input prec. (bit)", "# 1-bit", "# 32-bit", "Memory (KiB)", "Memory (Mbit)"):
        assert column in header
    assert "1-bit MACs" in header and "32-bit MACs" in header
    total = next(line for line in lines if line.startswith("Total "))
    # 12384 bits = 1.51 KiB = 0.0124 Mbit
    for value in ("2,336", "314", "1.51", "0.0124", "18,432", "9,120"):
        assert value in total
    # One row per layer between the two rules.
    rules = [i for i, line in enumerate(lines) if line and set(line) <= {"-", "+"}]
    assert len(rules) == 2 and rules[1] - rules[0] - 1 == len(MIXED_EXPECTED)
    facts = dict(line.split("  ", 1) for line in lines if "  " in line and "|" not in line)
    facts = {key: value.strip() for key, value in facts.items()}
    assert facts["Total params"] == "2.65 k"  # 2336 + 314
    assert facts["Model size"] == "1.51 KiB (0.0124 Mbit)"
    # 32-bit equivalent: 2650 * 4 bytes = 10.35 KiB; ratio 12384 / 84800 = 0.146
    assert facts["Float-32 equivalent"] == "10.35 KiB"
    assert facts["Compression ratio of memory"] == "0.15"
    assert facts["Number of MACs"] == "27.6 k"  # 18432 + 9120
    assert facts["Ratio of MACs that are binarized"] == f"{18432 / 27552:.4f}"
    assert "FLOPs" in text and "9.41 k" in text
    assert "4 stored numbers a channel" in lines[-1] and "compat='larq'" in lines[-1]


def test_summary_without_macs():
    lines = []
    lns_keras.summary(_mixed_model(), print_fn=lines.append, include_macs=False)
    text = "\n".join(lines[:-1])  # the last line says how MACs are counted
    assert "MACs" not in text and "FLOPs" not in text
    assert "Memory (KiB)" in lines[1]


def test_larq_counting_is_named_in_the_summary():
    lines = []
    stats = lns_keras.summary(_mixed_model(), print_fn=lines.append, compat="larq")
    assert stats.compat == "larq"
    assert "larq 0.14" in lines[-1] and "2 numbers a channel" in lines[-1]
    # bn: the moving mean and variance only, non-trainable
    bn = next(s for s in stats.layers if s.name == "bn")
    assert (bn.params, bn.trainable_params) == ({32: 8}, 0)


@pytest.mark.parametrize("compat", ["LARQ", "keras", 1])
def test_unknown_compat_is_named(compat):
    with pytest.raises(ValueError, match="`compat`"):
        lns_keras.model_stats(_mixed_model(), compat=compat)


def test_models_summary_is_the_same_function():
    assert lns_keras.models.summary is lns_keras.summary


def test_memory_units_and_ratios():
    stats = lns_keras.model_stats(_binary_conv_model(use_bias=True))
    # 108 1-bit + 4 32-bit = 236 bits
    assert stats.params == {1: 108, 32: 4}
    assert stats.memory_kib == pytest.approx(236 / 8192)
    assert stats.fp32_memory_bits == 32 * 112
    assert stats.compression_ratio == pytest.approx(236 / (32 * 112))
    assert stats.int8_fp_weights_memory_bits == 108 + 8 * 4
    assert stats.macs == {1: 3888}
    assert stats.binarized_macs_ratio == 1.0 and stats.ternarized_macs_ratio == 0.0


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="toy")
        self.conv = lns_keras.QuantConv2D(
            32, 3, padding="same", kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
        )
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(10)

    def call(self, inputs):
        return self.dense(self.pool(self.conv(inputs)))


def test_subclassed_model_counts_every_position():
    model = _Subclassed()
    model(np.zeros((2, 32, 32, 3), "float32"))
    stats = lns_keras.model_stats(model)
    conv, pool, dense = stats.layers
    # 3*3*3*32 = 864 kernel elements at 32*32 output positions (not 864: one position)
    assert conv.output_shape == (None, 32, 32, 32)
    assert conv.macs == {32: 864 * 1024}
    assert dense.macs == {32: 320}
    assert pool.macs == {}
    # The probe leaves no trace in the layers: Keras still knows no output for them.
    with pytest.raises((AttributeError, ValueError)):
        model.conv.output  # noqa: B018
    # larq reads only the shapes Keras recorded: unknown.
    larq = lns_keras.model_stats(model, compat="larq")
    assert [s.macs for s in larq.layers] == [None, None, None]
    assert [s.output_shape for s in larq.layers] == [None, None, None]
    assert larq.params == stats.params == {1: 864, 32: 32 + 330}


def test_subclassed_model_built_without_data_reports_unbuilt_layers():
    model = _Subclassed()
    with pytest.warns(UserWarning):  # Keras 3: build() leaves the layers unbuilt
        model.build((None, 32, 32, 3))
    lines = []
    stats = lns_keras.summary(model, print_fn=lines.append)
    assert stats.unbuilt == (model.conv.name, model.dense.name)
    assert stats.unknown_macs == (model.conv.name, model.dense.name)
    assert stats.total_params == 0
    text = "\n".join(lines)
    assert "Not built" in text and model.conv.name in text
    conv_row = next(line for line in lines if line.startswith(model.conv.name))
    assert "?" in conv_row
