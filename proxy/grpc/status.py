"""gRPC status codes by name, and the percent-encoding of ``grpc-message``.

The codes are those of the gRPC protocol (doc/statuscodes.md of the gRPC
project); ``grpc-message`` is percent-encoded UTF-8 as the gRPC-over-HTTP/2
spec says (``Percent-Encoded``: bytes outside 0x20..0x7E and ``%`` itself).
"""
from __future__ import annotations

from typing import Optional, Union

#: Status code -> name.
STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}


def status_name(code: Union[int, str, None]) -> str:
    """``14`` or ``"14"`` -> ``"UNAVAILABLE"``; an unknown number is shown as ``CODE_<n>``."""
    if code is None:
        return "none"
    try:
        n = int(code)
    except (TypeError, ValueError):
        return f"invalid({code!r})"
    return STATUS_NAMES.get(n, f"CODE_{n}")


def parse_status(value: Union[int, str]) -> int:
    """A status code from a number or a name (``"UNAVAILABLE"``, ``"unavailable"``, ``14``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a gRPC status code or name, not {value!r}")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip()
        if text.upper() in STATUS_CODES:
            return STATUS_CODES[text.upper()]
        try:
            n = int(text, 0)
        except ValueError:
            raise ValueError(f"unknown gRPC status {value!r}; use 0..16 or a name such as UNAVAILABLE "
                             f"({', '.join(STATUS_CODES)})") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"gRPC status {n} out of range")
    return n


def percent_decode(text: Optional[str]) -> str:
    """A ``grpc-message`` value as text: ``%XX`` sequences are UTF-8 bytes (bad ones are kept as they are)."""
    if not text:
        return ""
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and i + 3 <= len(raw) and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(b)
        i += 1
    return out.decode("utf-8", "replace")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def percent_encode(text: str) -> str:
    """Text as a ``grpc-message`` value."""
    out = []
    for b in text.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)
