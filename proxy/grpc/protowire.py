"""A schema-less protobuf wire-format decoder, for showing messages as ``protoc --decode_raw`` does.

Without the ``.proto`` the wire format still says a lot: each field is a tag
(field number and wire type) and a value: a varint, 64-bit, 32-bit, or a
length-delimited run that is a string, bytes, a packed array or a nested
message. :func:`decode_raw` parses a message into :class:`Field` s, taking a
length-delimited value as a nested message when it parses as one whole (and
is not plain text), as text when it is UTF-8 without control characters, else
as bytes. :func:`format_raw` prints the tree in protoc's layout. Bad input
raises :class:`WireError` naming the offset and the problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple, Union

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
WIRE_NAMES = {VARINT: "varint", I64: "i64", LEN: "len", SGROUP: "sgroup", EGROUP: "egroup", I32: "i32"}
#: Nesting deeper than this is shown as bytes (bounds the recursion on hostile input).
MAX_DEPTH = 32
MAX_FIELD = (1 << 29) - 1


class WireError(ValueError):
    """The bytes are not a protobuf message (the text names the offset and the problem)."""


@dataclass
class Field:
    """One field as found on the wire. ``value``: int (varint, i64, i32), str, bytes or a list of Field."""

    number: int
    wire_type: int
    value: Union[int, str, bytes, List["Field"]]

    @property
    def kind(self) -> str:
        if isinstance(self.value, list):
            return "group" if self.wire_type == SGROUP else "message"
        if isinstance(self.value, str):
            return "string"
        if isinstance(self.value, bytes):
            return "bytes"
        return WIRE_NAMES[self.wire_type]


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise WireError(f"varint at offset {start} runs past the end ({len(data)} bytes)")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint at offset {start} is longer than 10 bytes")


def decode_raw(data: bytes, depth: int = 0) -> List[Field]:
    """Parse ``data`` as a message; raises :class:`WireError` when it is not one."""
    fields, pos = _parse(bytes(data), 0, depth, None)
    return fields


def _parse(data: bytes, pos: int, depth: int, group: Union[int, None]) -> Tuple[List[Field], int]:
    fields: List[Field] = []
    end = len(data)
    while pos < end:
        tag_at = pos
        tag, pos = read_varint(data, pos)
        number, wt = tag >> 3, tag & 7
        if number == 0 or number > MAX_FIELD:
            raise WireError(f"field number {number} at offset {tag_at} is out of range 1..{MAX_FIELD}")
        if wt == VARINT:
            value, pos = read_varint(data, pos)
            fields.append(Field(number, wt, value))
        elif wt == I64:
            if pos + 8 > end:
                raise WireError(f"field {number} (i64) at offset {tag_at} runs past the end")
            fields.append(Field(number, wt, int.from_bytes(data[pos:pos + 8], "little")))
            pos += 8
        elif wt == I32:
            if pos + 4 > end:
                raise WireError(f"field {number} (i32) at offset {tag_at} runs past the end")
            fields.append(Field(number, wt, int.from_bytes(data[pos:pos + 4], "little")))
            pos += 4
        elif wt == LEN:
            n, pos = read_varint(data, pos)
            if pos + n > end:
                raise WireError(f"field {number} (len {n}) at offset {tag_at} runs past the end "
                                f"({end - pos} bytes left)")
            fields.append(Field(number, wt, _len_value(data[pos:pos + n], depth)))
            pos += n
        elif wt == SGROUP:
            if depth >= MAX_DEPTH:
                raise WireError(f"groups nested deeper than {MAX_DEPTH} at offset {tag_at}")
            inner, pos = _parse(data, pos, depth + 1, number)
            fields.append(Field(number, wt, inner))
        elif wt == EGROUP:
            if group != number:
                raise WireError(f"end of group {number} at offset {tag_at} without its start")
            return fields, pos
        else:
            raise WireError(f"field {number} at offset {tag_at} has wire type {wt}, which does not exist")
    if group is not None:
        raise WireError(f"group {group} is not closed")
    return fields, pos


def _len_value(chunk: bytes, depth: int):
    text = _as_text(chunk)
    if text is not None:
        return text
    if chunk and depth < MAX_DEPTH:
        try:
            return decode_raw(chunk, depth + 1)
        except WireError:
            pass
    return chunk


def _as_text(chunk: bytes):
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text) or "\x7f" in text:
        return None
    return text


_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def _quote(value: Union[str, bytes]) -> str:
    """A C-style quoted literal: text keeps its non-ASCII characters, bytes get octal escapes."""
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(ord(c), c) for c in value) + '"'
    return '"' + "".join(_ESCAPES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}") for b in value) + '"'


def format_raw(fields: List[Field], indent: str = "  ", limit: int = 2000) -> List[str]:
    """Lines in the layout of ``protoc --decode_raw`` (at most ``limit`` lines, then a note)."""
    lines: List[str] = []
    _format(fields, "", indent, lines, limit)
    if len(lines) > limit:
        del lines[limit:]
        lines.append("...")
    return lines


def _format(fields: List[Field], pre: str, indent: str, lines: List[str], limit: int) -> None:
    for f in fields:
        if len(lines) > limit:
            return
        v = f.value
        if isinstance(v, list):
            lines.append(f"{pre}{f.number} {{")
            _format(v, pre + indent, indent, lines, limit)
            lines.append(f"{pre}}}")
        elif isinstance(v, (str, bytes)):
            lines.append(f"{pre}{f.number}: {_quote(v)}")
        elif f.wire_type == I64:
            lines.append(f"{pre}{f.number}: 0x{v:016x}")
        elif f.wire_type == I32:
            lines.append(f"{pre}{f.number}: 0x{v:08x}")
        else:
            lines.append(f"{pre}{f.number}: {v}")


def to_json(fields: List[Field]) -> list:
    """The tree as JSON-able lists: ``[number, kind, value]`` (bytes as hex)."""
    out = []
    for f in fields:
        v = f.value
        if isinstance(v, list):
            v = to_json(v)
        elif isinstance(v, bytes):
            v = v.hex()
        out.append([f.number, f.kind, v])
    return out


def describe(data: bytes, limit: int = 2000) -> List[str]:
    """``data`` decoded as raw lines; when it is not a message, one line saying why (never raises)."""
    if not data:
        return ["(empty message)"]
    try:
        return format_raw(decode_raw(data), limit=limit)
    except WireError as exc:
        return [f"(not a protobuf message: {exc})"]


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_fields(fields: List[Field]) -> bytes:
    """The wire bytes of a field tree (the inverse of :func:`decode_raw`, for hooks that edit a message)."""
    out = bytearray()
    for f in fields:
        v = f.value
        if f.wire_type == SGROUP:
            out += _varint(f.number << 3 | SGROUP) + encode_fields(v) + _varint(f.number << 3 | EGROUP)
            continue
        out += _varint(f.number << 3 | f.wire_type)
        if f.wire_type == VARINT:
            out += _varint(v)
        elif f.wire_type == I64:
            out += int(v).to_bytes(8, "little")
        elif f.wire_type == I32:
            out += int(v).to_bytes(4, "little")
        else:
            body = encode_fields(v) if isinstance(v, list) else (v.encode("utf-8") if isinstance(v, str) else bytes(v))
            out += _varint(len(body)) + body
    return bytes(out)
