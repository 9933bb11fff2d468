"""apps/train.py and apps/pipeline.py: recipes, the whole pipeline, resuming, atomic
writes, distribution strategies and flag errors, on a tiny Fashion-MNIST budget."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

import lns_keras
from apps import data, models, pipeline, train
from lns_keras import export
from lns_keras.convert import is_binary_layer
from lns_keras.layers.lns import is_lns_layer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "apps" / "configs"
TRAIN_PY = ROOT / "apps" / "train.py"
TINY = dict(
    dataset="fashion_mnist",
    model="fashion_net",
    train_limit=256,
    test_limit=128,
    batch_size=64,
    verbose=0,
)
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items()]


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


# --- recipes ---------------------------------------------------------------------------

# The paper's numbers each recipe must carry (paper §4.1, Implementation Details).
PAPER = {
    "cifar10_resnet20_baseline": dict(
        stage="baseline", epochs=400, batch_size=128, learning_rate=0.1, momentum=0.9
    ),
    "cifar10_resnet20_finetune": dict(
        stage="finetune", epochs=120, learning_rate=0.01, decay_epochs=(30, 60, 90)
    ),
    "cifar10_resnet20_lns": dict(
        stage="lns",
        epochs=120,
        learning_rate=0.01,
        decay_epochs=(30, 60, 90),
        alpha=1.0,
        rho=0.005,
    ),
    "imagenet_resnet18_baseline": dict(
        epochs=120, batch_size=256, learning_rate=0.1, decay_epochs=(70, 90, 110)
    ),
    "imagenet_resnet18_lns": dict(epochs=45, learning_rate=0.01, decay_epochs=(15, 30)),
    "imagenet_alexnet_baseline": dict(
        epochs=120, batch_size=256, learning_rate=0.1, decay_epochs=(70, 90, 110)
    ),
    "imagenet_alexnet_lns": dict(epochs=45, learning_rate=0.01, decay_epochs=(15, 30)),
    "fashion_mnist_resnet20": dict(stage="all", model="resnet20"),
    "fashion_mnist_demo": dict(stage="all"),
    "fashion_mnist_slb": dict(stage="slb", weight_bits=1, activation_bits=1),
}
FLAGFILES = sorted(CONFIGS.glob("*.flags"))


def _config(*argv: str) -> pipeline.TrainConfig:
    """Parse `argv` with the flags of apps/train.py, as `python apps/train.py` would."""
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train.py", *argv])
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def tiny_bnn(input_shape, num_classes: int, mode: str = "bnn") -> keras.Model:
    """A small model with one binary conv (`mode="bnn"`) or none (`"float"`) for any data."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, strides=4)(inputs)
    if mode == "bnn":
        x = lns_keras.QuantConv2D(
            8,
            3,
            strides=4,
            input_quantizer="ste_sign",
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
        )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def dummy_pretrained(tmp_path_factory) -> dict[str, str]:
    """A baseline BNN that fits each dataset, by dataset; and a float model ("float")."""
    folder = tmp_path_factory.mktemp("pretrained")
    paths = {}
    for name in (*data.DATASETS, "float"):
        input_shape, num_classes = data.info("fashion_mnist" if name == "float" else name)
        paths[name] = str(folder / f"{name}.keras")
        tiny_bnn(input_shape, num_classes, "float" if name == "float" else "bnn").save(paths[name])
    return paths


def test_every_recipe_has_a_paper_entry():
    assert {p.stem for p in FLAGFILES} == set(PAPER)


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=lambda p: p.stem)
def test_recipe_parses_into_a_valid_config(flagfile, dummy_pretrained):
    config = _config(f"--flagfile={flagfile}")
    for field, value in PAPER[flagfile.stem].items():
        assert getattr(config, field) == value, field
    if config.stage in ("finetune", "lns"):
        # The recipe starts from what its baseline recipe writes.
        baseline = _config(f"--flagfile={CONFIGS / flagfile.stem.rsplit('_', 1)[0]}_baseline.flags")
        assert config.pretrained == os.path.join(baseline.model_dir, "baseline", "final.keras")
        assert (config.dataset, config.model) == (baseline.dataset, baseline.model)
        config = _config(
            f"--flagfile={flagfile}", f"--pretrained={dummy_pretrained[config.dataset]}"
        )
    config.validate()


def test_recipes_write_into_different_folders():
    folders = [_config(f"--flagfile={p}").model_dir for p in FLAGFILES]
    assert len(set(folders)) == len(folders)


# --- the whole pipeline ------------------------------------------------------------------


@pytest.mark.slow
def test_all_stages_produce_every_output(tmp_path):
    config = pipeline.TrainConfig(
        stage="all",
        model_dir=str(tmp_path),
        baseline_epochs=1,
        warm_start_epochs=1,
        epochs=1,
        export_tflite=True,
        **TINY,
    )
    summary = pipeline.run(config)
    baseline, lns = tmp_path / "baseline", tmp_path / "lns"

    assert (baseline / "final.keras").is_file()
    folded = keras.models.load_model(lns / "final.keras", safe_mode=True)
    assert not any(is_lns_layer(layer) for layer in folded._flatten_layers())
    assert any(is_binary_layer(layer) for layer in folded.layers)
    assert "LceBconv2d" in export.tflite_op_names((lns / "model_1bit.tflite").read_bytes())
    assert (lns / "model_float.tflite").stat().st_size > 0
    with open(lns / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0]
    assert {"flip_rate", "flip_rate_total", "accuracy", "val_accuracy"} <= set(rows[0])
    for stage_dir in (baseline, lns):
        for plot in ("curves.png", "flip_rate.png"):
            assert (stage_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stages = json.loads(json.dumps(summary))["stages"]
    assert json.loads((tmp_path / "metrics.json").read_text())["stages"] == stages
    assert json.loads((lns / "metrics.json").read_text()) == stages["lns"]
    for key in ("pretrained_accuracy", "warm_start_accuracy", "lns_accuracy", "test_accuracy"):
        assert 0 <= stages["lns"][key] <= 1, key
    # Folding changes nothing in inference (up to one borderline example).
    assert abs(stages["lns"]["test_accuracy"] - stages["lns"]["lns_accuracy"]) <= 1 / 128

    table = pipeline.final_table(summary)
    for stage in ("baseline", "lns"):
        assert f"{100 * stages[stage]['test_accuracy']:.2f}%" in table
        for key in ("keras", "tflite_float", "tflite_1bit"):
            assert stages[stage]["files"][key] in table
    assert _tmp_files(tmp_path) == []

    # A stage with metrics.json is done: running again changes nothing.
    again = pipeline.run(config)
    assert again["stages"]["lns"]["test_accuracy"] == stages["lns"]["test_accuracy"]


# --- resuming and atomic writes ----------------------------------------------------------


class _InterruptAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_continues_from_the_next_epoch(tmp_path, monkeypatch):
    config = pipeline.TrainConfig(
        stage="baseline", model_dir=str(tmp_path), epochs=2, export_tflite=False, **TINY
    )
    callbacks = pipeline._Run._callbacks
    monkeypatch.setattr(
        pipeline._Run,
        "_callbacks",
        lambda self, *args, **kwargs: [*callbacks(self, *args, **kwargs), _InterruptAtEpoch(1)],
    )
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config)
    stage_dir = tmp_path / "baseline"
    backup = json.loads((stage_dir / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1
    assert not (stage_dir / "metrics.json").exists()

    monkeypatch.undo()
    summary = pipeline.run(config)  # the same command again
    with open(stage_dir / "metrics.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    # Only epoch 2 ran in the second sitting; the history holds both.
    assert len(summary["stages"]["baseline"]["history"]["loss"]) == 2
    assert (stage_dir / "final.keras").is_file()
    assert not (stage_dir / "backup").exists()  # removed once training finished
    assert _tmp_files(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_failed_save_model_leaves_no_partial_file(tmp_path, monkeypatch, existing):
    destination = tmp_path / "model.keras"
    if existing:
        destination.write_bytes(b"the previous model")
    model = models.fashion_net((28, 28, 1), 10, mode="bnn")

    def save_half_then_fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.save_model(model, destination)
    assert list(tmp_path.iterdir()) == ([destination] if existing else [])
    if existing:
        assert destination.read_bytes() == b"the previous model"


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_failed_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch, failing, existing):
    destination = tmp_path / "metrics.json"
    if existing:
        destination.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(f"{failing} failed")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match=f"{failing} failed"):
        export.atomic_write_bytes(destination, b"new contents")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == ([destination] if existing else [])
    if existing:
        assert destination.read_bytes() == b"old"


# --- distribution strategies -------------------------------------------------------------


def test_mirrored_strategy_over_two_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow as tf

        # Two logical CPUs, before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        sys.path.insert(0, {str(ROOT)!r})
        from apps import pipeline

        make_strategy = pipeline.make_strategy

        def reporting_strategy(name):
            strategy = make_strategy(name)
            print("replicas:", strategy.num_replicas_in_sync, flush=True)
            return strategy

        pipeline.make_strategy = reporting_strategy
        summary = pipeline.run(pipeline.TrainConfig(
            strategy="mirrored", stage="baseline", model_dir={str(tmp_path)!r}, epochs=1,
            export_tflite=False, **{TINY!r}
        ))
        print("test_accuracy:", summary["stages"]["baseline"]["test_accuracy"])
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "replicas: 2" in run.stdout
    assert "test_accuracy:" in run.stdout
    assert (tmp_path / "baseline" / "final.keras").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_mirrored_with_two_workers(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    model_dir = tmp_path / "run"
    argv = [
        sys.executable,
        str(TRAIN_PY),
        "--strategy=multi_worker_mirrored",
        "--stage=baseline",
        "--epochs=1",
        "--export_tflite=false",
        f"--model_dir={model_dir}",
        *TINY_FLAGS,
    ]
    processes, logs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w+")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(TF_CONFIG=json.dumps(tf_config)),
            )
        )
    try:
        codes = [p.wait(timeout=240) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.wait()
        pytest.fail("the two workers did not finish within 240 s")
    finally:
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    # The chief (worker 0) writes the run's folder; worker 1 keeps its copy apart.
    assert (model_dir / "baseline" / "final.keras").is_file()
    assert (model_dir / "baseline" / "metrics.json").is_file()
    assert str(model_dir / "baseline" / "final.keras") in outputs[0]
    assert str(model_dir / ".worker1" / "baseline" / "final.keras") in outputs[1]
    assert _tmp_files(model_dir) == []


# --- flag errors -------------------------------------------------------------------------


# (flag the error must name, arguments). In the arguments, {tmp} is a scratch folder
# holding a text file, {float} a float model that fits Fashion-MNIST, {cifar10} a
# baseline BNN for CIFAR-10 and {unwritable} a folder this process cannot write in.
BAD_FLAGS = [
    ("--dataset", ["--dataset=mnist"]),
    ("--model", ["--model=resnet50"]),
    ("--rho", ["--rho=0.6"]),  # rho_pos + rho_neg = 1.2
    ("--rho", ["--rho=-0.1"]),
    ("--rho", ["--rho=abc"]),
    ("--rho", ["--rho=0.1,0.2,0.3"]),
    ("--pretrained", ["--stage=lns", "--pretrained={tmp}/missing.keras"]),
    ("--pretrained", ["--stage=finetune", "--pretrained={tmp}/notes.txt"]),
    ("--pretrained", ["--stage=lns"]),
    # Accepted, or refused only after loading data or training, before issue 8.
    ("--baseline_learning_rate", ["--baseline_learning_rate=-1"]),
    ("--decay_factor", ["--decay_factor=-1"]),
    ("--weight_decay", ["--weight_decay=-1"]),
    ("--verbose", ["--verbose=loud"]),
    ("--mapping_width", ["--mapping_width=0"]),
    ("--loss_reduction", ["--loss_reduction=median"]),
    ("--noisy_labels", ["--noisy_labels=clean"]),
    ("--alpha", ["--alpha=nan"]),
    ("--rho", ["--rho=nan"]),
    ("--train_limit", ["--train_limit=0"]),
    ("--test_limit", ["--test_limit=0"]),
    ("--gradient_path", ["--gradient_path=straight"]),
    ("--validation_examples", ["--validation_examples=-1"]),
    ("--decay_epochs", ["--decay_epochs=30,x"]),
    ("--decay_epochs", ["--decay_epochs=0"]),
    ("--decay_epochs", ["--decay_epochs=60,30"]),
    ("--learning_rate", ["--learning_rate=inf"]),
    ("--momentum", ["--momentum=1.5"]),
    ("--epochs", ["--epochs=-1"]),
    ("--seed", ["--seed=-1"]),
    ("--pretrained", ["--stage=lns", "--pretrained={float}"]),
    ("--pretrained", ["--stage=finetune", "--pretrained={float}"]),
    ("--pretrained", ["--stage=finetune", "--pretrained={cifar10}"]),  # 32x32x3 input
    ("--model_dir", ["--model_dir={tmp}/notes.txt"]),
    ("--model_dir", ["--model_dir={tmp}/notes.txt/run"]),
    ("--model_dir", ["--model_dir={unwritable}/run"]),
]


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: one read-only by its mode or, for root
    (whom modes do not stop), /sys, where sysfs lets nobody create a file."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if not _can_create_in(folder):
        return folder
    assert not _can_create_in(Path("/sys")), "no folder on this machine is unwritable"
    return Path("/sys")


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / ".lns-probe").write_text("")
    except OSError:
        return False
    (folder / ".lns-probe").unlink()
    return True


def _bad_argv(tmp_path: Path, argv: list[str], **paths) -> list[str]:
    (tmp_path / "notes.txt").write_text("not a model\n")
    return [*TINY_FLAGS, f"--model_dir={tmp_path / 'run'}"] + [
        a.format(tmp=tmp_path, **paths) for a in argv
    ]


def _no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the flags were checked")


def _main(argv: list[str], program: str = "train.py", dataset: str | None = None) -> int:
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS([program, *argv])
        return train.main([program], dataset=dataset)
    finally:
        train.FLAGS.unparse_flags()


@pytest.mark.parametrize("flag, argv", BAD_FLAGS, ids=[" ".join(a) for _, a in BAD_FLAGS])
def test_bad_flag_is_reported_in_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, dummy_pretrained, flag, argv
):
    monkeypatch.setattr(data, "load", _no_data)
    paths = dict(float=dummy_pretrained["float"], cifar10=dummy_pretrained["cifar10"])
    if "{unwritable}" in " ".join(argv):
        paths["unwritable"] = _unwritable_folder(tmp_path)
    code = _main(_bad_argv(tmp_path, argv, **paths))
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert f"{flag}=" in lines[0]
    assert not (tmp_path / "run").exists()


def test_unexpected_argument_is_named_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "load", _no_data)
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train.py", *_bad_argv(tmp_path, [])])
        code = train.main(["train.py", "epochs=3"])
    finally:
        train.FLAGS.unparse_flags()
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected argument 'epochs=3'"), lines


def test_bad_flags_stop_the_command_without_a_traceback(tmp_path):
    cases = [BAD_FLAGS[0], BAD_FLAGS[7]]  # --dataset; a text file as --pretrained
    # Both at once: most of each run is importing TensorFlow.
    processes = [
        (
            flag,
            subprocess.Popen(
                [sys.executable, str(TRAIN_PY), *_bad_argv(tmp_path, argv)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            ),
        )
        for flag, argv in cases
    ]
    for flag, process in processes:
        _, stderr = process.communicate(timeout=240)
        assert process.returncode != 0, (flag, stderr[-2000:])
        assert "Traceback" not in stderr, stderr[-2000:]
        last_line = stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: ") and f"{flag}=" in last_line, last_line
    assert not (tmp_path / "run").exists()
