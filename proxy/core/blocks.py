"""Header blocks on the wire: one HPACK block as a HEADERS or PUSH_PROMISE frame and its CONTINUATIONs.

Everything the project does to a header block as bytes is here: taking the
fragments out of received frames (padding, priority and promised stream id
aside), telling whether what a hook sent still carries the received block,
encoding a header list with the proxy's own encoder, and cutting a block to
the receiver's SETTINGS_MAX_FRAME_SIZE. There is one splitter: the relay's
re-encoded blocks, a hook's oversized frame and the replayer's blocks all go
through :func:`block_frames` (or :func:`split_frame`, which keeps a frame
object's padding and priority on the first frame).

The frame headers are packed directly: a rewritten response costs one
``struct`` call and one join, not frame objects. Nothing here logs or
touches a connection: the relay reports what goes wrong.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Union

from framecodec import frame as fc
from framecodec.hpack import Decoder as HpackDecoder
from framecodec.hpack import Encoder as HpackEncoder
from framecodec.hpack import mark_never_indexed
from framecodec.reader import RawFrame, Wire

from ..hooks.api import Headers, RawBytes
from .protocol import CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PADDED, PRIORITY_FLAG, PUSH_PROMISE

_head = struct.Struct(">LBL")          # 24-bit length and 8-bit type, flags, stream id
_u32 = struct.Struct(">L")


def block_frames(stream_id: int, block: bytes, max_size: int, end_stream: bool = False,
                 promised_stream_id: Optional[int] = None, priority: Optional[bytes] = None) -> List[bytes]:
    """The frames carrying ``block`` on ``stream_id``: HEADERS (PUSH_PROMISE when ``promised_stream_id``
    is given), then CONTINUATIONs, none with a body above ``max_size``; END_HEADERS on the last.

    ``priority``: the 5 bytes of a HEADERS frame's priority fields (the PRIORITY flag is set).
    Stream ids are written as given (31 bits): in transparent mode a block on stream 0, or promising
    an odd stream, is forwarded as the sender made it.
    """
    sid = stream_id & 0x7FFFFFFF
    if promised_stream_id is not None:
        kind = PUSH_PROMISE
        prefix = _u32.pack(promised_stream_id & 0x7FFFFFFF)
        flags = 0
    else:
        kind = HEADERS
        prefix = priority or b""
        flags = (END_STREAM if end_stream else 0) | (PRIORITY_FLAG if priority else 0)
    room = max(max_size - len(prefix), 1)
    if len(block) <= room:
        body = prefix + block if prefix else block
        return [_head.pack((len(body) << 8) | kind, flags | END_HEADERS, sid) + body]
    first = prefix + block[:room]
    return [_head.pack((len(first) << 8) | kind, flags, sid) + first] + _continuations(sid, block, room, max_size)


def split_frame(frame: Union[fc.HeadersFrame, fc.PushPromiseFrame], max_size: int) -> List[bytes]:
    """A HEADERS or PUSH_PROMISE frame object whose block is too large for one frame: the frame (with
    its padding and priority, and as much of the block as leaves room for them) and CONTINUATIONs."""
    data = frame.data
    first_room = max_size - 20
    frame.data = data[:first_room]
    frame.flags.discard("END_HEADERS")
    return [frame.serialize()] + _continuations(frame.stream_id & 0x7FFFFFFF, data, first_room, max_size)


def _continuations(sid: int, block: bytes, pos: int, max_size: int) -> List[bytes]:
    """CONTINUATION frames for ``block[pos:]``, END_HEADERS on the last."""
    wires = []
    total = len(block)
    while pos < total:
        chunk = block[pos:pos + max_size]
        pos += max_size
        wires.append(_head.pack((len(chunk) << 8) | CONTINUATION, END_HEADERS if pos >= total else 0, sid) + chunk)
    return wires


# ------------------------------------------------------------------ received blocks

def fragment(f: RawFrame) -> bytes:
    """The header block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION frame."""
    p = f.payload
    if f.type == CONTINUATION:
        return bytes(p)
    start = 0
    end = len(p)
    if f.flags & PADDED:
        if not end:
            raise ValueError("PADDED frame without a pad length")
        end -= p[0]
        start = 1
    if f.type == HEADERS and f.flags & PRIORITY_FLAG:
        start += 5
    elif f.type == PUSH_PROMISE:
        start += 4
    if end < start:
        raise ValueError(f"padding of {p[0]} bytes longer than the frame body")
    return bytes(p[start:end])


def joined(frames: List[RawFrame]) -> bytes:
    """The whole header block of HEADERS/PUSH_PROMISE + CONTINUATION frames (ValueError: bad padding)."""
    return b"".join(fragment(f) for f in frames)


def frame_object(frames: List[RawFrame]) -> fc.Frame:
    """A frame object for a received frame, or for a whole header block: one HEADERS or PUSH_PROMISE
    holding the block, END_HEADERS set (FrameCodecError when the first frame does not parse)."""
    frame = frames[0].parse()
    # (Only a header block has more than one frame: its first is HEADERS or PUSH_PROMISE.)
    if len(frames) > 1 and isinstance(frame, (fc.HeadersFrame, fc.PushPromiseFrame)):
        frame.data = b"".join([frame.data] + [bytes(f.payload) for f in frames[1:]])
        frame.flags.add("END_HEADERS")
    return frame


def promised_id(f: RawFrame) -> int:
    """The promised stream id of a raw PUSH_PROMISE frame (its body holds one: checked before)."""
    off = 1 if f.flags & PADDED else 0
    promised: int = _u32.unpack_from(f.payload, off)[0]
    return promised & 0x7FFFFFFF


def map_promised(wire: Wire, flags: int, table: Dict[int, int]) -> Wire:
    """A raw PUSH_PROMISE frame with its promised stream id replaced by ``table``'s (when it has one)."""
    off = 10 if flags & PADDED else 9
    promised = _u32.unpack_from(wire, off)[0]
    new = table.get(promised & 0x7FFFFFFF)
    if new is None:
        return wire
    buf = bytearray(wire)
    _u32.pack_into(buf, off, (promised & 0x80000000) | new)
    return bytes(buf)


def block_intact(frames: List[RawFrame], result: Sequence[Any]) -> bool:
    """Whether a hook's result carries the received header block's bytes exactly once, in order."""
    sent = []
    for item in result:
        if isinstance(item, Headers):
            return True      # encoded by the proxy's own encoder, which resets the receiver's table
        if isinstance(item, (fc.HeadersFrame, fc.PushPromiseFrame, fc.ContinuationFrame)):
            sent.append(bytes(item.data))
    try:
        return b"".join(sent) == joined(frames)
    except ValueError:
        return False


def neutral_kept(frames: List[RawFrame], result: Sequence[Any]) -> bool:
    """Whether a hook's result holds no header block but copies of the received one, whole (a block that
    changed no HPACK table may be dropped or repeated so: the receiver's table stays in step)."""
    original: Optional[bytes] = None
    for item in result:
        if isinstance(item, (Headers, RawBytes, bytes, bytearray, memoryview, fc.ContinuationFrame)):
            return False
        if isinstance(item, (fc.HeadersFrame, fc.PushPromiseFrame)):
            if original is None:
                try:
                    original = joined(frames)
                except ValueError:
                    return False
            if bytes(item.data) != original or "END_HEADERS" not in item.flags:
                return False
    return True


# ------------------------------------------------------------------ the proxy's own encoding

def new_encoder(receiver_table_size: int) -> HpackEncoder:
    """An encoder for a direction the proxy re-encodes from now on: its first block empties the
    receiver's dynamic table (a size update to 0, then to what the receiver allows), so that the
    receiver's table matches the new encoder's."""
    enc = HpackEncoder()
    enc.header_table_size = 0
    enc.header_table_size = min(4096, receiver_table_size)
    return enc


def encode(enc: HpackEncoder, decoder: Optional[HpackDecoder], item: Headers, max_size: int) -> List[bytes]:
    """``item`` HPACK-encoded with ``enc`` and cut to ``max_size``. Fields the sender's block had
    never-indexed (``decoder`` saw them) go out never-indexed, even when a hook rebuilt the pairs."""
    headers = item.headers
    if decoder is not None and decoder.never_indexed_seen:
        headers = mark_never_indexed(headers, decoder.never_indexed_seen)
    return block_frames(item.stream_id, enc.encode(headers), max_size, bool(item.end_stream),
                        item.promised_stream_id)
