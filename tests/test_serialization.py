"""Quantizers given in every form survive a `.keras` round trip with `safe_mode=True`.

The forms a user writes, as in larq: a name (`"ste_sign"`, `"SteSign"`), an object
(`SteSign(clip_value=0.5)`), a function (`lns_keras.quantizers.ste_sign`), and a quantizer
of their own registered with `keras.saving.register_keras_serializable`, a `Quantizer`
subclass or a plain function, given by object or by its registered name
(`"LnsKerasTests>ScaledSign"`). Also the registry around them: `get`, `serialize`,
`deserialize` and their errors.
"""

from __future__ import annotations

import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import lns_keras
from lns_keras import quantizers

PACKAGE = "LnsKerasTests"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledSign(quantizers.Quantizer):
    """A user's quantizer class: `scale * sign(x)`, straight-through gradient."""

    precision = 1

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return self.scale * quantizers.ste_sign(inputs)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


# Registered under a name other than the function's own, so that the test tells the
# registered name from `__name__`.
@keras.saving.register_keras_serializable(package=PACKAGE, name="sign_clipped_at_two")
def user_sign(x):
    """A user's quantizer function."""
    return quantizers.ste_sign(x, clip_value=2.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NeedsArguments(quantizers.Quantizer):
    """A registered quantizer class that cannot be built from its name alone."""

    def __init__(self, level: float, **kwargs):
        super().__init__(**kwargs)
        self.level = level

    def call(self, inputs):
        return self.level * quantizers.sign(inputs)

    def get_config(self):
        return {**super().get_config(), "level": self.level}


def unregistered_sign(x):
    return quantizers.ste_sign(x)


# Every form of quantizer identifier, as a factory: an object must not be shared by two
# layers, so each layer gets a new one.
SPECS = {
    "alias": lambda: "ste_sign",
    "class_name": lambda: "SwishSign",
    "lns_keras_registered_name": lambda: "lns_keras>approx_sign",
    "object": lambda: quantizers.SteTern(threshold_value=0.1, clip_value=0.5),
    "object_dorefa": lambda: quantizers.DoReFa(k_bit=2, mode="weights"),
    "function_ste_sign": lambda: quantizers.ste_sign,
    "function_approx_sign": lambda: quantizers.approx_sign,
    "function_swish_sign": lambda: quantizers.swish_sign,
    "function_ste_tern": lambda: quantizers.ste_tern,
    "function_ste_heaviside": lambda: quantizers.ste_heaviside,
    "function_sign": lambda: quantizers.sign,
    "user_class_object": lambda: ScaledSign(scale=0.5),
    "user_class_name": lambda: f"{PACKAGE}>ScaledSign",
    "user_function": lambda: user_sign,
    "user_function_name": lambda: f"{PACKAGE}>sign_clipped_at_two",
}

FUNCTIONS = [
    quantizers.sign,
    quantizers.ste_sign,
    quantizers.approx_sign,
    quantizers.swish_sign,
    quantizers.ste_tern,
    quantizers.ste_heaviside,
]


def _config(quantizer) -> dict:
    """A quantizer object's config as saved (JSON), without its name."""
    config = json.loads(json.dumps(quantizer.get_config()))
    config.pop("name", None)
    return config


def _assert_same_quantizer(restored, original) -> None:
    if isinstance(original, types.FunctionType):
        assert restored is original
    else:
        assert type(restored) is type(original)
        assert _config(restored) == _config(original)


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _round_trip(model: keras.Model, x: np.ndarray, tmp_path) -> keras.Model:
    """Save to `.keras`, load with `safe_mode=True`, and check the predictions agree."""
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    return loaded


def _quantized_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if hasattr(layer, "kernel_quantizer")]


def test_model_with_every_form_of_quantizer_round_trips(tmp_path):
    """QuantConv2D, LNSQuantConv2D and QuantDense, each given quantizers in other forms."""
    inputs = keras.Input((6, 6, 3))
    h = lns_keras.QuantConv2D(
        4,
        3,
        padding="same",
        input_quantizer=quantizers.ste_sign,  # function
        kernel_quantizer="ste_sign",  # alias
        kernel_constraint="weight_clip",
    )(inputs)
    h = lns_keras.LNSQuantConv2D(
        4,
        3,
        padding="same",
        input_quantizer=f"{PACKAGE}>sign_clipped_at_two",  # user function, by name
        kernel_quantizer=ScaledSign(scale=0.5),  # user class, object
    )(h)
    h = lns_keras.QuantConv2D(
        4,
        3,
        input_quantizer=f"{PACKAGE}>ScaledSign",  # user class, by name
        kernel_quantizer=user_sign,  # user function, object
        kernel_scale="channel",
    )(h)
    h = keras.layers.Flatten()(h)
    outputs = lns_keras.QuantDense(
        3,
        input_quantizer=quantizers.SteTern(threshold_value=0.1),  # object
        kernel_quantizer=quantizers.approx_sign,  # function
    )(h)
    model = keras.Model(inputs, outputs)
    x = _random((2, 6, 6, 3), seed=1)
    # Non-trivial outputs: a wrong quantizer after loading would change them.
    assert np.std(model.predict(x, verbose=0)) > 1e-3

    loaded = _round_trip(model, x, tmp_path)

    conv, lns_conv, conv_channel, dense = _quantized_layers(loaded)
    assert type(lns_conv) is lns_keras.LNSQuantConv2D
    assert conv.input_quantizer is quantizers.ste_sign
    assert type(conv.kernel_quantizer) is quantizers.SteSign
    assert conv.kernel_quantizer.clip_value == 1.0
    assert lns_conv.input_quantizer is user_sign
    assert type(lns_conv.kernel_quantizer) is ScaledSign
    assert lns_conv.kernel_quantizer.scale == 0.5
    assert type(conv_channel.input_quantizer) is ScaledSign
    assert conv_channel.input_quantizer.scale == 1.0
    assert conv_channel.kernel_quantizer is user_sign
    assert type(dense.input_quantizer) is quantizers.SteTern
    assert dense.input_quantizer.threshold_value == 0.1
    assert dense.kernel_quantizer is quantizers.approx_sign
    for original, restored in zip(_quantized_layers(model), _quantized_layers(loaded), strict=True):
        _assert_same_quantizer(restored.input_quantizer, original.input_quantizer)
        _assert_same_quantizer(restored.kernel_quantizer, original.kernel_quantizer)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_each_form_round_trips_through_every_layer(spec, tmp_path):
    make = SPECS[spec]
    inputs = keras.Input((5, 5, 2))
    h = lns_keras.QuantConv2D(3, 3, input_quantizer=make(), kernel_quantizer=make())(inputs)
    h = lns_keras.LNSQuantConv2D(3, 2, rho=0.01, input_quantizer=make(), kernel_quantizer=make())(h)
    h = keras.layers.Flatten()(h)
    outputs = lns_keras.QuantDense(2, input_quantizer=make(), kernel_quantizer=make())(h)
    model = keras.Model(inputs, outputs)
    x = _random((2, 5, 5, 2), seed=2)

    loaded = _round_trip(model, x, tmp_path)

    layers = _quantized_layers(loaded)
    assert [type(layer) for layer in layers] == [
        lns_keras.QuantConv2D,
        lns_keras.LNSQuantConv2D,
        lns_keras.QuantDense,
    ]
    expected = quantizers.get(make())
    for original, restored in zip(_quantized_layers(model), layers, strict=True):
        for attribute in ("input_quantizer", "kernel_quantizer"):
            _assert_same_quantizer(getattr(restored, attribute), getattr(original, attribute))
            _assert_same_quantizer(getattr(restored, attribute), expected)


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("layer_class", ["QuantDense", "QuantConv2D", "LNSQuantConv2D"])
def test_layer_config_is_read_back_by_get(layer_class, spec):
    """`_quantization_config` writes what the layer's `from_config` (through `get`) reads."""
    cls = getattr(lns_keras, layer_class)
    args = (3,) if layer_class == "QuantDense" else (3, 2)
    layer = cls(*args, input_quantizer=SPECS[spec](), kernel_quantizer=SPECS[spec]())
    config = json.loads(json.dumps(layer.get_config()))
    for attribute in ("input_quantizer", "kernel_quantizer"):
        _assert_same_quantizer(quantizers.get(config[attribute]), getattr(layer, attribute))
    restored = cls.from_config(config)
    for attribute in ("input_quantizer", "kernel_quantizer"):
        _assert_same_quantizer(getattr(restored, attribute), getattr(layer, attribute))


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
def test_function_is_saved_by_registered_name_and_module(function):
    config = quantizers.serialize(function)
    assert config == {
        "module": "lns_keras.quantizers",
        "class_name": "function",
        "config": f"lns_keras>{function.__name__}",
        "registered_name": f"lns_keras>{function.__name__}",
    }
    assert quantizers.deserialize(config) is function
    assert quantizers.get(config) is function
    # Keras alone reads it back too, in safe mode.
    assert keras.saving.deserialize_keras_object(config, safe_mode=True) is function
    assert quantizers.get(f"lns_keras>{function.__name__}") is function


def test_user_function_is_saved_by_its_registered_name():
    config = quantizers.serialize(user_sign)
    assert config["config"] == f"{PACKAGE}>sign_clipped_at_two"
    assert config["module"] == __name__
    assert quantizers.deserialize(config) is user_sign


@pytest.mark.parametrize("alias", sorted(quantizers._ALIASES))
def test_serialize_deserialize_round_trip_every_quantizer_class(alias):
    original = quantizers.get(alias)
    config = quantizers.serialize(original)
    restored = quantizers.deserialize(json.loads(json.dumps(config)))
    _assert_same_quantizer(restored, original)
    assert restored is not original


def test_none_round_trips():
    assert quantizers.serialize(None) is None
    assert quantizers.deserialize(None) is None
    assert quantizers.get(None) is None


def test_get_user_registered_names():
    assert quantizers.get(f"{PACKAGE}>sign_clipped_at_two") is user_sign
    by_name = quantizers.get(f"{PACKAGE}>ScaledSign")
    assert type(by_name) is ScaledSign
    assert by_name.scale == 1.0
    assert by_name is not quantizers.get(f"{PACKAGE}>ScaledSign")  # a new object each time
    assert type(quantizers.get("lns_keras>SteSign")) is quantizers.SteSign


def test_user_quantizers_compute_what_they_say():
    x = tf.constant([-3.0, -0.5, 0.0, 0.5, 3.0])
    y = keras.ops.convert_to_numpy(quantizers.get(f"{PACKAGE}>sign_clipped_at_two")(x))
    np.testing.assert_array_equal(y, [-1.0, -1.0, 1.0, 1.0, 1.0])
    y = keras.ops.convert_to_numpy(ScaledSign(scale=0.5)(x))
    np.testing.assert_array_equal(y, [-0.5, -0.5, 0.5, 0.5, 0.5])


def test_names_from_custom_objects():
    with keras.saving.custom_object_scope({"my_sign": unregistered_sign}):
        assert quantizers.get("my_sign") is unregistered_sign
    assert quantizers.deserialize("my_sign", {"my_sign": unregistered_sign}) is unregistered_sign
    with pytest.raises(ValueError, match="my_sign"):
        quantizers.get("my_sign")


def test_unknown_name_names_the_argument_and_what_is_accepted():
    with pytest.raises(ValueError) as error:
        quantizers.get("ste_sing")
    message = str(error.value)
    assert "'ste_sing'" in message
    assert "`kernel_quantizer`" in message and "`identifier`" in message
    assert "Did you mean 'ste_sign'?" in message
    for alias, cls in quantizers._ALIASES.items():
        assert alias in message
        assert cls.__name__ in message
    assert "keras.saving.register_keras_serializable" in message
    assert "'Package>name'" in message


def test_unknown_name_in_a_layer():
    with pytest.raises(ValueError, match="Unknown quantizer name 'MyPackage>nothing'"):
        lns_keras.QuantDense(2, kernel_quantizer="MyPackage>nothing")


def test_registered_class_that_needs_arguments():
    with pytest.raises(TypeError, match="NeedsArguments.*without arguments"):
        quantizers.get(f"{PACKAGE}>NeedsArguments")
    quantizer = quantizers.deserialize(quantizers.serialize(NeedsArguments(level=2.0)))
    assert type(quantizer) is NeedsArguments
    assert quantizer.level == 2.0


def test_bad_identifiers_are_named():
    with pytest.raises(ValueError, match="identifier=42"):
        quantizers.get(42)
    with pytest.raises(ValueError, match=r"`config`.*config=\[1\]"):
        quantizers.deserialize([1])


def test_config_written_before_functions_were_registered_loads():
    """Before, a function was saved as a `builtins` function under its bare name."""
    old = {"module": "builtins", "class_name": "function", "config": "ste_sign"}
    assert quantizers.get({**old, "registered_name": "function"}) is quantizers.ste_sign


def test_config_without_registered_name_loads():
    """The form larq and tf.keras wrote: the bare class name."""
    quantizer = quantizers.get({"class_name": "SteSign", "config": {"clip_value": 0.5}})
    assert type(quantizer) is quantizers.SteSign
    assert quantizer.clip_value == 0.5


def test_unregistered_function_loads_only_through_custom_objects(tmp_path):
    inputs = keras.Input((4,))
    outputs = lns_keras.QuantDense(2, kernel_quantizer=unregistered_sign)(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(TypeError, match="register_keras_serializable"):
        keras.models.load_model(path, safe_mode=True)
    loaded = keras.models.load_model(
        path, safe_mode=True, custom_objects={"unregistered_sign": unregistered_sign}
    )
    assert loaded.layers[-1].kernel_quantizer is unregistered_sign
    x = _random((3, 4), seed=3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --------------------------------------------------------------------------------------
# larq's other classes (issue 11): the zoo layers with every option, the activations,
# FlipRatio, Bop and CaseOptimizer, each through `.keras` with `safe_mode=True`.
# HyperparameterScheduler is a callback, which Keras does not save with a model; what it
# changes (Bop's `gamma`) is saved with the optimizer, checked below.

ZOO_WITH_OPTIONS = {
    "QuantConv1D": (
        lambda: lns_keras.QuantConv1D(
            3,
            3,
            padding="same",
            pad_values=1.0,
            input_quantizer=quantizers.SteSign(clip_value=0.5),
            kernel_quantizer=user_sign,
            kernel_constraint=lns_keras.constraints.WeightClip(0.5),
            kernel_scale="channel",
            metrics=["flip_ratio"],
        ),
        (7, 2),
    ),
    "QuantConv3D": (
        lambda: lns_keras.QuantConv3D(
            3, 2, input_quantizer="ste_sign", kernel_quantizer="ste_tern", kernel_scale="layer"
        ),
        (3, 4, 3, 2),
    ),
    "QuantDepthwiseConv2D": (
        lambda: lns_keras.QuantDepthwiseConv2D(
            3,
            padding="same",
            pad_values=-1.0,
            depth_multiplier=2,
            input_quantizer="approx_sign",
            depthwise_quantizer=ScaledSign(scale=0.5),
            depthwise_constraint="weight_clip",
            kernel_scale="channel",
            metrics=["flip_ratio"],
        ),
        (5, 5, 2),
    ),
    "QuantSeparableConv1D": (
        lambda: lns_keras.QuantSeparableConv1D(
            3,
            3,
            padding="same",
            pad_values=1.0,
            input_quantizer="ste_sign",
            depthwise_quantizer="ste_sign",
            pointwise_quantizer=quantizers.DoReFa(k_bit=2, mode="weights"),
            depthwise_constraint="weight_clip",
            kernel_scale="layer",
        ),
        (7, 2),
    ),
    "QuantSeparableConv2D": (
        lambda: lns_keras.QuantSeparableConv2D(
            3,
            3,
            depth_multiplier=2,
            input_quantizer="ste_sign",
            depthwise_quantizer="swish_sign",
            pointwise_quantizer="ste_sign",
            pointwise_constraint="weight_clip",
            metrics=["flip_ratio"],
        ),
        (5, 5, 2),
    ),
    "QuantConv2DTranspose": (
        lambda: lns_keras.QuantConv2DTranspose(
            3,
            3,
            strides=2,
            output_padding=1,
            input_quantizer="ste_sign",
            kernel_quantizer="magnitude_aware_sign",
            kernel_scale="channel",
        ),
        (3, 4, 2),
    ),
    "QuantConv3DTranspose": (
        lambda: lns_keras.QuantConv3DTranspose(
            3, 2, strides=2, input_quantizer="ste_heaviside", kernel_quantizer="ste_sign"
        ),
        (2, 3, 2, 2),
    ),
    "QuantLocallyConnected1D": (
        lambda: lns_keras.QuantLocallyConnected1D(
            3,
            3,
            strides=2,
            activation=lns_keras.activations.leaky_tanh,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            kernel_scale="channel",
            metrics=["flip_ratio"],
        ),
        (9, 2),
    ),
    "QuantLocallyConnected2D": (
        lambda: lns_keras.QuantLocallyConnected2D(
            3,
            (2, 3),
            use_bias=False,
            input_quantizer=f"{PACKAGE}>ScaledSign",
            kernel_quantizer="ste_sign",
            kernel_regularizer="l2",
        ),
        (5, 6, 2),
    ),
}


def _config_without_name(layer) -> dict:
    return {k: v for k, v in json.loads(json.dumps(layer.get_config())).items() if k != "name"}


def test_zoo_with_options_covers_every_zoo_layer():
    assert set(ZOO_WITH_OPTIONS) == set(lns_keras.layers.zoo.__all__)


@pytest.mark.parametrize("name", sorted(ZOO_WITH_OPTIONS))
def test_zoo_layer_with_every_option_round_trips(name, tmp_path):
    make, shape = ZOO_WITH_OPTIONS[name]
    inputs = keras.Input(shape)
    layer = make()
    model = keras.Model(inputs, layer(inputs))
    for i, weight in enumerate(model.weights):
        weight.assign(_random(weight.shape, seed=20 + i))
    x = 2 * _random((2, *shape), seed=3)
    assert np.std(model.predict(x, verbose=0)) > 1e-3

    loaded = _round_trip(model, x, tmp_path)

    restored = loaded.layers[-1]
    assert type(restored) is type(layer)
    assert _config_without_name(restored) == _config_without_name(layer)
    assert [m.name for m in restored.metrics] == [m.name for m in layer.metrics]
    for original, loaded_weight in zip(layer.weights, restored.weights, strict=True):
        assert getattr(loaded_weight, "precision", None) == getattr(original, "precision", None)


def test_activations_round_trip(tmp_path):
    inputs = keras.Input((4,))
    h = keras.layers.Activation("leaky_tanh")(inputs)
    h = lns_keras.QuantDense(4, activation=lns_keras.activations.leaky_tanh)(h)
    h = keras.layers.Dense(4, activation=lns_keras.activations.hard_tanh)(h)
    outputs = keras.layers.Dense(4, activation="leaky_tanh")(h)
    model = keras.Model(inputs, outputs)
    x = 3 * _random((8, 4), seed=4)  # beyond ±1, where leaky_tanh is not hard_tanh

    loaded = _round_trip(model, x, tmp_path)

    activations = [layer.activation for layer in loaded.layers[1:]]
    leaky, hard = lns_keras.activations.leaky_tanh, keras.activations.hard_tanh
    assert activations == [leaky, leaky, hard, leaky]
    saved = json.dumps(model.get_config())
    assert '"lns_keras>leaky_tanh"' in saved


def test_flip_ratio_round_trips_with_safe_mode():
    metric = lns_keras.metrics.FlipRatio(values_dtype="int16", name="flips")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(metric)))
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(restored) is lns_keras.metrics.FlipRatio
    assert (restored.name, restored.values_dtype) == ("flips", "int16")
    restored.update_state(np.array([1, -1]))
    restored.update_state(np.array([1, 1]))
    assert float(restored.result()) == 0.5


def test_zoo_model_trained_with_bop_round_trips(tmp_path):
    """Bop trains the zoo layers' binary kernels (depthwise and pointwise too); the model,
    its CaseOptimizer's routing and state, and a scheduled `gamma` load back."""
    inputs = keras.Input((8, 3))
    h = lns_keras.QuantConv1D(4, 3, padding="same", kernel_quantizer="ste_sign")(inputs)
    h = lns_keras.QuantSeparableConv1D(
        4,
        3,
        input_quantizer="ste_sign",
        depthwise_quantizer="ste_sign",
        pointwise_quantizer="ste_sign",
    )(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, outputs)
    bop = lns_keras.optimizers.Bop(threshold=1e-6, gamma=1e-2)
    model.compile(
        optimizer=lns_keras.optimizers.CaseOptimizer(
            (lns_keras.optimizers.Bop.is_binary_variable, bop),
            default_optimizer=keras.optimizers.Adam(0.01),
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = _random((16, 8, 3), seed=5)
    y = np.arange(16) % 2
    schedule = lns_keras.callbacks.HyperparameterScheduler(
        lambda epoch: 1e-2 * 0.5**epoch, "gamma", bop
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False, callbacks=[schedule])
    binary = [v.path for v in model.trainable_variables if getattr(v, "precision", None) == 1]
    assert len(binary) == 3  # the conv kernel, the depthwise and the pointwise kernels
    for path in binary:
        kernel = next(v for v in model.trainable_variables if v.path == path)
        assert set(np.unique(kernel.numpy())) <= {-1.0, 1.0}  # Bop holds signs

    path = tmp_path / "zoo_bop.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)

    loaded_bop = loaded.optimizer.optimizers[0]
    assert type(loaded_bop) is lns_keras.optimizers.Bop
    assert float(loaded_bop.gamma.numpy()) == pytest.approx(5e-3)  # the scheduled value
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
