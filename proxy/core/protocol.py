"""Constants of RFC 9113 the core refers to by name: frame types, flags, error codes, settings."""
from __future__ import annotations

from enum import IntEnum

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6, RFC 7838 section 4).
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION,
 ALTSVC) = range(11)

FRAME_NAMES = {
    DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION", ALTSVC: "ALTSVC",
}
#: Hook method suffix per frame type: ``on_data``, ``on_headers``, ... ``on_extension`` for the rest.
HOOK_SUFFIX = {t: n.lower() for t, n in FRAME_NAMES.items()}

# Flags.
END_STREAM = 0x01
ACK = 0x01
END_HEADERS = 0x04
PADDED = 0x08
PRIORITY_FLAG = 0x20


def frame_name(frame_type: int) -> str:
    return FRAME_NAMES.get(frame_type) or f"0x{frame_type:02X}"


class ErrorCode(IntEnum):
    """Error codes, RFC 9113 section 7."""
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:X}"


def parse_error_code(value: int | str) -> int:
    """Accept ``"REFUSED_STREAM"``, ``"refused_stream"``, ``7`` or ``"0x7"``; raise ValueError otherwise."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return ErrorCode[text.upper()].value
    except KeyError:
        pass
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"unknown error code {value!r}; use a name such as "
                         f"{', '.join(c.name for c in ErrorCode)} or a number") from None


class Setting(IntEnum):
    """SETTINGS identifiers, RFC 9113 section 6.5.2 and RFC 8441."""
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


def setting_name(ident: int) -> str:
    try:
        return "SETTINGS_" + Setting(ident).name
    except ValueError:
        return f"0x{ident:02X}"


#: The value of each setting before the peer's first SETTINGS frame (RFC 9113 6.5.2).
INITIAL_SETTINGS = {
    Setting.HEADER_TABLE_SIZE: 4096,
    Setting.ENABLE_PUSH: 1,
    Setting.MAX_CONCURRENT_STREAMS: 2 ** 31 - 1,  # "initially, there is no limit"
    Setting.INITIAL_WINDOW_SIZE: 65535,
    Setting.MAX_FRAME_SIZE: 16384,
    Setting.MAX_HEADER_LIST_SIZE: 2 ** 31 - 1,
}

MAX_WINDOW = 2 ** 31 - 1
DEFAULT_WINDOW = 65535
