"""larq 0.14 as the test oracle, in a subprocess.

larq imports only under Keras 2 (`tf_keras` with `TF_USE_LEGACY_KERAS=1`), so a test
writes a small script that uses larq, hands it arrays through an `.npz` file and reads
the arrays it returns from another. One place decides which interpreter runs larq
(`LARQ_PYTHON`, default: this one), so that the oracle can move to an environment of its
own without touching the tests.

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
import sys
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


def python() -> str:
    """The interpreter that runs larq: `$LARQ_PYTHON`, or this test's own."""
    return os.environ.get("LARQ_PYTHON", sys.executable)


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
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [python(), str(path), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"The larq oracle subprocess failed:\n{result.stderr[-4000:]}")
    return dict(np.load(folder / "outputs.npz"))
