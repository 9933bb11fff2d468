"""Rewrite larq 0.14's test files for Keras 3 and lns_keras, mechanically.

Each rule is a regular expression applied line by line to the test files it names (all
of them when it names none), with the reason Keras 3 needs it. The rules only rename:
larq's modules become the shim's (`larq_port.shim`, which maps them onto lns_keras),
`tf.keras` becomes `keras`, and the few Keras 2 APIs that Keras 3 dropped or renamed
become their Keras 3 counterparts. A rule that no longer matches the file it is written
for raises, so a new larq release cannot silently leave a test half ported.

    python tests/larq_port/transform.py OUT_FOLDER   # writes the ported files there
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

TEST_FILES = (
    "activations_test.py",
    "callbacks_test.py",
    "constraints_test.py",
    "context_test.py",
    "layers_test.py",
    "metrics_test.py",
    "models_test.py",
    "optimizers_test.py",
    "quantizers_test.py",
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """`pattern` (a regex, `re.MULTILINE`) becomes `replacement` in `files` (all if empty)."""

    pattern: str
    replacement: str
    why: str
    files: tuple[str, ...] = ()


RULES = (
    # Imports: larq's modules are the shim's; Keras is Keras 3.
    Rule(r"^import larq as lq$", "from larq_port import shim as lq", "larq is the shim"),
    Rule(
        r"^from larq\.testing_utils import ",
        "from larq_port.testing_utils import ",
        "larq's test helpers are ours (larq_port.testing_utils)",
    ),
    Rule(
        r"^from larq\.models import ",
        "from larq_port.models import ",
        "larq's ModelProfile is answered from lns_keras.model_stats",
    ),
    Rule(
        r"^from larq import (\w+)",
        r"from larq_port.shim import \1",
        "larq's modules are the shim's",
    ),
    Rule(r"^from larq\.(\w+) import ", r"from lns_keras.\1 import ", "same module name"),
    Rule(
        r"^from tensorflow\.python\.keras import testing_utils$",
        "from larq_port import testing_utils",
        "TensorFlow's private Keras 2 test helpers (get_test_data) are ours",
    ),
    Rule(
        r"^(\s*)from tensorflow\.keras(\.optimizers)? import (legacy as )?optimizers\b.*$",
        r"\1from keras import optimizers",
        "Keras 3 has one family of optimizers (no `legacy`)",
        ("callbacks_test.py", "optimizers_test.py"),
    ),
    Rule(r"^from tensorflow import keras$", "import keras", "Keras 3 is its own package"),
    Rule(
        r"^import tensorflow as tf$",
        "import keras\nimport tensorflow as tf\n\nfrom larq_port import keras2",
        "Keras 3 is its own package; keras2 holds the Keras 2 backend helpers",
    ),
    # Keras 2 APIs that Keras 3 dropped: the graph-mode backend helpers.
    Rule(
        r"\btf\.keras\.backend\.",
        "keras2.",
        "Keras 3's backend has no placeholder/function/get_value/variable/eval",
    ),
    Rule(
        r"\btf\.keras\.datasets\.mnist\b",
        "keras2.mnist",
        "no download in tests: random images of MNIST's shape (only one is used)",
        ("optimizers_test.py",),
    ),
    Rule(r"\btf\.keras\.", "keras.", "Keras 3 is its own package"),
    Rule(
        r"\bkeras\.layers\.(LocallyConnected[12]D)\b",
        r"keras2.\1",
        "Keras 3 has no LocallyConnected layers: a stand-in that fails when used, so "
        "that the module still collects",
        ("layers_test.py",),
    ),
    # Keras 3 renames.
    Rule(
        r"\btf\.split\(",
        "keras.ops.split(",
        "Keras 3 symbolic tensors take keras.ops, not TensorFlow ops",
        ("models_test.py",),
    ),
    Rule(
        r"\btf\.concat\(",
        "keras.ops.concatenate(",
        "Keras 3 symbolic tensors take keras.ops, not TensorFlow ops",
        ("models_test.py",),
    ),
    Rule(
        r"\.lr\b",
        ".learning_rate",
        "Keras 3 optimizers dropped the `lr` alias of `learning_rate`",
        ("callbacks_test.py",),
    ),
    Rule(
        r'\.add_weight\("(\w+)", ',
        r'.add_weight(name="\1", ',
        "Keras 3 takes add_weight's `name` by keyword only",
        ("quantizers_test.py",),
    ),
    Rule(
        r"\blayer\.output_shape\b",
        "layer.output.shape",
        "Keras 3 layers have no `output_shape`; their symbolic output has the shape",
        ("layers_test.py",),
    ),
    Rule(
        r'^(\s+)"pad_values",$',
        r'\1"pad_values",\n\1"kernel_scale",\n\1"metrics",',
        "lns_keras's layers take two arguments beyond larq's (kernel_scale, metrics), "
        "which larq's list of its own extra arguments cannot name",
        ("layers_test.py",),
    ),
    Rule(
        r'mocker\.spy\(tf, "pad"\)',
        'mocker.spy(keras.ops, "pad")',
        "Keras 3 layers pad through keras.ops (any backend), not tf.pad",
        ("layers_test.py",),
    ),
    Rule(
        r'\._get_hyper\("(\w+)"\)',
        r"._\1",
        "Keras 2's optimizers kept a hyperparameter (a number, variable or schedule) "
        "behind `_get_hyper(name)`; lns_keras's Bop keeps it as `_<name>`",
        ("optimizers_test.py",),
    ),
    Rule(
        r"\b(model\.optimizer|opt)\.weights\b",
        r"\1.variables",
        "Keras 3 optimizers call their state `variables` (no `weights`)",
        ("optimizers_test.py",),
    ),
)


def larq_folder(python: str) -> Path:
    """The folder of the larq package installed for `python`, found without importing it."""
    script = (
        "import importlib.util; "
        "print(importlib.util.find_spec('larq').submodule_search_locations[0])"
    )
    result = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"larq is not installed for {python}:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip())


def port(source: str, name: str) -> str:
    """The Keras 3 text of larq's test file `name` whose text is `source`.

    Raises:
        ValueError: If a rule written for `name` matches nothing in it.
    """
    for rule in RULES:
        if rule.files and name not in rule.files:
            continue
        source, count = re.subn(rule.pattern, rule.replacement, source, flags=re.MULTILINE)
        if rule.files and count == 0:
            raise ValueError(f"rule {rule.pattern!r} no longer matches {name}")
    compile(source, name, "exec")
    return source


CONFTEST = '''"""The ported larq tests' fixtures: larq_port.fixtures."""

pytest_plugins = ["larq_port.fixtures"]
'''
PYTEST_INI = """[pytest]
addopts = -p no:cacheprovider
filterwarnings = ignore::DeprecationWarning
"""


def write_port(larq: Path, out: Path) -> list[Path]:
    """Port larq's test files from folder `larq` into folder `out`; return their paths.

    `out` also gets a conftest (our fixtures) and a pytest.ini, so that
    `PYTHONPATH=tests python -m pytest OUT` runs the port (the summary tests also need
    `$LARQ_PORT_SNAPSHOTS`: see `larq_port.snapshots`).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "conftest.py").write_text(CONFTEST)
    (out / "pytest.ini").write_text(PYTEST_INI)
    written = []
    for name in TEST_FILES:
        target = out / name
        target.write_text(port((larq / name).read_text(), name))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import larq_oracle

    for path in write_port(larq_folder(larq_oracle.python()), Path(argv[1])):
        print(os.fspath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
