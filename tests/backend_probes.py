"""What every Keras backend must compute alike, computed under the current one.

Keras fixes its backend when it is imported, so one process sees one backend.
`tests/test_backends.py` runs this file as a script under each of the other backends
(`KERAS_BACKEND=jax`, `KERAS_BACKEND=torch`) and calls `probe()` itself under its own
(TensorFlow, in the test suite), then compares the arrays:

- every registered quantizer (and the variants and functions below): its forward value
  and its pseudo-gradient, on inputs holding the quantizers' edge values;
- every quantized layer of the zoo: its output and its gradient with respect to the
  input, on fixed weights;
- one training step of a small LNS network from fixed weights and data: the loss and
  every weight after the step; then `fold` of the stepped network and its predictions;
- `model_stats` and `summary` of a network holding every kind of layer;
- a `.keras` file of that network saved under each backend, loaded under the others.

    python tests/backend_probes.py OUT_DIR

writes `OUT_DIR/<backend>.npz` (the arrays), `OUT_DIR/<backend>.keras` with
`OUT_DIR/<backend>-predictions.npz` (the file and what it predicts) and, for every
`OUT_DIR/<other>.keras` already there, `OUT_DIR/<other>-on-<backend>.npz` (that file's
predictions under this backend).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lns_keras  # noqa: E402
from lns_keras import _autodiff, activations, convert, kbit, quantizers  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")

# A quantizer spec: {"alias": name} (resolved by `quantizers.get`), {"class": name,
# "module": ..., "kwargs": {...}}, or {"function": name, "module": ..., "kwargs": {...}}.
# Every registered alias is a case, so a new quantizer is compared the day it is
# registered.
_MODULES = {"quantizers": quantizers, "kbit": kbit, "activations": activations}
_MATRIX = (6, 10)
_KERNEL = (3, 3, 4, 8)
QUANTIZER_CASES = {
    **{f"alias {alias}": ({"alias": alias}, _MATRIX) for alias in sorted(quantizers._ALIASES)},
    "magnitude_aware_sign 4d": ({"alias": "magnitude_aware_sign"}, _KERNEL),
    "SteSign(clip_value=0.5)": (
        {"class": "SteSign", "module": "quantizers", "kwargs": {"clip_value": 0.5}},
        _MATRIX,
    ),
    "SteSign(clip_value=None)": (
        {"class": "SteSign", "module": "quantizers", "kwargs": {"clip_value": None}},
        _MATRIX,
    ),
    "SteHeaviside(clip_value=2.0)": (
        {"class": "SteHeaviside", "module": "quantizers", "kwargs": {"clip_value": 2.0}},
        _MATRIX,
    ),
    "SwishSign(beta=2.0)": (
        {"class": "SwishSign", "module": "quantizers", "kwargs": {"beta": 2.0}},
        _MATRIX,
    ),
    "SteTern(ternary_weight_networks=True)": (
        {"class": "SteTern", "module": "quantizers", "kwargs": {"ternary_weight_networks": True}},
        _KERNEL,
    ),
    "DoReFa(k_bit=3, mode=weights)": (
        {"class": "DoReFa", "module": "quantizers", "kwargs": {"k_bit": 3, "mode": "weights"}},
        _KERNEL,
    ),
    "SteUniform(k_bit=3, clip_value=None)": (
        {"class": "SteUniform", "module": "kbit", "kwargs": {"k_bit": 3, "clip_value": None}},
        _MATRIX,
    ),
    "PACT(k_bit=3, initial_alpha=1.5)": (
        {"class": "PACT", "module": "kbit", "kwargs": {"k_bit": 3, "initial_alpha": 1.5}},
        _MATRIX,
    ),
    **{
        f"function {name}": ({"function": name, "module": "quantizers", "kwargs": {}}, _MATRIX)
        for name in ("ste_sign", "approx_sign", "swish_sign", "ste_tern", "ste_heaviside")
    },
    "function ste_uniform(k_bit=2)": (
        {"function": "ste_uniform", "module": "kbit", "kwargs": {"k_bit": 2}},
        _MATRIX,
    ),
    **{
        f"activation {name}": ({"function": name, "module": "activations", "kwargs": {}}, _MATRIX)
        for name in ("hard_tanh", "leaky_tanh")
    },
}

# Values on the quantizers' edges: zero, the clip bounds, the ternary threshold, beyond.
_EDGES = np.array([0.0, 0.0, 1.0, -1.0, 0.05, -0.05, 0.5, -0.5, 1.5, -1.5, 3.0, -3.0])

BINARY = {
    "input_quantizer": "ste_sign",
    "kernel_quantizer": "ste_sign",
    "kernel_constraint": "weight_clip",
}
DEPTHWISE = {
    "input_quantizer": "ste_sign",
    "depthwise_quantizer": "ste_sign",
    "depthwise_constraint": "weight_clip",
}
SEPARABLE = {**DEPTHWISE, "pointwise_quantizer": "ste_sign", "pointwise_constraint": "weight_clip"}
PADDED = {"padding": "same", "pad_values": 1.0}

# One case per quantized layer: (class name, args, kwargs, input shape without batch).
# Strides of 2 with "same" padding make the padding asymmetric.
LAYER_CASES = {
    "QuantDense": ("QuantDense", (5,), BINARY, (7,)),
    "QuantConv1D": ("QuantConv1D", (4, 3), {**BINARY, **PADDED, "strides": 2}, (11, 3)),
    "QuantConv2D": ("QuantConv2D", (4, 3), {**BINARY, **PADDED, "strides": 2}, (9, 8, 3)),
    "QuantConv3D": ("QuantConv3D", (3, 2), {**BINARY, **PADDED}, (5, 4, 6, 2)),
    "QuantDepthwiseConv2D": (
        "QuantDepthwiseConv2D",
        (3,),
        {**DEPTHWISE, **PADDED, "strides": 2, "depth_multiplier": 2},
        (9, 8, 3),
    ),
    "QuantSeparableConv1D": (
        "QuantSeparableConv1D",
        (4, 3),
        {**SEPARABLE, **PADDED, "depth_multiplier": 2},
        (11, 3),
    ),
    "QuantSeparableConv2D": (
        "QuantSeparableConv2D",
        (4, 3),
        {**SEPARABLE, **PADDED, "dilation_rate": 2},
        (9, 8, 3),
    ),
    "QuantConv2DTranspose": (
        "QuantConv2DTranspose",
        (4, 3),
        {**BINARY, "padding": "same", "strides": 2},
        (5, 6, 3),
    ),
    "QuantConv3DTranspose": (
        "QuantConv3DTranspose",
        (3, 2),
        {**BINARY, "strides": 2},
        (3, 4, 3, 2),
    ),
    "QuantLocallyConnected1D": (
        "QuantLocallyConnected1D",
        (4, 3),
        {**BINARY, "strides": 2},
        (11, 3),
    ),
    "QuantLocallyConnected2D": ("QuantLocallyConnected2D", (4, (3, 2)), BINARY, (7, 8, 3)),
    "SLBQuantConv2D": (
        "SLBQuantConv2D",
        (4, 3),
        {"padding": "same", "weight_bits": 2, "input_quantizer": "ste_sign"},
        (6, 5, 3),
    ),
    "SLBQuantDense": ("SLBQuantDense", (4,), {"weight_bits": 1}, (7,)),
    "LNSQuantConv2D": ("LNSQuantConv2D", (4, 3), {"padding": "same", "rho": 0.05}, (6, 5, 3)),
    "LNSQuantDense": ("LNSQuantDense", (4,), {"rho": (0.01, 0.02)}, (7,)),
}


def rng_array(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _fill(weights, seed: int) -> list[np.ndarray]:
    """Deterministic values for `weights`: normal, with positive variances and a bool kept."""
    values = []
    for j, w in enumerate(weights):
        shape, dtype = tuple(w.shape), keras.backend.standardize_dtype(w.dtype)
        if dtype == "bool":
            values.append(np.zeros(shape, bool))
        elif "variance" in w.path or "alpha" in w.path:  # positive: BN variances, PACT's α
            values.append(np.abs(rng_array(shape, seed + j)) + 0.5)
        elif "temperature" in w.path:
            values.append(np.ones(shape, np.float32))
        else:
            values.append(rng_array(shape, seed + j, scale=0.5).astype(dtype))
    return values


def _quantizer(spec):
    if "alias" in spec:
        return quantizers.get(spec["alias"])
    module = _MODULES[spec["module"]]
    if "class" in spec:
        return getattr(module, spec["class"])(**spec["kwargs"])
    function = getattr(module, spec["function"])
    return lambda x: function(x, **spec["kwargs"])


def quantizer_inputs(index: int, shape) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    x = rng.normal(scale=1.5, size=shape).ravel()
    x[rng.choice(x.size, size=_EDGES.size, replace=False)] = _EDGES
    return x.reshape(shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)


def quantizer_probes() -> dict[str, np.ndarray]:
    """Forward value `y` and pseudo-gradient `grad` of every case in `QUANTIZER_CASES`."""
    out = {}
    for i, (name, (spec, shape)) in enumerate(QUANTIZER_CASES.items()):
        quantizer = _quantizer(spec)
        x, dy = quantizer_inputs(i, shape)
        out[f"quantizer/{name}/y"] = keras.ops.convert_to_numpy(quantizer(x))
        out[f"quantizer/{name}/grad"] = _autodiff.vjp(quantizer, x, dy)
    return out


def layer(name: str) -> tuple[keras.layers.Layer, np.ndarray]:
    """The layer of case `name`, built on fixed weights, and its input."""
    cls, args, kwargs, input_shape = LAYER_CASES[name]
    i = list(LAYER_CASES).index(name)
    instance = getattr(lns_keras, cls)(*args, **kwargs)
    shape = (2, *input_shape)
    instance.build(shape)
    instance.set_weights(_fill(instance.weights, seed=100 * i + 1))
    return instance, rng_array(shape, seed=100 * i)


def layer_probes() -> dict[str, np.ndarray]:
    """Output and input gradient of every layer in `LAYER_CASES`, in inference."""
    out = {}
    for name in LAYER_CASES:
        instance, x = layer(name)
        y = keras.ops.convert_to_numpy(instance(x, training=False))
        dy = rng_array(y.shape, seed=7)
        out[f"layer/{name}/y"] = y
        out[f"layer/{name}/grad"] = _autodiff.vjp(lambda t, f=instance: f(t, training=False), x, dy)
    return out


def lns_network() -> keras.Model:
    """A small BNN turned LNS by `to_lns`, on fixed weights (every backend builds the same)."""
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = lns_keras.QuantConv2D(
        8, 3, padding="same", use_bias=False, kernel_scale="layer", name="bconv", **BINARY
    )(x)
    x = keras.layers.BatchNormalization(name="bconv_bn")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = lns_keras.QuantDense(10, kernel_scale="channel", name="bdense", **BINARY)(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    baseline = keras.Model(inputs, outputs, name="baseline")
    baseline.set_weights(_fill(baseline.weights, seed=11))
    model = convert.to_lns(baseline, alpha=0.5, rho=(0.02, 0.05))
    model.set_weights(_fill(model.weights, seed=23))
    return model


def lns_data() -> tuple[np.ndarray, np.ndarray]:
    return rng_array((16, 8, 8, 2), seed=31), np.arange(16) % 3


def lns_step_probes() -> dict[str, np.ndarray]:
    """One training step of `lns_network`: the loss, then every weight; then `fold`."""
    model = lns_network()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = lns_data()
    out = {"lns/loss": np.asarray(model.train_on_batch(x, y), np.float32)}
    for variable in model.weights:
        out[f"lns/weight/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    folded = convert.fold(model)
    out["fold/lns_predictions"] = model.predict(x, verbose=0)
    out["fold/folded_predictions"] = folded.predict(x, verbose=0)
    return out


def every_layer_network() -> keras.Model:
    """A network holding every kind of quantized layer, on fixed weights."""
    image = keras.Input((8, 8, 3), name="image")
    x = lns_keras.QuantConv2D(6, 3, padding="same", name="stem", input_quantizer="pact")(image)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = lns_keras.LNSQuantConv2D(6, 3, padding="same", rho=0.02, name="lns_conv")(x)
    x = lns_keras.QuantDepthwiseConv2D(3, padding="same", name="depthwise", **DEPTHWISE)(x)
    x = lns_keras.QuantSeparableConv2D(6, 3, padding="same", name="separable", **SEPARABLE)(x)
    x = lns_keras.SLBQuantConv2D(4, 3, weight_bits=2, name="slb_conv")(x)
    x = lns_keras.QuantConv2DTranspose(4, 3, strides=2, name="transpose", **BINARY)(x)
    x = lns_keras.QuantLocallyConnected2D(2, 3, strides=3, name="local", **BINARY)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = lns_keras.LNSQuantDense(8, name="lns_dense")(x)
    outputs = lns_keras.SLBQuantDense(3, weight_bits=1, name="slb_dense")(x)
    model = keras.Model(image, outputs, name="every_layer")
    model.set_weights(_fill(model.weights, seed=41))
    return model


def exchange_input() -> np.ndarray:
    return rng_array((4, 8, 8, 3), seed=43)


def summary_probes() -> dict[str, np.ndarray]:
    """`model_stats` (as JSON) and the text of `summary` for `every_layer_network`."""
    model = every_layer_network()
    stats = lns_keras.model_stats(model)
    rows = [
        [s.name, s.layer_type, s.output_shape, sorted(s.params.items()), s.macs, s.input_bits]
        for s in stats.layers
    ]
    lines = []
    lns_keras.summary(model, print_fn=lines.append)
    return {
        "summary/stats": np.array(json.dumps(rows, default=str)),
        "summary/text": np.array("\n".join(lines)),
    }


def probe() -> dict[str, np.ndarray]:
    """Every probe above, under the current backend."""
    keras.utils.set_random_seed(0)
    return {**quantizer_probes(), **layer_probes(), **lns_step_probes(), **summary_probes()}


def load_others(folder: str | os.PathLike) -> None:
    """Load the `.keras` files of the other backends in `folder`; save their predictions.

    Each as `<other>-on-<backend>.npz`; a file already loaded under this backend is not
    loaded again.
    """
    folder = Path(folder)
    backend = keras.backend.backend()
    x = exchange_input()
    for other in BACKENDS:
        path, out = folder / f"{other}.keras", folder / f"{other}-on-{backend}.npz"
        if other != backend and path.is_file() and not out.is_file():
            loaded = keras.saving.load_model(path, safe_mode=True)
            np.savez(out, y=loaded.predict(x, verbose=0))


def exchange(folder: str | os.PathLike) -> None:
    """Load the `.keras` files of the other backends in `folder`; save this backend's."""
    folder = Path(folder)
    backend = keras.backend.backend()
    x = exchange_input()
    load_others(folder)
    model = every_layer_network()
    np.savez(folder / f"{backend}-predictions.npz", y=model.predict(x, verbose=0))
    model.save(folder / f"{backend}.keras")


def save(folder: str | os.PathLike, probes: dict[str, np.ndarray]) -> None:
    """Write `probes` to `folder/<backend>.npz`, then `exchange(folder)`."""
    np.savez(Path(folder) / f"{keras.backend.backend()}.npz", **probes)
    exchange(folder)


def main(folder: str, load_only: bool = False) -> None:
    """Probe and save under the current backend; with `load_only`, only `load_others`."""
    if load_only:
        load_others(folder)
    else:
        save(folder, probe())


if __name__ == "__main__":
    main(sys.argv[1], load_only="--load-only" in sys.argv[2:])
