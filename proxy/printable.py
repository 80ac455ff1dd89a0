"""Text from peers made safe to print for people: every control character escaped.

Header names and values, ``:path``, GOAWAY debug data and the like come from
the peers. Written raw to a terminal, an ESC or BEL byte in them would let any
client or origin rewrite the operator's screen (move the cursor, change the
title, hide lines). Everything the proxy prints for people passes through
:func:`printable` first: C0 and C1 control characters and DEL become ``\\xNN``,
Unicode bidirectional overrides ``\\uNNNN`` (they reorder what is shown), and
bytes that were not UTF-8 (kept as surrogate escapes) ``\\xNN`` of the byte.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["printable", "printable_record", "plain_json_line"]

# C0 controls, DEL, C1 controls, bidi embeddings/overrides/isolates, surrogates (undecodable bytes).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: "re.Match[str]") -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:           # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped (unchanged, and fast, when there is none)."""
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape, text)


def printable_record(value: Any) -> Any:
    """A copy of a log record (dicts, lists, strings) with every string made :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_record(k): printable_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_record(v) for v in value]
    return value


def plain_json_line(line: bytes) -> bool:
    """Whether nothing a JSON line decodes to needs :func:`printable`: then :func:`printable_record` of its
    record would be an equal copy, and a reader of a large log can skip making it.

    The test is on the bytes, a few C scans: ASCII only (no C1 control, bidi control or undecodable byte
    can be written raw), no backslash (no escape sequence, so no ``\\u001b`` either) and no DEL (the one
    ASCII control JSON lets through raw). Raw C0 controls are not looked for: a strict JSON parser (msgspec,
    the standard library's ``json``) refuses them inside strings, and between tokens only whitespace is
    allowed, which ends up in no string.
    """
    return line.isascii() and b"\\" not in line and b"\x7f" not in line
