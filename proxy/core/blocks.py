"""Header blocks on the wire: one HPACK block as a HEADERS or PUSH_PROMISE frame and its CONTINUATIONs.

The relay re-encodes header blocks (a hook changed one, or a direction is
re-encoded since) and has them cut to the receiver's SETTINGS_MAX_FRAME_SIZE
here. The frame headers are packed directly: a rewritten response costs one
``struct`` call and one join, not frame objects.
"""
from __future__ import annotations

import struct
from typing import List, Optional

from .protocol import CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PUSH_PROMISE

_head = struct.Struct(">LBL")          # 24-bit length and 8-bit type, flags, stream id
_u32 = struct.Struct(">L")


def block_frames(stream_id: int, block: bytes, max_size: int, end_stream: bool = False,
                 promised_stream_id: Optional[int] = None) -> List[bytes]:
    """The frames carrying ``block`` on ``stream_id``: HEADERS (PUSH_PROMISE when ``promised_stream_id``
    is given), then CONTINUATIONs, none with a body above ``max_size``; END_HEADERS on the last.

    Stream ids are written as given (31 bits): in transparent mode a block on stream 0, or promising
    an odd stream, is forwarded as the sender made it.
    """
    sid = stream_id & 0x7FFFFFFF
    if promised_stream_id is not None:
        kind = PUSH_PROMISE
        prefix = _u32.pack(promised_stream_id & 0x7FFFFFFF)
        room = max_size - 4
        flags = 0
    else:
        kind = HEADERS
        prefix = b""
        room = max_size
        flags = END_STREAM if end_stream else 0
    if len(block) <= room:
        body = prefix + block if prefix else block
        return [_head.pack((len(body) << 8) | kind, flags | END_HEADERS, sid) + body]
    first = prefix + block[:room]
    wires = [_head.pack((len(first) << 8) | kind, flags, sid) + first]
    pos = room
    total = len(block)
    while pos < total:
        chunk = block[pos:pos + max_size]
        pos += max_size
        wires.append(_head.pack((len(chunk) << 8) | CONTINUATION, END_HEADERS if pos >= total else 0, sid) + chunk)
    return wires
