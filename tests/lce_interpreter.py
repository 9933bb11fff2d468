"""larq-compute-engine's TFLite interpreter, run in the larq oracle's environment.

LCE 0.16's Python interpreter is built for numpy<2: under numpy 2, the main environment's,
it reads every input as 0 bytes ("Expected 432 bytes but got 0 for tensor ..."). Its
converter is not affected. So the tests run the interpreter in `.venv-larq` (numpy<2,
with larq-compute-engine; `scripts/setup.sh` makes it, `larq_oracle.python()` finds it),
in one worker process per test session, through a class with the interface of LCE's own:

    from lce_interpreter import Interpreter
    Interpreter(flatbuffer, num_threads=1).predict(x)  # as LCE's Interpreter(...).predict

`predict` runs the model on each example of `x` and returns the outputs stacked, as LCE's
does (single-output models only).
"""

from __future__ import annotations

import atexit
import io
import itertools
import subprocess
import tempfile

import larq_oracle
import numpy as np
import pytest

# The worker answers each request `<kind> <id> <threads> <size>\n<payload>` on a copy of
# its stdout with `ok|error <size>\n<payload>`; everything else it prints (TensorFlow's
# logs, C++ prints) goes to stderr.
WORKER = r"""
import io, os, sys
protocol = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
import numpy as np
from larq_compute_engine.tflite.python.interpreter import Interpreter

interpreters = {}
requests = sys.stdin.buffer
while header := requests.readline():
    kind, ident, threads, size = header.split()
    payload = requests.read(int(size))
    try:
        if kind == b"load":
            interpreters[ident] = Interpreter(payload, num_threads=int(threads))
            answer = b""
        else:
            outputs = interpreters[ident].predict(np.load(io.BytesIO(payload)))
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(outputs))
            answer = buffer.getvalue()
        protocol.write(b"ok %d\n" % len(answer) + answer)
    except Exception as error:
        answer = repr(error).encode()
        protocol.write(b"error %d\n" % len(answer) + answer)
    protocol.flush()
"""


class _Worker:
    def __init__(self):
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [larq_oracle.python(), "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=larq_oracle.environment(),
        )
        atexit.register(self.close)

    def request(self, kind: bytes, ident: int, threads: int, payload: bytes) -> bytes:
        try:
            self.process.stdin.write(b"%s %d %d %d\n" % (kind, ident, threads, len(payload)))
            self.process.stdin.write(payload)
            self.process.stdin.flush()
            status, size = self.process.stdout.readline().split()
        except (BrokenPipeError, ValueError):
            self.log.seek(0)
            pytest.fail(
                "The LCE interpreter worker (in the larq oracle's environment) died:\n"
                + self.log.read().decode(errors="replace")[-4000:]
            )
        answer = self.process.stdout.read(int(size))
        if status != b"ok":
            pytest.fail(f"LCE's interpreter failed: {answer.decode(errors='replace')}")
        return answer

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


_worker: _Worker | None = None
_ids = itertools.count()


def _shared_worker() -> _Worker:
    global _worker
    if _worker is None or _worker.process.poll() is not None:
        _worker = _Worker()
    return _worker


class Interpreter:
    """LCE's `Interpreter(flatbuffer, num_threads)`, in the oracle's environment.

    Args:
        flatbuffer: The bytes of a `.tflite` file.
        num_threads: Threads of the interpreter.
    """

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        self._id = next(_ids)
        self._threads = num_threads
        _shared_worker().request(b"load", self._id, num_threads, bytes(flatbuffer))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs on each example of `x` (a batch), stacked."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(x))
        answer = _shared_worker().request(b"predict", self._id, self._threads, buffer.getvalue())
        return np.load(io.BytesIO(answer))
