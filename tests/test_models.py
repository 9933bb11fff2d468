"""The model builders: every model in every mode builds, predicts and trains a step; the
baseline BNN keeps the paper's full-precision layers; the counts match the paper's tables.
The k-bit modes `slb` and `dorefa` are built here at their default, 1-bit widths; their
other widths are tested in tests/test_slb_apps.py."""

import keras
import numpy as np
import pytest

import lns_keras
from apps import models
from apps.models import BUILDERS, MODES, get_builder
from lns_keras.convert import is_binary_layer
from lns_keras.layers.lns import is_lns_layer
from lns_keras.layers.slb import is_slb_layer

INPUT_SHAPES = {
    "resnet20": (32, 32, 3),
    "fashion_net": (28, 28, 1),
    "resnet18_bireal": (224, 224, 3),
    "alexnet": (224, 224, 3),
    "vgg_small": (32, 32, 3),
}
IMAGENET = ("resnet18_bireal", "alexnet")
# The mappings of 512-channel kernels cost the same whatever the batch (0.3 T MACs a
# forward pass for Bi-Real ResNet-18): 100-250 s for one step on 2 cores. Their structure
# is checked; predicting and training through LNS layers is checked on the other networks.
HEAVY_MAPPINGS = {("resnet18_bireal", "lns"), ("vgg_small", "lns")}


def _cases():
    for name in BUILDERS:
        for mode in MODES:
            slow = name in IMAGENET
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


def _kernel_layers(model):
    # An SLB layer has logits instead of a kernel (its `kernel` raises AttributeError).
    return [layer for layer in model.layers if hasattr(layer, "kernel") or is_slb_layer(layer)]


def _is_shortcut(layer) -> bool:
    return "shortcut" in layer.name


def _check_structure(model, mode):
    layers = _kernel_layers(model)
    first, last, hidden = layers[0], layers[-1], layers[1:-1]
    # First conv and last dense: plain Keras layers in every mode.
    assert type(first) is keras.layers.Conv2D
    assert type(last) is keras.layers.Dense
    if mode == "float":
        assert not any(
            isinstance(layer, lns_keras.QuantConv2D | lns_keras.QuantDense) for layer in layers
        )
        return
    for layer in hidden:
        if _is_shortcut(layer):  # down-sampling shortcuts stay full precision
            assert type(layer) is keras.layers.Conv2D, layer.name
        elif mode == "slb":
            assert is_slb_layer(layer) and layer.weight_bits == 1, layer.name
            assert layer.input_quantizer.precision == 1 and not layer.use_bias
        else:  # bnn, lns, and dorefa at 1 bit: the BNN's layers
            assert is_binary_layer(layer), layer.name
            # AlexNet's LNS mode maps the convolutions only (fc6/fc7 mappings: ~0.8 G weights).
            dense_only_binary = model.name == "alexnet_lns" and isinstance(
                layer, lns_keras.QuantDense
            )
            assert is_lns_layer(layer) == (mode == "lns" and not dense_only_binary), layer.name
            assert layer.kernel_scale == "layer" and not layer.use_bias
    # A ReLU before a binary layer's sign would make all its inputs +1.
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in model.layers)


@pytest.mark.parametrize(("name", "mode"), _cases())
def test_builds_predicts_and_trains_a_step(name, mode):
    input_shape = INPUT_SHAPES[name]
    batch = 1 if name in IMAGENET else 2
    num_classes = 10
    model = get_builder(name)(input_shape, num_classes, mode=mode)
    suffix = "_w1a1" if mode in ("slb", "dorefa") else ""
    assert model.name == f"{name}_{mode}{suffix}"
    _check_structure(model, mode)
    if (name, mode) in HEAVY_MAPPINGS:
        return

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch,))
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (batch, num_classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_resnet20_takes_fashion_mnist_images():
    model = models.resnet20((28, 28, 1), 10, mode="bnn")
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 10)
    assert model.get_layer("pool").output.shape == (None, 64)


def test_lns_mode_passes_lns_arguments():
    model = models.fashion_net((28, 28, 1), 10, mode="lns", alpha=0.5, rho=(0.01, 0.02))
    lns_layers = [layer for layer in model.layers if is_lns_layer(layer)]
    assert len(lns_layers) == 2
    assert all(layer.alpha == 0.5 and layer.noise_rates == (0.01, 0.02) for layer in lns_layers)


def test_bireal_unit_has_its_own_shortcut_and_prelu():
    model = models.resnet18_bireal((64, 64, 3), 10, mode="bnn")
    binary = [layer for layer in model.layers if is_binary_layer(layer)]
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(binary) == len(prelus) == len(adds) == 16
    # Down-sampling shortcut: average pooling, then a full-precision 1x1 conv with stride 1.
    shortcut = model.get_layer("stage2_block1_unit1_shortcut_conv")
    assert type(shortcut) is keras.layers.Conv2D
    assert shortcut.kernel_size == (1, 1) and shortcut.strides == (1, 1)
    assert isinstance(
        model.get_layer("stage2_block1_unit1_shortcut_pool"), keras.layers.AveragePooling2D
    )


def test_lns_model_saves_and_loads(tmp_path):
    model = models.fashion_net((28, 28, 1), 10, mode="lns")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


# The paper's Table 3 (ResNet-18 on ImageNet; Mbit = 10^6 bits) ...


def test_float_resnet18_matches_table3():
    stats = lns_keras.model_stats(models.resnet18_bireal((224, 224, 3), 1000, mode="float"))
    assert stats.memory_mbit == pytest.approx(374, rel=0.01)
    assert stats.flops == pytest.approx(1.81e9, rel=0.03)


def test_bireal_resnet18_bnn_matches_table3():
    stats = lns_keras.model_stats(models.resnet18_bireal((224, 224, 3), 1000, mode="bnn"))
    assert stats.memory_mbit == pytest.approx(34, abs=1)
    assert stats.flops == pytest.approx(163e6, rel=0.05)


# ... and Table 5 (AlexNet on ImageNet; there Mbit = 2^20 bits).


def test_alexnet_matches_table5():
    def mebibits(mode):
        model = models.alexnet((224, 224, 3), 1000, mode=mode)
        return lns_keras.model_stats(model).memory_mbit * 1e6 / 2**20

    assert mebibits("float") == pytest.approx(1860, rel=0.01)
    assert mebibits("bnn") == pytest.approx(180, rel=0.01)


def test_binary_models_keep_their_binary_weights_at_one_bit():
    stats = lns_keras.model_stats(models.resnet20((32, 32, 3), 10, mode="bnn"))
    # 18 binary 3x3 convs: 16 channels x 6, 32 x 6 (one 16 -> 32), 64 x 6 (one 32 -> 64).
    expected = 9 * (6 * 16 * 16 + (32 * 16 + 5 * 32 * 32) + (64 * 32 + 5 * 64 * 64))
    assert stats.params_1bit == expected


# Errors.


def test_unknown_model_name_is_named_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"'resnet50'.*alexnet.*fashion_net.*resnet18_bireal.*resnet20.*vgg_small"
    ):
        get_builder("resnet50")


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_unknown_mode_is_named(builder):
    with pytest.raises(ValueError, match=r"mode='binary'"):
        builder((32, 32, 3), 10, mode="binary")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (32, 32)}, r"input_shape=\(32, 32\)"),
        ({"input_shape": (32, 0, 3)}, r"input_shape=\(32, 0, 3\)"),
        ({"num_classes": 1}, r"num_classes=1"),
        ({"num_classes": "10"}, r"num_classes='10'"),
        ({"mode": "bnn", "alpha": 1.0}, r"\['alpha'\].*mode='bnn'"),
        ({"mode": "lns", "beta": 1.0}, r"beta"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"input_shape": (28, 28, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        models.fashion_net(**arguments)
