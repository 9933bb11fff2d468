"""Loading larq models: larq 0.14 trains and saves, `load_larq_model` rebuilds, both predict.

One larq subprocess per module (the `larq_models` fixture) builds the models below under
tf.keras 2, trains each for two steps on random data (so that no weight, and no batch-norm
statistic, is still its initial value), saves each as HDF5 and as a SavedModel, and
returns its predictions on the test's inputs. The tests load every file with
`load_larq_model` in Keras 3 and compare: equal argmax, logits within 1e-5.
"""

from __future__ import annotations

import json
import shutil

import h5py
import keras
import larq_oracle
import numpy as np
import pytest

import lns_keras
from lns_keras import compat

FORMATS = ("h5", "savedmodel")

# The models the oracle builds, each a function of the inputs `image`, `sequence`,
# `volume` (shapes in `_inputs`). `sequential_bnn` and `shortcut_bnn` are the BNNs a larq
# user trains; `keras_builtins` and `larq_zoo` together hold every covered layer type
# (`test_every_covered_type_is_loaded` keeps it so).
ORACLE_SCRIPT = """
import larq as lq

L = tf.keras.layers
binary = dict(
    input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
)


def sequential_bnn():
    return tf.keras.Sequential(
        [
            L.Conv2D(8, 3, padding="same", input_shape=(8, 8, 3)),
            L.BatchNormalization(momentum=0.5),
            lq.layers.QuantConv2D(8, 3, padding="same", use_bias=False, **binary),
            L.BatchNormalization(momentum=0.5),
            L.MaxPooling2D(),
            lq.layers.QuantConv2D(12, 3, use_bias=False, **binary),
            L.BatchNormalization(momentum=0.5),
            L.Flatten(),
            lq.layers.QuantDense(16, use_bias=False, **binary),
            L.BatchNormalization(momentum=0.5),
            L.Dense(10),
        ],
        name="sequential_bnn",
    )


def built_sequential():
    # No input shape until `build`: the config records it as `build_input_shape`.
    model = tf.keras.Sequential(
        [
            L.Conv2D(4, 3),
            L.BatchNormalization(momentum=0.5),
            L.Flatten(),
            lq.layers.QuantDense(10, **binary),
        ],
        name="built_sequential",
    )
    model.build((None, 8, 8, 3))
    return model


def shortcut_bnn():
    image = L.Input((8, 8, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(image)
    x = L.BatchNormalization(momentum=0.5)(x)
    y = lq.layers.QuantConv2D(
        8, 3, padding="same", pad_values=1.0, use_bias=False,
        input_quantizer=lq.quantizers.SteSign(clip_value=1.25),
        kernel_quantizer="ste_sign", kernel_constraint=lq.constraints.WeightClip(1.25),
    )(x)
    y = L.BatchNormalization(momentum=0.5)(y)
    x = L.Add()([x, y])
    y = lq.layers.QuantConv2D(
        8, 3, strides=2, padding="same", use_bias=False,
        input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
        kernel_constraint="weight_clip",
    )(x)
    y = L.BatchNormalization(momentum=0.5)(y)
    x = L.AveragePooling2D()(x)
    x = L.Concatenate()([x, y])
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.GlobalAveragePooling2D()(x)
    x = lq.layers.QuantDense(
        16, input_quantizer="swish_sign", kernel_quantizer="ste_tern",
        kernel_constraint="weight_clip",
    )(x)
    x = L.BatchNormalization(momentum=0.5)(x)
    return tf.keras.Model(image, L.Dense(10)(x), name="shortcut_bnn")


def keras_builtins():
    image = L.Input((8, 8, 3), name="image")
    sequence = L.Input((16, 4), name="sequence")
    volume = L.Input((4, 4, 4, 2), name="volume")
    x = L.ZeroPadding2D(1)(image)
    x = L.Cropping2D(1)(x)
    x = L.Rescaling(0.5, offset=0.1)(x)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = L.SeparableConv2D(8, 3, padding="same")(x)
    x = L.BatchNormalization(momentum=0.5)(x)
    x = L.LayerNormalization()(x)
    x = L.LeakyReLU(0.2)(x)
    x = L.ReLU(max_value=3.0)(x)
    x = L.ELU()(x)
    x = L.Activation("tanh")(x)
    x = L.SpatialDropout2D(0.1)(x)
    x = L.MaxPooling2D()(x)
    x = L.UpSampling2D()(x)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    x = L.AveragePooling2D(4)(x)
    a = L.GlobalMaxPooling2D()(x)
    b = L.Flatten()(L.Permute((2, 1, 3))(L.Reshape((8, 8, 1))(L.Flatten()(x))))
    b = L.Dense(4)(b)
    images = L.Concatenate()(
        [L.Subtract()([a, b]), L.Multiply()([a, b]), L.Average()([a, b])]
    )
    s = L.ZeroPadding1D(1)(sequence)
    s = L.Conv1D(6, 3, activation="swish")(s)
    s = L.SeparableConv1D(6, 3, padding="same")(s)
    s = L.MaxPooling1D()(s)
    s = L.UpSampling1D()(L.AveragePooling1D()(s))
    s = L.Conv1DTranspose(4, 3, strides=2)(L.Cropping1D(1)(s))
    sequences = L.Concatenate()([L.GlobalAveragePooling1D()(s), L.GlobalMaxPooling1D()(s)])
    v = L.ZeroPadding3D(1)(volume)
    v = L.Conv3D(4, 3, activation="relu")(v)
    v = L.Conv3DTranspose(4, 2, strides=2)(L.MaxPooling3D()(v))
    v = L.AveragePooling3D()(v)
    sequences = L.Concatenate()(
        [sequences, L.GlobalAveragePooling3D()(v), L.GlobalMaxPooling3D()(v)]
    )
    sequences = L.Dense(12)(sequences)
    x = L.Concatenate()(
        [images, L.Maximum()([images, sequences]), L.Minimum()([images, sequences])]
    )
    x = L.Dropout(0.2)(L.Softmax()(L.Dense(10, activation="gelu")(x)))
    x = L.Dense(10)(x)
    return tf.keras.Model([image, sequence, volume], x, name="keras_builtins")


def larq_zoo():
    image = L.Input((8, 8, 3), name="image")
    sequence = L.Input((16, 4), name="sequence")
    volume = L.Input((4, 4, 4, 2), name="volume")
    bits = dict(input_quantizer="ste_sign")
    x = L.BatchNormalization(momentum=0.5)(image)
    x = lq.layers.QuantDepthwiseConv2D(
        3, padding="same", pad_values=1.0, depth_multiplier=2, **bits,
        depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
    )(x)
    x = lq.layers.QuantSeparableConv2D(
        8, 3, padding="same", pad_values=1.0, **bits,
        depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
        pointwise_quantizer="ste_sign", pointwise_constraint="weight_clip",
    )(x)
    x = L.BatchNormalization(momentum=0.5)(x)
    x = lq.layers.QuantConv2DTranspose(
        4, 3, strides=2, padding="same", **bits, kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )(x)
    x = lq.layers.QuantLocallyConnected2D(
        4, 3, strides=2, **bits, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
    )(x)
    images = L.GlobalAveragePooling2D()(x)
    s = L.BatchNormalization(momentum=0.5)(sequence)
    s = lq.layers.QuantConv1D(
        6, 3, padding="same", pad_values=1.0, **bits,
        kernel_quantizer=lq.quantizers.DoReFa(k_bit=2, mode="weights"),
    )(s)
    s = lq.layers.QuantSeparableConv1D(
        6, 3, padding="same", **bits, depthwise_quantizer="ste_sign",
        pointwise_quantizer="ste_sign",
    )(s)
    s = lq.layers.QuantLocallyConnected1D(4, 3, **bits, kernel_quantizer="ste_sign")(s)
    sequences = L.Flatten()(s)
    v = L.BatchNormalization(momentum=0.5)(volume)
    v = lq.layers.QuantConv3D(4, 3, padding="same", pad_values=1.0, **bits,
                              kernel_quantizer="ste_sign")(v)
    v = lq.layers.QuantConv3DTranspose(4, 3, strides=2, padding="same", **bits,
                                       kernel_quantizer="ste_sign")(v)
    volumes = L.Flatten()(v)
    x = L.Concatenate()([images, sequences, volumes])
    x = lq.layers.QuantDense(10, **bits, kernel_quantizer="ste_sign")(x)
    return tf.keras.Model([image, sequence, volume], x, name="larq_zoo")


@tf.keras.utils.register_keras_serializable("test")
class Scale(L.Layer):
    def call(self, inputs):
        return 2.0 * inputs


def custom_layer():
    image = L.Input((8, 8, 3), name="image")
    x = Scale()(L.Conv2D(4, 3)(image))
    return tf.keras.Model(image, L.Dense(10)(L.Flatten()(x)), name="custom_layer")


def operator_layer():
    # `x + 1.0` on a Keras 2 tensor makes a TFOpLambda layer.
    image = L.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3)(image) + 1.0
    return tf.keras.Model(image, L.Dense(10)(L.Flatten()(x)), name="operator_layer")


def nested_model():
    image = L.Input((8, 8, 3), name="image")
    inner = tf.keras.Sequential([L.Conv2D(4, 3), L.Flatten()], name="inner")
    return tf.keras.Model(image, L.Dense(10)(inner(image)), name="nested_model")


def hard_sigmoid():
    # Keras 2's hard_sigmoid has slope 0.2, Keras 3's 1/6.
    image = L.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, activation="hard_sigmoid", name="gate")(image)
    return tf.keras.Model(image, L.Dense(10)(L.Flatten()(x)), name="hard_sigmoid")


MODELS = [
    sequential_bnn, built_sequential, shortcut_bnn, keras_builtins, larq_zoo,
    custom_layer, operator_layer, nested_model, hard_sigmoid,
]
rng = np.random.default_rng(1)
for build in MODELS:
    name = build.__name__
    inputs = ["image", "sequence", "volume"] if name in ("keras_builtins", "larq_zoo") else ["image"]
    tf.keras.utils.set_random_seed(0)
    model = build()
    train = [rng.normal(size=(16,) + inp[n].shape[1:]).astype("float32")
             for n in inputs]
    labels = rng.integers(0, 10, size=16)
    before = [w.copy() for w in model.get_weights()]
    model.compile(
        tf.keras.optimizers.Adam(0.01),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(train, labels, batch_size=8, epochs=1, verbose=0)
    out[name + "/changed"] = np.array(
        [not np.array_equal(b, a) for b, a in zip(before, model.get_weights())]
    )
    out[name + "/predictions"] = model.predict([inp[n] for n in inputs], verbose=0)
    model.save(os.path.join(folder, name + ".h5"))
    if name not in ("operator_layer", "nested_model", "hard_sigmoid"):  # Saving is slow.
        model.save(os.path.join(folder, name + "_savedmodel"))
tf.keras.utils.set_random_seed(0)
sequential_bnn().save_weights(os.path.join(folder, "weights_only.h5"))
"""

# The models loaded and compared, with their inputs.
INPUT_NAMES = {
    "sequential_bnn": ["image"],
    "built_sequential": ["image"],
    "shortcut_bnn": ["image"],
    "keras_builtins": ["image", "sequence", "volume"],
    "larq_zoo": ["image", "sequence", "volume"],
}


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(6, 8, 8, 3)).astype("float32"),
        "sequence": rng.normal(size=(6, 16, 4)).astype("float32"),
        "volume": rng.normal(size=(6, 4, 4, 4, 2)).astype("float32"),
    }


@pytest.fixture(scope="module")
def larq_models(tmp_path_factory):
    """The oracle's folder of saved models, and its outputs."""
    folder = tmp_path_factory.mktemp("larq_models")
    outputs = larq_oracle.run(ORACLE_SCRIPT, _inputs(), folder, timeout=600)
    return folder, outputs


def _path(folder, name: str, file_format: str):
    return folder / (f"{name}.h5" if file_format == "h5" else f"{name}_savedmodel")


def _predict(model: keras.Model, name: str) -> np.ndarray:
    inputs = [_inputs()[n] for n in INPUT_NAMES[name]]
    return model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("name", sorted(INPUT_NAMES))
def test_predicts_what_larq_predicts(larq_models, name, file_format):
    folder, outputs = larq_models
    model = compat.load_larq_model(_path(folder, name, file_format))
    expected = outputs[f"{name}/predictions"]
    predictions = _predict(model, name)
    assert predictions.shape == expected.shape
    np.testing.assert_array_equal(np.argmax(predictions, -1), np.argmax(expected, -1))
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(INPUT_NAMES))
def test_oracle_models_were_trained(larq_models, name):
    # Two steps moved every weight and batch-norm statistic off its initial value, so
    # that loading the initial weights (or none) could not pass the tests above.
    _, outputs = larq_models
    changed = outputs[f"{name}/changed"]
    assert changed.size > 0 and changed.all(), changed


def test_sequential_bnn_is_rebuilt_from_lns_keras_layers(larq_models):
    folder, _ = larq_models
    model = compat.load_larq_model(_path(folder, "sequential_bnn", "h5"))
    assert isinstance(model, keras.Sequential)
    binary = [layer for layer in model.layers if "quant" in layer.name]
    assert [type(layer) for layer in binary] == [
        lns_keras.QuantConv2D,
        lns_keras.QuantConv2D,
        lns_keras.QuantDense,
    ]
    for layer in binary:
        assert isinstance(layer.input_quantizer, lns_keras.quantizers.SteSign)
        assert isinstance(layer.kernel_quantizer, lns_keras.quantizers.SteSign)
        assert layer.kernel_quantizer.clip_value == 1.0
        assert isinstance(layer.kernel_constraint, lns_keras.constraints.WeightClip)
        assert layer.kernel_scale is None


def test_shortcut_bnn_keeps_quantizer_arguments(larq_models):
    folder, _ = larq_models
    model = compat.load_larq_model(_path(folder, "shortcut_bnn", "savedmodel"))
    first, second = (layer for layer in model.layers if isinstance(layer, lns_keras.QuantConv2D))
    assert first.input_quantizer.clip_value == 1.25
    assert first.kernel_constraint.clip_value == 1.25
    assert first.pad_values == 1.0
    assert isinstance(second.input_quantizer, lns_keras.quantizers.ApproxSign)
    assert isinstance(second.kernel_quantizer, lns_keras.quantizers.MagnitudeAwareSign)
    dense = next(layer for layer in model.layers if isinstance(layer, lns_keras.QuantDense))
    assert isinstance(dense.kernel_quantizer, lns_keras.quantizers.SteTern)


def test_loaded_model_saves_and_trains_in_keras_3(larq_models, tmp_path):
    folder, outputs = larq_models
    model = compat.load_larq_model(_path(folder, "shortcut_bnn", "h5"))
    model.save(tmp_path / "bnn.keras")
    reloaded = keras.saving.load_model(tmp_path / "bnn.keras", safe_mode=True)
    np.testing.assert_allclose(
        _predict(reloaded, "shortcut_bnn"), outputs["shortcut_bnn/predictions"], atol=1e-5
    )
    reloaded.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in reloaded.get_weights()]
    reloaded.train_on_batch(_inputs()["image"], np.arange(6))
    assert any(not np.array_equal(b, a) for b, a in zip(before, reloaded.get_weights()))


def test_reads_larq_s_old_quantizer_name(larq_models, tmp_path):
    # larq's `DoReFa` used to be called `DoReFaQuantizer`: a file from then names it so.
    folder, outputs = larq_models
    path = tmp_path / "old_names.h5"
    shutil.copy(_path(folder, "larq_zoo", "h5"), path)
    with h5py.File(path, "r+") as file:
        config = file.attrs["model_config"]
        assert '"DoReFa"' in config
        file.attrs["model_config"] = config.replace('"DoReFa"', '"DoReFaQuantizer"')
    model = compat.load_larq_model(path)
    layer = next(layer for layer in model.layers if isinstance(layer, lns_keras.QuantConv1D))
    assert isinstance(layer.kernel_quantizer, lns_keras.quantizers.DoReFa)
    assert layer.kernel_quantizer.mode == "weights"
    np.testing.assert_allclose(
        _predict(model, "larq_zoo"), outputs["larq_zoo/predictions"], rtol=0, atol=1e-5
    )


def test_every_covered_type_is_loaded(larq_models):
    # A type added to LAYER_TYPES must be added to an oracle model above.
    folder, _ = larq_models
    seen = set()
    for name in INPUT_NAMES:
        with h5py.File(_path(folder, name, "h5"), "r") as file:
            config = json.loads(file.attrs["model_config"])
        seen |= {layer["class_name"] for layer in config["config"]["layers"]}
    assert set(compat.LAYER_TYPES) <= seen, set(compat.LAYER_TYPES) - seen


def test_every_covered_type_is_documented():
    doc = compat.__doc__
    missing = [name for name in compat.LAYER_TYPES if f"`{name}`" not in doc]
    assert not missing, f"not in lns_keras.compat's docstring: {missing}"


@pytest.mark.parametrize(
    ("name", "layer_class", "file_format"),
    [
        ("custom_layer", "Scale", "h5"),
        ("custom_layer", "Scale", "savedmodel"),
        ("operator_layer", "TFOpLambda", "h5"),
        ("nested_model", "Sequential", "h5"),
    ],
)
def test_refuses_an_uncovered_layer_by_name(larq_models, name, layer_class, file_format):
    folder, _ = larq_models
    with pytest.raises(ValueError, match=rf"does not cover: \S*{layer_class} \(layers") as error:
        compat.load_larq_model(_path(folder, name, file_format))
    assert "Covered types:" in str(error.value) and "QuantConv2D" in str(error.value)


def test_refuses_an_activation_keras_3_changed(larq_models):
    folder, _ = larq_models
    with pytest.raises(ValueError, match="'gate'.*activation='hard_sigmoid'"):
        compat.load_larq_model(_path(folder, "hard_sigmoid", "h5"))


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "no_such_model.h5"
    with pytest.raises(FileNotFoundError, match="path=.*no_such_model.h5"):
        compat.load_larq_model(path)


def test_refuses_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="path=.*notes.txt.*neither an HDF5 file"):
        compat.load_larq_model(path)


def test_refuses_a_folder_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match="keras_metadata.pb"):
        compat.load_larq_model(tmp_path)


def test_refuses_weights_without_a_model(larq_models):
    folder, _ = larq_models
    with pytest.raises(ValueError, match="save_weights"):
        compat.load_larq_model(folder / "weights_only.h5")


def test_refuses_a_path_of_the_wrong_type():
    with pytest.raises(TypeError, match="path=3"):
        compat.load_larq_model(3)
