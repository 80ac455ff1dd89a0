"""gRPC length-prefixed messages: reassembling them from DATA payloads, and framing them again.

Each message on a gRPC stream is a 5-byte prefix (a compressed flag byte and a
4-byte big-endian length) and the message bytes; DATA frame boundaries mean
nothing to it: a message may span many frames, a frame may hold several
messages. :class:`MessageReader` takes the payloads of one direction of one
stream, in order, and returns what completed. Memory is bounded by
``max_size``: a longer message is reported when its prefix arrives and its
bytes are skipped (or handed through, for a caller that forwards them).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import List, Optional, Union

PREFIX = struct.Struct(">BL")
PREFIX_SIZE = 5
#: The default maximum message size kept for decoding (gRPC's own default receive limit).
DEFAULT_MAX_MESSAGE = 4 << 20


@dataclass
class Message:
    """One complete message as it was on the wire (``data`` without the prefix, still compressed if it was)."""

    index: int             # 1 for the first message of this direction of the stream
    compressed: bool
    data: bytes
    flags: int = 0         # the whole flag byte (bits other than 0x01 are reserved)

    @property
    def length(self) -> int:
        return len(self.data)

    def wire(self) -> bytes:
        """Prefix and bytes, as they were received."""
        return PREFIX.pack(self.flags, len(self.data)) + self.data


@dataclass
class Oversized:
    """A message longer than the reader's maximum: reported at its prefix, its bytes not kept."""

    index: int
    compressed: bool
    length: int
    max_size: int


@dataclass
class Passthrough:
    """Bytes of an oversized message (prefix included), for a reader made with ``pass_oversized``."""

    data: bytes


Event = Union[Message, Oversized, Passthrough]


def frame_message(data: bytes, compressed: bool = False) -> bytes:
    """One message with its 5-byte prefix."""
    return PREFIX.pack(1 if compressed else 0, len(data)) + bytes(data)


class MessageReader:
    """Reassembles the messages of one direction of one gRPC stream (sans-I/O: payloads in, events out)."""

    __slots__ = ("max_size", "pass_oversized", "count", "_head", "_body", "_need", "_skip", "_flags", "_head_gone")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE, pass_oversized: bool = False) -> None:
        self.max_size = max_size
        self.pass_oversized = pass_oversized
        self.count = 0                  # messages started (complete or oversized)
        self._head = bytearray()        # prefix bytes so far
        self._body: Optional[bytearray] = None
        self._need = 0                  # bytes still due for the current message
        self._skip = 0                  # bytes of an oversized message still to skip
        self._flags = 0
        #: True when ``_head`` holds prefix bytes :meth:`skim` saw: they went on, the message is not kept.
        self._head_gone = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete prefix or message."""
        return len(self._head) + (len(self._body) if self._body is not None else 0)

    @property
    def in_message(self) -> bool:
        """Whether the bytes fed so far end inside a message (or its prefix)."""
        return bool(self._head) or self._body is not None or self._skip > 0

    def feed(self, data) -> List[Event]:
        """The payload of the next DATA frame (or part of it); returns what completed, in order."""
        events: List[Event] = []
        view = memoryview(bytes(data)) if not isinstance(data, (bytes, bytearray)) else memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                if self.pass_oversized:
                    events.append(Passthrough(bytes(view[pos:pos + n])))
                self._skip -= n
                pos += n
                continue
            if self._body is None:
                take = min(PREFIX_SIZE - len(self._head), end - pos)
                self._head += view[pos:pos + take]
                if self._head_gone and self.pass_oversized:
                    events.append(Passthrough(bytes(view[pos:pos + take])))   # (its start went on: so does this)
                pos += take
                if len(self._head) < PREFIX_SIZE:
                    break
                flags, length = PREFIX.unpack(bytes(self._head))
                prefix = bytes(self._head)
                self._head.clear()
                self.count += 1
                if self._head_gone:
                    # The prefix began in bytes that went on unseen (skim): the message goes by unkept.
                    self._head_gone = False
                    self._skip = length
                    continue
                if length > self.max_size:
                    events.append(Oversized(self.count, bool(flags & 1), length, self.max_size))
                    if self.pass_oversized:
                        events.append(Passthrough(prefix))
                    self._skip = length
                    continue
                self._flags = flags
                self._need = length
                self._body = bytearray()
                if not length:
                    events.append(self._complete())
                continue
            n = min(self._need, end - pos)
            self._body += view[pos:pos + n]
            self._need -= n
            pos += n
            if not self._need:
                events.append(self._complete())
        return events

    @property
    def keeping(self) -> bool:
        """Whether a message is being reassembled (its bytes so far are held here)."""
        return self._body is not None or (bool(self._head) and not self._head_gone)

    def skim(self, data) -> None:
        """Follow the message boundaries in bytes that go on unseen: messages are counted, nothing is kept.

        For a stream no handler looks at now but may later (a rule added at run time): :meth:`feed`
        then starts at the right place and with the right message numbers. Not while :attr:`keeping`.
        """
        if self.keeping:
            raise ValueError("skim() inside a message being reassembled: feed() it to its end first")
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                continue
            take = min(PREFIX_SIZE - len(self._head), end - pos)
            self._head += data[pos:pos + take]
            pos += take
            if len(self._head) < PREFIX_SIZE:
                self._head_gone = True
                break
            self._skip = int.from_bytes(self._head[1:5], "big")
            self._head.clear()
            self._head_gone = False
            self.count += 1

    def _complete(self) -> Message:
        body = bytes(self._body or b"")
        self._body = None
        return Message(self.count, bool(self._flags & 1), body, self._flags)

    def take_partial(self) -> bytes:
        """The bytes of an incomplete message (prefix included) and forget them: the stream ended inside one."""
        out = bytes(self._head)
        if self._body is not None:
            out += PREFIX.pack(self._flags, len(self._body) + self._need) + bytes(self._body)
        if self._head_gone:
            out = b""              # (those bytes went on already)
        self._head.clear()
        self._head_gone = False
        self._body = None
        self._need = 0
        self._skip = 0
        return out

    def leftover(self) -> Optional[str]:
        """Why the stream's end is bad for this direction (inside a prefix or a message), or None."""
        if self._head:
            return f"the stream ended inside a message prefix ({len(self._head)} of 5 bytes)"
        if self._body is not None:
            return (f"the stream ended inside message {self.count}: {len(self._body)} of "
                    f"{len(self._body) + self._need} bytes")
        if self._skip:
            return f"the stream ended inside oversized message {self.count} ({self._skip} bytes missing)"
        return None


class DecompressError(ValueError):
    """A compressed message could not be decompressed."""


def decompress(data: bytes, encoding: Optional[str], max_size: int = DEFAULT_MAX_MESSAGE) -> bytes:
    """A message's bytes with its ``grpc-encoding`` undone (``gzip``, ``deflate``, ``identity``).

    Raises :class:`DecompressError` naming the encoding and the problem, also
    when the result would exceed ``max_size`` (a compression bomb stays bounded).
    """
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        raise DecompressError("the compressed flag is set but grpc-encoding is identity (or absent)")
    if enc == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS      # zlib-wrapped (RFC 1950); a raw stream is tried below
    else:
        raise DecompressError(f"grpc-encoding {encoding!r} is not one h2proxy decodes (gzip, deflate)")
    for bits in ((wbits, -zlib.MAX_WBITS) if enc == "deflate" else (wbits,)):
        d = zlib.decompressobj(bits)
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error as exc:
            last = exc
            continue
        if len(out) > max_size:
            raise DecompressError(f"{enc} message inflates past the maximum message size {max_size}")
        if not d.eof:
            raise DecompressError(f"{enc} data of {len(data)} bytes is truncated")
        return out
    raise DecompressError(f"{enc} data of {len(data)} bytes does not decompress: {last}")


def compress(data: bytes, encoding: Optional[str]) -> bytes:
    """The inverse of :func:`decompress`, for a hook that re-frames a compressed message."""
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif enc == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    else:
        raise DecompressError(f"cannot compress with grpc-encoding {encoding!r}")
    return c.compress(data) + c.flush()
