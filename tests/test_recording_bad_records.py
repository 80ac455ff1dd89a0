"""A record whose fields have the wrong type (a ``leg`` that is a list, a ``dir`` that is a number...) stops
every converter with one clear line naming the file, the line, the field and the value: exit 2, no
traceback. The converters run as a user runs them, through the ``h2proxy`` command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proxy.recording.recorder import JsonlRecorder
from proxy.recording.simulate import simulate

H2PROXY = [sys.executable, "-m", "proxy.cli", "log"]
REQUESTS = [("GET", "/index.html", [("accept", "*/*")], b""), ("GET", "/size/3000", [], b"")]


@pytest.fixture(scope="module")
def good_lines(tmp_path_factory) -> list:
    path = tmp_path_factory.mktemp("bad") / "good.jsonl"
    rec = JsonlRecorder(str(path))
    simulate(rec, REQUESTS, t0=1_700_000_000.0)
    rec.close()
    return path.read_text(encoding="utf-8").splitlines()


def _spoil(good_lines: list, tmp_path, field: str, value) -> tuple:
    """The log with ``field`` of its first frame record set to ``value``: (path, line number of that record)."""
    lines = list(good_lines)
    n = next(i for i, line in enumerate(lines) if json.loads(line)["record"] == "frame")
    rec = json.loads(lines[n])
    rec[field] = value
    lines[n] = json.dumps(rec)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, n + 1


def _run(args: list, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(H2PROXY + args, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


CONVERTERS = {
    "text": lambda p, out: ["text", p],
    "stats": lambda p, out: ["stats", p],
    "stats --json": lambda p, out: ["stats", "--json", p],
    "pcap": lambda p, out: ["pcap", p, "-o", out],
    "har": lambda p, out: ["har", p, "-o", out],
    # (The log is read before any connection is made: port 9 is never reached.)
    "replay --as client": lambda p, out: ["replay", p, "--as", "client", "--to", "h2c://127.0.0.1:9"],
    "replay --as server": lambda p, out: ["replay", p, "--as", "server", "--listen", "h2c://127.0.0.1:0"],
}


def _assert_one_clear_line(proc: subprocess.CompletedProcess, path, lineno: int, field: str, shown: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{path}:{lineno}:" in lines[0] and f"field {field!r} is {shown}" in lines[0], lines[0]


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_a_leg_that_is_a_list_stops_every_converter_with_one_line(good_lines, tmp_path, name):
    path, lineno = _spoil(good_lines, tmp_path, "leg", ["client", "upstream"])
    proc = _run(CONVERTERS[name](str(path), str(tmp_path / "out")), tmp_path)
    _assert_one_clear_line(proc, path, lineno, "leg", "['client', 'upstream'] (a list), not a string")


@pytest.mark.parametrize("field, value, shown", [
    ("dir", 1, "1 (an integer), not a string"),
    ("dir", {"to": "recv"}, "{'to': 'recv'} (an object), not a string"),
    ("conn", [1], "[1] (a list), not an integer"),
    ("conn", True, "True (a boolean), not an integer"),
    ("ts", "soon", "'soon' (a string), not a number"),
    ("stream", 1.5, "1.5 (a number), not an integer"),
    ("fields", [], "[] (a list), not an object"),
    ("type", ["\x1b[2J\u202e"] * 20, "['\\x1b[2J\\u202e', "),      # (escaped, and cut short)
])
def test_each_field_of_the_wrong_type_is_named_with_its_value(good_lines, tmp_path, field, value, shown):
    path, lineno = _spoil(good_lines, tmp_path, field, value)
    proc = _run(["stats", str(path)], tmp_path)
    _assert_one_clear_line(proc, path, lineno, field, shown)
    assert "\x1b" not in proc.stderr


@pytest.mark.parametrize("head", [b'{"log": "x', b"[1]", b"\xff\xfe"])
def test_a_journal_whose_header_is_cut_or_not_an_object_is_one_clear_line(tmp_path, head):
    import struct

    from proxy.recording.journal import JOURNAL_MAGIC
    journal = tmp_path / "frames.jsonl.journal"
    journal.write_bytes(JOURNAL_MAGIC + struct.pack(">I", 500 if head.startswith(b"{") else len(head)) + head)
    proc = _run(["convert", str(journal), "-o", str(tmp_path / "out.jsonl"), "--keep"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"h2proxy: {journal}: the journal's header is cut short or is not "
                                                f"a JSON object"]
