"""The fixtures larq's tests take, for Keras 3: the ported suite's conftest.

larq's conftest runs tests eagerly or in TF1 graph mode, in or out of a
`MirroredStrategy` on virtual CPUs, quantized or not; its tests also use two pytest
plugins, pytest-mock (`mocker`) and snapshottest (`snapshot`). The same fixtures, with
the same parameters (so the test ids are larq's):

- `eager_mode`: Keras 3 on TensorFlow 2 runs eagerly; nothing to enter.
- `graph_mode`: a TF1 graph and session, as larq enters them.
- `keras_should_run_eagerly`: larq's three modes; larq itself skips "graph" on TF 2.
- `distribute_scope`: a `MirroredStrategy` over two of three virtual CPUs, or none.
- `mocker`: `spy` and `ANY`, on `unittest.mock`.
- `snapshot`: matches a printed summary against what larq printed for the same test
  (recorded by `larq_port.snapshots`, file named by `$LARQ_PORT_SNAPSHOTS`).

With `$LARQ_PORT_OUTCOMES` set, each test's outcome and message are written there as
JSON when the session ends, for `tests/test_larq_suite.py` to judge.
"""

from __future__ import annotations

import json
import os
import time
import unittest.mock
from pathlib import Path

import pytest
import tensorflow as tf

from larq_port import snapshots
from lns_keras import context as lq_context

DISTRIBUTED_DEVICES = ["/cpu:1", "/cpu:2"]
SNAPSHOT_WAIT_S = 300


def pytest_configure(config):
    # Three logical CPUs for the MirroredStrategy, before TensorFlow initializes them.
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(3)]
    )


@pytest.fixture
def eager_mode():
    yield


@pytest.fixture
def graph_mode():
    with tf.Graph().as_default(), tf.compat.v1.Session().as_default():
        yield


@pytest.fixture(params=["eager", "graph"])
def eager_and_graph_mode(request):
    if request.param == "graph":
        with tf.Graph().as_default(), tf.compat.v1.Session().as_default():
            yield request.param
    else:
        yield request.param


@pytest.fixture(params=["graph", "tf_eager", "tf_keras_eager"])
def keras_should_run_eagerly(request):
    if request.param == "graph":
        pytest.skip("Skipping graph mode for TensorFlow 2+.")  # larq's own skip on TF 2
    yield request.param == "tf_keras_eager"


@pytest.fixture(params=[False, True])
def distribute_scope(request):
    if request.param:
        with tf.distribute.MirroredStrategy(DISTRIBUTED_DEVICES).scope():
            yield True
    else:
        yield False


@pytest.fixture(params=[True, False])
def quantized(request):
    with lq_context.quantized_scope(request.param):
        yield request.param


@pytest.fixture(params=["channels_last", "channels_first"])
def data_format(request):
    return request.param


class Mocker:
    """pytest-mock's `spy` and `ANY`; the spies are removed after the test."""

    ANY = unittest.mock.ANY

    def __init__(self):
        self._patches = []

    def spy(self, owner, name: str) -> unittest.mock.MagicMock:
        spy = unittest.mock.MagicMock(wraps=getattr(owner, name))
        patch = unittest.mock.patch.object(owner, name, spy)
        patch.start()
        self._patches.append(patch)
        return spy

    def stop(self) -> None:
        for patch in reversed(self._patches):
            patch.stop()


@pytest.fixture
def mocker():
    m = Mocker()
    yield m
    m.stop()


class Snapshot:
    """Matches each printed summary with the one larq printed in the same test."""

    def __init__(self, recorded: list[str], test: str):
        self._recorded = list(recorded)
        self._test = test

    def assert_match(self, value: str, name: str | None = None) -> None:
        if not self._recorded:
            pytest.fail(f"larq printed no further summary in {self._test}")
        larq = self._recorded.pop(0)
        found = snapshots.differences(value, larq)
        if found:
            pytest.fail(
                "our summary differs from larq's:\n  "
                + "\n  ".join(found)
                + f"\n--- ours\n{value}\n--- larq\n{larq}"
            )


@pytest.fixture
def snapshot(request):
    # Recorded by larq in another process while the suite runs: wait for it.
    path = Path(os.environ["LARQ_PORT_SNAPSHOTS"])
    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"larq's summaries were not recorded in {SNAPSHOT_WAIT_S} s ({path})")
        time.sleep(0.5)
    recorded = snapshots.load(path)
    if "__error__" in recorded:
        pytest.fail(f"recording larq's summaries failed:\n{recorded['__error__']}")
    test = request.node.originalname
    return Snapshot(recorded[test], test)


# ------------------------------------------------------------------ outcomes for the parent

_outcomes: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report):
    """Record each test's outcome (`$LARQ_PORT_OUTCOMES`, JSON) for tests/test_larq_suite.py."""
    if report.when == "call" or report.outcome != "passed":
        if report.skipped and isinstance(report.longrepr, tuple):
            message = report.longrepr[2]
        else:
            message = report.longreprtext[-3000:]
        previous = _outcomes.get(report.nodeid, {}).get("outcome")
        if previous in ("failed", "skipped"):
            return  # a teardown after a failure or a skip does not change it
        _outcomes[report.nodeid] = {"outcome": report.outcome, "message": message}


def pytest_sessionfinish(session):
    path = os.environ.get("LARQ_PORT_OUTCOMES")
    if path:
        Path(path).write_text(json.dumps(_outcomes, indent=1))
