"""Every Python example in docs/*.md (and README.md) runs, from a project that only installed h2proxy
(issue 13, item 13).

The ```python blocks of each page are taken as they are written:

* a block right after ``<!-- not runnable: REASON -->`` is a deliberate sketch and is left out
  (the reason must be given);
* the blocks of a section (``## ...``) that defines ``test_`` functions are a pytest file: they
  are written, each at its line of the page, into a fresh directory outside the repository with
  an empty ``pytest.ini`` (so pytest-asyncio runs in its default strict mode) and run there with
  ``python -m pytest``; every test must pass (a skipped one fails this check);
* the other blocks of a page are run in order, in one namespace (later blocks use the names of
  earlier ones, as a reader does), by a script in such a directory; it holds ``frames.jsonl``, a
  frame log like ``h2proxy --record frames.jsonl`` writes, for the pages that read one.

Only the installed package is importable there: not ``tests``, not ``docs/examples``, and
``PYTHONPATH`` is dropped. Tracebacks name the page and its line numbers.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARK = re.compile(r"^<!--\s*not runnable:\s*(?P<why>.*?)\s*-->$")


@dataclass
class Block:
    doc: str            # the page, e.g. "docs/testing.md"
    line: int           # the line of the page where the code starts (1-based)
    section: str        # the "## " heading it is under
    code: str
    skipped: Optional[str] = None   # why it is not runnable, when marked so

    @property
    def is_test(self) -> bool:
        return bool(re.search(r"^(async )?def test_", self.code, re.M))


def python_blocks(path: Path) -> List[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: List[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.strip().startswith("```"):
            lang = line.strip()[3:].strip()
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if lang == "python":
                prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                m = MARK.match(prev)
                blocks.append(Block(path.relative_to(ROOT).as_posix(), i + 2, section, "\n".join(lines[i + 1:j]),
                                    m.group("why") if m else None))
            i = j
        i += 1
    return blocks


ALL = {p.relative_to(ROOT).as_posix(): python_blocks(p) for p in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]}


def _pytest_files() -> Dict[str, List[Block]]:
    """(page, section) -> the runnable blocks of sections that define tests."""
    out: Dict[str, List[Block]] = {}
    for doc, blocks in ALL.items():
        sections = {b.section for b in blocks if b.is_test and b.skipped is None}
        for section in sorted(sections):
            out[f"{doc}: {section}"] = [b for b in blocks if b.section == section and b.skipped is None]
    return out


PYTEST_FILES = _pytest_files()
SCRIPTS = {doc: [b for b in blocks if b.skipped is None and f"{doc}: {b.section}" not in PYTEST_FILES]
           for doc, blocks in ALL.items()}
SCRIPTS = {doc: blocks for doc, blocks in SCRIPTS.items() if blocks}


def _fresh_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _placed(blocks: List[Block]) -> str:
    """The blocks' code, each starting at its own line of the page (blank lines between)."""
    out: List[str] = []
    for b in blocks:
        out.extend([""] * max(0, b.line - 1 - len(out)))
        out.extend(b.code.splitlines())
    return "\n".join(out) + "\n"


def _outside_repo(tmp_path: Path) -> Path:
    assert ROOT not in tmp_path.resolve().parents, f"{tmp_path} is inside the repository"
    return tmp_path


RUNNER = '''
import json, sys
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for b in blocks:
    print(f"--- {b['doc']}:{b['line']}", flush=True)
    exec(compile("\\n" * (b["line"] - 1) + b["code"], b["doc"], "exec"), namespace)
print("all blocks ran")
'''


def test_the_examples_are_found_and_sketches_say_why():
    assert sum(len(b) for b in ALL.values()) >= 20
    for blocks in ALL.values():
        for b in blocks:
            assert b.skipped is None or b.skipped, f"{b.doc}:{b.line}: a not-runnable mark needs a reason"
    # The pytest recipes of testing.md and the hook test of hooks.md are run as pytest files.
    assert "docs/testing.md: Recipes" in PYTEST_FILES, PYTEST_FILES.keys()
    assert "docs/hooks.md: Testing a hook" in PYTEST_FILES, PYTEST_FILES.keys()
    assert "README.md" in SCRIPTS


@pytest.mark.parametrize("doc", sorted(SCRIPTS))
def test_doc_examples_run(doc, tmp_path):
    work = _outside_repo(tmp_path)
    from proxy.recording.recorder import JsonlRecorder
    from proxy.recording.simulate import simulate
    recorder = JsonlRecorder(str(work / "frames.jsonl"))
    simulate(recorder, [("GET", "/index.html", [], b"")])
    recorder.close()
    (work / "blocks.json").write_text(json.dumps([b.__dict__ for b in SCRIPTS[doc]]))
    (work / "run_blocks.py").write_text(RUNNER)
    out = subprocess.run([sys.executable, "run_blocks.py", "blocks.json"], cwd=work, env=_fresh_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "all blocks ran" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(PYTEST_FILES))
def test_doc_pytest_recipes_run_in_a_fresh_project(name, tmp_path):
    blocks = PYTEST_FILES[name]
    work = _outside_repo(tmp_path)
    (work / "pytest.ini").write_text("[pytest]\n")       # the defaults: pytest-asyncio in strict mode
    module = "test_" + re.sub(r"\W+", "_", name.split(":")[0].rsplit("/", 1)[-1]) + ".py"
    (work / module).write_text(_placed(blocks))
    expected = sum(len(re.findall(r"^(?:async )?def test_", b.code, re.M)) for b in blocks)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", module],
                         cwd=work, env=_fresh_env(), capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert re.search(rf"\b{expected} passed\b", text) and not re.search(r"\d+ (skipped|xfailed|failed|error)", text), \
        text[-5000:]
    assert "PytestUnhandledCoroutineWarning" not in text and "not natively supported" not in text, text[-5000:]
