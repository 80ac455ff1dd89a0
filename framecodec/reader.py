"""A streaming reader that splits one direction of an HTTP/2 connection into frames.

Bytes arrive from a socket in chunks that have nothing to do with frame
boundaries. :class:`FrameReader` takes those chunks and hands back whole frames
as :class:`RawFrame` objects: the 9-byte header decoded into plain ints, and the
frame's exact wire bytes (header included) as a zero-copy ``memoryview`` of the
chunk. Only a frame that spans chunks is copied, once, when it completes. No
``Frame`` object is built unless a caller asks for one (:meth:`RawFrame.parse`),
which keeps the proxy's path for untouched frames short.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

from .exceptions import FrameTooLargeError, PrefaceError

if TYPE_CHECKING:
    from .frame import Frame

#: The client connection preface, RFC 9113 section 3.4.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Reads ``length << 8 | type``, ``flags`` and ``R + stream id`` in one call.
_HEADER = struct.Struct(">LBL")
_unpack_header = _HEADER.unpack_from
#: ``unpack_header(buffer, offset)``: a frame header's ``(length << 8 | type, flags, R + stream id)``, for
#: callers of :meth:`FrameReader.take` that walk the frames themselves.
unpack_header = _unpack_header

#: The default SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2).
DEFAULT_MAX_FRAME_SIZE = 16384

#: A chunk of bytes as a socket or a caller hands it over.
Chunk = Union[bytes, bytearray, memoryview]
#: A frame's wire bytes: a view of the chunk it arrived in, or bytes when it spanned chunks.
Wire = Union[bytes, memoryview]


_EMPTY = memoryview(b"")


def _view(view: memoryview) -> memoryview:
    return view


class RawFrame:
    """One complete frame as it was on the wire.

    ``wire`` holds header and payload exactly as received (the reserved stream
    id bit and undefined flags included), so forwarding ``wire`` forwards the
    frame unchanged.
    """

    __slots__ = ("type", "flags", "stream_id", "length", "wire")

    def __init__(self, type: int, flags: int, stream_id: int, length: int, wire: Wire) -> None:
        self.type = type
        self.flags = flags
        self.stream_id = stream_id
        self.length = length
        self.wire = wire

    @property
    def payload(self) -> memoryview:
        """The frame body (everything after the 9-byte header)."""
        return memoryview(self.wire)[9:]

    @property
    def reserved_bit(self) -> bool:
        return bool(self.wire[5] & 0x80)

    def parse(self, strict: bool = False) -> Frame:
        """Build the full :class:`framecodec.frame.Frame` for this frame."""
        from .frame import Frame

        frame, length = Frame.parse_frame_header(memoryview(self.wire)[:9], strict=strict)
        frame.parse_body(memoryview(self.wire)[9:9 + length])
        return frame

    def __repr__(self) -> str:
        return (f"RawFrame(type=0x{self.type:02X}, flags=0x{self.flags:02X}, "
                f"stream_id={self.stream_id}, length={self.length})")


#: One frame as :meth:`FrameReader.feed_fields` gives it: ``(type, flags, stream_id, length, wire)``.
FrameFields = Tuple[int, int, int, int, Wire]


class FrameReader:
    """Turns one direction's byte stream into :class:`RawFrame` objects.

    ``expect_preface`` is set on the server side of a connection (bytes from a
    client): the first 24 bytes must be the connection preface, checked as they
    arrive so that an HTTP/1.1 request is refused at its first byte. Frames
    longer than ``max_frame_size`` raise :class:`FrameTooLargeError` as soon as
    their header is seen; nothing longer is ever buffered, so memory held per
    reader is bounded by ``max_frame_size + 9``.
    """

    __slots__ = ("max_frame_size", "preface_pending", "_preface_seen", "_pending", "_pending_len",
                 "_need", "_header", "bytes_in", "frames_in", "_keep")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, expect_preface: bool = False) -> None:
        self.max_frame_size = max_frame_size
        #: True until the whole preface has been read (only when expected).
        self.preface_pending = expect_preface
        self._preface_seen = b""
        self._pending: List[Wire] = []  # chunks of an incomplete frame
        self._pending_len = 0
        self._need = 9                # bytes the incomplete frame needs in all
        self._header: Optional[Tuple[int, int, int, int]] = None  # (type, flags, stream id, length)
        self.bytes_in = 0
        self.frames_in = 0
        self._keep: Callable[[memoryview], Wire] = bytes   # (how the last chunk's bytes are kept: _start)

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return self._pending_len + len(self._preface_seen)

    def feed(self, data: Chunk) -> List[RawFrame]:
        """Take the next chunk; return the frames it completes, in order.

        When a frame is too large, :class:`FrameTooLargeError` is raised and its
        ``frames`` attribute holds the complete frames that came before it.
        """
        try:
            return [RawFrame(*fields) for fields in self.feed_fields(data)]
        except FrameTooLargeError as exc:
            exc.frames = [RawFrame(*fields) for fields in exc.frames]
            raise

    def feed_fields(self, data: Chunk) -> List[FrameFields]:
        """Like :meth:`feed`, but each frame is a plain tuple ``(type, flags, stream_id, length, wire)``.

        A tuple costs a fraction of an object to make and to read; a relay that
        forwards most frames untouched uses this and builds :class:`RawFrame`
        (``RawFrame(*fields)``) only for the frames it looks into.
        """
        frames: List[FrameFields] = []
        try:
            return self._feed(data, frames)
        except FrameTooLargeError as exc:
            exc.frames = frames
            raise

    def take(self, data: Chunk) -> Tuple[List[FrameFields], memoryview, int]:
        """Take the next chunk without splitting it: for a caller that walks the frames itself.

        Returns the frame that the last chunks left open and this one completes (a list of none or
        one), and ``data`` as a view with the offset of its first frame after that. The caller walks
        the frames from there and then hands back what it did not process: :meth:`rest`. Raises as
        :meth:`feed_fields` does (an oversized frame left open: ``exc.frames`` is empty).
        """
        frames: List[FrameFields] = []
        try:
            view, pos = self._start(data, frames)
        except FrameTooLargeError as exc:
            exc.frames = frames
            raise
        self.frames_in += len(frames)
        return frames, view, pos

    def rest(self, view: memoryview, pos: int, walked: int = 0) -> List[FrameFields]:
        """The caller of :meth:`take` walked ``walked`` complete frames of ``view`` up to ``pos``: split the
        rest into frames for it and keep an incomplete last frame for the next chunk (as :meth:`feed_fields`)."""
        frames: List[FrameFields] = []
        if pos < len(view):
            try:
                self._split(view, pos, frames, self._keep)
            except FrameTooLargeError as exc:
                exc.frames = frames
                raise
        self.frames_in += walked + len(frames)
        return frames

    def _feed(self, data: Chunk, frames: List[FrameFields]) -> List[FrameFields]:
        view, pos = self._start(data, frames)
        if pos < len(view):
            self._split(view, pos, frames, self._keep)
        self.frames_in += len(frames)
        return frames

    def _start(self, data: Chunk, frames: List[FrameFields]) -> Tuple[memoryview, int]:
        """Read the preface, then complete the frame left open, if ``data`` holds the rest of it (into
        ``frames``); return ``data`` as a view and where its first frame after that starts."""
        self.bytes_in += len(data)
        if self.preface_pending:
            data = self._read_preface(data)
            if not data:
                return _EMPTY, 0
        view = memoryview(data)
        # Immutable chunks can be held as views; anything else is copied before it is kept.
        keep: Callable[[memoryview], Wire] = _view if isinstance(data, (bytes, memoryview)) else bytes
        self._keep = keep
        size = len(view)
        pos = 0
        while self._pending_len:
            # Complete the frame (or header) that the last chunk left open.
            have = self._pending_len
            avail = size - pos
            if have + avail < self._need:
                if avail:
                    self._pending.append(keep(view[pos:]))
                    self._pending_len = have + avail
                return view, size
            take = self._need - have
            self._pending.append(view[pos:pos + take])
            pos += take
            joined = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
            self._need = 9
            header = self._header
            if header is None:
                lt, flags, sid = _unpack_header(joined)
                length = lt >> 8
                if length > self.max_frame_size:
                    raise FrameTooLargeError(lt & 0xFF, sid & 0x7FFFFFFF, length, self.max_frame_size)
                if length:
                    self._header = (lt & 0xFF, flags, sid & 0x7FFFFFFF, length)
                    self._need = 9 + length
                    self._pending = [joined]
                    self._pending_len = 9
                    continue
                frames.append((lt & 0xFF, flags, sid & 0x7FFFFFFF, 0, joined))
            else:
                self._header = None
                frames.append((header[0], header[1], header[2], header[3], joined))
        return view, pos

    def _split(self, view: memoryview, pos: int, frames: List[FrameFields],
               keep: Callable[[memoryview], Wire] = bytes) -> None:
        """Split ``view[pos:]``, which starts on a frame boundary, into ``frames``."""
        append = frames.append
        size = len(view)
        max_len = self.max_frame_size
        while size - pos >= 9:
            lt, flags, sid = _unpack_header(view, pos)
            length = lt >> 8
            if length > max_len:
                raise FrameTooLargeError(lt & 0xFF, sid & 0x7FFFFFFF, length, max_len)
            end = pos + 9 + length
            if end > size:
                # A frame whose body has not fully arrived: keep what is here.
                self._header = (lt & 0xFF, flags, sid & 0x7FFFFFFF, length)
                self._need = 9 + length
                self._pending = [keep(view[pos:])]
                self._pending_len = size - pos
                return
            append((lt & 0xFF, flags, sid & 0x7FFFFFFF, length, view[pos:end]))
            pos = end
        if pos < size:
            self._header = None
            self._need = 9
            self._pending = [keep(view[pos:])]
            self._pending_len = size - pos

    def _read_preface(self, data: Chunk) -> Chunk:
        seen = self._preface_seen
        want = len(PREFACE) - len(seen)
        head = bytes(data[:want])
        seen += head
        if PREFACE[:len(seen)] != seen:
            raise PrefaceError(seen)
        if len(seen) < len(PREFACE):
            self._preface_seen = seen
            return b""
        self._preface_seen = b""
        self.preface_pending = False
        return memoryview(data)[want:]
