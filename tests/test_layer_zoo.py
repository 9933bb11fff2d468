"""larq's layer zoo on Keras 3: same outputs as larq 0.14, pad_values, warnings, saving, stats.

The oracle runs larq once for the whole module (one subprocess, every case at once) on
the weights and inputs this module draws; each case then compares its own output.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras
import larq_oracle
import numpy as np
import pytest

import lns_keras
from lns_keras import quantizers

BINARY = {"input_quantizer": "ste_sign"}
KERNEL = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip"}
DEPTHWISE = {"depthwise_quantizer": "ste_sign", "depthwise_constraint": "weight_clip"}
POINTWISE = {"pointwise_quantizer": "ste_sign", "pointwise_constraint": "weight_clip"}


def _case(cls, args, input_shape, **kwargs):
    return {"cls": cls, "args": list(args), "kwargs": kwargs, "input_shape": list(input_shape)}


def _padded_cases(cls, args, input_shape, quantized, **extra):
    """Both paddings, pad_values 0 and 1, with binary input and kernel quantizers."""
    binary = {**BINARY, **quantized}
    return {
        f"{cls}-valid": _case(cls, args, input_shape, padding="valid", **binary, **extra),
        f"{cls}-same-0": _case(cls, args, input_shape, padding="same", **binary, **extra),
        f"{cls}-same-1": _case(
            cls, args, input_shape, padding="same", pad_values=1.0, **binary, **extra
        ),
        # pad_values is ignored with padding="valid", as in larq.
        f"{cls}-valid-1": _case(
            cls, args, input_shape, padding="valid", pad_values=1.0, **binary, **extra
        ),
        f"{cls}-float": _case(cls, args, input_shape, padding="same", **extra),
    }


# Every case runs in larq 0.14 (tf.keras 2) and in lns_keras on the same weights and input.
# Strides and dilations of 2 make the "same" padding asymmetric, where an off-by-one in the
# explicit padding would show.
ORACLE_CASES = {
    **_padded_cases("QuantConv1D", (4, 3), (11, 3), KERNEL),
    "QuantConv1D-same-1-strided": _case(
        "QuantConv1D",
        (4, 4),
        (11, 3),
        padding="same",
        pad_values=1.0,
        strides=2,
        **BINARY,
        **KERNEL,
    ),
    "QuantConv1D-causal": _case(
        "QuantConv1D", (4, 3), (11, 3), padding="causal", dilation_rate=2, **BINARY, **KERNEL
    ),
    **_padded_cases("QuantConv2D", (4, 3), (9, 8, 3), KERNEL),
    "QuantConv2D-same-1-strided": _case(
        "QuantConv2D",
        (4, (3, 4)),
        (9, 8, 3),
        padding="same",
        pad_values=1.0,
        strides=2,
        **BINARY,
        **KERNEL,
    ),
    "QuantConv2D-same-1-dilated": _case(
        "QuantConv2D",
        (4, 3),
        (9, 8, 3),
        padding="same",
        pad_values=1.0,
        dilation_rate=2,
        **BINARY,
        **KERNEL,
    ),
    **_padded_cases("QuantConv3D", (3, 3), (6, 5, 7, 2), KERNEL),
    "QuantConv3D-same-1-strided": _case(
        "QuantConv3D",
        (3, 2),
        (6, 5, 7, 2),
        padding="same",
        pad_values=1.0,
        strides=2,
        **BINARY,
        **KERNEL,
    ),
    **_padded_cases("QuantDepthwiseConv2D", (3,), (9, 8, 3), DEPTHWISE, depth_multiplier=2),
    "QuantDepthwiseConv2D-same-1-strided": _case(
        "QuantDepthwiseConv2D",
        ((4, 3),),
        (9, 8, 3),
        padding="same",
        pad_values=1.0,
        strides=2,
        **BINARY,
        **DEPTHWISE,
    ),
    **_padded_cases("QuantSeparableConv1D", (4, 3), (11, 3), {**DEPTHWISE, **POINTWISE}),
    "QuantSeparableConv1D-same-1-strided": _case(
        "QuantSeparableConv1D",
        (4, 4),
        (11, 3),
        padding="same",
        pad_values=1.0,
        strides=2,
        depth_multiplier=2,
        **BINARY,
        **DEPTHWISE,
        **POINTWISE,
    ),
    **_padded_cases("QuantSeparableConv2D", (4, 3), (9, 8, 3), {**DEPTHWISE, **POINTWISE}),
    "QuantSeparableConv2D-same-1-dilated": _case(
        "QuantSeparableConv2D",
        (4, 3),
        (9, 8, 3),
        padding="same",
        pad_values=1.0,
        dilation_rate=2,
        depth_multiplier=2,
        **BINARY,
        **DEPTHWISE,
        **POINTWISE,
    ),
    "QuantConv2DTranspose-valid": _case(
        "QuantConv2DTranspose", (4, 3), (5, 6, 3), padding="valid", **BINARY, **KERNEL
    ),
    "QuantConv2DTranspose-same-strided": _case(
        "QuantConv2DTranspose",
        (4, 3),
        (5, 6, 3),
        padding="same",
        strides=2,
        **BINARY,
        **KERNEL,
    ),
    "QuantConv2DTranspose-output-padding": _case(
        "QuantConv2DTranspose",
        (4, 3),
        (5, 6, 3),
        padding="valid",
        strides=2,
        output_padding=1,
        **BINARY,
        **KERNEL,
    ),
    "QuantConv2DTranspose-float": _case("QuantConv2DTranspose", (4, 3), (5, 6, 3), strides=2),
    "QuantConv3DTranspose-valid": _case(
        "QuantConv3DTranspose", (3, 2), (3, 4, 5, 2), padding="valid", **BINARY, **KERNEL
    ),
    "QuantConv3DTranspose-same-strided": _case(
        "QuantConv3DTranspose",
        (3, 3),
        (3, 4, 5, 2),
        padding="same",
        strides=2,
        **BINARY,
        **KERNEL,
    ),
    "QuantConv3DTranspose-float": _case("QuantConv3DTranspose", (3, 2), (3, 4, 5, 2)),
    "QuantLocallyConnected1D-binary": _case(
        "QuantLocallyConnected1D", (4, 3), (11, 3), strides=2, **BINARY, **KERNEL
    ),
    "QuantLocallyConnected1D-float": _case("QuantLocallyConnected1D", (4, 3), (11, 3)),
    "QuantLocallyConnected2D-binary": _case(
        "QuantLocallyConnected2D", (4, (3, 2)), (7, 8, 3), strides=(1, 2), **BINARY, **KERNEL
    ),
    "QuantLocallyConnected2D-float": _case("QuantLocallyConnected2D", (4, 3), (7, 8, 3)),
}

LARQ_SCRIPT = """
import json
import larq as lq

cases = json.loads(CASES)
for i, (name, case) in enumerate(cases.items()):
    layer = getattr(lq.layers, case["cls"])(*case["args"], **case["kwargs"])
    x = inp[f"x{i}"]
    layer.build(x.shape)
    weights = [inp[f"w{i}_{j}"] for j in range(len(layer.weights))]
    layer.set_weights(weights)
    out[f"y{i}"] = layer(tf.constant(x)).numpy()
"""


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _layer(case) -> keras.layers.Layer:
    return getattr(lns_keras, case["cls"])(*case["args"], **case["kwargs"])


def _oracle_arrays(name: str) -> tuple[keras.layers.Layer, np.ndarray, list[np.ndarray]]:
    """The lns_keras layer of case `name`, built with the weights and input larq gets."""
    i = list(ORACLE_CASES).index(name)
    case = ORACLE_CASES[name]
    shape = (2, *case["input_shape"])
    layer = _layer(case)
    layer.build(shape)
    weights = [_random(w.shape, seed=100 * i + j + 1) for j, w in enumerate(layer.weights)]
    layer.set_weights(weights)
    return layer, _random(shape, seed=100 * i), weights


@pytest.fixture(scope="module")
def larq_outputs(tmp_path_factory) -> dict[str, np.ndarray]:
    """larq 0.14's output of every case in `ORACLE_CASES`, from one subprocess."""
    arrays = {}
    for i, name in enumerate(ORACLE_CASES):
        _, x, weights = _oracle_arrays(name)
        arrays[f"x{i}"] = x
        arrays.update({f"w{i}_{j}": w for j, w in enumerate(weights)})
    script = f"CASES = {json.dumps(json.dumps(ORACLE_CASES))}\n" + LARQ_SCRIPT
    outputs = larq_oracle.run(script, arrays, tmp_path_factory.mktemp("larq_zoo"))
    return {name: outputs[f"y{i}"] for i, name in enumerate(ORACLE_CASES)}


@pytest.mark.parametrize("name", list(ORACLE_CASES))
def test_same_outputs_as_larq(name, larq_outputs):
    layer, x, _ = _oracle_arrays(name)
    ours = keras.ops.convert_to_numpy(layer(x))
    theirs = larq_outputs[name]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_oracle_cases_cover_every_new_layer_and_pad_value():
    classes = {case["cls"] for case in ORACLE_CASES.values()}
    assert classes == {name for name in lns_keras.layers.zoo.__all__} | {"QuantConv2D"}
    for cls in classes - {"QuantConv2DTranspose", "QuantConv3DTranspose"}:
        if "LocallyConnected" in cls:
            continue
        pads = {
            (case["kwargs"].get("padding"), case["kwargs"].get("pad_values", 0.0))
            for case in ORACLE_CASES.values()
            if case["cls"] == cls
        }
        assert {("valid", 0.0), ("same", 0.0), ("same", 1.0)} <= pads, cls


def test_pad_values_change_the_output():
    """The pad_values cases above test something: padding with 1 differs from zeros."""
    zero, x, _ = _oracle_arrays("QuantConv2D-same-0")
    one, _, _ = _oracle_arrays("QuantConv2D-same-1")
    one.set_weights(zero.get_weights())
    difference = keras.ops.convert_to_numpy(one(x)) - keras.ops.convert_to_numpy(zero(x))
    assert np.abs(difference[:, 1:-1, 1:-1]).max() == 0  # inside: no padding involved
    assert np.abs(difference).max() > 0  # at the border: the padding counts


# ------------------------------------------------------------------ pad_values, shapes


def _all_layers():
    """One small instance of every new layer, with binary quantizers, and its input shape."""
    return [
        (lns_keras.QuantConv1D(4, 3, padding="same", pad_values=1.0, **BINARY, **KERNEL), (9, 3)),
        (
            lns_keras.QuantConv3D(4, 3, padding="same", pad_values=1.0, **BINARY, **KERNEL),
            (5, 6, 4, 3),
        ),
        (
            lns_keras.QuantDepthwiseConv2D(
                3, padding="same", pad_values=1.0, depth_multiplier=2, **BINARY, **DEPTHWISE
            ),
            (7, 6, 3),
        ),
        (
            lns_keras.QuantSeparableConv1D(
                4, 3, padding="same", pad_values=1.0, **BINARY, **DEPTHWISE, **POINTWISE
            ),
            (9, 3),
        ),
        (
            lns_keras.QuantSeparableConv2D(
                4, 3, padding="same", pad_values=1.0, **BINARY, **DEPTHWISE, **POINTWISE
            ),
            (7, 6, 3),
        ),
        (
            lns_keras.QuantConv2DTranspose(4, 3, strides=2, padding="same", **BINARY, **KERNEL),
            (5, 4, 3),
        ),
        (lns_keras.QuantConv3DTranspose(4, 3, strides=2, **BINARY, **KERNEL), (3, 4, 2, 3)),
        (lns_keras.QuantLocallyConnected1D(4, 3, **BINARY, **KERNEL), (9, 3)),
        (lns_keras.QuantLocallyConnected2D(4, 3, strides=2, **BINARY, **KERNEL), (7, 6, 3)),
    ]


def test_every_new_layer_is_exported():
    names = set(lns_keras.layers.zoo.__all__)
    assert names <= set(lns_keras.__all__) and names <= set(lns_keras.layers.__all__)
    assert {type(layer).__name__ for layer, _ in _all_layers()} == names
    separable = [
        i for i, (layer, _) in enumerate(_all_layers()) if "Separable" in type(layer).__name__
    ]
    assert tuple(separable) == SEPARABLE


@pytest.mark.parametrize(
    "make",
    [
        lambda: lns_keras.QuantConv1D(3, 3, strides=2, padding="same", pad_values=1.0),
        lambda: lns_keras.QuantConv2D(3, 3, strides=2, padding="same", pad_values=1.0),
        lambda: lns_keras.QuantDepthwiseConv2D(3, strides=2, padding="same", pad_values=1.0),
        lambda: lns_keras.QuantSeparableConv2D(3, 3, strides=2, padding="same", pad_values=1.0),
    ],
)
def test_pad_values_with_input_size_unknown_until_run(make):
    """The explicit padding is computed from the run-time shape when the graph has none."""
    layer = make()
    spatial = layer.rank
    inputs = keras.Input((None,) * spatial + (2,))
    model = keras.Model(inputs, layer(inputs))
    for size in (7, 8):
        x = _random((1,) + (size,) * spatial + (2,), seed=size)
        reference = make()
        reference.build(x.shape)
        reference.set_weights(layer.get_weights())
        expected = keras.ops.convert_to_numpy(reference(x))
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
        assert expected.shape[1] == math.ceil(size / 2)


@pytest.mark.parametrize("cls", ["QuantConv1D", "QuantConv2D", "QuantDepthwiseConv2D"])
def test_pad_values_channels_first(cls):
    """channels_first pads the spatial axes, not the channels (run under XLA, which has
    NCHW kernels on every CPU; see tests/test_layers.py)."""
    args = (3,) if cls == "QuantDepthwiseConv2D" else (4, 3)
    rank = 1 if cls == "QuantConv1D" else 2
    kwargs = {"strides": 2, "padding": "same", "pad_values": 1.0, **BINARY}
    last = getattr(lns_keras, cls)(*args, **kwargs)
    first = getattr(lns_keras, cls)(*args, data_format="channels_first", **kwargs)
    x = _random((2,) + (7,) * rank + (3,), seed=1)
    last.build(x.shape)
    first.build((2, 3) + (7,) * rank)
    first.set_weights(last.get_weights())
    to_first = (0, rank + 1, *range(1, rank + 1))
    model = keras.Sequential([first])
    model.compile(jit_compile=True)
    got = model.predict(np.transpose(x, to_first), verbose=0)
    expected = np.transpose(keras.ops.convert_to_numpy(last(x)), to_first)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ kernel_scale


def _numpy_scale(kernel, kernel_scale, channel_axes):
    magnitude = np.abs(kernel.astype(np.float64))
    if kernel_scale == "layer":
        return magnitude.mean()
    axes = tuple(a % kernel.ndim for a in channel_axes)
    return magnitude.mean(axis=tuple(a for a in range(kernel.ndim) if a not in axes)).reshape(-1)


# Separable layers take kernel_scale="layer" only (test_separable_takes_layer_scale_only).
SEPARABLE = (3, 4)  # their indices in _all_layers()


@pytest.mark.parametrize(
    ("index", "kernel_scale"),
    [(i, "layer") for i in range(9)] + [(i, "channel") for i in range(9) if i not in SEPARABLE],
)
def test_kernel_scale_multiplies_the_output(index, kernel_scale):
    layer, shape = _all_layers()[index]
    config = {**layer.get_config(), "use_bias": False}
    plain = type(layer).from_config(config)
    scaled = type(layer).from_config({**config, "kernel_scale": kernel_scale})
    x = _random((2, *shape), seed=3)
    plain.build(x.shape)
    scaled.build(x.shape)
    scaled.set_weights(plain.get_weights())
    if "Separable" in type(layer).__name__:
        depthwise, pointwise = plain.get_weights()
        scale = np.abs(depthwise).mean(dtype=np.float64) * np.abs(pointwise).mean(dtype=np.float64)
    else:
        (kernel,) = plain.get_weights()
        axes = {"QuantDepthwiseConv2D": (-2, -1)}.get(type(layer).__name__, (-1,))
        if "Transpose" in type(layer).__name__:
            axes = (-2,)
        scale = _numpy_scale(kernel, kernel_scale, axes)
    expected = keras.ops.convert_to_numpy(plain(x)) * scale.astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled(x)), expected, rtol=1e-5)


def test_separable_binary_kernel_is_the_pair():
    layer = lns_keras.QuantSeparableConv2D(4, 3, **DEPTHWISE, **POINTWISE)
    layer.build((1, 5, 5, 3))
    depthwise, pointwise = layer.binary_kernel()
    assert tuple(depthwise.shape) == (3, 3, 3, 1) and tuple(pointwise.shape) == (1, 1, 3, 4)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(depthwise), np.where(layer.depthwise_kernel.numpy() >= 0, 1, -1)
    )


# ------------------------------------------------------------------ saving


@pytest.mark.parametrize("index", range(9))
def test_saves_and_loads_with_safe_mode(index, tmp_path):
    layer, shape = _all_layers()[index]
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    for weight in model.weights:
        weight.assign(_random(weight.shape, seed=7))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    x = _random((2, *shape), seed=8)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    restored_layer = restored.layers[-1]
    assert type(restored_layer) is type(layer)
    assert restored_layer.get_config() == layer.get_config()


def test_quant_conv2d_pad_values_is_saved(tmp_path):
    layer = lns_keras.QuantConv2D(2, 3, padding="same", pad_values=1.0)
    assert layer.get_config()["pad_values"] == 1.0
    assert lns_keras.QuantConv2D.from_config(layer.get_config()).pad_values == 1.0
    # A config saved before pad_values existed loads with larq's default.
    config = {k: v for k, v in layer.get_config().items() if k != "pad_values"}
    assert lns_keras.QuantConv2D.from_config(config).pad_values == 0.0


# ------------------------------------------------------------------ warnings


def _our_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("lns_keras")]


@pytest.mark.parametrize(
    ("make", "constraint"),
    [
        (lambda **kw: lns_keras.QuantDense(3, kernel_quantizer="ste_sign", **kw), "kernel"),
        (lambda **kw: lns_keras.QuantConv2D(3, 3, kernel_quantizer="ste_sign", **kw), "kernel"),
        (lambda **kw: lns_keras.QuantConv1D(3, 3, kernel_quantizer="ste_sign", **kw), "kernel"),
        (lambda **kw: lns_keras.QuantConv3D(3, 3, kernel_quantizer="ste_sign", **kw), "kernel"),
        (
            lambda **kw: lns_keras.QuantConv2DTranspose(3, 3, kernel_quantizer="ste_sign", **kw),
            "kernel",
        ),
        (
            lambda **kw: lns_keras.QuantConv3DTranspose(3, 3, kernel_quantizer="ste_sign", **kw),
            "kernel",
        ),
        (
            lambda **kw: lns_keras.QuantLocallyConnected1D(3, 3, kernel_quantizer="ste_sign", **kw),
            "kernel",
        ),
        (
            lambda **kw: lns_keras.QuantLocallyConnected2D(3, 3, kernel_quantizer="ste_sign", **kw),
            "kernel",
        ),
        (
            lambda **kw: lns_keras.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", **kw),
            "depthwise",
        ),
        (
            lambda **kw: lns_keras.QuantSeparableConv1D(
                3, 3, depthwise_quantizer="ste_sign", pointwise_constraint="weight_clip", **kw
            ),
            "depthwise",
        ),
        (
            lambda **kw: lns_keras.QuantSeparableConv2D(
                3, 3, pointwise_quantizer="approx_sign", depthwise_constraint="weight_clip", **kw
            ),
            "pointwise",
        ),
    ],
)
def test_binary_quantizer_without_constraint_warns(make, constraint, caplog):
    name = f"{constraint}_constraint"
    with caplog.at_level(logging.WARNING, logger="lns_keras"):
        make()
    assert len(_our_records(caplog)) == 1, caplog.text
    assert f"`{name}`" in caplog.text and "starve" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lns_keras"):
        make(**{name: "weight_clip"})
    assert _our_records(caplog) == []


def test_separable_warns_for_each_unconstrained_kernel(caplog):
    with caplog.at_level(logging.WARNING, logger="lns_keras"):
        lns_keras.QuantSeparableConv2D(
            3, 3, depthwise_quantizer="ste_sign", pointwise_quantizer="ste_sign"
        )
    assert "`depthwise_constraint`" in caplog.text and "`pointwise_constraint`" in caplog.text


@pytest.mark.parametrize(
    "kernel_quantizer",
    [
        None,
        "ste_tern",  # 2 bits
        quantizers.NoOp(precision=1),  # larq does not warn for NoOp either
        quantizers.SteSign(clip_value=None),  # no gradient window: nothing to starve
    ],
)
def test_no_warning_where_no_weight_can_starve(kernel_quantizer, caplog):
    with caplog.at_level(logging.WARNING, logger="lns_keras"):
        lns_keras.QuantConv1D(3, 3, kernel_quantizer=kernel_quantizer)
        lns_keras.LNSQuantConv2D(3, 3)  # its default SteSign(clip_value=None)
    assert _our_records(caplog) == []


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("pad_values", ["1", True, float("nan"), float("inf"), None, [1.0]])
@pytest.mark.parametrize(
    "make",
    [
        lambda pv: lns_keras.QuantConv2D(2, 3, padding="same", pad_values=pv),
        lambda pv: lns_keras.QuantConv1D(2, 3, padding="same", pad_values=pv),
        lambda pv: lns_keras.QuantConv3D(2, 3, padding="same", pad_values=pv),
        lambda pv: lns_keras.QuantDepthwiseConv2D(3, padding="same", pad_values=pv),
        lambda pv: lns_keras.QuantSeparableConv1D(2, 3, padding="same", pad_values=pv),
        lambda pv: lns_keras.QuantSeparableConv2D(2, 3, padding="same", pad_values=pv),
    ],
)
def test_pad_values_must_be_a_finite_number(make, pad_values):
    with pytest.raises(ValueError, match=r"`pad_values` must be a finite real number.*pad_values="):
        make(pad_values)


def test_pad_values_accepts_numpy_and_int():
    assert lns_keras.QuantConv2D(2, 3, pad_values=np.float32(1)).pad_values == 1.0
    assert type(lns_keras.QuantConv2D(2, 3, pad_values=np.int64(-1)).pad_values) is float


def test_causal_padding_takes_only_zero_pad_values():
    # larq: "Causal padding with `pad_values != 0` is not supported."
    with pytest.raises(ValueError, match=r"`pad_values` must be 0 with padding='causal'.*1\.0"):
        lns_keras.QuantConv1D(2, 3, padding="causal", pad_values=1.0)
    assert lns_keras.QuantConv1D(2, 3, padding="causal", pad_values=0).pad_values == 0.0


def test_transposed_convolutions_take_no_pad_values():
    with pytest.raises(ValueError, match="pad_values"):
        lns_keras.QuantConv2DTranspose(2, 3, pad_values=1.0)


def test_depthwise_takes_depthwise_quantizer_not_kernel_quantizer():
    with pytest.raises(ValueError, match="kernel_quantizer"):
        lns_keras.QuantDepthwiseConv2D(3, kernel_quantizer="ste_sign")


@pytest.mark.parametrize("cls", [lns_keras.QuantSeparableConv1D, lns_keras.QuantSeparableConv2D])
def test_separable_takes_layer_scale_only(cls):
    with pytest.raises(
        ValueError, match=r"`kernel_scale` must be one of \('layer', None\).*'channel'"
    ):
        cls(2, 3, kernel_scale="channel")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"kernel_scale": "filter"}, "kernel_scale"),
        ({"kernel_quantizer": "no_such_quantizer"}, "no_such_quantizer"),
        ({"kernel_constraint": "no_such_constraint"}, "no_such_constraint"),
    ],
)
def test_unknown_names_are_refused(kwargs, argument):
    for cls in (lns_keras.QuantConv1D, lns_keras.QuantConv3D, lns_keras.QuantConv2DTranspose):
        with pytest.raises(ValueError, match=argument):
            cls(2, 3, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding": "same"}, r"`padding` must be 'valid', got padding='same'"),
        ({"data_format": "channels_first"}, r"`data_format` must be 'channels_last'"),
        ({"implementation": 2}, r"`implementation` must be 1, got implementation=2"),
        ({"kernel_size": (3, 3, 3)}, r"`kernel_size` must be .* got kernel_size=\(3, 3, 3\)"),
        ({"strides": 0}, r"`strides` must be .* got strides=0"),
        ({"filters": 0}, r"`filters` must be a positive integer, got filters=0"),
        ({"kernel_scale": "filter"}, r"`kernel_scale` must be one of"),
    ],
)
def test_locally_connected_refuses_what_keras_2_implementation_1_lacks(kwargs, message):
    arguments = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        lns_keras.QuantLocallyConnected2D(**arguments)


def test_locally_connected_needs_a_known_input_size():
    with pytest.raises(ValueError, match="needs a known input size"):
        lns_keras.QuantLocallyConnected1D(2, 3)(keras.Input((None, 3)))
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        lns_keras.QuantLocallyConnected1D(2, 5)(keras.Input((4, 3)))


# ------------------------------------------------------------------ model_stats


def test_model_stats_counts_every_new_layer():
    """Parameters and MACs per layer: a kernel element takes part in one MAC per output
    position (input position for a transposed convolution, once if locally connected)."""
    inputs = keras.Input((8, 8, 3))
    x = lns_keras.QuantDepthwiseConv2D(3, padding="same", **BINARY, **DEPTHWISE)(inputs)
    x = lns_keras.QuantSeparableConv2D(
        4, 3, padding="same", pad_values=1.0, **BINARY, **DEPTHWISE, **POINTWISE
    )(x)
    x = lns_keras.QuantConv2DTranspose(2, 3, strides=2, padding="same", **BINARY, **KERNEL)(x)
    x = lns_keras.QuantLocallyConnected2D(2, 3, strides=2, use_bias=False, **BINARY, **KERNEL)(x)
    x = keras.layers.Reshape((-1, 2))(x)
    x = lns_keras.QuantConv1D(4, 3, padding="same", kernel_quantizer="ste_tern")(x)
    outputs = keras.layers.Conv1DTranspose(2, 3)(x)
    stats = lns_keras.model_stats(keras.Model(inputs, outputs))
    by_type = {s.layer_type: s for s in stats.layers}

    depthwise = by_type["QuantDepthwiseConv2D"]
    assert (depthwise.params_1bit, depthwise.params_32bit) == (27, 3)
    assert (depthwise.binary_macs, depthwise.float_macs) == (27 * 64, 0)

    separable = by_type["QuantSeparableConv2D"]
    assert (separable.params_1bit, separable.params_32bit) == (27 + 12, 4)
    # The pointwise products multiply the depthwise output, which is not binary.
    assert (separable.binary_macs, separable.float_macs) == (27 * 64, 12 * 64)

    transpose = by_type["QuantConv2DTranspose"]
    assert transpose.output_shape == (None, 16, 16, 2)
    assert (transpose.params_1bit, transpose.binary_macs) == (72, 72 * 64)  # 8x8 inputs

    local = by_type["QuantLocallyConnected2D"]
    assert local.output_shape == (None, 7, 7, 2)
    assert (local.params_1bit, local.params_32bit) == (49 * 18 * 2, 0)
    assert local.binary_macs == 49 * 18 * 2

    ternary = by_type["QuantConv1D"]
    assert (ternary.params_kbit, ternary.kernel_bits, ternary.params_1bit) == (24, 2, 0)
    assert (ternary.binary_macs, ternary.float_macs) == (0, 24 * 49)

    keras_transpose = by_type["Conv1DTranspose"]
    assert keras_transpose.float_macs == 3 * 4 * 2 * 49


def test_zoo_is_in_the_api_reference():
    # tests/test_docstrings.py checks the docstrings through lns_keras.layers; this checks
    # that the module's page exists.
    page = Path(__file__).resolve().parent.parent / "docs" / "api" / "layers.md"
    assert "::: lns_keras.layers.zoo\n" in page.read_text()
