"""Shared test setup: quiet TensorFlow logs, deterministic seeds, the backend child runs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import backend_runs  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402

BACKENDS_TESTS = "test_backends.py"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _runs_backends(item) -> bool:
    return item.path.name == BACKENDS_TESTS


def pytest_collection_modifyitems(session, config, items):
    # tests/test_backends.py waits (its `runs` fixture) for child runs under JAX and
    # PyTorch, which start in the background once collection is done (below): its tests
    # go last, so that the rest of the suite runs meanwhile.
    items.sort(key=_runs_backends)


def pytest_collection_finish(session):
    waits = [item for item in session.items if "runs" in getattr(item, "fixturenames", ())]
    if not session.config.option.collectonly and any(map(_runs_backends, waits)):
        backend_runs.start()


def pytest_sessionfinish(session, exitstatus):
    backend_runs.stop()
