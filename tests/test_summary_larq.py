"""`model_stats(model, compat="larq")` gives larq 0.14's figures: larq is the oracle.

The same models are built with larq under tf.keras 2 (one subprocess for the module,
through tests/larq_oracle.py) and with lns_keras under Keras 3; larq's `ModelProfile`
(what `lq.models.summary` prints) and our statistics must agree layer by layer on the
parameters of each bit width, the trainable ones, the memory and the MACs of each
precision, and in total on the sizes, the compression ratio and the MAC ratios.
"""

from __future__ import annotations

import json

import keras
import larq_oracle
import pytest

import lns_keras

# Both sides build these from the same description: (layer, arguments). Quantizers are
# names or ("DoReFa", kwargs); everything else is plain Keras.
IMAGE_MODEL = [
    ("QuantConv2D", {"filters": 8, "kernel_size": 3, "padding": "same",
                     "kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}),
    ("BatchNormalization", {}),
    ("QuantConv2D", {"filters": 8, "kernel_size": 3, "padding": "same", "use_bias": False,
                     "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
                     "kernel_constraint": "weight_clip"}),
    ("MaxPooling2D", {"pool_size": 2}),
    ("QuantDepthwiseConv2D", {"kernel_size": 3, "padding": "same", "pad_values": 1.0,
                              "use_bias": False, "input_quantizer": "ste_tern",
                              "depthwise_quantizer": "ste_tern"}),
    ("BatchNormalization", {"scale": False}),
    ("QuantSeparableConv2D", {"filters": 8, "kernel_size": 3, "padding": "same",
                              "input_quantizer": "ste_sign", "depthwise_quantizer": "ste_sign",
                              "pointwise_quantizer": "ste_sign",
                              "depthwise_constraint": "weight_clip",
                              "pointwise_constraint": "weight_clip"}),
    ("QuantConv2D", {"filters": 4, "kernel_size": 1,
                     "input_quantizer": ("DoReFa", {"k_bit": 2, "mode": "activations"}),
                     "kernel_quantizer": ("DoReFa", {"k_bit": 2, "mode": "weights"})}),
    ("QuantConv2DTranspose", {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same",
                              "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
                              "kernel_constraint": "weight_clip"}),
    ("Conv2D", {"filters": 6, "kernel_size": 3}),
    ("GlobalAveragePooling2D", {}),
    ("Dense", {"units": 10, "trainable": False}),
]  # fmt: skip
IMAGE_SHAPE = (16, 16, 3)

SEQUENCE_MODEL = [
    ("QuantConv1D", {"filters": 8, "kernel_size": 3, "padding": "same",
                     "kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}),
    ("MaxPooling1D", {"pool_size": 2}),
    ("QuantSeparableConv1D", {"filters": 4, "kernel_size": 3, "padding": "same",
                              "input_quantizer": "ste_sign", "depthwise_quantizer": "ste_sign",
                              "pointwise_quantizer": "ste_sign"}),
    ("QuantConv1D", {"filters": 4, "kernel_size": 3, "input_quantizer": "ste_sign",
                     "kernel_quantizer": "ste_tern"}),
    ("Flatten", {}),
    ("QuantDense", {"units": 3, "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
                    "kernel_constraint": "weight_clip"}),
]  # fmt: skip
SEQUENCE_SHAPE = (20, 5)

MODELS = {"image": (IMAGE_MODEL, IMAGE_SHAPE), "sequence": (SEQUENCE_MODEL, SEQUENCE_SHAPE)}

LARQ_SCRIPT = """
import json
import larq as lq
from larq.models import ModelProfile

def quantizer(spec):
    if isinstance(spec, list):
        return getattr(lq.quantizers, spec[0])(**spec[1])
    return spec

def layer(name, kwargs):
    kwargs = {k: quantizer(v) if k.endswith("quantizer") else v for k, v in kwargs.items()}
    cls = getattr(lq.layers, name, None) or getattr(tf.keras.layers, name)
    return cls(**kwargs)

for key, (layers, shape) in json.loads(str(inp["models"])).items():
    model = tf.keras.Sequential([tf.keras.Input(shape), *(layer(n, k) for n, k in layers)])
    profile = ModelProfile(model)
    per_layer = []
    for p in profile.layer_profiles:
        bitwidths = p.unique_param_bidtwidths
        precisions = p.unique_op_precisions
        per_layer.append({
            "params": {b: p.weight_count(b) for b in bitwidths},
            "trainable": p.weight_count(trainable=True),
            "memory": p.memory,
            "input_precision": p.input_precision,
            "macs": None if p.op_count("mac") is None
                    else {q: p.op_count("mac", q) for q in precisions},
        })
    totals = {
        "params": {b: profile.weight_count(b) for b in profile.unique_param_bidtwidths},
        "trainable": profile.weight_count(trainable=True),
        "non_trainable": profile.weight_count(trainable=False),
        "memory": profile.memory,
        "int8_memory": profile.int8_fp_weights_memory,
        "fp32_memory": profile.fp_equivalent_memory,
        "macs": {q: profile.op_count("mac", q) for q in profile.unique_op_precisions},
        "summary": dict(profile.generate_summary()),
    }
    out[key] = np.array(json.dumps({"layers": per_layer, "totals": totals}))
"""


@pytest.fixture(scope="module")
def larq_profiles(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("larq_summary")
    models = json.dumps(MODELS)
    results = larq_oracle.run(LARQ_SCRIPT, {"models": models}, folder)
    return {key: json.loads(str(results[key])) for key in MODELS}


def _quantizer(spec):
    if isinstance(spec, tuple):
        return getattr(lns_keras.quantizers, spec[0])(**spec[1])
    return spec


def _model(key: str) -> keras.Model:
    layers, shape = MODELS[key]
    built = []
    for name, kwargs in layers:
        kwargs = {k: _quantizer(v) if k.endswith("quantizer") else v for k, v in kwargs.items()}
        cls = getattr(lns_keras, name, None) or getattr(keras.layers, name)
        built.append(cls(**kwargs))
    return keras.Sequential([keras.Input(shape), *built])


def _int_keys(counts: dict | None) -> dict | None:
    return None if counts is None else {int(k): v for k, v in counts.items()}


@pytest.mark.parametrize("key", list(MODELS))
def test_every_layer_counts_as_larq_counts_it(key, larq_profiles):
    stats = lns_keras.model_stats(_model(key), compat="larq")
    expected = larq_profiles[key]["layers"]
    assert len(stats.layers) == len(expected)
    for layer, want in zip(stats.layers, expected, strict=True):
        context = f"{layer.name} ({layer.layer_type})"
        assert layer.params == _int_keys(want["params"]), context
        assert layer.trainable_params == want["trainable"], context
        assert layer.memory_bits == want["memory"], context
        assert layer.input_bits == want["input_precision"], context
        assert layer.macs == _int_keys(want["macs"]), context


@pytest.mark.parametrize("key", list(MODELS))
def test_totals_are_larqs(key, larq_profiles):
    stats = lns_keras.model_stats(_model(key), compat="larq")
    want = larq_profiles[key]["totals"]
    assert stats.params == _int_keys(want["params"])
    assert (stats.trainable_params, stats.non_trainable_params) == (
        want["trainable"],
        want["non_trainable"],
    )
    assert stats.memory_bits == want["memory"]
    assert stats.int8_fp_weights_memory_bits == want["int8_memory"]
    assert stats.fp32_memory_bits == want["fp32_memory"]
    assert stats.macs == _int_keys(want["macs"])
    summary = want["summary"]
    assert stats.compression_ratio == pytest.approx(summary["Compression Ratio of Memory"])
    assert f"{stats.binarized_macs_ratio:.4f}" == summary["Ratio of MACs that are binarized"]
    assert f"{stats.ternarized_macs_ratio:.4f}" == summary["Ratio of MACs that are ternarized"]


def test_printed_summary_has_larqs_figures(larq_profiles):
    lines = []
    lns_keras.models.summary(_model("image"), print_fn=lines.append, compat="larq")
    facts = dict(
        line.split("  ", 1) for line in lines if line.startswith(("Total params", "Number of"))
    )
    summary = larq_profiles["image"]["totals"]["summary"]
    assert facts["Total params"].strip() == summary["Total params"]
    assert facts["Number of MACs"].strip() == summary["Number of MACs"]
    model_size = next(line for line in lines if line.startswith("Model size "))
    assert summary["Model size"] in model_size
    assert "larq 0.14" in lines[-1]


def test_default_counting_differs_from_larq_where_documented(larq_profiles):
    """Batch normalization (4 numbers a channel, not 2), the separable convolution's
    pointwise MACs (32-bit), transposed convolutions (per input position) and layers
    larq leaves out (GlobalAveragePooling2D: no MACs, not unknown)."""
    model = _model("image")
    ours = {s.name: s for s in lns_keras.model_stats(model).layers}
    larq = {s.name: s for s in lns_keras.model_stats(model, compat="larq").layers}
    bn = model.layers[1].name
    assert (ours[bn].params, larq[bn].params) == ({32: 4 * 8}, {32: 2 * 8})
    assert ours[bn].trainable_params == 2 * 8 and larq[bn].trainable_params == 0
    separable = model.layers[6].name
    # 8x8 positions; depthwise 3*3*8 = 72, pointwise 8*8 = 64
    assert larq[separable].macs == {1: (72 + 64) * 64}
    assert ours[separable].macs == {1: 72 * 64, 32: 64 * 64}
    transpose = model.layers[8].name
    # kernel 3*3*4*4 = 144: larq per 16x16 output position, ours per 8x8 input position
    assert larq[transpose].macs == {1: 144 * 256}
    assert ours[transpose].macs == {1: 144 * 64}
    pool = model.layers[10].name
    assert (ours[pool].macs, larq[pool].macs) == ({}, None)
    assert lns_keras.model_stats(model).total_params == model.count_params()
