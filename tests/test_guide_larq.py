"""The code on docs/guide/coming-from-larq.md runs, and does what the page says.

The page shows larq 0.14 code beside its lns_keras version. Its fenced Python blocks
titled `larq 0.14` run under larq (in a Keras 2 subprocess, `tests/larq_oracle.py`), the
others in this process; each side in page order, as one session. Both run in the same
folder, so the lns_keras blocks load the model the larq blocks saved. The blocks assert
what the page claims (same predictions, the flip-ratio metric's name, ...).
"""

from __future__ import annotations

import re
import textwrap
import traceback
from pathlib import Path

import larq_oracle
import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "coming-from-larq.md"

# A fenced block at the start of a line: ```python, an optional title, the code, ```.
_BLOCK = re.compile(r'^```python(?:[ \t]+title="([^"]*)")?[ \t]*\n(.*?)^```[ \t]*$', re.M | re.S)


def snippets(text: str) -> list[tuple[str, str]]:
    """Each fenced Python block of `text` as (title, code), in page order."""
    return [(title or "", code) for title, code in _BLOCK.findall(text)]


def _larq(blocks) -> list[str]:
    return [code for title, code in blocks if title.startswith("larq")]


def _ours(blocks) -> list[str]:
    return [code for title, code in blocks if not title.startswith("larq")]


def test_every_python_block_is_found():
    text = PAGE.read_text()
    blocks = snippets(text)
    # An indented block (in an admonition, a list) would be missed by the pattern.
    assert len(blocks) == text.count("```python")
    assert len(_larq(blocks)) >= 1 and len(_ours(blocks)) >= 10


def test_snippet_finder_reads_titles_and_code():
    text = '```python title="larq 0.14"\nimport larq\n```\n\ntext\n\n```python\nx = 1\n```\n'
    assert snippets(text) == [("larq 0.14", "import larq\n"), ("", "x = 1\n")]


def test_page_runs_in_larq_and_in_lns_keras(tmp_path, monkeypatch):
    blocks = snippets(PAGE.read_text())
    monkeypatch.chdir(tmp_path)  # both sides write and read their files here
    # The oracle's subprocess starts in this folder too; its own files go to oracle/.
    larq_oracle.run("\n".join(_larq(blocks)), {}, tmp_path / "oracle")
    assert (tmp_path / "bnn.h5").is_file()

    namespace = {"__name__": "coming_from_larq"}
    for i, code in enumerate(_ours(blocks)):
        try:
            exec(compile(code, f"<coming-from-larq.md, lns_keras block {i}>", "exec"), namespace)
        except Exception:
            pytest.fail(
                f"lns_keras block {i} of {PAGE.name} failed:\n{textwrap.indent(code, '    ')}\n"
                + traceback.format_exc()
            )
    assert (tmp_path / "bnn.tflite").is_file()
