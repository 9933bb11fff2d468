"""larq 0.14 as the test oracle, in a subprocess.

larq imports only under Keras 2 (`tf_keras` with `TF_USE_LEGACY_KERAS=1`) and needs
numpy<2, while the main environment has numpy 2 (JAX needs it). So larq lives in an
environment of its own, `.venv-larq` beside `.venv` (`scripts/setup.sh` makes both), and
a test writes a small script that uses larq, hands it arrays through an `.npz` file and
reads the arrays it returns from another. `python()` is the one place that decides which
interpreter runs larq: `$LARQ_PYTHON`, default `.venv-larq/bin/python`.

    outputs = larq_oracle.run('''
        import larq as lq
        out["y"] = lq.quantizers.SteSign()(tf.constant(inp["x"])).numpy()
    ''', {"x": x}, tmp_path)

The script sees `inp` (a dict of the input arrays), `out` (a dict to fill with arrays),
`np`, `tf` and `folder` (a scratch folder for files such as saved models).
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

PRELUDE = """\
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
folder = sys.argv[1]
inp = dict(np.load(os.path.join(folder, "inputs.npz")))
out = {}
"""
EPILOGUE = """
np.savez(os.path.join(folder, "outputs.npz"), **out)
"""


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PYTHON = ROOT / ".venv-larq" / "bin" / "python"


def python() -> str:
    """The interpreter that runs larq: `$LARQ_PYTHON`, default `.venv-larq/bin/python`.

    A missing interpreter fails the calling test with what to run (CI installs the
    oracle: never a skip).
    """
    path = os.environ.get("LARQ_PYTHON") or str(DEFAULT_PYTHON)
    if not os.access(path, os.X_OK):
        source = "$LARQ_PYTHON" if os.environ.get("LARQ_PYTHON") else "the default"
        pytest.fail(
            f"No larq oracle interpreter at {path} ({source}). The larq 0.14 oracle runs "
            "in its own environment: run `bash scripts/setup.sh larq-oracle` to make "
            ".venv-larq, or set LARQ_PYTHON to a Python with larq 0.14, tf-keras and numpy<2."
        )
    return path


def environment() -> dict[str, str]:
    """The environment of the oracle's processes: tf.keras 2, quiet TensorFlow logs.

    `KERAS_BACKEND` is dropped: the tests may run under JAX or PyTorch, the oracle is
    TensorFlow's.
    """
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def run(
    script: str, inputs: dict[str, np.ndarray], folder: str | os.PathLike, timeout: float = 300
) -> dict[str, np.ndarray]:
    """Run `script` under larq and return the arrays it put in `out`.

    A failure of the subprocess fails the test (CI installs larq: never a skip).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "inputs.npz", **inputs)
    path = folder / "oracle.py"
    path.write_text(PRELUDE + textwrap.dedent(script) + EPILOGUE)
    result = subprocess.run(
        [python(), str(path), str(folder)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"The larq oracle subprocess failed:\n{result.stderr[-4000:]}")
    return dict(np.load(folder / "outputs.npz"))
