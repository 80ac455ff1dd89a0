"""Unit tests of framecodec.frame / framecodec.flags: one section per frame type, then
the byte-exact round trip, error messages, and a compatibility check against hyperframe."""
from __future__ import annotations

import copy
import pickle
import struct

import pytest

from framecodec import exceptions as fe
from framecodec import frame as fc
from framecodec.flags import Flag, Flags
from framecodec.frame import (
    FRAME_MAX_ALLOWED_LEN,
    FRAME_MAX_LEN,
    FRAMES,
    AltSvcFrame,
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    Padding,
    PingFrame,
    Priority,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)


def header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes([ftype, flags]) + stream_id.to_bytes(4, "big")


def wire(ftype: int, flags: int, stream_id: int, body: bytes = b"") -> bytes:
    return header(len(body), ftype, flags, stream_id) + body


def parse(data: bytes, strict: bool = False) -> Frame:
    """Parse one whole frame the way every caller does: header, then exactly its body."""
    frame, length = Frame.parse_frame_header(memoryview(data)[:9], strict=strict)
    assert length == len(data) - 9
    frame.parse_body(memoryview(data)[9:9 + length])
    return frame


def roundtrip(data: bytes) -> Frame:
    frame = parse(data)
    assert frame.serialize() == data
    return frame


# --- module surface --------------------------------------------------------------


def test_constants_and_frames_table():
    assert FRAME_MAX_LEN == 16384
    assert FRAME_MAX_ALLOWED_LEN == 2 ** 24 - 1
    assert {t: c.__name__ for t, c in FRAMES.items()} == {
        0x0: "DataFrame", 0x1: "HeadersFrame", 0x2: "PriorityFrame", 0x3: "RstStreamFrame",
        0x4: "SettingsFrame", 0x5: "PushPromiseFrame", 0x6: "PingFrame", 0x7: "GoAwayFrame",
        0x8: "WindowUpdateFrame", 0x9: "ContinuationFrame", 0xA: "AltSvcFrame",
    }
    for t, cls in FRAMES.items():
        assert cls.type == t
        assert cls.stream_association in ("has-stream", "no-stream", "either")
    assert issubclass(DataFrame, Padding) and issubclass(HeadersFrame, Priority)
    assert issubclass(PushPromiseFrame, Padding) and issubclass(PriorityFrame, Priority)


def test_every_frame_class_has_slots():
    for cls in list(FRAMES.values()) + [ExtensionFrame]:
        frame, _ = (Frame.parse_frame_header(header(0, cls.type, 0, 1 if cls.stream_association != "no-stream" else 0))
                    if cls is not ExtensionFrame else (ExtensionFrame(0xEE, 1), 0))
        assert not hasattr(frame, "__dict__"), cls
        with pytest.raises(AttributeError):
            frame.no_such_attribute = 1


def test_exception_hierarchy():
    for cls in (fe.UnknownFrameError, fe.InvalidFrameError, fe.InvalidPaddingError,
                fe.InvalidDataError, fe.FrameTooLargeError, fe.PrefaceError):
        assert issubclass(cls, fe.FrameCodecError)
    assert fe.HyperframeError is fe.FrameCodecError
    err = fe.UnknownFrameError(0xEE, 5)
    assert (err.frame_type, err.length) == (0xEE, 5)
    assert "0xEE" in str(err) and "5" in str(err)


# --- flags -------------------------------------------------------------------------


def test_flag_is_a_named_tuple():
    f = Flag("END_STREAM", 0x01)
    assert (f.name, f.bit) == ("END_STREAM", 0x01)
    name, bit = f
    assert (name, bit) == ("END_STREAM", 1)


def test_flags_set_behaviour():
    flags = Flags([Flag("A", 0x01), Flag("B", 0x02), Flag("C", 0x04)])
    assert len(flags) == 0 and list(flags) == [] and repr(flags) == "[]"
    flags.add("C")
    flags.add("A")
    flags.add("A")
    assert "A" in flags and "C" in flags and "B" not in flags and "Z" not in flags
    assert len(flags) == 2
    assert repr(flags) == "['A', 'C']"
    assert flags == {"A", "C"}
    flags.discard("A")
    flags.discard("B")  # not set: no error
    assert list(flags) == ["C"]
    flags.clear()
    assert len(flags) == 0


def test_flags_add_unknown_names_the_valid_ones():
    flags = Flags([Flag("END_STREAM", 0x01), Flag("PADDED", 0x08)])
    with pytest.raises(ValueError) as e:
        flags.add("END_HEADERS")
    msg = str(e.value)
    assert "END_HEADERS" in msg and "END_STREAM" in msg and "PADDED" in msg


def test_frame_flags_validation_at_construction():
    with pytest.raises(ValueError, match="ACK"):
        DataFrame(1, flags=["ACK"])
    f = DataFrame(1, flags=["END_STREAM"])
    with pytest.raises(ValueError):
        f.flags.add("ACK")


def test_frame_flags_are_lazy_and_writable():
    f = parse(wire(0x0, 0x01, 1, b"x"))
    assert f.flags == {"END_STREAM"}
    f.flags.add("PADDED")
    f.flags.discard("END_STREAM")
    assert f.serialize() == wire(0x0, 0x08, 1, b"\x00x")
    f.flags = ["END_STREAM"]
    assert f.serialize() == wire(0x0, 0x01, 1, b"x")
    f.flags = Flags(DataFrame.defined_flags)
    assert f.serialize() == wire(0x0, 0x00, 1, b"x")


def test_parse_flags_adds_and_returns_flags():
    f = HeadersFrame(1)
    result = f.parse_flags(0x05)
    assert isinstance(result, Flags)
    assert set(result) == {"END_STREAM", "END_HEADERS"}
    f.parse_flags(0x20)
    assert set(f.flags) == {"END_STREAM", "END_HEADERS", "PRIORITY"}


# --- base frame / header -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 8, 10, 18])
def test_header_must_be_nine_bytes(size):
    with pytest.raises(fe.InvalidFrameError) as e:
        Frame.parse_frame_header(b"\x00" * size)
    assert "9" in str(e.value) and f"{size} bytes" in str(e.value)


def test_parse_frame_header_accepts_bytes_and_memoryview():
    data = wire(0x6, 0x01, 0, b"12345678")
    for hdr in (data[:9], memoryview(data)[:9], bytearray(data[:9])):
        f, length = Frame.parse_frame_header(hdr)
        assert isinstance(f, PingFrame) and length == 8 and "ACK" in f.flags and f.stream_id == 0


def test_unknown_type_strict_and_not_strict():
    data = wire(0xEE, 0x0F, 1, b"Hello")
    f, length = Frame.parse_frame_header(data[:9])
    assert isinstance(f, ExtensionFrame) and length == 5 and f.type == 0xEE and f.flag_byte == 0x0F
    with pytest.raises(fe.UnknownFrameError) as e:
        Frame.parse_frame_header(data[:9], strict=True)
    assert e.value.frame_type == 0xEE and e.value.length == 5 and e.value.stream_id == 1
    assert "0xEE" in str(e.value) and "stream 1" in str(e.value)


def test_reserved_bit_is_not_part_of_stream_id_but_round_trips():
    data = wire(0x8, 0x00, 0x80000005, b"\x00\x00\x00\x01")
    f = roundtrip(data)
    assert f.stream_id == 5 and f.reserved_bit
    f.reserved_bit = False
    assert f.serialize() == wire(0x8, 0x00, 5, b"\x00\x00\x00\x01")


@pytest.mark.parametrize("cls, kwargs", [
    (DataFrame, {}), (HeadersFrame, {}), (PriorityFrame, {}), (RstStreamFrame, {}),
    (PushPromiseFrame, {}), (ContinuationFrame, {}),
])
def test_stream_frames_need_a_stream(cls, kwargs):
    with pytest.raises(fe.InvalidDataError) as e:
        cls(0, **kwargs)
    assert "stream 0" in str(e.value) and "field: stream id" in str(e.value)
    with pytest.raises(fe.InvalidDataError):
        Frame.parse_frame_header(header(0, cls.type, 0, 0))


@pytest.mark.parametrize("cls", [SettingsFrame, PingFrame, GoAwayFrame])
def test_connection_frames_must_have_stream_zero(cls):
    with pytest.raises(fe.InvalidDataError) as e:
        cls(3)
    assert "stream 3" in str(e.value)
    with pytest.raises(fe.InvalidDataError) as e:
        Frame.parse_frame_header(header(8, cls.type, 0, 3))
    assert e.value.stream_id == 3 and e.value.field == "stream id" and e.value.value == 3


@pytest.mark.parametrize("cls", [WindowUpdateFrame, AltSvcFrame])
def test_either_frames_take_any_stream(cls):
    cls(0)
    cls(7)


def test_base_frame_is_abstract():
    f = Frame(0)
    with pytest.raises(NotImplementedError):
        f.serialize_body()
    with pytest.raises(NotImplementedError):
        f.parse_body(memoryview(b""))


def test_body_len_after_parse_and_serialize():
    f = DataFrame(1, data=b"abc")
    assert f.body_len == 0
    f.serialize()
    assert f.body_len == 3
    g = parse(wire(0x0, 0x08, 1, b"\x02abcxx"))
    assert g.body_len == 6


def test_explain_prints_and_returns(capsys):
    data = wire(0x6, 0x01, 0, b"ABCDEFGH") + b"trailing bytes of the next frame"
    f, length = Frame.explain(memoryview(data))
    assert isinstance(f, PingFrame) and length == 8 and f.opaque_data == b"ABCDEFGH"
    assert capsys.readouterr().out.strip() == "PingFrame(stream_id=0, flags=['ACK']): opaque_data=b'ABCDEFGH'"
    f, _ = Frame.explain(data)  # plain bytes work too
    with pytest.raises(fe.InvalidFrameError, match="length 8"):
        Frame.explain(data[:12])


def test_copy_and_pickle_keep_frames_independent():
    f = parse(wire(0x0, 0x41, 0x80000001, b"\x01" * 2000))
    f.flags.add("END_STREAM")
    g = copy.copy(f)
    g.flags.discard("END_STREAM")
    assert "END_STREAM" in f.flags and "END_STREAM" not in g.flags
    h = pickle.loads(pickle.dumps(f))
    assert h.serialize() == f.serialize() == wire(0x0, 0x41, 0x80000001, b"\x01" * 2000)
    assert copy.deepcopy(f).serialize() == f.serialize()


# --- DATA --------------------------------------------------------------------------


def test_data_construct_and_serialize():
    f = DataFrame(1, data=b"hello", flags=["END_STREAM"])
    assert f.serialize() == wire(0x0, 0x01, 1, b"hello")
    assert f.flow_controlled_length == 5
    p = DataFrame(3, data=b"hi", pad_length=4, flags=["PADDED"])
    assert p.serialize() == wire(0x0, 0x08, 3, b"\x04hi\x00\x00\x00\x00")
    assert p.flow_controlled_length == 2 + 4 + 1
    assert DataFrame(1).serialize() == wire(0x0, 0, 1)


def test_data_parse():
    f = roundtrip(wire(0x0, 0x09, 5, b"\x03payload\x00\x00\x00"))
    assert (f.data, f.pad_length, f.stream_id, set(f.flags)) == (b"payload", 3, 5, {"END_STREAM", "PADDED"})
    assert f.flow_controlled_length == 11
    f = roundtrip(wire(0x0, 0x08, 5, b"\x00"))
    assert f.data == b"" and f.pad_length == 0 and f.flow_controlled_length == 1


def test_data_nonzero_padding_round_trips():
    data = wire(0x0, 0x08, 2, b"\x06Hello, world!Howdy!")
    f = roundtrip(data)
    assert f.data == b"Hello, world!" and f.padding == b"Howdy!"
    f.data = b"Bye"
    assert f.serialize() == wire(0x0, 0x08, 2, b"\x06ByeHowdy!")
    f.pad_length = 2  # a different length: zero padding of that length
    assert f.serialize() == wire(0x0, 0x08, 2, b"\x02Bye\x00\x00")
    f.padding = b"\xff"
    assert f.serialize() == wire(0x0, 0x08, 2, b"\x01Bye\xff")


def test_data_padding_errors():
    with pytest.raises(fe.InvalidFrameError, match="pad length"):
        parse(wire(0x0, 0x08, 1))
    with pytest.raises(fe.InvalidPaddingError) as e:
        parse(wire(0x0, 0x08, 1, b"\x04\xaa\xaa\xaa"))
    assert str(e.value) == ("DATA frame on stream 1: pad length 4, expected at most 3 (body length 4) "
                            "(field: pad length)")
    with pytest.raises(fe.InvalidPaddingError):
        parse(wire(0x0, 0x08, 1, b"\x01"))


def test_data_large_payload_parsed_from_bytes_buffer_is_not_copied_until_read():
    payload = bytes(range(256)) * 64
    data = wire(0x0, 0x00, 1, payload)
    f = parse(data)
    assert f.serialize() == data
    assert f.data == payload and type(f.data) is bytes
    assert f.flow_controlled_length == len(payload)


def test_data_from_mutable_buffer_is_copied_at_once():
    buf = bytearray(wire(0x0, 0x00, 1, b"\x11" * 4096))
    f, n = Frame.parse_frame_header(memoryview(buf)[:9])
    f.parse_body(memoryview(buf)[9:9 + n])
    buf[9:] = b"\x22" * 4096
    assert f.data == b"\x11" * 4096


def test_data_memoryview_assigned_by_user():
    f = DataFrame(1, data=memoryview(b"abc"))
    assert f.serialize() == wire(0x0, 0, 1, b"abc")


def test_data_repr():
    assert repr(DataFrame(1, data=b"hello", flags=["END_STREAM"])) == \
        "DataFrame(stream_id=1, flags=['END_STREAM']): <hex:68656c6c6f>"
    assert repr(DataFrame(1, data=b"0123456789abcdef")) == \
        "DataFrame(stream_id=1, flags=[]): <hex:30313233343536373839...>"
    assert repr(DataFrame(1)) == "DataFrame(stream_id=1, flags=[]): None"


# --- HEADERS -----------------------------------------------------------------------


def test_headers_construct_and_serialize():
    f = HeadersFrame(1, data=b"\x82\x86", flags=["END_HEADERS", "END_STREAM"])
    assert f.serialize() == wire(0x1, 0x05, 1, b"\x82\x86")
    p = HeadersFrame(3, data=b"hb", depends_on=1, stream_weight=255, exclusive=True,
                     pad_length=2, flags=["PRIORITY", "PADDED", "END_HEADERS"])
    assert p.serialize() == wire(0x1, 0x2C, 3, b"\x02\x80\x00\x00\x01\xffhb\x00\x00")
    # Priority fields go on the wire only with the PRIORITY flag.
    assert HeadersFrame(1, data=b"x", depends_on=3, stream_weight=9).serialize() == wire(0x1, 0, 1, b"x")


def test_headers_parse():
    f = roundtrip(wire(0x1, 0x2C, 3, b"\x10\x80\x00\x00\x14\x09this is dummyThis is padding."))
    assert (f.depends_on, f.stream_weight, f.exclusive, f.data, f.pad_length) == \
        (20, 9, True, b"this is dummy", 16)
    assert f.padding == b"This is padding."
    f = roundtrip(wire(0x1, 0x04, 1, b"this is dummy"))
    assert (f.depends_on, f.stream_weight, f.exclusive, f.pad_length) == (0, 0, False, 0)
    f = roundtrip(wire(0x1, 0x20, 1, b"\x00\x00\x00\x03\x10"))
    assert (f.depends_on, f.stream_weight, f.exclusive, f.data) == (3, 16, False, b"")
    f = roundtrip(wire(0x1, 0x08, 1, b"\x03xyz"))  # all padding, empty fragment
    assert f.data == b"" and f.pad_length == 3


def test_headers_errors():
    with pytest.raises(fe.InvalidFrameError, match="PRIORITY flag"):
        parse(wire(0x1, 0x20, 1, b"\x00\x00\x00"))
    with pytest.raises(fe.InvalidFrameError, match="priority"):
        parse(wire(0x1, 0x28, 1, b"\x00\x00\x00\x00\x01"))
    with pytest.raises(fe.InvalidPaddingError):
        parse(wire(0x1, 0x08, 1, b"\x04\xaa\xaa\xaa"))
    with pytest.raises(fe.InvalidPaddingError):
        parse(wire(0x1, 0x28, 1, b"\x01\x00\x00\x00\x01\x10"))  # padding would eat priority
    with pytest.raises(fe.InvalidFrameError):
        parse(wire(0x1, 0x08, 1))


def test_headers_repr():
    assert repr(HeadersFrame(1, data=b"\x82", flags=["END_HEADERS"])) == (
        "HeadersFrame(stream_id=1, flags=['END_HEADERS']): exclusive=False, depends_on=0, stream_weight=0, "
        "data=<hex:82>")


# --- PRIORITY ----------------------------------------------------------------------


def test_priority():
    f = PriorityFrame(9, depends_on=11, stream_weight=7)
    assert f.serialize() == wire(0x2, 0, 9, b"\x00\x00\x00\x0b\x07")
    g = roundtrip(wire(0x2, 0, 9, b"\x80\x00\x00\x0b\xff"))
    assert (g.depends_on, g.stream_weight, g.exclusive) == (11, 255, True)
    assert repr(g) == "PriorityFrame(stream_id=9, flags=[]): exclusive=True, depends_on=11, stream_weight=255"


@pytest.mark.parametrize("size", [0, 4, 6, 8])
def test_priority_body_must_be_five_bytes(size):
    with pytest.raises(fe.InvalidFrameError) as e:
        parse(wire(0x2, 0, 1, b"\x00" * size))
    assert str(e.value) == f"PRIORITY frame on stream 1: body length {size}, expected 5 (field: priority)"


# --- RST_STREAM --------------------------------------------------------------------


def test_rst_stream():
    assert RstStreamFrame(5, error_code=8).serialize() == wire(0x3, 0, 5, b"\x00\x00\x00\x08")
    f = roundtrip(wire(0x3, 0, 5, b"\xff\xff\xff\xff"))
    assert f.error_code == 0xFFFFFFFF
    assert repr(RstStreamFrame(5, error_code=8)) == "RstStreamFrame(stream_id=5, flags=[]): error_code=8"


@pytest.mark.parametrize("size", [0, 3, 5, 8])
def test_rst_stream_body_must_be_four_bytes(size):
    with pytest.raises(fe.InvalidFrameError, match=f"body length {size}, expected 4"):
        parse(wire(0x3, 0, 1, b"\x00" * size))


# --- SETTINGS ----------------------------------------------------------------------


def test_settings_constants():
    S = SettingsFrame
    assert (S.HEADER_TABLE_SIZE, S.ENABLE_PUSH, S.MAX_CONCURRENT_STREAMS, S.INITIAL_WINDOW_SIZE,
            S.MAX_FRAME_SIZE, S.MAX_HEADER_LIST_SIZE, S.ENABLE_CONNECT_PROTOCOL) == (1, 2, 3, 4, 5, 6, 8)


def test_settings_construct_and_serialize():
    f = SettingsFrame(settings={1: 8192, 3: 5000})
    assert f.serialize() == wire(0x4, 0, 0, bytes.fromhex("000100002000000300001388"))
    assert SettingsFrame().settings == {}
    assert SettingsFrame(flags=["ACK"]).serialize() == wire(0x4, 0x01, 0)
    with pytest.raises(fe.InvalidDataError, match="ACK"):
        SettingsFrame(settings={1: 1}, flags=["ACK"])
    assert repr(f) == "SettingsFrame(stream_id=0, flags=[]): settings={1: 8192, 3: 5000}"


def test_settings_wire_order_duplicates_and_unknown_ids_round_trip():
    body = (struct.pack(">HL", 4, 65535) + struct.pack(">HL", 1, 4096) + struct.pack(">HL", 4, 1)
            + struct.pack(">HL", 0xABCD, 7))
    data = wire(0x4, 0, 0, body)
    f = roundtrip(data)
    assert f.settings == {4: 1, 1: 4096, 0xABCD: 7}  # the last value of a duplicate wins
    assert f.settings_pairs == [(4, 65535), (1, 4096), (4, 1), (0xABCD, 7)]


def test_settings_changed_dict_is_serialized_from_the_dict():
    body = struct.pack(">HL", 4, 65535) + struct.pack(">HL", 4, 1)
    f = parse(wire(0x4, 0, 0, body))
    f.settings[5] = 32768
    assert f.serialize() == wire(0x4, 0, 0, struct.pack(">HL", 4, 1) + struct.pack(">HL", 5, 32768))
    assert f.settings_pairs == [(4, 1), (5, 32768)]
    g = parse(wire(0x4, 0, 0, body))
    g.settings = {1: 0}
    assert g.serialize() == wire(0x4, 0, 0, struct.pack(">HL", 1, 0))


def test_settings_errors():
    with pytest.raises(fe.InvalidDataError) as e:
        parse(wire(0x4, 0x01, 0, b"\x00" * 6))
    assert "ACK" in str(e.value) and "body length 6" in str(e.value)
    for size in (1, 5, 7, 8):
        with pytest.raises(fe.InvalidFrameError, match=f"body length {size}, expected a multiple of 6"):
            parse(wire(0x4, 0, 0, b"\x00" * size))
    with pytest.raises(fe.InvalidDataError, match="setting id"):
        SettingsFrame(settings={70000: 1}).serialize()
    with pytest.raises(fe.InvalidDataError, match="value -1 of setting 1"):
        SettingsFrame(settings={1: -1}).serialize()


def test_settings_ack_parses():
    f = roundtrip(wire(0x4, 0x01, 0))
    assert "ACK" in f.flags and f.settings == {}


# --- PUSH_PROMISE ------------------------------------------------------------------


def test_push_promise_construct_and_serialize():
    f = PushPromiseFrame(1, promised_stream_id=2, data=b"hb", flags=["END_HEADERS"])
    assert f.serialize() == wire(0x5, 0x04, 1, b"\x00\x00\x00\x02hb")
    p = PushPromiseFrame(1, promised_stream_id=4, data=b"hb", pad_length=3, flags=["PADDED"])
    assert p.serialize() == wire(0x5, 0x08, 1, b"\x03\x00\x00\x00\x04hb\x00\x00\x00")
    assert repr(f) == "PushPromiseFrame(stream_id=1, flags=['END_HEADERS']): promised_stream_id=2, data=<hex:6862>"


def test_push_promise_odd_promised_id_at_construction():
    with pytest.raises(fe.InvalidDataError) as e:
        PushPromiseFrame(1, promised_stream_id=1)
    assert "promised stream id 1" in str(e.value)
    PushPromiseFrame(1)  # the default 0 is allowed at construction


def test_push_promise_parse():
    f = roundtrip(wire(0x5, 0x0C, 10, b"\x06\x00\x00\x00\x0cthis is dummyHowdy!"))
    assert (f.promised_stream_id, f.data, f.pad_length, f.padding) == (12, b"this is dummy", 6, b"Howdy!")
    f = roundtrip(wire(0x5, 0x04, 1, b"\x80\x00\x00\x02"))  # reserved bit on the promised id
    assert f.promised_stream_id == 2


@pytest.mark.parametrize("body, flags, exc, text", [
    (b"\x00\x00\x00", 0, fe.InvalidFrameError, "body length 3, expected at least 4"),
    (b"", 0x08, fe.InvalidFrameError, "pad length"),
    (b"\x00\x00\x00\x02", 0x08, fe.InvalidFrameError, "body length 4, expected at least 5"),
    (b"\x00\x00\x00\x00", 0, fe.InvalidDataError, "promised stream id 0"),
    (b"\x00\x00\x00\x03", 0, fe.InvalidDataError, "promised stream id 3"),
    (b"\x02\x00\x00\x00\x02\x00", 0x08, fe.InvalidPaddingError, "pad length 2"),
])
def test_push_promise_errors(body, flags, exc, text):
    with pytest.raises(exc) as e:
        parse(wire(0x5, flags, 1, body))
    assert text in str(e.value) and "PUSH_PROMISE frame on stream 1" in str(e.value)


# --- PING --------------------------------------------------------------------------


def test_ping():
    assert PingFrame(opaque_data=b"abc").serialize() == wire(0x6, 0, 0, b"abc\x00\x00\x00\x00\x00")
    assert PingFrame(0, opaque_data=b"12345678", flags=["ACK"]).serialize() == wire(0x6, 1, 0, b"12345678")
    f = roundtrip(wire(0x6, 0x01, 0, b"deadbeef"))
    assert f.opaque_data == b"deadbeef" and "ACK" in f.flags
    assert repr(f) == "PingFrame(stream_id=0, flags=['ACK']): opaque_data=b'deadbeef'"
    with pytest.raises(fe.InvalidFrameError, match="at most 8"):
        PingFrame(opaque_data=b"123456789").serialize()


@pytest.mark.parametrize("size", [0, 7, 9, 16])
def test_ping_body_must_be_eight_bytes(size):
    with pytest.raises(fe.InvalidFrameError) as e:
        parse(wire(0x6, 0, 0, b"\x00" * size))
    assert str(e.value) == f"PING frame on stream 0: body length {size}, expected 8 (field: opaque data)"
    assert (e.value.frame_type, e.value.stream_id, e.value.field, e.value.value) == (6, 0, "opaque data", size)


# --- GOAWAY ------------------------------------------------------------------------


def test_goaway():
    f = GoAwayFrame(last_stream_id=30, error_code=9, additional_data=b"hpack is broken")
    data = wire(0x7, 0, 0, b"\x00\x00\x00\x1e\x00\x00\x00\x09hpack is broken")
    assert f.serialize() == data
    g = roundtrip(data)
    assert (g.last_stream_id, g.error_code, g.additional_data) == (30, 9, b"hpack is broken")
    assert repr(g) == ("GoAwayFrame(stream_id=0, flags=[]): last_stream_id=30, error_code=9, "
                       "additional_data=b'hpack is broken'")
    h = roundtrip(wire(0x7, 0, 0, b"\x80\x00\x00\x01\x00\x00\x00\x00"))
    assert h.last_stream_id == 1 and h.additional_data == b""


@pytest.mark.parametrize("size", [0, 4, 7])
def test_goaway_short_body(size):
    with pytest.raises(fe.InvalidFrameError, match=f"body length {size}, expected at least 8"):
        parse(wire(0x7, 0, 0, b"\x00" * size))


# --- WINDOW_UPDATE -----------------------------------------------------------------


def test_window_update():
    assert WindowUpdateFrame(50, window_increment=1000).serialize() == wire(0x8, 0, 50, b"\x00\x00\x03\xe8")
    f = roundtrip(wire(0x8, 0, 0, b"\x7f\xff\xff\xff"))
    assert f.window_increment == 2 ** 31 - 1 and f.stream_id == 0
    assert repr(f) == "WindowUpdateFrame(stream_id=0, flags=[]): window_increment=2147483647"


@pytest.mark.parametrize("body, exc, text", [
    (b"\x00\x00\x00\x00", fe.InvalidDataError, "increment 0"),
    (b"\x80\x00\x00\x01", fe.InvalidDataError, "increment 2147483649"),
    (b"\x00\x00\x01", fe.InvalidFrameError, "body length 3, expected 4"),
    (b"\x00\x00\x00\x01\x00", fe.InvalidFrameError, "body length 5, expected 4"),
    (b"", fe.InvalidFrameError, "body length 0, expected 4"),
])
def test_window_update_errors(body, exc, text):
    with pytest.raises(exc) as e:
        parse(wire(0x8, 0, 1, body))
    assert text in str(e.value) and "WINDOW_UPDATE frame on stream 1" in str(e.value)
    assert "field: window size increment" in str(e.value)


# --- CONTINUATION ------------------------------------------------------------------


def test_continuation():
    f = ContinuationFrame(50, data=b"this is dummy", flags=["END_HEADERS"])
    assert f.serialize() == wire(0x9, 0x04, 50, b"this is dummy")
    g = roundtrip(wire(0x9, 0, 50))
    assert g.data == b""
    assert repr(g) == "ContinuationFrame(stream_id=50, flags=[]): data=None"


# --- ALTSVC ------------------------------------------------------------------------


def test_altsvc():
    f = AltSvcFrame(0, origin=b"example.com", field=b'h2=":443"')
    data = wire(0xA, 0, 0, b"\x00\x0bexample.com" + b'h2=":443"')
    assert f.serialize() == data
    g = roundtrip(data)
    assert (g.origin, g.field) == (b"example.com", b'h2=":443"')
    assert repr(g) == "AltSvcFrame(stream_id=0, flags=[]): origin=b'example.com', field=b'h2=\":443\"'"
    s = roundtrip(wire(0xA, 0, 1, b"\x00\x00" + b'h2=":443"'))
    assert s.origin == b"" and s.field == b'h2=":443"'


def test_altsvc_breaking_the_xor_rule_still_parses():
    both = roundtrip(wire(0xA, 0, 1, b"\x00\x01xfield"))
    assert both.stream_id == 1 and both.origin == b"x"
    neither = roundtrip(wire(0xA, 0, 0, b"\x00\x00"))
    assert neither.origin == b"" and neither.field == b""


def test_altsvc_errors():
    with pytest.raises(fe.InvalidDataError, match="origin"):
        AltSvcFrame(1, origin="not bytes", field=b"x")
    with pytest.raises(fe.InvalidDataError, match="field"):
        AltSvcFrame(1, origin=b"", field="not bytes")
    with pytest.raises(fe.InvalidFrameError, match="body length 1, expected at least 2"):
        parse(wire(0xA, 0, 0, b"\x00"))
    with pytest.raises(fe.InvalidFrameError, match="origin length 5, but only 3 bytes follow"):
        parse(wire(0xA, 0, 0, b"\x00\x05abc"))


# --- extension frames --------------------------------------------------------------


def test_extension_frame_round_trip_and_repr():
    data = wire(0xEE, 0x0F, 0x80000001, b"Hello")
    f = roundtrip(data)
    assert (f.type, f.flag_byte, f.body, f.stream_id) == (0xEE, 0x0F, b"Hello", 1)
    assert len(f.flags) == 0
    assert repr(f) == "ExtensionFrame(stream_id=1, flags=[]): type=238, flag_byte=15, body=<hex:48656c6c6f>"


def test_extension_frame_constructed_has_a_true_length():
    f = ExtensionFrame(type=0xCC, stream_id=3, flag_byte=0x05, body=b"Custom frame data")
    assert f.serialize() == wire(0xCC, 0x05, 3, b"Custom frame data")
    f.parse_flags(0x07)
    assert f.flag_byte == 0x07


def test_extension_frame_from_truncated_buffer_keeps_what_is_there():
    bad = b"\x00\x00\x05\xFF\x00\x00\x00\x00\x01ABC"
    f, length = Frame.parse_frame_header(bad[:9])
    f.parse_body(memoryview(bad[9:]))
    assert length == 5 and f.body == b"ABC"


def test_extension_frame_bad_fields_on_serialize():
    with pytest.raises(fe.InvalidDataError, match="flag byte 256"):
        ExtensionFrame(0xCC, 1, flag_byte=256).serialize()
    with pytest.raises(fe.InvalidDataError, match="type 300"):
        ExtensionFrame(300, 1).serialize()


# --- byte-exact round trip of undefined flags and reserved bits ---------------------


@pytest.mark.parametrize("data", [
    wire(0x0, 0xF6, 0x80000001, b"data"),                        # DATA, every undefined bit
    wire(0x1, 0xDA, 0x80000003, b"\x00\x00\x00\x00\x00\x10hb"),  # HEADERS: PADDED|PRIORITY + undefined
    wire(0x2, 0xFF, 0x80000003, b"\x80\x00\x00\x01\x10"),         # PRIORITY defines no flag
    wire(0x3, 0xFF, 0x80000003, b"\x00\x00\x00\x08"),
    wire(0x4, 0xFE, 0x80000000, b"\x00\x01\x00\x00\x10\x00"),
    wire(0x4, 0xFF, 0x80000000),                                 # SETTINGS ACK + undefined
    wire(0x5, 0xF3, 0x80000001, b"\x80\x00\x00\x02hb"),
    wire(0x6, 0xFE, 0x80000000, b"12345678"),
    wire(0x7, 0xFF, 0x80000000, b"\x80\x00\x00\x05\x00\x00\x00\x02debug"),
    wire(0x8, 0xFF, 0x80000000, b"\x00\x00\x00\x01"),
    wire(0x9, 0xFB, 0x80000001, b"hb"),
    wire(0xA, 0xFF, 0x80000000, b"\x00\x01xy"),
    wire(0xFA, 0xFF, 0xFFFFFFFF, b"ext"),
])
def test_undefined_bits_round_trip(data):
    f = roundtrip(data)
    # The Flags set shows only defined flags; the others survive anyway.
    defined = {name for name, bit in type(f).defined_flags if data[4] & bit}
    assert set(f.flags) == defined
    assert f.reserved_bit == bool(data[5] & 0x80)
    assert f.serialize() == data


def test_undefined_flags_accessor():
    f = parse(wire(0x0, 0xF7, 1, b"x"))
    assert f.undefined_flags == 0xF6 and set(f.flags) == {"END_STREAM"}
    f.undefined_flags = 0
    assert f.serialize() == wire(0x0, 0x01, 1, b"x")


# --- serialization errors --------------------------------------------------------------


def test_serialize_errors_name_the_field():
    with pytest.raises(fe.InvalidDataError) as e:
        DataFrame(1, data=b"x", pad_length=300, flags=["PADDED"]).serialize()
    assert "DATA frame on stream 1" in str(e.value) and "pad length 300" in str(e.value)
    with pytest.raises(fe.InvalidDataError, match="error code"):
        RstStreamFrame(1, error_code=2 ** 32).serialize()
    with pytest.raises(fe.InvalidDataError, match="stream weight 256"):
        PriorityFrame(1, stream_weight=256).serialize()
    with pytest.raises(fe.InvalidDataError, match="error code -1"):
        GoAwayFrame(error_code=-1).serialize()
    with pytest.raises(fe.InvalidDataError, match="stream weight"):
        HeadersFrame(1, stream_weight=1000, flags=["PRIORITY"]).serialize()


def test_serialize_body_too_long_for_the_length_field():
    f = ContinuationFrame(1, data=bytes(FRAME_MAX_ALLOWED_LEN + 1))
    with pytest.raises(fe.InvalidFrameError, match="24-bit"):
        f.serialize()


# --- subclasses and registered classes ------------------------------------------------


def test_subclass_overriding_serialize_body_is_used():
    class Shouty(DataFrame):
        def serialize_body(self):
            return self.data.upper()

    assert Shouty(1, data=b"abc").serialize() == wire(0x0, 0, 1, b"ABC")


def test_class_registered_in_frames_with_its_own_init(monkeypatch):
    class Custom(ExtensionFrame):
        defined_flags = [Flag("F", 0x01)]
        created = []

        def __init__(self, stream_id, **kw):
            super().__init__(type=0xB, stream_id=stream_id, **kw)
            Custom.created.append(stream_id)

    monkeypatch.setitem(FRAMES, 0xB, Custom)
    data = wire(0xB, 0x03, 7, b"xyz")
    f = roundtrip(data)
    assert isinstance(f, Custom) and Custom.created == [7] and f.flag_byte == 0x03


def test_repr_of_unparsed_frame():
    f, _ = Frame.parse_frame_header(header(4, 0x1, 0x20, 1))
    assert repr(f).startswith("HeadersFrame(stream_id=1, flags=['PRIORITY']): ")


# --- compatibility with hyperframe 6.1.0 ---------------------------------------------
#
# The same operations against both codecs, results compared. Where framecodec is
# deliberately different (byte-exact round trip of reserved bits and undefined
# flags, HEADERS body_len with padding, ...) the inputs below stay clear of it;
# docs/framecodec.md lists those differences.

try:
    import hyperframe.exceptions as hf_exceptions
    import hyperframe.flags as hf_flags
    import hyperframe.frame as hf_frame
except ImportError:  # pragma: no cover - hyperframe is in the test extras
    hf_frame = hf_flags = hf_exceptions = None

needs_hyperframe = pytest.mark.skipif(hf_frame is None, reason="hyperframe 6.1.0 is not installed")

CONSTRUCTIONS = [
    ("DataFrame", (1,), {"data": b"hello", "flags": ["END_STREAM"]}),
    ("DataFrame", (3,), {"data": b"x" * 40, "pad_length": 5, "flags": ["PADDED"]}),
    ("DataFrame", (1,), {}),
    ("HeadersFrame", (1,), {"data": b"\x82\x86\x84", "flags": ["END_HEADERS"]}),
    ("HeadersFrame", (3,), {"data": b"hb", "depends_on": 1, "stream_weight": 200, "exclusive": True,
                            "pad_length": 2, "flags": ["PRIORITY", "PADDED", "END_STREAM"]}),
    ("PriorityFrame", (5,), {"depends_on": 3, "stream_weight": 15, "exclusive": True}),
    ("PriorityFrame", (5, 3, 15), {}),
    ("RstStreamFrame", (7,), {"error_code": 8}),
    ("RstStreamFrame", (7, 2), {}),
    ("SettingsFrame", (), {"settings": {1: 4096, 4: 65535, 3: 100}}),
    ("SettingsFrame", (0,), {"flags": ["ACK"]}),
    ("PushPromiseFrame", (1,), {"promised_stream_id": 2, "data": b"hb", "flags": ["END_HEADERS"]}),
    ("PushPromiseFrame", (1, 4, b"hb"), {"pad_length": 3, "flags": ["PADDED"]}),
    ("PingFrame", (), {"opaque_data": b"abc"}),
    ("PingFrame", (0, b"12345678"), {"flags": ["ACK"]}),
    ("GoAwayFrame", (), {"last_stream_id": 31, "error_code": 2, "additional_data": b"bye"}),
    ("GoAwayFrame", (0, 5, 1), {}),
    ("WindowUpdateFrame", (0,), {"window_increment": 65535}),
    ("WindowUpdateFrame", (9, 1), {}),
    ("ContinuationFrame", (1,), {"data": b"\x00" * 30, "flags": ["END_HEADERS"]}),
    ("AltSvcFrame", (0,), {"origin": b"example.com", "field": b'h2=":443"'}),
    ("AltSvcFrame", (1, b"", b'h2="alt:443"'), {}),
]

PUBLIC_FIELDS = ["stream_id", "data", "pad_length", "depends_on", "stream_weight", "exclusive",
                 "error_code", "settings", "promised_stream_id", "opaque_data", "last_stream_id",
                 "additional_data", "window_increment", "origin", "field", "type", "flag_byte", "body"]


def fields(frame):
    out = {name: getattr(frame, name) for name in PUBLIC_FIELDS if hasattr(frame, name)}
    out["flags"] = sorted(frame.flags)
    out["class"] = type(frame).__name__
    return out


@needs_hyperframe
@pytest.mark.parametrize("name, args, kwargs", CONSTRUCTIONS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONSTRUCTIONS)])
def test_compat_construct_serialize_repr(name, args, kwargs):
    ours = getattr(fc, name)(*args, **kwargs)
    theirs = getattr(hf_frame, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert fields(ours) == fields(theirs)
    assert ours.serialize() == theirs.serialize()
    assert ours.body_len == theirs.body_len
    if name == "DataFrame":
        assert ours.flow_controlled_length == theirs.flow_controlled_length


def compat_wires():
    wires = [getattr(fc, name)(*args, **kwargs).serialize() for name, args, kwargs in CONSTRUCTIONS]
    wires += [
        wire(0x0, 0x08, 2, b"\x06Hello, world!\x00\x00\x00\x00\x00\x00"),
        wire(0x1, 0x2C, 3, b"\x10\x80\x00\x00\x14\x09this is dummy" + b"\x00" * 16),
        wire(0x4, 0x00, 0, bytes.fromhex("000100002000000300001388")),
        wire(0x5, 0x0C, 10, b"\x06\x00\x00\x00\x0cthis is dummy" + b"\x00" * 6),
        wire(0xEE, 0x0F, 1, b"Hello"),
        wire(0x0, 0x00, 1, b"\x5a" * 5000),
    ]
    return wires


@needs_hyperframe
@pytest.mark.parametrize("data", compat_wires(), ids=lambda w: w[:9].hex())
def test_compat_parse(data):
    results = []
    for module in (fc, hf_frame):
        f, length = module.Frame.parse_frame_header(memoryview(data)[:9])
        f.parse_body(memoryview(data)[9:9 + length])
        results.append((length, fields(f), repr(f), f.serialize(), f.body_len))
    assert results[0] == results[1]


COMPAT_ERRORS = [
    wire(0x0, 0x08, 1, b"\x04\xaa\xaa\xaa"),
    header(1, 0x0, 0, 0) + b"\xaa",
    wire(0x7, 0, 0, b"\x00\x00\x00\x02"),
    wire(0x7, 0, 1, b"\x00" * 8),
    header(1, 0x1, 0, 0) + b"\xaa",
    wire(0x6, 0, 0, b"\xaa" * 4),
    wire(0x6, 0x01, 1, b"\xaa" * 8),
    wire(0x2, 0, 2, b"\x80\x00\x00\x01\xff\xaa\xaa\xaa"),
    wire(0x2, 0, 0, b"\xaa\xaa\xaa\xaa\xbb"),
    wire(0x5, 0, 1, b"\x00\x00\x00\x01"),
    wire(0x5, 0, 1, b"\x00\x00\x00\x00"),
    wire(0x5, 0, 0, b"\x77\x77\x77\x77"),
    wire(0x3, 0, 2, b"\xaa" * 8),
    wire(0x3, 0, 0, b"\xaa" * 4),
    wire(0x4, 0x01, 0, b"\xaa\xaa\xbb\xbb\xbb\xbb"),
    wire(0x4, 0, 0, b"\xaa\xaa\xbb\xbb\xbb\xbb\xcc\xcc"),
    wire(0x4, 0, 1, b"\xaa\xaa\xbb\xbb\xbb\xbb"),
    wire(0x8, 0, 1, b"\x00\x00\x00\x00"),
    wire(0x8, 0, 1, b"\x55\x66"),
    wire(0x8, 0, 1, b"\x80\x00\x00\x01"),
    wire(0xA, 0, 0, b"\x00\x05abc"),
]


@needs_hyperframe
@pytest.mark.parametrize("data", COMPAT_ERRORS, ids=lambda w: w[:9].hex())
def test_compat_errors(data):
    names = []
    for module, exceptions in ((fc, fe), (hf_frame, hf_exceptions)):
        with pytest.raises(exceptions.HyperframeError) as e:
            f, length = module.Frame.parse_frame_header(memoryview(data)[:9])
            f.parse_body(memoryview(data)[9:9 + length])
        names.append(type(e.value).__name__)
    assert names[0] == names[1]


@needs_hyperframe
def test_compat_flags():
    for module in (fc, hf_frame):
        f = module.DataFrame(1, data=b"Test data")
        f.flags.add("END_STREAM")
        assert "END_STREAM" in f.flags and list(f.flags) == ["END_STREAM"]
        with pytest.raises(ValueError):
            f.flags.add("INVALID_FLAG")
        f.flags.discard("END_STREAM")
        assert len(f.flags) == 0
    ours = Flags([Flag("A", 1), Flag("B", 2)])
    theirs = hf_flags.Flags([hf_flags.Flag("A", 1), hf_flags.Flag("B", 2)])
    for s in (ours, theirs):
        s.add("B")
        s.add("A")
    assert repr(ours) == repr(theirs) and set(ours) == set(theirs)


@needs_hyperframe
def test_compat_public_names():
    import framecodec.exceptions
    import framecodec.flags

    for theirs, ours in ((hf_frame, fc), (hf_flags, framecodec.flags), (hf_exceptions, framecodec.exceptions)):
        public = {n for n in dir(theirs) if not n.startswith("_")
                  and getattr(getattr(theirs, n), "__module__", "").startswith("hyperframe")}
        missing = {n for n in public if not hasattr(ours, n)}
        assert not missing, (theirs.__name__, missing)
    for name in ("FRAME_MAX_LEN", "FRAME_MAX_ALLOWED_LEN"):
        assert getattr(fc, name) == getattr(hf_frame, name)
    for cls in hf_frame.FRAMES.values():
        ours = getattr(fc, cls.__name__)
        assert ours.type == cls.type
        assert ours.stream_association == cls.stream_association
        assert list(ours.defined_flags) == list(cls.defined_flags)
        public = {n for n in dir(cls) if not n.startswith("_")}
        assert public <= set(dir(ours)), (cls.__name__, public - set(dir(ours)))


@needs_hyperframe
def test_compat_unknown_frame_error():
    data = wire(0xEE, 0, 1, b"xx")
    for module, exceptions in ((fc, fe), (hf_frame, hf_exceptions)):
        with pytest.raises(exceptions.UnknownFrameError) as e:
            module.Frame.parse_frame_header(data[:9], strict=True)
        assert (e.value.frame_type, e.value.length) == (0xEE, 2)


def test_lazy_data_survives_the_callers_view_being_released():
    data = wire(0x0, 0, 1, b"\x33" * 3000)
    f, n = Frame.parse_frame_header(data[:9])
    with memoryview(data) as outer:
        body = outer[9:9 + n]
        f.parse_body(body)
        body.release()
    assert f.serialize() == data and f.data == b"\x33" * 3000


def test_non_frame_class_registered_in_frames(monkeypatch):
    class Foreign:
        def __init__(self, stream_id):
            self.stream_id = stream_id
            self.flag_byte = None

        def parse_flags(self, flag_byte):
            self.flag_byte = flag_byte

    monkeypatch.setitem(FRAMES, 0xC, Foreign)
    f, n = Frame.parse_frame_header(header(3, 0xC, 0x07, 9))
    assert isinstance(f, Foreign) and (f.stream_id, f.flag_byte, n) == (9, 0x07, 3)
