"""The codec's advanced features as the user's document describes them (advanced-features.md).

One test per documented behaviour of PUSH_PROMISE, ALTSVC, extension frames, flags, the
PUSH_PROMISE + CONTINUATION scenario and the error cases. The document's examples are written
against ``hyperframe``; ``framecodec`` keeps that API, so they read the same with the import
changed. Where the document shows a value only by printing it, the test asserts it.
"""
from __future__ import annotations

import struct

import pytest

from framecodec.exceptions import InvalidDataError
from framecodec.flags import Flag, Flags
from framecodec.frame import (
    AltSvcFrame,
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    HeadersFrame,
    PushPromiseFrame,
)


def reparse(wire: bytes, strict: bool = False) -> Frame:
    """Decode one whole frame from ``wire`` through the public header/body API."""
    frame, length = Frame.parse_frame_header(wire[:9], strict=strict)
    assert len(wire) == 9 + length, "the length field tells the truth"
    frame.parse_body(memoryview(wire[9:9 + length]))
    return frame


def header(wire: bytes) -> tuple[int, int, int, int]:
    """(length, type, flag byte, stream id) of a serialized frame."""
    return int.from_bytes(wire[:3], "big"), wire[3], wire[4], struct.unpack(">L", wire[5:9])[0]


# ----------------------------------------------------------------------- PUSH_PROMISE

def test_push_promise_holds_its_streams_and_header_block():
    promise = PushPromiseFrame(stream_id=1, promised_stream_id=2, data=b"\x00\x05:path\x0A/style.css",
                               flags=["END_HEADERS"])
    assert (promise.stream_id, promise.promised_stream_id) == (1, 2)
    assert promise.data == b"\x00\x05:path\x0A/style.css"
    assert "END_HEADERS" in promise.flags


def test_push_promise_wire_format():
    """Type 0x5, END_HEADERS is 0x04, the body is the promised id then the header block."""
    data = b"\x00\x05:path\x0A/style.css"
    wire = PushPromiseFrame(1, promised_stream_id=2, data=data, flags=["END_HEADERS"]).serialize()
    assert header(wire) == (4 + len(data), 0x05, 0x04, 1)
    assert wire[9:13] == b"\x00\x00\x00\x02" and wire[13:] == data


def test_padded_push_promise_round_trips():
    """PADDED is 0x08: a pad-length byte first, that many zero bytes last."""
    data = b"\x00\x05:path\x0B/script.js"
    padded = PushPromiseFrame(stream_id=1, promised_stream_id=4, data=data, pad_length=8,
                              flags=["END_HEADERS", "PADDED"])
    wire = padded.serialize()
    assert header(wire) == (1 + 4 + len(data) + 8, 0x05, 0x04 | 0x08, 1)
    assert wire[9] == 8 and wire[-8:] == b"\x00" * 8
    again = reparse(wire)
    assert isinstance(again, PushPromiseFrame)
    assert (again.promised_stream_id, again.data, again.pad_length) == (4, data, 8)
    assert set(again.flags) == {"END_HEADERS", "PADDED"}
    assert again.serialize() == wire


def test_push_promise_defines_only_end_headers_and_padded():
    assert {(f.name, f.bit) for f in PushPromiseFrame.defined_flags} == {("END_HEADERS", 0x04), ("PADDED", 0x08)}
    with pytest.raises(ValueError, match="END_STREAM"):
        PushPromiseFrame(1, promised_stream_id=2, flags=["END_STREAM"])


def test_push_promise_needs_a_stream():
    with pytest.raises(InvalidDataError):
        PushPromiseFrame(stream_id=0, promised_stream_id=2)


def test_push_promise_refuses_an_odd_promised_stream_id():
    with pytest.raises(InvalidDataError, match="promised stream id"):
        PushPromiseFrame(stream_id=1, promised_stream_id=1)


@pytest.mark.parametrize("promised", [0, 3])
def test_parsed_push_promise_refuses_a_zero_or_odd_promised_stream_id(promised):
    wire = PushPromiseFrame(1, promised_stream_id=2, flags=["END_HEADERS"]).serialize()
    wire = wire[:9] + struct.pack(">L", promised)
    with pytest.raises(InvalidDataError, match="promised stream id"):
        reparse(wire)


# ----------------------------------------------------------------------- ALTSVC

def test_altsvc_connection_and_stream_level():
    connection = AltSvcFrame(stream_id=0, origin=b"example.com", field=b'h2="alt.example.com:443"; ma=3600')
    stream = AltSvcFrame(stream_id=1, origin=b"", field=b'h2="alt2.example.com:443"')
    assert (connection.origin, connection.field) == (b"example.com", b'h2="alt.example.com:443"; ma=3600')
    assert (stream.origin, stream.field) == (b"", b'h2="alt2.example.com:443"')
    for f in (connection, stream):
        again = reparse(f.serialize())
        assert isinstance(again, AltSvcFrame)
        assert (again.stream_id, again.origin, again.field) == (f.stream_id, f.origin, f.field)


def test_altsvc_wire_format():
    """RFC 7838 section 4: type 0xA, a 16-bit origin length, the origin, then the field value."""
    wire = AltSvcFrame(0, origin=b"example.com", field=b'h2=":443"').serialize()
    assert header(wire) == (2 + 11 + 9, 0x0A, 0, 0)
    assert wire[9:11] == b"\x00\x0b" and wire[11:22] == b"example.com" and wire[22:] == b'h2=":443"'


def test_altsvc_has_no_flags():
    assert list(AltSvcFrame.defined_flags) == []
    with pytest.raises(ValueError):
        AltSvcFrame(0, origin=b"example.com").flags.add("END_STREAM")


@pytest.mark.parametrize("kwargs", [{"origin": "not bytes", "field": b"valid"},
                                    {"origin": b"", "field": "not bytes"}])
def test_altsvc_refuses_origin_or_field_that_is_not_bytes(kwargs):
    with pytest.raises(InvalidDataError):
        AltSvcFrame(stream_id=1, **kwargs)


def test_altsvc_breaking_the_xor_rule_still_parses():
    """Stream 0 XOR a non-empty origin; a frame that breaks it is the receiver's to ignore (RFC 7838)."""
    both = AltSvcFrame(1, origin=b"example.com", field=b"x")
    again = reparse(both.serialize())
    assert (again.stream_id, again.origin, again.field) == (1, b"example.com", b"x")


# ----------------------------------------------------------------------- extension frames

UNKNOWN = b"\x00\x00\x05\xEE\x0F\x00\x00\x00\x01Hello"  # type 0xEE, flags 0x0F, stream 1


def test_unknown_type_parses_to_an_extension_frame():
    frame, length = Frame.parse_frame_header(UNKNOWN[:9], strict=False)
    assert isinstance(frame, ExtensionFrame) and length == 5
    frame.parse_body(memoryview(UNKNOWN[9:9 + length]))
    assert (frame.type, frame.flag_byte, frame.body, frame.stream_id) == (0xEE, 0x0F, b"Hello", 1)


def test_extension_frame_serializes_exactly_as_received():
    assert reparse(UNKNOWN).serialize() == UNKNOWN


def test_extension_frame_made_by_hand():
    custom = ExtensionFrame(type=0xCC, stream_id=3, flag_byte=0x05, body=b"Custom frame data")
    assert (custom.type, custom.stream_id, custom.flag_byte, custom.body) == (0xCC, 3, 0x05, b"Custom frame data")
    wire = custom.serialize()
    assert header(wire) == (len(b"Custom frame data"), 0xCC, 0x05, 3)
    assert wire[9:] == b"Custom frame data"


def test_extension_frame_keeps_the_raw_flag_byte():
    frame = ExtensionFrame(type=0xCC, stream_id=0)
    frame.parse_flags(0xA5)
    assert frame.flag_byte == 0xA5
    assert frame.serialize()[4] == 0xA5


def test_extension_frame_from_a_truncated_buffer_keeps_what_is_there():
    bad_data = b"\x00\x00\x05\xFF\x00\x00\x00\x00\x01ABC"  # claims 5 bytes, has 3
    frame, length = Frame.parse_frame_header(bad_data[:9])
    assert isinstance(frame, ExtensionFrame) and length == 5
    frame.parse_body(memoryview(bad_data[9:]))
    assert frame.body == b"ABC"


# ----------------------------------------------------------------------- flags

def test_flag_is_a_name_and_a_bit():
    flag = Flag("END_STREAM", 0x01)
    assert (flag.name, flag.bit) == ("END_STREAM", 0x01)


def test_frame_flags_add_check_iterate_discard():
    data_frame = DataFrame(stream_id=1, data=b"Test data")
    data_frame.flags.add("END_STREAM")
    assert "END_STREAM" in data_frame.flags
    assert list(data_frame.flags) == ["END_STREAM"] and len(data_frame.flags) == 1
    assert data_frame.serialize()[4] == 0x01
    data_frame.flags.discard("END_STREAM")
    assert "END_STREAM" not in data_frame.flags
    assert list(data_frame.flags) == [] and len(data_frame.flags) == 0
    data_frame.flags.discard("END_STREAM")  # discarding an absent flag is no error
    assert len(data_frame.flags) == 0


def test_undefined_flag_is_refused_by_name():
    data_frame = DataFrame(stream_id=1, data=b"Test data")
    with pytest.raises(ValueError, match="INVALID_FLAG"):
        data_frame.flags.add("INVALID_FLAG")
    assert list(data_frame.flags) == []


def test_custom_flag_set():
    flag_set = Flags([Flag("CUSTOM_FLAG_1", 0x01), Flag("CUSTOM_FLAG_2", 0x02)])
    assert len(flag_set) == 0
    flag_set.add("CUSTOM_FLAG_1")
    assert list(flag_set) == ["CUSTOM_FLAG_1"] and "CUSTOM_FLAG_2" not in flag_set
    flag_set.add("CUSTOM_FLAG_2")
    assert set(flag_set) == {"CUSTOM_FLAG_1", "CUSTOM_FLAG_2"} and len(flag_set) == 2
    with pytest.raises(ValueError, match="END_STREAM"):
        flag_set.add("END_STREAM")


# ----------------------------------------------------------------------- PUSH_PROMISE continued

def test_push_promise_continued_by_continuation():
    large_headers = b"\x00\x07:method\x03GET" + b"\x00" * 2000
    push_start = PushPromiseFrame(stream_id=1, promised_stream_id=2, data=large_headers[:1000])
    push_continuation = ContinuationFrame(stream_id=1, data=large_headers[1000:], flags=["END_HEADERS"])
    assert len(push_start.data) == 1000 and len(push_continuation.data) == len(large_headers) - 1000
    assert "END_HEADERS" not in push_start.flags
    first, second = reparse(push_start.serialize()), reparse(push_continuation.serialize())
    assert header(push_start.serialize())[1:3] == (0x05, 0x00)
    assert header(push_continuation.serialize())[1:3] == (0x09, 0x04)
    assert first.data + second.data == large_headers
    response_headers = HeadersFrame(stream_id=2, data=b"\x00\x07:status\x03200", flags=["END_HEADERS"])
    assert header(response_headers.serialize())[1:] == (0x01, 0x04, 2)
