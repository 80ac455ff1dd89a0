"""HTTP/2 frames: one class per frame type, parsing and serialization.

The API is the one Python HTTP/2 code knows from ``hyperframe.frame``; on top
of it this codec

* round-trips byte for byte: a frame that parses without error serializes back
  to exactly the bytes it came from, flag bits no frame type defines, the
  reserved bit of the stream id (and of the stream ids inside PUSH_PROMISE and
  GOAWAY bodies), non-zero padding bytes and the order and duplicates of
  SETTINGS parameters included;
* raises only :mod:`framecodec.exceptions` errors on malformed input, each
  naming the frame type, the stream, the field and the offending value (the
  exception also carries them as ``frame_type``, ``stream_id``, ``field`` and
  ``value`` attributes);
* is built for a proxy's hot path: ``__slots__`` everywhere, precompiled
  ``struct`` objects working on memoryviews, frames made by
  :meth:`Frame.parse_frame_header` without running ``__init__``, and the
  :class:`~framecodec.flags.Flags` set built only when ``.flags`` is read.

Wire format: RFC 9113 sections 4 and 6; ALTSVC: RFC 7838 section 4.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Type, TypeVar

from .exceptions import (
    FrameCodecError,
    InvalidDataError,
    InvalidFrameError,
    InvalidPaddingError,
    UnknownFrameError,
)
from .flags import Flag, Flags

__all__ = [
    "FRAME_MAX_LEN", "FRAME_MAX_ALLOWED_LEN", "FRAMES",
    "Frame", "Padding", "Priority",
    "DataFrame", "HeadersFrame", "PriorityFrame", "RstStreamFrame", "SettingsFrame",
    "PushPromiseFrame", "PingFrame", "GoAwayFrame", "WindowUpdateFrame",
    "ContinuationFrame", "AltSvcFrame", "ExtensionFrame",
]

#: The largest frame body a peer must accept before SETTINGS_MAX_FRAME_SIZE says otherwise.
FRAME_MAX_LEN = 2 ** 14
#: The largest body the 24-bit length field can describe.
FRAME_MAX_ALLOWED_LEN = 2 ** 24 - 1

_STREAM_ASSOC_HAS_STREAM = "has-stream"
_STREAM_ASSOC_NO_STREAM = "no-stream"
_STREAM_ASSOC_EITHER = "either"
_ASSOC_CODES: Dict[Optional[str], int] = {_STREAM_ASSOC_HAS_STREAM: 1, _STREAM_ASSOC_NO_STREAM: 2}

# Precompiled layouts. The header is read as (length << 8 | type, flags, R + stream id).
_HEADER = struct.Struct(">LBL")
_unpack_header = _HEADER.unpack
_pack_header = _HEADER.pack
_U32 = struct.Struct(">L")
_U32_PAIR = struct.Struct(">LL")
_U16 = struct.Struct(">H")
_U8 = struct.Struct(">B")
_PRIORITY = struct.Struct(">LB")
_SETTING = struct.Struct(">HL")
_unpack_u32 = _U32.unpack_from
_pack_u32 = _U32.pack
_iter_settings = _SETTING.iter_unpack
_pack_setting = _SETTING.pack
# Whole small frames in one call: header + u32 (RST_STREAM, WINDOW_UPDATE), header +
# priority (PRIORITY), header + 8 bytes (PING), header + last stream id + error code (GOAWAY).
_pack_header_u32 = struct.Struct(">LBLL").pack
_pack_header_priority = struct.Struct(">LBLLB").pack
_pack_header_ping = struct.Struct(">LBL8s").pack
_pack_header_goaway = struct.Struct(">LBLLL").pack

_R_BIT = 0x80000000
#: DATA payloads at least this long are kept as a view by parse_body (see DataFrame).
_LAZY_MIN = 1024
_SID_MASK = 0x7FFFFFFF

_new = object.__new__


def _raw_data_repr(data: Any) -> str:
    """``<hex:...>`` of at most the first 10 bytes (20 hex digits), or ``None`` when empty."""
    if not data:
        return "None"
    head = bytes(data[:10]).hex()
    return f"<hex:{head}...>" if len(data) > 10 else f"<hex:{head}>"


def _fail(exc_class: Type[FrameCodecError], frame: "Frame", field: str, detail: str,
          value: Any) -> FrameCodecError:
    """An exception whose message and attributes name the frame, stream, field and value."""
    err = exc_class(f"{frame._describe()}: {detail} (field: {field})")
    err.frame_type = frame.type
    err.stream_id = frame.stream_id
    err.field = field
    err.value = value
    return err


class Frame:
    """The base class of every HTTP/2 frame.

    ``stream_id`` is the 31-bit stream identifier, ``body_len`` the length of
    the body last parsed or serialized, and ``flags`` the set of flag names
    (a :class:`~framecodec.flags.Flags` built on first access).
    """

    __slots__ = ("stream_id", "body_len", "_flag_bits", "_flags", "_reserved")
    stream_id: int
    body_len: int
    _flag_bits: int             # the flags byte as received or built (see _flag_byte)
    _flags: Optional[Flags]     # the Flags set, once .flags has been read
    _reserved: int              # the reserved stream-id bit, in place (0 or 0x80000000)

    #: The flags defined on this type of frame.
    defined_flags: List[Flag] = []
    #: The type byte of this kind of frame.
    type: Optional[int] = None
    #: "has-stream": stream id must be non-zero; "no-stream": must be zero; "either".
    stream_association: Optional[str] = None
    #: The name RFC 9113 gives this frame type, used in error messages.
    _type_name = "frame"
    #: (attribute, field name, width in bits) of the integer fields, for serialization errors.
    _int_fields: Tuple[Tuple[str, str, int], ...] = ()
    #: True (in its own class body) for a class whose frames parse_frame_header may
    #: make without running __init__, because its parse_body sets every field.
    _fast_header = False

    # Per-class data derived from the class attributes above (see _setup_class).
    _flag_map: Dict[str, int] = {}
    _defined_mask = 0
    _assoc = 0
    #: How parse_frame_header builds this class: 0 through __init__, else without it
    #: and checking the stream id (1: any, 2: must be non-zero, 3: must be zero).
    _parse_mode = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes serialize_body gets the generic serialize, not a
        # parent's specialised one that does not call serialize_body.
        if "serialize_body" in cls.__dict__ and "serialize" not in cls.__dict__ \
                and getattr(cls.serialize, "_specialised", False):
            cls.serialize = Frame.serialize  # type: ignore[method-assign]  # on purpose: undo the specialisation
        cls._setup_class()

    @classmethod
    def _setup_class(cls) -> None:
        cls._flag_map = {name: bit for name, bit in cls.defined_flags}
        mask = 0
        for bit in cls._flag_map.values():
            mask |= bit
        cls._defined_mask = mask & 0xFF
        cls._assoc = _ASSOC_CODES.get(cls.stream_association, 0)
        # parse_frame_header may skip __init__ only for a class whose __init__
        # comes from a class that says so, and that parses flags the usual way.
        init_owner = next(k for k in cls.__mro__ if "__init__" in k.__dict__)
        fast = init_owner.__dict__.get("_fast_header", False) and cls.parse_flags is Frame.parse_flags
        cls._parse_mode = (cls._assoc + 1) if fast else 0

    def __init__(self, stream_id: int, flags: Iterable[str] = ()) -> None:
        self.stream_id = stream_id
        self.body_len = 0
        self._reserved = 0
        self._flags = None
        bits = 0
        if flags:
            flag_map = self._flag_map
            for name in flags:
                bit = flag_map.get(name)
                if bit is None:
                    raise ValueError(f"Unexpected flag: {name}. Valid flags are: {sorted(flag_map)}")
                bits |= bit
        self._flag_bits = bits
        if self._assoc:
            self._check_stream(stream_id)

    def __getstate__(self) -> Dict[str, Any]:
        state = {}
        for k in type(self).__mro__:
            for name in k.__dict__.get("__slots__", ()):
                try:
                    state[name] = object.__getattribute__(self, name)
                except AttributeError:
                    pass
        for name, value in state.items():
            if isinstance(value, memoryview):
                state[name] = value.tobytes()
        if state.get("_flags") is not None:
            # Keep copies independent: the copy gets its own Flags.
            state["_flag_bits"] = Frame._flag_byte(self)
            state["_flags"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    # --- flags -----------------------------------------------------------------

    @property
    def flags(self) -> Flags:
        """The set of flag names this frame carries."""
        f = self._flags
        if f is None:
            f = self._flags = Flags._from_bits(self._flag_map, self._flag_bits)
        return f

    @flags.setter
    def flags(self, value: Iterable[str]) -> None:
        if not isinstance(value, Flags):
            names = value
            value = Flags._from_bits(self._flag_map, 0)
            for name in names:
                value.add(name)
        self._flags = value

    def _flag_byte(self) -> int:
        """The flags byte as it goes on the wire (undefined bits included)."""
        f = self._flags
        if f is None:
            return self._flag_bits
        return (self._flag_bits & ~self._defined_mask & 0xFF) | f._bits()

    @property
    def undefined_flags(self) -> int:
        """Flag bits this frame type does not define (kept so that they round-trip)."""
        return self._flag_bits & ~self._defined_mask & 0xFF

    @undefined_flags.setter
    def undefined_flags(self, value: int) -> None:
        mask = self._defined_mask
        self._flag_bits = (self._flag_bits & mask) | (value & ~mask & 0xFF)

    @property
    def reserved_bit(self) -> bool:
        """The reserved bit in front of the stream id (RFC 9113 4.1), as received."""
        return bool(self._reserved)

    @reserved_bit.setter
    def reserved_bit(self, value: bool) -> None:
        self._reserved = _R_BIT if value else 0

    def parse_flags(self, flag_byte: int) -> Flags:
        """Add the flags set in ``flag_byte``; return the frame's :class:`Flags`."""
        self._flag_bits = self._flag_byte() | flag_byte
        self._flags = None
        return self.flags

    # --- description -----------------------------------------------------------

    def _describe(self) -> str:
        return f"{self._type_name} frame on stream {self.stream_id}"

    def _check_stream(self, stream_id: int) -> None:
        if self._assoc == 1:
            if not stream_id:
                raise _fail(InvalidDataError, self, "stream id",
                            f"stream id 0, expected a non-zero stream id "
                            f"({self._type_name} frames belong to a stream)", stream_id)
        elif self._assoc == 2 and stream_id:
            raise _fail(InvalidDataError, self, "stream id",
                        f"stream id {stream_id}, expected 0 "
                        f"({self._type_name} frames belong to the connection)", stream_id)

    def __repr__(self) -> str:
        try:
            body = self._body_repr()
        except AttributeError:
            # A frame from parse_frame_header whose parse_body has not run (or failed).
            body = "<body not parsed>"
        return f"{type(self).__name__}(stream_id={self.stream_id}, flags={self.flags!r}): {body}"

    def _body_repr(self) -> str:
        return _raw_data_repr(self.serialize_body())

    # --- parsing -----------------------------------------------------------------

    @staticmethod
    def explain(data: Any) -> Tuple["Frame", int]:
        """Parse the one whole frame at the start of ``data``, print it, return ``(frame, length)``."""
        view = memoryview(data)
        frame, length = Frame.parse_frame_header(view[:9])
        body = view[9:9 + length]
        if len(body) < length:
            raise _fail(InvalidFrameError, frame, "length",
                        f"length {length}, but the buffer holds only {len(body)} body bytes", length)
        frame.parse_body(body)
        print(frame)  # noqa: T201 - printing is this method's job
        return frame, length

    @staticmethod
    def parse_frame_header(header: Any, strict: bool = False) -> Tuple["Frame", int]:
        """Decode the 9-byte frame header; return ``(frame, body length)``.

        The frame has its stream id and flags; its body fields come from
        :meth:`parse_body` (the frame is made without running ``__init__``).
        A type this codec does not know gives an :class:`ExtensionFrame`, or
        :class:`UnknownFrameError` when ``strict``. A frame type that must (or
        must not) be on a stream raises :class:`InvalidDataError` for the wrong
        stream id, as hyperframe does.
        """
        try:
            word, flag_byte, sid = _unpack_header(header)
            cls = FRAMES[word & 0xFF]
            mode = cls._parse_mode
        except struct.error:
            raw = bytes(header)
            raise InvalidFrameError(
                f"frame header: {len(raw)} bytes <hex:{raw[:16].hex()}>, expected exactly 9 "
                f"(field: frame header)") from None
        except KeyError:
            # A type this codec does not know.
            if strict:
                raise UnknownFrameError(word & 0xFF, word >> 8, stream_id=sid & 0x7FFFFFFF) from None
            ext: ExtensionFrame = _new(ExtensionFrame)
            ext.stream_id = sid & 0x7FFFFFFF
            ext._flag_bits = 0
            ext._flags = None
            ext._reserved = sid & 0x80000000
            ext.type = word & 0xFF
            ext.flag_byte = flag_byte
            return ext, word >> 8
        except AttributeError:
            mode = 0  # a class registered in FRAMES that is not a Frame subclass
        frame: Frame
        if mode:
            frame = _new(cls)
            frame.stream_id = stream_id = sid & 0x7FFFFFFF
            frame._flag_bits = flag_byte
            frame._flags = None
            frame._reserved = sid & 0x80000000
            if mode == 2:
                if not stream_id:
                    frame._check_stream(0)
            elif mode == 3 and stream_id:
                frame._check_stream(stream_id)
            return frame, word >> 8
        # A class someone registered in FRAMES with its own __init__ or parse_flags.
        frame = cls(sid & 0x7FFFFFFF)
        frame.parse_flags(flag_byte)
        if isinstance(frame, Frame):
            frame._reserved = sid & 0x80000000
            frame._flag_bits |= flag_byte & ~frame._defined_mask & 0xFF
        return frame, word >> 8

    def parse_body(self, data: memoryview) -> None:
        """Fill in the body fields from ``data`` (exactly the frame's body)."""
        raise NotImplementedError

    # --- serialization -----------------------------------------------------------

    def serialize_body(self) -> bytes:
        """The frame body as bytes."""
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The whole frame, header and body; sets ``body_len``."""
        try:
            body = self.serialize_body()
            n = self.body_len = len(body)
            t = self.type
            if t is None:
                raise NotImplementedError(f"{type(self).__name__} has no frame type: it cannot be serialized")
            return _pack_header((n << 8) | t, self._flag_byte(),
                                (self.stream_id & _SID_MASK) | self._reserved) + body
        except struct.error as err:
            raise self._pack_error(err) from None

    def _pack_error(self, err: Exception) -> FrameCodecError:
        """Find the field whose value would not fit on the wire."""
        n = self.body_len
        if n > FRAME_MAX_ALLOWED_LEN:
            return _fail(InvalidFrameError, self, "length",
                         f"body length {n}, more than the 24-bit length field can hold "
                         f"({FRAME_MAX_ALLOWED_LEN})", n)
        for attr, field, width in self._int_fields:
            value = getattr(self, attr, None)
            if not isinstance(value, int) or not 0 <= value < (1 << width):
                return _fail(InvalidDataError, self, field,
                             f"{field} {value!r}, expected an integer in 0..{(1 << width) - 1}", value)
        flag_byte = self._flag_byte()
        if not isinstance(flag_byte, int) or not 0 <= flag_byte <= 0xFF:
            return _fail(InvalidDataError, self, "flags",
                         f"flags {flag_byte!r}, expected an integer in 0..255", flag_byte)
        return _fail(InvalidDataError, self, "frame", f"cannot serialize: {err}", None)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _specialised(method: _Method) -> _Method:
    """Mark a serialize() that builds the frame itself instead of calling serialize_body()."""
    method._specialised = True  # type: ignore[attr-defined]  # a marker on the function object
    return method


Frame._setup_class()

# The mixins below are Frame subclasses to the type checker (they use the frame's flags and
# name it in errors) but plain classes at run time, and their fields live in the slots of the
# concrete frame classes, which the type checker cannot see: hence no __slots__ for it.
if TYPE_CHECKING:
    _Mixin = Frame
else:
    _Mixin = object


class Padding(_Mixin):
    """Mixin for frames that may be padded (DATA, HEADERS, PUSH_PROMISE).

    With the ``PADDED`` flag the body starts with a one-byte pad length and
    ends with that many padding bytes. Padding bytes received that are not
    zero are kept and sent back unchanged (see :attr:`padding`).
    """

    if not TYPE_CHECKING:
        __slots__ = ()
    pad_length: int
    _padding: Optional[bytes]   # padding bytes received or set, when not all zero

    def __init__(self, stream_id: int, pad_length: int = 0, **kwargs: Any) -> None:
        super().__init__(stream_id, **kwargs)
        #: The number of padding bytes.
        self.pad_length = pad_length
        self._padding = None

    def _padding_bytes(self) -> bytes:
        p = self._padding
        n = self.pad_length
        if p is not None and len(p) == n:
            return p
        return b"\0" * n

    @property
    def padding(self) -> bytes:
        """The padding bytes that go on the wire (zeros unless others were received or set)."""
        if "PADDED" not in self.flags:
            return b""
        return self._padding_bytes()

    @padding.setter
    def padding(self, value: bytes) -> None:
        value = bytes(value)
        self.pad_length = len(value)
        self._padding = value

    def serialize_padding_data(self) -> bytes:
        """The pad-length byte, or nothing when the frame is not PADDED."""
        if "PADDED" in self.flags:
            return _U8.pack(self.pad_length)
        return b""

    def parse_padding_data(self, data: memoryview) -> int:
        """Read the pad-length byte when PADDED; return how many bytes it took (0 or 1)."""
        if "PADDED" in self.flags:
            if not len(data):
                raise _fail(InvalidFrameError, self, "pad length",
                            "body length 0, expected at least 1 byte for the pad length", 0)
            self.pad_length = data[0]
            return 1
        return 0

    @property
    def total_padding(self) -> int:  # pragma: no cover - deprecated alias kept for old code
        import warnings
        warnings.warn("total_padding contains the same information as pad_length.",
                      DeprecationWarning, stacklevel=2)
        return self.pad_length


class Priority(_Mixin):
    """Mixin for frames that carry priority data (HEADERS, PRIORITY).

    Five bytes on the wire: the exclusive bit and the 31-bit stream
    dependency, then the weight byte. ``stream_weight`` is that byte as it is
    on the wire (0..255, meaning a weight of 1..256).
    """

    if not TYPE_CHECKING:
        __slots__ = ()
    depends_on: int
    stream_weight: int
    exclusive: bool

    def __init__(self, stream_id: int, depends_on: int = 0x0, stream_weight: int = 0x0,
                 exclusive: bool = False, **kwargs: Any) -> None:
        super().__init__(stream_id, **kwargs)
        #: The stream this one depends on.
        self.depends_on = depends_on
        #: The weight byte (0..255).
        self.stream_weight = stream_weight
        #: Whether the dependency is exclusive.
        self.exclusive = exclusive

    def serialize_priority_data(self) -> bytes:
        return _PRIORITY.pack((self.depends_on & _SID_MASK) | (_R_BIT if self.exclusive else 0),
                              self.stream_weight)

    def parse_priority_data(self, data: memoryview) -> int:
        if len(data) < 5:
            raise _fail(InvalidFrameError, self, "priority",
                        f"{len(data)} bytes left for the priority data, expected 5", len(data))
        dep, self.stream_weight = _PRIORITY.unpack_from(data)
        self.depends_on = dep & _SID_MASK
        self.exclusive = dep >= _R_BIT
        return 5



class DataFrame(Padding, Frame):
    """DATA (0x0): a chunk of a stream's content.

    A payload of at least 1 KiB parsed from a read-only buffer (a memoryview of
    ``bytes``, which is what :class:`~framecodec.reader.FrameReader` hands out
    for chunks given as ``bytes``) is not copied by :meth:`parse_body`: the
    frame keeps a view and makes ``bytes`` of it the first time ``data`` is
    read. A frame forwarded unchanged thus costs one copy of its payload, in
    :meth:`serialize`.
    """

    __slots__ = ("_data", "_view", "pad_length", "_padding")
    _data: bytes                  # the payload, unless _view holds it
    _view: Optional[memoryview]   # the payload not yet copied out of the parsed buffer

    defined_flags = [Flag("END_STREAM", 0x01), Flag("PADDED", 0x08)]
    type = 0x0
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "DATA"
    _int_fields = (("pad_length", "pad length", 8),)
    _fast_header = True

    def __init__(self, stream_id: int, data: bytes = b"", *, pad_length: int = 0,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        self._data = data
        self._view = None
        self.pad_length = pad_length
        self._padding = None

    @property
    def data(self) -> bytes:
        """The payload."""
        v = self._view
        if v is not None:
            self._data = bytes(v)
            self._view = None
        return self._data

    @data.setter
    def data(self, value: bytes) -> None:
        self._data = value
        self._view = None

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        self.body_len = n
        if (self._flag_bits if self._flags is None else self._flag_byte()) & 0x08:
            if not n:
                raise _fail(InvalidFrameError, self, "pad length",
                            "body length 0, expected at least 1 byte for the pad length", 0)
            pad = data[0]
            end = n - pad
            if end < 1:
                raise _fail(InvalidPaddingError, self, "pad length",
                            f"pad length {pad}, expected at most {n - 1} (body length {n})", pad)
            self.pad_length = pad
            self._padding = bytes(data[end:]) if pad else None
            data = data[1:end]
            n = end - 1
        else:
            self.pad_length = 0
            self._padding = None
        if n >= _LAZY_MIN and type(data) is memoryview and data.readonly:
            # A view of its own, so that the caller may release the one it passed.
            self._view = data[:]
            self._data = b""
        else:
            self._data = bytes(data)
            self._view = None

    def serialize_body(self) -> bytes:
        d = self.data
        if type(d) is not bytes:
            d = self._data = bytes(d)
        if (self._flag_bits if self._flags is None else self._flag_byte()) & 0x08:
            return b"".join((_U8.pack(self.pad_length), d, self._padding_bytes()))
        return d

    @_specialised
    def serialize(self) -> bytes:
        try:
            d: bytes | memoryview | None = self._view
            if d is None:
                data = self._data
                if type(data) is not bytes:   # a bytearray or view someone assigned
                    data = self._data = bytes(data)
                d = data
            fb = self._flag_bits if self._flags is None else self._flag_byte()
            if fb & 0x08:
                d = b"".join((_U8.pack(self.pad_length), d, self._padding_bytes()))
            n = self.body_len = len(d)
            return _pack_header(n << 8, fb, (self.stream_id & _SID_MASK) | self._reserved) + d
        except struct.error as err:
            raise self._pack_error(err) from None

    @property
    def flow_controlled_length(self) -> int:
        """Bytes this frame counts against flow control: data, padding and the pad-length byte."""
        v = self._view
        n = len(v if v is not None else self._data)
        if (self._flag_bits if self._flags is None else self._flag_byte()) & 0x08:
            return n + self.pad_length + 1
        return n


class PriorityFrame(Priority, Frame):
    """PRIORITY (0x2): a stream's dependency and weight."""

    __slots__ = ("depends_on", "stream_weight", "exclusive")

    defined_flags: List[Flag] = []
    type = 0x02
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "PRIORITY"
    _int_fields = (("stream_weight", "stream weight", 8),)
    _fast_header = True

    def __init__(self, stream_id: int, depends_on: int = 0x0, stream_weight: int = 0x0,
                 exclusive: bool = False, *, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        self.depends_on = depends_on
        self.stream_weight = stream_weight
        self.exclusive = exclusive

    def _body_repr(self) -> str:
        return f"exclusive={self.exclusive}, depends_on={self.depends_on}, stream_weight={self.stream_weight}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n != 5:
            raise _fail(InvalidFrameError, self, "priority", f"body length {n}, expected 5", n)
        dep, self.stream_weight = _PRIORITY.unpack_from(data)
        self.depends_on = dep & _SID_MASK
        self.exclusive = dep >= _R_BIT
        self.body_len = 5

    def serialize_body(self) -> bytes:
        return _PRIORITY.pack((self.depends_on & _SID_MASK) | (_R_BIT if self.exclusive else 0),
                              self.stream_weight)

    @_specialised
    def serialize(self) -> bytes:
        self.body_len = 5
        try:
            return _pack_header_priority(
                0x502, self._flag_bits if self._flags is None else self._flag_byte(),
                (self.stream_id & _SID_MASK) | self._reserved,
                (self.depends_on & _SID_MASK) | (_R_BIT if self.exclusive else 0), self.stream_weight)
        except struct.error as err:
            raise self._pack_error(err) from None


class RstStreamFrame(Frame):
    """RST_STREAM (0x3): ends a stream at once, with an error code."""

    __slots__ = ("error_code",)

    defined_flags: List[Flag] = []
    type = 0x03
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "RST_STREAM"
    _int_fields = (("error_code", "error code", 32),)
    _fast_header = True

    def __init__(self, stream_id: int, error_code: int = 0, *, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The error code.
        self.error_code = error_code

    def _body_repr(self) -> str:
        return f"error_code={self.error_code}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n != 4:
            raise _fail(InvalidFrameError, self, "error code", f"body length {n}, expected 4", n)
        self.error_code = _unpack_u32(data)[0]
        self.body_len = 4

    def serialize_body(self) -> bytes:
        return _pack_u32(self.error_code)

    @_specialised
    def serialize(self) -> bytes:
        self.body_len = 4
        try:
            return _pack_header_u32(0x403, self._flag_bits if self._flags is None else self._flag_byte(),
                                    (self.stream_id & _SID_MASK) | self._reserved, self.error_code)
        except struct.error as err:
            raise self._pack_error(err) from None


class SettingsFrame(Frame):
    """SETTINGS (0x4): connection parameters, or (with ACK) their acknowledgement.

    ``settings`` maps parameter ids to values. The parameters as they were on
    the wire (order, duplicates and unknown ids included) are kept too, and
    serialized again as long as ``settings`` still holds what was parsed;
    :attr:`settings_pairs` lists them.
    """

    __slots__ = ("settings", "_wire", "_wire_settings")
    settings: Dict[int, int]
    _wire: Optional[bytes]                   # the parameters as parsed, in wire order
    _wire_settings: Optional[Dict[int, int]]  # what settings held when _wire was parsed

    defined_flags = [Flag("ACK", 0x01)]
    type = 0x04
    stream_association = _STREAM_ASSOC_NO_STREAM
    _type_name = "SETTINGS"
    _fast_header = True

    HEADER_TABLE_SIZE = 0x01
    ENABLE_PUSH = 0x02
    MAX_CONCURRENT_STREAMS = 0x03
    INITIAL_WINDOW_SIZE = 0x04
    MAX_FRAME_SIZE = 0x05
    MAX_HEADER_LIST_SIZE = 0x06
    ENABLE_CONNECT_PROTOCOL = 0x08

    def __init__(self, stream_id: int = 0, settings: Optional[Dict[int, int]] = None, *,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        if settings and self._flag_bits & 0x01:
            raise _fail(InvalidDataError, self, "settings",
                        f"{len(settings)} settings on a SETTINGS frame with the ACK flag, expected none",
                        settings)
        #: Parameter id -> value.
        self.settings: Dict[int, int] = settings or {}
        self._wire = None
        self._wire_settings = None

    def _body_repr(self) -> str:
        return f"settings={self.settings}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n:
            if (self._flag_bits if self._flags is None else self._flag_byte()) & 0x01:
                raise _fail(InvalidDataError, self, "settings",
                            f"body length {n} on a SETTINGS frame with the ACK flag, expected 0", n)
            if n % 6:
                raise _fail(InvalidFrameError, self, "settings",
                            f"body length {n}, expected a multiple of 6", n)
            raw = bytes(data)
            settings = dict(_iter_settings(raw))
            self.settings = settings
            self._wire = raw
            self._wire_settings = settings.copy()
        else:
            self.settings = {}
            self._wire = None
            self._wire_settings = None
        self.body_len = n

    @property
    def settings_pairs(self) -> List[Tuple[int, int]]:
        """``(id, value)`` in wire order: as received while ``settings`` is unchanged."""
        w = self._wire
        if w is not None and self.settings == self._wire_settings:
            return list(_iter_settings(w))
        return list(self.settings.items())

    def serialize_body(self) -> bytes:
        s = self.settings
        w = self._wire
        if w is not None and s == self._wire_settings:
            return w
        return b"".join([_pack_setting(k, v) for k, v in s.items()])

    @_specialised
    def serialize(self) -> bytes:
        try:
            s = self.settings
            w = self._wire
            if w is None or s != self._wire_settings:
                w = b"".join([_pack_setting(k, v) for k, v in s.items()])
            n = self.body_len = len(w)
            return _pack_header((n << 8) | 0x04, self._flag_bits if self._flags is None else self._flag_byte(),
                                (self.stream_id & _SID_MASK) | self._reserved) + w
        except struct.error as err:
            raise self._pack_error(err) from None

    def _pack_error(self, err: Exception) -> FrameCodecError:
        for k, v in self.settings.items():
            if not isinstance(k, int) or not 0 <= k <= 0xFFFF:
                return _fail(InvalidDataError, self, "setting id",
                             f"setting id {k!r}, expected an integer in 0..65535", k)
            if not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
                return _fail(InvalidDataError, self, "setting value",
                             f"value {v!r} of setting {k}, expected an integer in 0..4294967295", v)
        return super()._pack_error(err)


class PushPromiseFrame(Padding, Frame):
    """PUSH_PROMISE (0x5): announces a stream the server will push, with its request headers."""

    __slots__ = ("promised_stream_id", "data", "pad_length", "_padding", "_promised_reserved")

    defined_flags = [Flag("END_HEADERS", 0x04), Flag("PADDED", 0x08)]
    type = 0x05
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "PUSH_PROMISE"
    _int_fields = (("pad_length", "pad length", 8),)
    _fast_header = True

    def __init__(self, stream_id: int, promised_stream_id: int = 0, data: bytes = b"", *,
                 pad_length: int = 0, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        if promised_stream_id % 2:
            raise _fail(InvalidDataError, self, "promised stream id",
                        f"promised stream id {promised_stream_id}, expected an even stream id "
                        f"(pushed streams are server-initiated)", promised_stream_id)
        #: The stream the server promises to open.
        self.promised_stream_id = promised_stream_id
        #: The header block fragment of the promised request.
        self.data = data
        self.pad_length = pad_length
        self._padding = None
        self._promised_reserved = 0

    def _body_repr(self) -> str:
        return f"promised_stream_id={self.promised_stream_id}, data={_raw_data_repr(self.data)}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        self.body_len = n
        pos = 0
        pad = 0
        padded = (self._flag_bits if self._flags is None else self._flag_byte()) & 0x08
        if padded:
            if not n:
                raise _fail(InvalidFrameError, self, "pad length",
                            "body length 0, expected at least 1 byte for the pad length", 0)
            pad = data[0]
            pos = 1
        if n < pos + 4:
            raise _fail(InvalidFrameError, self, "promised stream id",
                        f"body length {n}, expected at least {pos + 4}", n)
        raw = _unpack_u32(data, pos)[0]
        promised = raw & _SID_MASK
        if not promised or promised & 1:
            raise _fail(InvalidDataError, self, "promised stream id",
                        f"promised stream id {promised}, expected a non-zero even stream id", promised)
        pos += 4
        end = n - pad
        if end < pos:
            raise _fail(InvalidPaddingError, self, "pad length",
                        f"pad length {pad}, expected at most {n - pos} (body length {n})", pad)
        self.promised_stream_id = promised
        self._promised_reserved = raw & _R_BIT
        self.data = bytes(data[pos:end])
        self.pad_length = pad
        self._padding = bytes(data[end:]) if pad else None

    def serialize_body(self) -> bytes:
        d = self.data
        if type(d) is not bytes:
            d = bytes(d)
        promised = _pack_u32((self.promised_stream_id & _SID_MASK) | self._promised_reserved)
        if (self._flag_bits if self._flags is None else self._flag_byte()) & 0x08:
            return b"".join((_U8.pack(self.pad_length), promised, d, self._padding_bytes()))
        return promised + d


class PingFrame(Frame):
    """PING (0x6): eight opaque bytes, echoed back with ACK."""

    __slots__ = ("opaque_data",)

    defined_flags = [Flag("ACK", 0x01)]
    type = 0x06
    stream_association = _STREAM_ASSOC_NO_STREAM
    _type_name = "PING"
    _fast_header = True

    def __init__(self, stream_id: int = 0, opaque_data: bytes = b"", *,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: Up to 8 bytes (zero-filled to 8 on the wire).
        self.opaque_data = opaque_data

    def _body_repr(self) -> str:
        return f"opaque_data={self.opaque_data!r}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n != 8:
            raise _fail(InvalidFrameError, self, "opaque data", f"body length {n}, expected 8", n)
        self.opaque_data = bytes(data)
        self.body_len = 8

    def _opaque(self) -> bytes:
        d = self.opaque_data
        n = len(d)
        if n > 8:
            raise _fail(InvalidFrameError, self, "opaque data",
                        f"opaque data of {n} bytes, expected at most 8", bytes(d))
        return d if type(d) is bytes else bytes(d)

    def serialize_body(self) -> bytes:
        d = self._opaque()
        return d if len(d) == 8 else d + b"\0" * (8 - len(d))

    @_specialised
    def serialize(self) -> bytes:
        d = self.opaque_data
        if type(d) is not bytes or len(d) > 8:
            d = self._opaque()
        self.body_len = 8
        try:
            # "8s" fills a shorter value with zero bytes.
            return _pack_header_ping(0x806, self._flag_bits if self._flags is None else self._flag_byte(),
                                     (self.stream_id & _SID_MASK) | self._reserved, d)
        except struct.error as err:
            raise self._pack_error(err) from None


class GoAwayFrame(Frame):
    """GOAWAY (0x7): the connection is closing; the last stream processed and why."""

    __slots__ = ("last_stream_id", "error_code", "additional_data", "_last_reserved")

    defined_flags: List[Flag] = []
    type = 0x07
    stream_association = _STREAM_ASSOC_NO_STREAM
    _type_name = "GOAWAY"
    _int_fields = (("error_code", "error code", 32),)
    _fast_header = True

    def __init__(self, stream_id: int = 0, last_stream_id: int = 0, error_code: int = 0,
                 additional_data: bytes = b"", *, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The highest stream id the sender may have acted on.
        self.last_stream_id = last_stream_id
        #: Why the connection closes.
        self.error_code = error_code
        #: Opaque debug data.
        self.additional_data = additional_data
        self._last_reserved = 0

    def _body_repr(self) -> str:
        return (f"last_stream_id={self.last_stream_id}, error_code={self.error_code}, "
                f"additional_data={self.additional_data!r}")

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n < 8:
            raise _fail(InvalidFrameError, self, "last stream id and error code",
                        f"body length {n}, expected at least 8", n)
        last, self.error_code = _U32_PAIR.unpack_from(data)
        self.last_stream_id = last & _SID_MASK
        self._last_reserved = last & _R_BIT
        self.additional_data = bytes(data[8:]) if n > 8 else b""
        self.body_len = n

    def serialize_body(self) -> bytes:
        return _U32_PAIR.pack((self.last_stream_id & _SID_MASK) | self._last_reserved,
                              self.error_code) + self.additional_data

    @_specialised
    def serialize(self) -> bytes:
        try:
            extra = self.additional_data
            n = self.body_len = 8 + len(extra)
            return _pack_header_goaway(
                (n << 8) | 0x07, self._flag_bits if self._flags is None else self._flag_byte(),
                (self.stream_id & _SID_MASK) | self._reserved,
                (self.last_stream_id & _SID_MASK) | self._last_reserved, self.error_code) + extra
        except struct.error as err:
            raise self._pack_error(err) from None


class WindowUpdateFrame(Frame):
    """WINDOW_UPDATE (0x8): flow-control credit for a stream or (stream 0) the connection."""

    __slots__ = ("window_increment",)

    defined_flags: List[Flag] = []
    type = 0x08
    stream_association = _STREAM_ASSOC_EITHER
    _type_name = "WINDOW_UPDATE"
    _fast_header = True

    def __init__(self, stream_id: int, window_increment: int = 0, *,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The credit granted, 1..2**31-1.
        self.window_increment = window_increment

    def _body_repr(self) -> str:
        return f"window_increment={self.window_increment}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n != 4:
            raise _fail(InvalidFrameError, self, "window size increment",
                        f"body length {n}, expected 4", n)
        inc = _unpack_u32(data)[0]
        if not 1 <= inc <= _SID_MASK:
            detail = (f"increment {inc}, expected 1..{_SID_MASK}" if inc else
                      f"increment 0, expected 1..{_SID_MASK}")
            if inc > _SID_MASK:
                detail += " (the reserved bit is set)"
            raise _fail(InvalidDataError, self, "window size increment", detail, inc)
        self.window_increment = inc
        self.body_len = 4

    def serialize_body(self) -> bytes:
        return _pack_u32(self.window_increment & _SID_MASK)

    @_specialised
    def serialize(self) -> bytes:
        self.body_len = 4
        try:
            return _pack_header_u32(0x408, self._flag_bits if self._flags is None else self._flag_byte(),
                                    (self.stream_id & _SID_MASK) | self._reserved,
                                    self.window_increment & _SID_MASK)
        except struct.error as err:
            raise self._pack_error(err) from None


class HeadersFrame(Padding, Priority, Frame):
    """HEADERS (0x1): opens a stream (or carries trailers) with a header block fragment."""

    __slots__ = ("data", "pad_length", "_padding", "depends_on", "stream_weight", "exclusive")

    defined_flags = [
        Flag("END_STREAM", 0x01),
        Flag("END_HEADERS", 0x04),
        Flag("PADDED", 0x08),
        Flag("PRIORITY", 0x20),
    ]
    type = 0x01
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "HEADERS"
    _int_fields = (("pad_length", "pad length", 8), ("stream_weight", "stream weight", 8))
    _fast_header = True

    def __init__(self, stream_id: int, data: bytes = b"", *, pad_length: int = 0,
                 depends_on: int = 0x0, stream_weight: int = 0x0, exclusive: bool = False,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The header block fragment (HPACK).
        self.data = data
        self.pad_length = pad_length
        self._padding = None
        self.depends_on = depends_on
        self.stream_weight = stream_weight
        self.exclusive = exclusive

    def _body_repr(self) -> str:
        return (f"exclusive={self.exclusive}, depends_on={self.depends_on}, "
                f"stream_weight={self.stream_weight}, data={_raw_data_repr(self.data)}")

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        self.body_len = n
        fb = self._flag_bits if self._flags is None else self._flag_byte()
        if not fb & 0x28:
            self.data = bytes(data)
            self.pad_length = 0
            self._padding = None
            self.depends_on = 0
            self.stream_weight = 0
            self.exclusive = False
            return
        pos = 0
        pad = 0
        if fb & 0x08:
            if not n:
                raise _fail(InvalidFrameError, self, "pad length",
                            "body length 0, expected at least 1 byte for the pad length", 0)
            pad = data[0]
            pos = 1
        if fb & 0x20:
            if n < pos + 5:
                raise _fail(InvalidFrameError, self, "priority",
                            f"body length {n}, expected at least {pos + 5} with the PRIORITY flag", n)
            dep, weight = _PRIORITY.unpack_from(data, pos)
            pos += 5
        else:
            dep = weight = 0
        end = n - pad
        if end < pos:
            raise _fail(InvalidPaddingError, self, "pad length",
                        f"pad length {pad}, expected at most {n - pos} (body length {n})", pad)
        self.depends_on = dep & 0x7FFFFFFF
        self.exclusive = dep >= 0x80000000
        self.stream_weight = weight
        self.data = bytes(data[pos:end])
        self.pad_length = pad
        self._padding = bytes(data[end:]) if pad else None

    def _body(self, fb: int) -> bytes:
        d = self.data
        if type(d) is not bytes:
            d = bytes(d)
        if not fb & 0x28:
            return d
        parts = []
        if fb & 0x08:
            parts.append(_U8.pack(self.pad_length))
        if fb & 0x20:
            parts.append(_PRIORITY.pack(
                (self.depends_on & _SID_MASK) | (_R_BIT if self.exclusive else 0), self.stream_weight))
        parts.append(d)
        if fb & 0x08:
            parts.append(self._padding_bytes())
        return b"".join(parts)

    def serialize_body(self) -> bytes:
        return self._body(self._flag_bits if self._flags is None else self._flag_byte())

    @_specialised
    def serialize(self) -> bytes:
        try:
            fb = self._flag_bits if self._flags is None else self._flag_byte()
            d = self.data
            if fb & 0x28 or type(d) is not bytes:
                d = self._body(fb)
            n = self.body_len = len(d)
            return _pack_header((n << 8) | 0x01, fb, (self.stream_id & _SID_MASK) | self._reserved) + d
        except struct.error as err:
            raise self._pack_error(err) from None


class ContinuationFrame(Frame):
    """CONTINUATION (0x9): the next fragment of a header block."""

    __slots__ = ("data",)

    defined_flags = [Flag("END_HEADERS", 0x04)]
    type = 0x09
    stream_association = _STREAM_ASSOC_HAS_STREAM
    _type_name = "CONTINUATION"
    _fast_header = True

    def __init__(self, stream_id: int, data: bytes = b"", *, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The header block fragment (HPACK).
        self.data = data

    def _body_repr(self) -> str:
        return f"data={_raw_data_repr(self.data)}"

    def parse_body(self, data: memoryview) -> None:
        self.data = bytes(data)
        self.body_len = len(data)

    def serialize_body(self) -> bytes:
        d = self.data
        return d if type(d) is bytes else bytes(d)


class AltSvcFrame(Frame):
    """ALTSVC (0xA, RFC 7838): advertises an alternative service.

    A valid one has ``stream_id != 0`` XOR ``len(origin) != 0``; one that
    breaks the rule still parses (a receiver ignores it, RFC 7838 section 4),
    so that the proxy can decide what to do with it.
    """

    __slots__ = ("origin", "field")

    defined_flags: List[Flag] = []
    type = 0x0A
    stream_association = _STREAM_ASSOC_EITHER
    _type_name = "ALTSVC"
    _fast_header = True

    def __init__(self, stream_id: int, origin: bytes = b"", field: bytes = b"", *,
                 flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        if not isinstance(origin, bytes):
            raise _fail(InvalidDataError, self, "origin",
                        f"origin {origin!r} of type {type(origin).__name__}, expected bytes", origin)
        if not isinstance(field, bytes):
            raise _fail(InvalidDataError, self, "field",
                        f"field {field!r} of type {type(field).__name__}, expected bytes", field)
        #: The origin the alternative applies to (empty on a non-zero stream).
        self.origin = origin
        #: The Alt-Svc field value.
        self.field = field

    def _body_repr(self) -> str:
        return f"origin={self.origin!r}, field={self.field!r}"

    def parse_body(self, data: memoryview) -> None:
        n = len(data)
        if n < 2:
            raise _fail(InvalidFrameError, self, "origin length",
                        f"body length {n}, expected at least 2", n)
        olen = _U16.unpack_from(data)[0]
        if 2 + olen > n:
            raise _fail(InvalidFrameError, self, "origin",
                        f"origin length {olen}, but only {n - 2} bytes follow", olen)
        self.origin = bytes(data[2:2 + olen])
        self.field = bytes(data[2 + olen:])
        self.body_len = n

    def serialize_body(self) -> bytes:
        origin = self.origin
        n = len(origin)
        if n > 0xFFFF:
            raise _fail(InvalidDataError, self, "origin",
                        f"origin of {n} bytes, expected at most 65535", n)
        return b"".join((_U16.pack(n), origin, self.field))


class ExtensionFrame(Frame):
    """A frame of a type this codec does not know, kept as raw type, flag byte and body.

    :meth:`serialize` gives the frame back exactly as it was received.
    """

    __slots__ = ("type", "flag_byte", "body")
    type: int   # an instance field here: the type byte as received
    flag_byte: int
    body: bytes

    stream_association = _STREAM_ASSOC_EITHER
    _int_fields = (("type", "type", 8), ("flag_byte", "flag byte", 8))

    def __init__(self, type: int, stream_id: int, flag_byte: int = 0x0, body: bytes = b"",  # noqa: A002
                 *, flags: Iterable[str] = ()) -> None:
        Frame.__init__(self, stream_id, flags)
        #: The frame type byte.
        self.type = type
        #: The raw flags byte.
        self.flag_byte = flag_byte
        #: The raw body.
        self.body = body

    def _describe(self) -> str:
        t = self.type
        label = f"0x{t:02X}" if isinstance(t, int) else repr(t)
        return f"extension frame (type {label}) on stream {self.stream_id}"

    def _flag_byte(self) -> int:
        return self.flag_byte

    @property
    def undefined_flags(self) -> int:
        """For an extension frame: the whole flags byte."""
        return self.flag_byte

    @undefined_flags.setter
    def undefined_flags(self, value: int) -> None:
        self.flag_byte = value

    def _body_repr(self) -> str:
        return f"type={self.type}, flag_byte={self.flag_byte}, body={_raw_data_repr(self.body)}"

    def parse_flags(self, flag_byte: int) -> None:  # type: ignore[override]
        """Keep the flags byte as it is (this codec does not know what its bits mean)."""
        self.flag_byte = flag_byte

    def parse_body(self, data: memoryview) -> None:
        self.body = bytes(data)
        self.body_len = len(data)

    def serialize_body(self) -> bytes:
        b = self.body
        return b if type(b) is bytes else bytes(b)

    def serialize(self) -> bytes:
        """The frame with its own type, flag byte, reserved bit and body, as received."""
        try:
            body = self.serialize_body()
            n = self.body_len = len(body)
            t = self.type
            if not 0 <= t <= 0xFF:
                raise struct.error("type out of range")
            return _pack_header((n << 8) | t, self.flag_byte,
                                (self.stream_id & _SID_MASK) | self._reserved) + body
        except struct.error as err:
            raise self._pack_error(err) from None


_FRAME_CLASSES: List[Type[Frame]] = [
    DataFrame,
    HeadersFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    PushPromiseFrame,
    PingFrame,
    GoAwayFrame,
    WindowUpdateFrame,
    ContinuationFrame,
    AltSvcFrame,
]

#: Frame type byte -> the class that represents it.
FRAMES: Dict[int, Type[Frame]] = {cls.type: cls for cls in _FRAME_CLASSES if cls.type is not None}
