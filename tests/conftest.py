"""Shared test setup: quiet TensorFlow logs, deterministic seeds, the backend child runs.

README's test command runs the suite on pytest-xdist workers (`-n auto`: one per CPU,
at most `MAX_WORKERS`), a test file at a time (`--dist loadfile`, in pyproject.toml, so
that a file's module fixtures are built once). The child runs of `tests/test_backends.py`
(`backend_runs`) then start in the worker that runs that file, which goes first, so that
the other workers run the rest of the suite meanwhile. In one process (plain `pytest`)
they start in the background once collection is done and that file goes last. A worker
runs TensorFlow's ops on one thread (`TF_NUM_INTRAOP_THREADS=1`): the workers already
keep every CPU busy, and TensorFlow's threads of several workers on the same cores only
wait on each other.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import backend_runs  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402

BACKENDS_TESTS = "test_backends.py"
# Files with a test or a module fixture of 30 s or more (`--durations`), in that order.
LONG_FILES = ("test_pipeline_output.py", "test_larq_suite.py", "test_compat.py", "test_data.py")
MAX_WORKERS = 4
"""Each worker holds TensorFlow, JAX and a few models (about 2 GiB): more than 4 workers
cost memory without gaining much on a suite of this size."""


def _xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_xdist_auto_num_workers(config):
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (Linux)
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _runs_backends(item) -> bool:
    return item.path.name == BACKENDS_TESTS


def _xdist_order(item) -> int:
    if _runs_backends(item):
        return 0
    return 1 if item.path.name in LONG_FILES else 2


def pytest_collection_modifyitems(session, config, items):
    # tests/test_backends.py waits (its `runs` fixture) for child runs under JAX and
    # PyTorch. In one process they start in the background once collection is done
    # (below) and its tests go last, so that the rest of the suite runs meanwhile. On
    # xdist workers they start when the file's worker reaches them: first; the files of
    # one long test follow, so that none of them is left alone at the end of the run.
    if _xdist_worker():
        items.sort(key=_xdist_order)
    else:
        items.sort(key=_runs_backends)


def pytest_collection_finish(session):
    waits = [item for item in session.items if "runs" in getattr(item, "fixturenames", ())]
    if _xdist_worker() or session.config.option.collectonly:
        return  # every worker collects every test; the group's worker starts the runs
    if any(map(_runs_backends, waits)):
        backend_runs.start()


def pytest_sessionfinish(session, exitstatus):
    backend_runs.stop()
