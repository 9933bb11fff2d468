"""What a run leaves and prints: files readable as the user's umask says, and a log of
stage headers, one line per epoch, the final table and real warnings only."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from apps import logs, pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "apps" / "configs" / "fashion_mnist_demo.flags"


@pytest.fixture
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["022", "077"])
def test_files_a_run_writes_have_the_umask_mode(tmp_path, umask):
    pipeline.run(
        pipeline.TrainConfig(
            stage="baseline",
            model_dir=str(tmp_path),
            epochs=1,
            train_limit=128,
            test_limit=64,
            batch_size=64,
            export_tflite=True,
            verbose=0,
        )
    )
    stage_dir = tmp_path / "baseline"
    for name in ("final.keras", "model_1bit.tflite", "model_float.tflite", "metrics.json"):
        assert (stage_dir / name).is_file(), name
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


# --- the log -----------------------------------------------------------------------------

# What TensorFlow, absl and Keras print that a user of the apps should not have to read.
CHATTER = {
    "absl or TensorFlow C++ log line": re.compile(r"^[IW]\d{4} "),
    "absl notice": re.compile(r"^WARNING: All log messages before absl::InitializeLog"),
    "TensorFlow INFO": re.compile(r"^INFO:tensorflow:"),
    "C++ log with a date": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "),
    "SavedModel export": re.compile(r"signature_serialization|Assets written|fingerprint"),
    "tf.data cache notice": re.compile(r"did not fully read the dataset being cached"),
    "Keras shuffle warning": re.compile(r"`shuffle=True` was passed"),
    "retracing warning": re.compile(r"triggered tf.function retracing"),
    "tfds progress bar": re.compile(r"Generating splits|Dl Completed|Shuffling"),
    "colour code": re.compile("\x1b\\["),
}


def _chatter(text: str) -> list[str]:
    return [
        f"{what}: {line[:200]}"
        for line in text.splitlines()
        for what, pattern in CHATTER.items()
        if pattern.search(line)
    ]


@pytest.mark.slow
def test_demo_log_shows_progress_and_results_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TF_CPP_MIN_LOG_LEVEL")}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "apps" / "train.py"),
            f"--flagfile={DEMO}",
            "--train_limit=256",
            "--test_limit=128",
            "--baseline_epochs=1",
            "--epochs=1",
            f"--model_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _chatter(run.stdout) == []
    assert _chatter(run.stderr) == []
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        assert "cuInit" not in run.stderr
    assert not [line for line in run.stdout.splitlines() if re.match(r"^(I0000|W0000|I1)", line)]

    lines = run.stdout.splitlines()
    for header in (
        "== Stage: baseline (1 epoch) ==",
        "== Stage: lns: fine-tune with Eq. 21 (1 epoch) ==",
    ):
        assert header in lines
    # Not a terminal: one line per epoch (baseline, warm start, fine-tune), not progress
    # bars redrawn into one long line.
    epochs = [line for line in lines if re.match(r"^\d+/\d+ - \d+s - .*accuracy: ", line)]
    assert len(epochs) == 3, run.stdout
    assert max(len(line) for line in lines) < 400
    assert any(line.startswith("stage ") and "test acc" in line for line in lines)
    assert any(line.startswith("lns ") for line in lines)


def test_verbosity_is_read_from_the_command_line_and_flagfiles(tmp_path):
    flagfile = tmp_path / "loud.flags"
    flagfile.write_text("--verbosity=0\n")
    assert logs.verbosity_from_argv(["train.py"]) == logs.DEFAULT_VERBOSITY == -1
    assert logs.verbosity_from_argv(["train.py", f"--flagfile={DEMO}"]) == -1
    assert logs.verbosity_from_argv(["train.py", "-v=1", "--epochs=3"]) == 1
    assert logs.verbosity_from_argv(["train.py", "--verbosity", "0"]) == 0
    assert logs.verbosity_from_argv(["train.py", f"--flagfile={flagfile}", "extra"]) == 0
    assert logs.verbosity_from_argv(["train.py", "--verbosity=x"]) == -1  # absl reports it


@pytest.mark.parametrize(("verbosity", "level"), [(-1, "2"), (0, "0"), (1, "0"), (-3, "3")])
def test_verbosity_sets_tensorflow_cpp_log_level(monkeypatch, verbosity, level):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    logs.quiet_tensorflow(["train.py", f"--verbosity={verbosity}"])  # TF already imported
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level


def test_a_level_set_in_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    logs.quiet_tensorflow(["train.py"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_startup_chatter_is_told_from_other_lines():
    chatter = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795430854.270596   16398 cudart_stub.cc:31] Could not find cuda drivers",
        "W0000 00:00:1795430862.253054   16451 cache_dataset_ops.cc:912] The calling iterator",
    ]
    kept = [
        "E0000 00:00:1795430859.731251   16398 some_op.cc:52] a real error",
        "Traceback (most recent call last):",
        "UserWarning: something the user should see",
    ]
    assert all(logs._startup_chatter(line) for line in chatter)
    assert not any(logs._startup_chatter(line) for line in kept)
