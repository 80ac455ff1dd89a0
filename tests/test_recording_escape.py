"""The log reader's printable mode: records of lines with nothing to escape are handed on as parsed,
the others escaped; either way what comes out equals printable_record of the parsed record."""
from __future__ import annotations

import json

import pytest

from proxy.printable import plain_json_line, printable_record
from proxy.recording.reader import LogReader
from proxy.recording.recorder import FORMAT_NAME, FORMAT_VERSION

HEADER = {"record": "header", "format": FORMAT_NAME, "version": FORMAT_VERSION}


def _line(value: str, *, ensure_ascii: bool) -> bytes:
    rec = {"record": "frame", "conn": 1, "leg": "client", "dir": "recv", "type": "HEADERS",
           "headers": [[":path", value]]}
    return json.dumps(rec, ensure_ascii=ensure_ascii).encode("utf-8")


@pytest.mark.parametrize("value", ["/plain", "/with space and ~tilde", "/esc\x1b[31m", "/bel\x07", "/del\x7f",
                                   "/c1\x85", "/bidi\u202e", "/back\\slash", '/quote"', "/é", "/tab\t"])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_plain_line_means_nothing_to_escape(value: str, ensure_ascii: bool) -> None:
    line = _line(value, ensure_ascii=ensure_ascii)
    rec = json.loads(line)
    if plain_json_line(line):
        assert printable_record(rec) == rec
    # Every character printable() escapes makes the line not plain, however the writer spelled it.
    if value != printable_record(value):
        assert not plain_json_line(line)


def test_reader_printable_mode_escapes_only_what_needs_it(tmp_path) -> None:
    values = ["/a", "/esc\x1b]0;title\x07", "/b", "/bidi\u202eevil", "/del\x7f", "/c"]
    lines = [json.dumps(HEADER).encode()] + [_line(v, ensure_ascii=i % 2 == 0) for i, v in enumerate(values)]
    path = tmp_path / "frames.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    plain = list(LogReader(str(path), progress=False))
    escaped = list(LogReader(str(path), progress=False, printable=True))
    assert escaped == [printable_record(r) for r in plain]
    paths = [r["headers"][0][1] for r in escaped if r["record"] == "frame"]
    assert paths == ["/a", "/esc\\x1b]0;title\\x07", "/b", "/bidi\\u202eevil", "/del\\x7f", "/c"]
