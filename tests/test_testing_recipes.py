"""The recipes of docs/testing.md, run as they are written.

Every ```python block in the "Recipes" section is executed into this module, in
order: the fixtures and tests it defines are collected by pytest like any
other, and a failure points at the line of docs/testing.md.
"""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"

REQUIRED = {
    "test_every_third_response_is_refused_and_retried",
    "test_download_stalls_after_1_mib",
    "test_goaway_after_the_first_request",
    "test_server_settings_arrive_2_s_late",
}


def _recipe_blocks(text: str):
    """(first line number, code) of each python block in the Recipes section."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Recipes")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    blocks, i = [], start
    while i < end:
        if lines[i].strip() == "```python":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            blocks.append((i + 2, "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return blocks


_BLOCKS = _recipe_blocks(DOC.read_text())
_before = set(globals())
for _line, _code in _BLOCKS:
    # Blank lines in front keep the line numbers of the document in tracebacks.
    exec(compile("\n" * (_line - 1) + _code, str(DOC), "exec"), globals())
RECIPES = sorted(n for n in set(globals()) - _before if n.startswith("test_"))
# The recipes mark their module for pytest-asyncio's strict mode; this project runs in auto mode, and
# the mark would also land on the plain test below.
globals().pop("pytestmark", None)


def test_the_recipes_are_all_there():
    assert REQUIRED <= set(RECIPES), REQUIRED - set(RECIPES)
    text = DOC.read_text()
    for title in ("Every third response is reset with REFUSED_STREAM", "The download stalls after 1 MiB",
                  "GOAWAY after the first request", "The server's SETTINGS arrive 2 s late"):
        assert re.search(rf"^### {re.escape(title)}$", text, re.M), title
