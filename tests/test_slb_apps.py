"""SLB in the apps: the `slb` and `dorefa` modes of the builders, VGG-Small, the SLB flags
and their checks, the authors' recipes as flagfiles, and the `slb` stage of the pipeline
(schedule, recalibration, resume, fold, export), on a tiny Fashion-MNIST budget."""

import csv
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import lns_keras
from apps import data, models, pipeline, train
from apps.models import modes
from lns_keras import export, kbit, quantizers
from lns_keras.convert import is_binary_layer
from lns_keras.layers.slb import is_slb_layer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "apps" / "configs"
FASHION_SLB = CONFIGS / "fashion_mnist_slb.flags"
SLB_RECIPES = sorted((CONFIGS / "slb").glob("*.flags"))
TINY = ["--train_limit=256", "--test_limit=128", "--batch_size=64", "--verbose=0"]


def _config(*argv: str) -> pipeline.TrainConfig:
    """Parse `argv` with the flags of apps/train.py, as `python apps/train.py` would."""
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train.py", *argv])
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def _main(argv: list[str]) -> int:
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train.py", *argv])
        return train.main(["train.py"])
    finally:
        train.FLAGS.unparse_flags()


def _no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the flags were checked")


# --- the authors' recipes (slb.md §6.1, §3.4, §7) -------------------------------------

# temperature_speed by W/A for VGG-Small and ResNet-20 (slb.md §3.4); these are also
# exactly the W/A rows the authors' README reports (§7.1).
CIFAR_FACTORS = {
    (1, 1): 1.03,
    (1, 2): 1.03,
    (1, 4): 1.03,
    (1, 8): 1.03,
    (1, 32): 1.04,
    (2, 2): 1.04,
    (2, 4): 1.04,
    (2, 8): 1.04,
    (2, 32): 1.05,
    (4, 4): 1.05,
    (4, 8): 1.05,
    (4, 32): 1.06,
}
IMAGENET_BITS = [(1, 1), (1, 2), (1, 4), (1, 8), (1, 32), (2, 2), (2, 4), (2, 8), (2, 32)]
RECIPES = {
    "cifar10_vgg_small": dict(
        dataset="cifar10",
        model="vgg_small",
        optimizer="sgd",
        learning_rate=0.02,
        weight_decay=5e-4,
        batch_size=100,
        epochs=500,
        temperature_start=0.3,
        temperature_end=0.9,
        bn_recalibration_steps=100,  # len(val_loader): 10,000 / 100
    ),
    "cifar10_resnet20": dict(
        dataset="cifar10",
        model="resnet20",
        optimizer="sgd",
        learning_rate=0.1,
        weight_decay=1e-4,
        batch_size=100,
        epochs=500,
        temperature_start=0.4,
        temperature_end=0.9,
        bn_recalibration_steps=100,
    ),
    "imagenet_resnet18": dict(
        dataset="imagenet2012",
        model="resnet18_bireal",
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0,
        batch_size=256,
        epochs=240,
        temperature_factor=1.05,
        temperature_start=0.4,
        temperature_end=0.9,
        bn_recalibration_steps=196,  # 50,000 / 256
    ),
}


def _recipe_bits(path: Path) -> tuple[str, int, int]:
    recipe, w, a = re.fullmatch(r"(.+)_w(\d+)a(\d+)", path.stem).groups()
    return recipe, int(w), int(a)


def test_every_reported_bit_width_has_its_recipe():
    found = {}
    for path in SLB_RECIPES:
        recipe, w, a = _recipe_bits(path)
        found.setdefault(recipe, set()).add((w, a))
    assert found == {
        "cifar10_vgg_small": set(CIFAR_FACTORS),
        "cifar10_resnet20": set(CIFAR_FACTORS),
        "imagenet_resnet18": set(IMAGENET_BITS),
    }


@pytest.mark.parametrize("flagfile", SLB_RECIPES, ids=lambda p: p.stem)
def test_authors_recipe_parses_into_a_valid_config(flagfile):
    config = _config(f"--flagfile={flagfile}")
    recipe, w, a = _recipe_bits(flagfile)
    expected = {**RECIPES[recipe], "stage": "slb", "weight_bits": w, "activation_bits": a}
    if recipe.startswith("cifar10"):
        expected["temperature_factor"] = CIFAR_FACTORS[(w, a)]
    for field, value in expected.items():
        assert getattr(config, field) == value, field
    assert config.model_dir == f"runs/slb/{flagfile.stem}"
    assert "slb.md" in flagfile.read_text()  # commented with its source
    config.validate()


def test_fashion_mnist_recipe_is_a_binary_slb_run():
    config = _config(f"--flagfile={FASHION_SLB}")
    assert (config.stage, config.model, config.dataset) == ("slb", "fashion_net", "fashion_mnist")
    assert (config.weight_bits, config.activation_bits) == (1, 1)
    assert config.epochs <= 10
    config.validate()


def test_every_recipe_writes_into_its_own_folder():
    flagfiles = sorted(CONFIGS.rglob("*.flags"))
    folders = [_config(f"--flagfile={p}").model_dir for p in flagfiles]
    assert len(set(folders)) == len(folders) == len(flagfiles) > len(SLB_RECIPES)


# --- the builders ------------------------------------------------------------------------

SHAPES = {"fashion_net": (28, 28, 1), "resnet20": (32, 32, 3), "vgg_small": (32, 32, 3)}


def _quantized(model) -> list:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, lns_keras.QuantConv2D | lns_keras.QuantDense)
    ]


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize(
    ("weight_bits", "activation_bits"), [(1, 1), (2, 2), (4, 32)], ids=["w1a1", "w2a2", "w4a32"]
)
def test_slb_mode_has_searched_layers_at_the_binary_positions(name, weight_bits, activation_bits):
    builder = models.get_builder(name)
    bnn = builder(SHAPES[name], 10, mode="bnn")
    slb = builder(
        SHAPES[name], 10, mode="slb", weight_bits=weight_bits, activation_bits=activation_bits
    )
    assert slb.name == f"{name}_slb_w{weight_bits}a{activation_bits}"
    binary = [layer.name for layer in bnn.layers if is_binary_layer(layer)]
    searched = [layer for layer in slb.layers if is_slb_layer(layer)]
    assert [layer.name for layer in searched] == binary
    for layer in searched:
        assert layer.weight_bits == weight_bits and not layer.use_bias
        if activation_bits == 1:
            assert isinstance(layer.input_quantizer, quantizers.SteSign)
        elif activation_bits == 32:
            assert layer.input_quantizer is None
        else:
            assert isinstance(layer.input_quantizer, kbit.PACT)
            assert layer.input_quantizer.precision == activation_bits
    # Each PACT layer has its own clip.
    alphas = [id(layer.input_quantizer) for layer in searched if layer.input_quantizer]
    assert len(set(alphas)) == len(alphas)
    # Full-precision activations get ReLUs back; quantized ones are their own activation.
    relus = any(isinstance(layer, keras.layers.ReLU) for layer in slb.layers)
    assert relus == (activation_bits == 32)

    slb_stats, bnn_stats = lns_keras.model_stats(slb), lns_keras.model_stats(bnn)
    kernel_params = bnn_stats.params_1bit
    if weight_bits == 1:
        assert (slb_stats.params_1bit, slb_stats.params_kbit) == (kernel_params, 0)
    else:
        assert (slb_stats.params_1bit, slb_stats.params_kbit) == (0, kernel_params)
    # The same network otherwise: its 32-bit parameters, plus one PACT clip per layer.
    pact_clips = len(searched) if 1 < activation_bits < 32 else 0
    assert slb_stats.params_32bit == bnn_stats.params_32bit + pact_clips
    assert slb_stats.memory_mbit * 1e6 == pytest.approx(
        weight_bits * kernel_params + 32 * slb_stats.params_32bit
    )


@pytest.mark.parametrize("name", SHAPES)
def test_dorefa_mode_has_k_bit_ste_layers_with_slb_activations(name):
    builder = models.get_builder(name)
    dorefa = builder(SHAPES[name], 10, mode="dorefa", weight_bits=2, activation_bits=2)
    slb = builder(SHAPES[name], 10, mode="slb", weight_bits=2, activation_bits=2)
    quantized = _quantized(dorefa)
    assert [layer.name for layer in quantized] == [
        layer.name for layer in slb.layers if is_slb_layer(layer)
    ]
    for layer in quantized:
        assert not is_slb_layer(layer)
        assert isinstance(layer.kernel_quantizer, quantizers.DoReFa)
        assert (layer.kernel_quantizer.precision, layer.kernel_quantizer.mode) == (2, "weights")
        assert isinstance(layer.input_quantizer, kbit.PACT)
        assert layer.input_quantizer.precision == 2
    stats = lns_keras.model_stats(dorefa)
    assert stats.params_kbit == lns_keras.model_stats(slb).params_kbit > 0
    assert stats.params_1bit == 0


@pytest.mark.parametrize("name", SHAPES)
def test_dorefa_mode_at_one_bit_is_the_bnn(name):
    builder = models.get_builder(name)
    bnn, dorefa = builder(SHAPES[name], 10, mode="bnn"), builder(SHAPES[name], 10, mode="dorefa")

    def unnamed(config):  # without the layers' and quantizers' generated names
        if isinstance(config, dict):
            return {k: unnamed(v) for k, v in config.items() if k != "name"}
        return config

    def layer_configs(model):
        return [unnamed(layer.get_config()) for layer in _quantized(model)]

    assert layer_configs(dorefa) == layer_configs(bnn)


def test_vgg_small_is_lq_nets_network():
    model = models.vgg_small((32, 32, 3), 10, mode="bnn")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [128, 128, 256, 256, 512, 512]
    assert all(layer.kernel_size == (3, 3) for layer in convs)
    # The first conv and the classifier full precision, the five others binary.
    assert type(convs[0]) is keras.layers.Conv2D
    assert all(is_binary_layer(layer) for layer in convs[1:])
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["pool2", "pool4", "pool6"]
    assert model.get_layer("flatten").output.shape == (None, 4 * 4 * 512)
    assert type(model.get_layer("classifier")) is keras.layers.Dense
    stats = lns_keras.model_stats(models.vgg_small((32, 32, 3), 10, mode="float"))
    conv_params = 9 * (3 * 128 + 128 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512)
    assert stats.params_32bit == conv_params + 8192 * 10 + 10 + 4 * (128 * 2 + 256 * 2 + 512 * 2)


@pytest.mark.parametrize("name", ["resnet18_bireal", "alexnet"])
def test_imagenet_builders_build_in_slb_mode(name):
    builder = models.get_builder(name)
    slb = builder((64, 64, 3) if name == "resnet18_bireal" else (96, 96, 3), 10, mode="slb")
    bnn = builder(slb.input_shape[1:], 10, mode="bnn")
    assert lns_keras.model_stats(slb).params_1bit == lns_keras.model_stats(bnn).params_1bit
    assert [layer.name for layer in slb.layers if is_slb_layer(layer)] == [
        layer.name for layer in bnn.layers if is_binary_layer(layer)
    ]
    if name == "resnet18_bireal":  # PReLU after every searched conv, as in the BNN
        prelus = [layer for layer in slb.layers if isinstance(layer, keras.layers.PReLU)]
        assert len(prelus) == 16


@pytest.mark.parametrize(
    ("mode", "bits", "message"),
    [
        ("slb", {"weight_bits": 3}, r"weight_bits=3.*mode='slb'|mode='slb'.*weight_bits=3"),
        ("slb", {"activation_bits": 16}, r"activation_bits=16"),
        ("slb", {"weight_bits": True}, r"weight_bits=True"),
        ("dorefa", {"weight_bits": 9}, r"weight_bits=9"),
        ("bnn", {"weight_bits": 2}, r"weight_bits=2"),
        ("lns", {"activation_bits": 2}, r"activation_bits=2"),
        ("float", {"weight_bits": 1}, r"weight_bits=1"),
    ],
)
def test_bit_widths_a_mode_does_not_take_are_named(mode, bits, message):
    with pytest.raises(ValueError, match=message):
        models.fashion_net((28, 28, 1), 10, mode=mode, **bits)


def test_layer_mode_of_each_mode():
    assert modes.layer_mode("float") is modes.FLOAT
    assert modes.layer_mode("bnn") == modes.layer_mode("dorefa") == modes.BNN
    assert modes.layer_mode("slb", 2, 32) == modes.LayerMode("slb", 2, 32)
    assert modes.layer_mode("float", 32, 32) is modes.FLOAT


def test_stage_mode():
    assert pipeline.stage_mode("float") == "float"
    assert pipeline.stage_mode("slb", 2, 2) == "slb"
    assert pipeline.stage_mode("baseline") == "bnn"
    assert pipeline.stage_mode("baseline", 1, 2) == "dorefa"
    assert pipeline.stage_mode("baseline", 4, 4) == "dorefa"
    with pytest.raises(ValueError, match="--stage='lns'"):
        pipeline.stage_mode("lns")


# --- flags -------------------------------------------------------------------------------


def test_slb_flags_decide_the_slb_stage():
    assert set(pipeline.SLB_FLAGS) | set(pipeline.BIT_FLAGS) <= set(pipeline.STAGE_FLAGS["slb"])
    assert set(pipeline.BIT_FLAGS) <= set(pipeline.STAGE_FLAGS["baseline"])
    config = _config(
        "--stage=slb",
        "--weight_bits=4",
        "--activation_bits=32",
        "--temperature_factor=1.05",
        "--temperature_start=0.4",
        "--temperature_end=0.9",
        "--bn_recalibration_steps=7",
    )
    assert (config.weight_bits, config.activation_bits) == (4, 32)
    assert (config.temperature_factor, config.temperature_start, config.temperature_end) == (
        1.05,
        0.4,
        0.9,
    )
    assert config.bn_recalibration_steps == 7


# (flag the error must name, arguments); {model} is a saved model.
BAD_SLB_FLAGS = [
    ("--weight_bits", ["--stage=slb", "--weight_bits=3"]),
    ("--weight_bits", ["--stage=slb", "--weight_bits=0"]),
    ("--weight_bits", ["--stage=baseline", "--weight_bits=9"]),
    ("--weight_bits", ["--stage=all", "--weight_bits=2"]),
    ("--activation_bits", ["--stage=slb", "--activation_bits=16"]),
    ("--activation_bits", ["--stage=baseline", "--weight_bits=2", "--activation_bits=12"]),
    ("--activation_bits", ["--stage=all", "--activation_bits=2"]),
    ("--temperature_factor", ["--stage=slb", "--temperature_factor=0.9"]),
    ("--temperature_factor", ["--stage=slb", "--temperature_factor=nan"]),
    ("--temperature_start", ["--stage=slb", "--temperature_start=1.5"]),
    ("--temperature_end", ["--stage=slb", "--temperature_end=-0.1"]),
    ("--temperature_start", ["--temperature_start=0.9", "--temperature_end=0.5"]),
    ("--bn_recalibration_steps", ["--stage=slb", "--bn_recalibration_steps=-1"]),
    ("--pretrained", ["--stage=slb", "--pretrained={model}"]),
]


@pytest.mark.parametrize("flag, argv", BAD_SLB_FLAGS, ids=[" ".join(a) for _, a in BAD_SLB_FLAGS])
def test_bad_slb_flag_is_refused_before_any_work(tmp_path, capsys, monkeypatch, flag, argv):
    model_path = tmp_path / "model.keras"
    models.fashion_net((28, 28, 1), 10, mode="bnn").save(model_path)
    monkeypatch.setattr(data, "load", _no_data)
    argv = [a.format(model=model_path) for a in argv]
    code = _main([*TINY, f"--model_dir={tmp_path / 'run'}", *argv])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert f"{flag}=" in lines[0]
    assert not (tmp_path / "run").exists()


# --- the slb stage -----------------------------------------------------------------------


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_fashion_mnist_recipe_runs_end_to_end(tmp_path, capsys):
    model_dir = tmp_path / "run"
    argv = [
        f"--flagfile={FASHION_SLB}",
        *TINY,
        "--epochs=3",
        "--bn_recalibration_steps=2",
        f"--model_dir={model_dir}",
    ]
    assert _main(argv) == 0
    out = capsys.readouterr().out
    stage_dir = model_dir / "slb"

    # The schedule of slb.md §3.3, logged per epoch: 3 epochs, start 0.2, end 0.9.
    config = _config(f"--flagfile={FASHION_SLB}")
    rows = _csv_rows(stage_dir / "metrics.csv")
    expected = [
        lns_keras.slb.scheduled_temperature(
            e,
            3,
            factor=config.temperature_factor,
            start=config.temperature_start,
            end=config.temperature_end,
        )
        for e in (1, 2, 3)
    ]
    assert [float(r["temperature"]) for r in rows] == pytest.approx(expected)
    assert expected[1] > expected[0]
    assert [float(r["bn_recalibration_steps"]) for r in rows] == [2, 2, 2]
    assert (stage_dir / "temperature.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Folded: plain QuantConv2D with ste_sign kernels, predicting what the SLB model does.
    folded = keras.models.load_model(stage_dir / "final.keras", safe_mode=True)
    assert not any(is_slb_layer(layer) for layer in folded.layers)
    binary = [layer for layer in folded.layers if is_binary_layer(layer)]
    assert len(binary) == 2
    searched = keras.models.load_model(stage_dir / "slb.keras", safe_mode=True)
    assert [layer.hard for layer in lns_keras.slb.slb_layers(searched)] == [True, True]
    x = np.random.default_rng(0).normal(size=(16, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        folded.predict(x, verbose=0), searched.predict(x, verbose=0), atol=1e-5
    )

    results = json.loads((stage_dir / "metrics.json").read_text())
    assert results["fold_max_difference"] <= 1e-5
    assert results["test_accuracy"] == pytest.approx(results["slb_accuracy"], abs=1 / 128)
    assert results["model_stats"]["params_1bit"] == 27648
    assert results["history"]["temperature"] == pytest.approx(expected)
    assert "LceBconv2d" in export.tflite_op_names((stage_dir / "model_1bit.tflite").read_bytes())
    assert (stage_dir / "model_float.tflite").stat().st_size > 0
    assert "SLB W1/A1" in out and results["files"]["tflite_1bit"] in out

    # The stage folder continues only with its own values.
    assert _main([*argv, "--temperature_factor=3"]) == 2
    assert "--temperature_factor=3.0 (that run: 2.5)" in capsys.readouterr().err


@pytest.mark.slow
def test_multi_bit_slb_and_its_dorefa_baseline_export_float_files(tmp_path):
    common = dict(
        dataset="fashion_mnist",
        model="fashion_net",
        train_limit=128,
        test_limit=64,
        batch_size=64,
        epochs=1,
        weight_bits=2,
        activation_bits=2,
        bn_recalibration_steps=1,
        verbose=0,
        model_dir=str(tmp_path),
    )
    stages = {}
    for stage in ("slb", "baseline"):
        stages.update(pipeline.run(pipeline.TrainConfig(stage=stage, **common))["stages"])
    for stage, result in stages.items():
        # LCE keeps a k-bit layer a float CONV_2D: only the float file is written.
        assert set(result["files"]) == {"keras", "tflite_float"}, stage
        ops = export.tflite_op_names((tmp_path / stage / "model_float.tflite").read_bytes())
        assert "CONV_2D" in ops and "ROUND" in ops
        assert result["model_stats"]["params_kbit"] == 27648
        assert result["model_stats"]["params_1bit"] == 0
    assert stages["baseline"]["mode"] == "dorefa"
    assert stages["slb"]["fold_max_difference"] <= 1e-5
    baseline = keras.models.load_model(tmp_path / "baseline" / "final.keras", safe_mode=True)
    kernels = [layer.kernel_quantizer for layer in _quantized(baseline)]
    assert [(q.precision, q.mode) for q in kernels] == [(2, "weights")] * 2
    folded = keras.models.load_model(tmp_path / "slb" / "final.keras", safe_mode=True)
    assert all(isinstance(layer.kernel_quantizer, kbit.SteUniform) for layer in _quantized(folded))


class _Interrupt(Exception):
    pass


class _InterruptAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt


@pytest.mark.slow
def test_resumed_slb_stage_reports_what_an_uninterrupted_one_does(tmp_path, monkeypatch):
    load = data.load

    def load_fixed(name, split, batch_size, **kwargs):  # the same batches in every sitting
        kwargs.update(training=False, shuffle=False, drop_remainder=True)
        return load(name, split, batch_size, **kwargs)

    monkeypatch.setattr(data, "load", load_fixed)
    common = dict(
        stage="slb",
        train_limit=128,
        test_limit=64,
        batch_size=64,
        epochs=3,
        optimizer="adam",
        learning_rate=1e-2,
        temperature_factor=4.0,
        temperature_start=0.0,
        temperature_end=1.0,
        bn_recalibration_steps=1,
        export_tflite=False,
        verbose=0,
    )
    whole = pipeline.run(pipeline.TrainConfig(model_dir=str(tmp_path / "whole"), **common))
    config = pipeline.TrainConfig(model_dir=str(tmp_path / "cut"), **common)
    callbacks = pipeline._Run._callbacks

    def with_interruption(self, *args, **kwargs):
        found = callbacks(self, *args, **kwargs)
        at = next(i for i, c in enumerate(found) if isinstance(c, pipeline.AtomicBackupAndRestore))
        return [*found[:at], _InterruptAtEpochEnd(1), *found[at:]]

    with monkeypatch.context() as patch:
        patch.setattr(pipeline._Run, "_callbacks", with_interruption)
        with pytest.raises(_Interrupt):
            pipeline.run(config)
    cut = pipeline.run(config)["stages"]["slb"]
    whole = whole["stages"]["slb"]
    assert cut["history"]["temperature"] == whole["history"]["temperature"] == [4.0, 16.0, 64.0]
    for key in ("loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(
            cut["history"][key], whole["history"][key], atol=1e-5, err_msg=key
        )
    assert cut["final_temperature"] == whole["final_temperature"] == 64.0
    assert cut["test_accuracy"] == pytest.approx(whole["test_accuracy"], abs=1e-6)


def test_baseline_folder_from_before_the_bit_flags_is_continued(tmp_path):
    config = pipeline.TrainConfig(
        stage="baseline",
        model_dir=str(tmp_path),
        epochs=0,
        train_limit=64,
        test_limit=64,
        batch_size=64,
        export_tflite=False,
        verbose=0,
    )
    first = pipeline.run(config)["stages"]["baseline"]
    path = tmp_path / "baseline" / "config.json"
    stored = json.loads(path.read_text())
    assert (stored["weight_bits"], stored["activation_bits"]) == (1, 1)
    # As an earlier version wrote it: without the bit widths, which were 1 then.
    path.write_text(json.dumps({k: v for k, v in stored.items() if "bits" not in k}))
    assert pipeline.run(config)["stages"]["baseline"] == first  # finished earlier: read back
    with pytest.raises(ValueError, match=r"--weight_bits=2 \(that run: 1\)"):
        pipeline.run(pipeline.TrainConfig(**{**config.__dict__, "weight_bits": 2}))
