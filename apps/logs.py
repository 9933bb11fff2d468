"""What the apps print: progress, results and real warnings, not TensorFlow's chatter.

By default the entry points (`apps/train.py`, `apps/train_imagenet.py`,
`apps/train_cifar10.py`) show stage headers, Keras progress, the final table and
warnings. Hidden at that level: TensorFlow's C++ INFO and WARNING lines (device set-up,
XLA, SavedModel loading, the TFLite converter, tf.data's cache notices), the lines its
libraries print while loading (`Could not find cuda drivers`, and `failed call to cuInit`
on a machine without an NVIDIA device), absl and TensorFlow INFO logs (tfds, SavedModel
export), tfds's progress bars, and TensorFlow's retracing warning (the apps compile and
evaluate a few models on purpose, each tracing its own functions).

absl's own `--verbosity` flag (`-v`) brings them back: `--verbosity=0` shows INFO logs,
TensorFlow's C++ logs included, and `--verbosity=1` debug logs. The default here is
`-1` (warnings), absl's default before it parses the command line. A
`TF_CPP_MIN_LOG_LEVEL` set in the environment is kept as it is.

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` when it loads, so a script calls
[`quiet_tensorflow`][apps.logs.quiet_tensorflow] before anything imports TensorFlow, and
[`apply_verbosity`][apps.logs.apply_verbosity] once absl has parsed the flags. This module
imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import tempfile

__all__ = ["DEFAULT_VERBOSITY", "apply_verbosity", "quiet_tensorflow", "verbosity_from_argv"]

DEFAULT_VERBOSITY = -1  # absl's scale: -1 warnings, 0 info, 1 debug

# Lines TensorFlow's libraries print to stderr before absl's C++ logging is initialised,
# so TF_CPP_MIN_LOG_LEVEL does not reach them.
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
# Before initialisation the time reads 00:00:<seconds since 1970>.
_CPP_INFO_OR_WARNING = re.compile(r"^[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
_CUINIT_FAILED = "failed call to cuInit"
_RETRACING = "triggered tf.function retracing"


def verbosity_from_argv(argv: list[str]) -> int:
    """absl's `--verbosity` (`-v`) as `argv` gives it, flagfiles included; else the default.

    Read before the real flag parsing, which happens after TensorFlow is imported.

    Args:
        argv: The command line, program name first.

    Returns:
        The verbosity on absl's scale, [`DEFAULT_VERBOSITY`][apps.logs.DEFAULT_VERBOSITY]
        if `argv` does not set it or cannot be read (the real parsing reports that).
    """
    from absl import flags

    values = flags.FlagValues()
    flags.DEFINE_integer("verbosity", DEFAULT_VERBOSITY, "", short_name="v", flag_values=values)
    try:
        values(list(argv), known_only=True)
    except (flags.Error, OSError):
        return DEFAULT_VERBOSITY
    return values.verbosity


def _cpp_log_level(verbosity: int) -> str:
    if verbosity >= 0:
        return "0"  # everything
    return "2" if verbosity > -3 else "3"  # errors; fatal only


def quiet_tensorflow(argv: list[str]) -> None:
    """Import TensorFlow with the log level `argv`'s `--verbosity` asks for.

    Sets `TF_CPP_MIN_LOG_LEVEL` (unless the environment sets it), then imports TensorFlow
    and lists its devices while holding back what its libraries print to stderr on the
    way; below `--verbosity=0` the known start-up lines are dropped and anything else is
    printed as it came.

    Args:
        argv: The command line, program name first.
    """
    verbosity = verbosity_from_argv(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _cpp_log_level(verbosity))
    if verbosity >= 0 or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # loads the GPU platform (cuInit)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _startup_chatter(line)))
            sys.stderr.flush()


def _startup_chatter(line: str) -> bool:
    if line.startswith(_ABSL_NOTICE) or _CPP_INFO_OR_WARNING.match(line):
        return True
    # Without an NVIDIA device there is nothing for CUDA to find; with one, a failed
    # cuInit is a real problem and stays visible.
    return _CUINIT_FAILED in line and not glob.glob("/dev/nvidia[0-9]*")


class _DropRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _RETRACING not in record.getMessage()


def apply_verbosity(verbosity: int) -> None:
    """Set absl's, TensorFlow's and tfds's Python logging to `verbosity`.

    Call it once absl has parsed the flags (in `main`).

    Args:
        verbosity: On absl's scale (see the module docstring).
    """
    from absl import logging as absl_logging
    from absl.logging import converter

    absl_logging.set_verbosity(verbosity)
    level = converter.absl_to_standard(verbosity)
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(level)
    # TensorFlow gave its logger a handler of its own when it was imported before absl's
    # handler existed: every message would be printed twice.
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    if verbosity < 0:
        tf_logger.addFilter(_DropRetracing())
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
