"""larq's printed summaries as the snapshots of its summary tests, and the comparison.

larq's summary tests print a model's summary and match it against a stored snapshot
(the `snapshottest` plugin), which larq's wheel does not ship. The snapshots are made
here instead by larq itself: `record` runs larq's own test functions (those that take
`snapshot`) under larq, in the oracle interpreter, and keeps what each passed to
`snapshot.assert_match`. The ported test then matches our printed summary against that.

The two tables are laid out differently (larq draws boxes; ours has `|` columns and a
Mbit column), so `differences` compares what they say: for each of larq's layer rows,
the layer's name, input precision, output shape, parameters of each bit width, memory
(kB, ours KiB: the same unit) and MACs of each precision, then the total row and each
line of the totals below (Total params, Model size, ...). Numbers compare as numbers
(`1,179,648` equals `1179648`, `0.00` equals `0`), and a batch axis of `-1` equals
`None`. larq shows a nested model as one row, ours its layers: that row is compared
with the sums of our rows up to the next layer larq names. Extra lines of ours (FLOPs,
notes) are not compared.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

RECORDER = r"""
import contextlib, inspect, io, json, os, sys, types
os.environ["TF_USE_LEGACY_KERAS"] = "1"
try:
    import pytest  # larq's test module imports it
except ImportError:  # an oracle environment without pytest: what the module needs
    class _Any:
        def __getattr__(self, name):
            return lambda *a, **k: (a[0] if a and callable(a[0]) and not k else (lambda f: f))
    pytest = types.ModuleType("pytest")
    pytest.mark = _Any()
    pytest.fixture = _Any().fixture
    sys.modules["pytest"] = pytest
import importlib.util
import tensorflow as tf

path, out = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("larq_models_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


class Capsys:
    def __init__(self, buffer):
        self.buffer = buffer

    def readouterr(self):
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return types.SimpleNamespace(out=text, err="")


class Snapshot:
    def __init__(self):
        self.values = []

    def assert_match(self, value, name=None):
        self.values.append(value)


recorded = {}
for name, test in vars(module).items():
    if not name.startswith("test_") or "snapshot" not in inspect.signature(test).parameters:
        continue
    tf.keras.backend.clear_session()
    buffer, snapshot = io.StringIO(), Snapshot()
    with contextlib.redirect_stdout(buffer):
        test(snapshot=snapshot, capsys=Capsys(buffer))
    recorded[name] = snapshot.values
with open(out + ".part", "w") as f:
    json.dump(recorded, f)
os.replace(out + ".part", out)  # the ported suite waits for the whole file
"""


def start_recording(python: str, larq: Path, out: Path) -> threading.Thread:
    """Record larq's summary snapshots (from `larq/models_test.py`) into `out`, in the
    background; if larq fails, `out` holds `{"__error__": its output}`. Join the thread
    returned to wait for it."""
    script = out.with_suffix(".py")
    script.write_text(RECORDER)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [python, str(script), str(larq / "models_test.py"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def wait():
        output, _ = process.communicate()
        if process.returncode != 0 or not out.exists():
            part = out.with_suffix(".part")
            part.write_text(json.dumps({"__error__": output[-4000:]}))
            os.replace(part, out)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------- parsing


def _column(name: str) -> str:
    """A column's name without units and layout: `Memory (KiB)` and `Memory (kB)` -> memory."""
    name = re.sub(r"\s+", " ", name.lower().replace("x 1", "")).strip()
    name = re.sub(r"\s*\((bit|kb|kib)\)$", "", name)
    return name.strip()


def _cell(text: str) -> str:
    """A cell's value, canonical: numbers as numbers, a batch axis `None` as -1."""
    text = text.strip().lower().replace("none", "-1")
    plain = text.replace(",", "")
    try:
        return repr(float(plain))
    except ValueError:
        return re.sub(r"\s+", "", text)


def _split_outputs(rest: str) -> tuple[str, str]:
    """`(-1, 64, 64, 32)  288 ...` -> ('(-1, 64, 64, 32)', '288 ...')."""
    rest = rest.lstrip()
    if rest[:1] in "([":
        depth = 0
        for i, char in enumerate(rest):
            depth += char in "(["
            depth -= char in ")]"
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :]
    head, _, tail = rest.partition(" ")
    return head, tail


def _parse_larq(text: str) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """larq's boxed tables -> (columns, rows incl. the total, {summary key: value})."""
    lines = [line.strip() for line in text.lower().splitlines()]
    boxes: list[list[str]] = []
    for line in lines:
        if line.startswith("+") and not line.startswith("+-"):
            boxes.append([])
        elif line.startswith("|") and boxes:
            boxes[-1].append(line.strip("|").strip())
    stats, facts = boxes[0], boxes[1]
    names = re.split(r"\s{2,}", stats[0])
    units = stats[1]
    columns = [_column(n) for n in names]
    if "(kb)" not in units:
        raise ValueError(f"larq's memory column is not in kB: {units!r}")
    rows = []
    for line in stats[2:]:
        name, _, rest = line.partition(" ")
        if name == "total":
            numbers = rest.split()
            rows.append(["total", "", "", *numbers])
            continue
        precision, _, rest = rest.strip().partition(" ")
        outputs, rest = _split_outputs(rest)
        rows.append([name, precision, outputs, *rest.split()])
    summary = {}
    for line in facts:
        key, value = re.split(r"\s{2,}", line, maxsplit=1)
        summary[key] = value
    return columns, rows, summary


def _parse_ours(text: str) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """Our summary -> (columns, rows incl. the total, {summary key: value})."""
    lines = text.lower().splitlines()
    table = [line for line in lines if " | " in line]
    columns = [_column(c) for c in table[0].split(" | ")]
    rows = []
    for line in table[1:]:
        cells = [c.strip() for c in line.split(" | ")]
        cells[0] = cells[0].split(" (")[0]  # the layer's class follows its name
        rows.append(cells)
    after = lines[lines.index(table[-1]) + 1 :]
    summary = {}
    for line in after:
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            summary[parts[0]] = parts[1]
    return columns, rows, summary


def _memory_value(value: str) -> str:
    """`152.05 KiB (1.2456 Mbit)` -> `152.05kib`: ours adds the Mbit figure."""
    return _cell(value.split(" (")[0])


def _groups(larq_rows: list[list[str]], rows: list[list[str]]) -> list[list[list[str]]]:
    """Our rows for each of larq's: the row of the same name, or (for a nested model,
    which larq shows as one row) the rows up to the next layer larq names; none when
    ours has no such rows."""
    names = [row[0] for row in rows]
    groups, j = [], 0
    for i, larq_row in enumerate(larq_rows):
        if j < len(rows) and names[j] == larq_row[0]:
            groups.append(rows[j : j + 1])
            j += 1
            continue
        following = larq_rows[i + 1][0] if i + 1 < len(larq_rows) else None
        if following in names[j:]:
            k = names.index(following, j)
            groups.append(rows[j:k])
            j = k
        else:
            groups.append([])
    return groups


def _nested(column: str, group: list[list[str]], columns: list[str]) -> str:
    """A nested model's cell from its layers' rows: larq's input precision is its first
    layer's, its output its last layer's, its counts their sums."""
    cells = [row[columns.index(column)] for row in group]
    if column == "input prec.":
        return cells[0]
    if column == "outputs":
        return cells[-1]
    return repr(sum(float(c.replace(",", "")) for c in cells))


def differences(ours: str, larq: str) -> list[str]:
    """What larq's printed summary says that ours does not (empty when they agree)."""
    larq_columns, larq_rows, larq_summary = _parse_larq(larq)
    columns, rows, summary = _parse_ours(ours)
    found = [f"no column {c!r} in ours" for c in larq_columns if c not in columns]
    for larq_row, group in zip(larq_rows, _groups(larq_rows, rows), strict=True):
        if not group:
            found.append(f"no row of ours for larq's {larq_row[0]!r}")
            continue
        for column, larq_value in zip(larq_columns, larq_row, strict=True):
            if column not in columns:
                continue
            if len(group) == 1:
                value = group[0][columns.index(column)]
                agree = _cell(value) == _cell(larq_value)
            elif column == "layer":
                continue  # a nested model's name: its layers have their own
            else:
                value = _nested(column, group, columns)
                # Each of our rows rounds its memory to 0.01 kB.
                tolerance = 0.01 * len(group) if column == "memory" else 0.0
                try:
                    agree = abs(float(_cell(value)) - float(_cell(larq_value))) <= tolerance
                except ValueError:
                    agree = _cell(value) == _cell(larq_value)
            if not agree:
                where = larq_row[0]
                if len(group) > 1:
                    where += f" (our rows {[row[0] for row in group]})"
                found.append(f"{where}, {column}: larq {larq_value!r}, ours {value!r}")
    shown = {id(row) for group in _groups(larq_rows, rows) for row in group}
    extra = [row[0] for row in rows if id(row) not in shown]
    if extra:
        found.append(f"rows of ours that larq does not show: {extra}")
    for key, larq_value in larq_summary.items():
        if key not in summary:
            found.append(f"no line {key!r} in ours")
        elif _memory_value(summary[key]) != _memory_value(larq_value):
            found.append(f"{key}: larq {larq_value!r}, ours {summary[key]!r}")
    return found


def load(path: str | os.PathLike) -> dict[str, list[str]]:
    """The recorded snapshots, `{test function name: [printed summary, ...]}`."""
    return json.loads(Path(path).read_text())
