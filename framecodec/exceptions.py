"""Exceptions raised by framecodec.

Every error the codec raises derives from :class:`FrameCodecError`, so a caller
that feeds untrusted bytes needs to catch exactly one class. Messages name the
frame type, the stream id, the field and the offending value.
"""
from __future__ import annotations

from typing import Any, List, Optional


class FrameCodecError(Exception):
    """Base class of every framecodec error.

    Errors about one frame's field also say, as attributes, which frame type, stream,
    field and value (``None`` where the error is not about one field).
    """

    frame_type: Optional[int] = None
    stream_id: Optional[int] = None
    field: Optional[str] = None
    value: Any = None


#: The name hyperframe uses for its base class, so ported code keeps working.
HyperframeError = FrameCodecError


class UnknownFrameError(FrameCodecError):
    """A frame of a type this codec does not know was parsed in strict mode."""

    def __init__(self, frame_type: int, length: int, stream_id: "int | None" = None) -> None:
        self.frame_type = frame_type
        self.length = length
        #: The stream the frame was on, when the caller knows it.
        self.stream_id = stream_id
        where = f" on stream {stream_id}" if stream_id is not None else ""
        super().__init__(
            f"UnknownFrameError: unknown frame type 0x{frame_type:02X} received{where}, length {length} bytes"
        )


class InvalidPaddingError(FrameCodecError):
    """The padding of a PADDED frame is as long as, or longer than, its body."""


class InvalidFrameError(FrameCodecError):
    """The bytes do not form a valid frame (bad length, truncated body, ...)."""


class InvalidDataError(FrameCodecError):
    """A field holds a value the protocol does not allow."""


class FrameTooLargeError(InvalidFrameError):
    """A frame's length exceeds the receiver's maximum frame size (RFC 9113 4.2: FRAME_SIZE_ERROR)."""

    def __init__(self, frame_type: int, stream_id: int, length: int, max_frame_size: int) -> None:
        #: The complete frames that came before this one in the chunk: :class:`RawFrame`
        #: objects from ``FrameReader.feed``, field tuples from ``FrameReader.feed_fields``.
        self.frames: List[Any] = []
        self.frame_type = frame_type
        self.stream_id = stream_id
        self.length = length
        self.max_frame_size = max_frame_size
        super().__init__(
            f"frame type 0x{frame_type:02X} on stream {stream_id}: length field {length} "
            f"exceeds the maximum frame size {max_frame_size} (FRAME_SIZE_ERROR, RFC 9113 section 4.2)"
        )


class PrefaceError(FrameCodecError):
    """The client connection preface (RFC 9113 3.4) is missing or wrong."""

    def __init__(self, received: bytes) -> None:
        self.received = bytes(received)
        methods = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ",
                   b"TRACE ")
        head = self.received[:8]
        looks_http1 = bool(head) and any(m.startswith(head) or head.startswith(m) for m in methods)
        hint = " (this looks like an HTTP/1.1 request)" if looks_http1 else ""
        super().__init__(
            f"connection preface: expected b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n', "
            f"received {self.received[:24]!r}{hint}"
        )
