"""The child runs of `tests/test_backends.py`: the core tests under JAX and PyTorch.

Keras fixes its backend at import, so each backend runs in a process of its own. One
background thread runs, in turn:

1. `tests/backend_probes.py` under TensorFlow: its numbers and its `.keras` file;
2. `pytest tests/test_backend_core.py` under `KERAS_BACKEND=jax`, which also saves the
   JAX numbers and `.keras` file (`LNS_PROBE_DIR`) and loads TensorFlow's;
3. the same under `KERAS_BACKEND=torch`, which loads TensorFlow's and JAX's files;
4. `tests/backend_probes.py --load-only` under JAX, which loads PyTorch's file;
5. `apps/train.py` under JAX: the Fashion-MNIST demo on a few batches, on two CPU devices
   (`keras.distribution.DataParallel`), and a refused TensorFlow-only flag.

`tests/conftest.py` starts the thread as soon as the session has collected a test of
`tests/test_backends.py`, so that the child runs use the CPU the main run leaves idle,
and moves those tests to the end of the run; they wait for the thread (`results`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "tensorflow"
OTHERS = ("jax", "torch")
TIMEOUT = 900  # seconds for each child process


@dataclass
class Run:
    """One child process: what ran, its exit code (`None`: timed out) and its output."""

    command: list[str]
    backend: str
    returncode: int | None
    output: str


class _State:
    folder: Path | None = None
    thread: threading.Thread | None = None
    runs: dict[str, Run] = {}
    process: subprocess.Popen | None = None
    stopped = False


# The demo's flagfile on a few batches: every stage, in seconds.
DEMO_FLAGS = (
    "--flagfile=apps/configs/fashion_mnist_demo.flags",
    "--train_limit=256",
    "--test_limit=128",
    "--batch_size=64",
    "--baseline_epochs=1",
    "--verbose=2",
)


def _env(backend: str, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(
        KERAS_BACKEND=backend,
        LNS_PROBE_DIR=str(folder),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        **extra,
    )
    return env


def _run(name: str, command: list[str], backend: str, folder: Path, **env: str) -> None:
    if _State.stopped:
        return
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_env(backend, folder, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _State.process = process
        try:
            returncode = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            returncode = None
        log.seek(0)
        _State.runs[name] = Run(command, backend, returncode, log.read())


def _run_all(folder: Path) -> None:
    _run(
        "probes-tensorflow",
        [sys.executable, str(ROOT / "tests" / "backend_probes.py"), str(folder)],
        REFERENCE,
        folder,
    )
    for backend in OTHERS:
        _run(
            f"pytest-{backend}",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--basetemp",
                str(folder / f"pytest-{backend}"),
                str(ROOT / "tests" / "test_backend_core.py"),
            ],
            backend,
            folder,
        )
    # JAX ran before PyTorch saved its file: load it under JAX now.
    _run(
        "load-jax",
        [sys.executable, str(ROOT / "tests" / "backend_probes.py"), str(folder), "--load-only"],
        "jax",
        folder,
    )
    train = [sys.executable, str(ROOT / "apps" / "train.py"), *DEMO_FLAGS]
    _run(
        "train-jax",
        # A tfds folder of its own: the main run may be preparing the default one.
        [*train, f"--model_dir={folder / 'demo'}", f"--data_dir={folder / 'tfds'}"],
        "jax",
        folder,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    _run(
        "train-jax-refused",
        [*train, f"--model_dir={folder / 'refused'}", "--strategy=mirrored"],
        "jax",
        folder,
    )


def start() -> None:
    """Start the child runs in the background, once per session."""
    if _State.thread is not None:
        return
    _State.folder = Path(tempfile.mkdtemp(prefix="lns_keras-backends-"))
    _State.thread = threading.Thread(target=_run_all, args=(_State.folder,), daemon=True)
    _State.thread.start()


def results() -> tuple[Path, dict[str, Run]]:
    """Wait for the child runs (starting them if need be); their folder and their runs."""
    start()
    _State.thread.join(timeout=TIMEOUT * (1 + len(OTHERS)) + 60)
    return _State.folder, dict(_State.runs)


def stop() -> None:
    """At the end of the session: end a child process still running, remove the folder."""
    _State.stopped = True
    process = _State.process
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    if _State.thread is not None:
        _State.thread.join(timeout=60)
    if _State.folder is not None:
        shutil.rmtree(_State.folder, ignore_errors=True)
