"""Property tests (hypothesis) of the codec and the streaming reader.

* frames built from random field values survive serialize -> parse -> serialize
  byte for byte, fields included;
* wire frames with random flag bytes (undefined bits too), random reserved bits
  and non-zero padding round-trip byte for byte;
* any frame header + body either fails with a framecodec exception or
  round-trips byte for byte;
* random bytes in random chunks make the reader (and parsing what it returns)
  fail only with framecodec exceptions;
* valid frame streams cut at random points come out of the reader unchanged.
"""
from __future__ import annotations

import os
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import frame as fc
from framecodec.exceptions import FrameCodecError
from framecodec.frame import Frame
from framecodec.reader import PREFACE, FrameReader

# CODEC_EXAMPLES=5000 for a longer hunt; 200 keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("CODEC_EXAMPLES", "200")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

stream_ids = st.integers(1, 2 ** 31 - 1)
small_ids = st.integers(1, 99)
any_stream = st.one_of(st.just(0), stream_ids)
u8 = st.integers(0, 255)
u31 = st.integers(0, 2 ** 31 - 1)
u32 = st.integers(0, 2 ** 32 - 1)
blobs = st.binary(max_size=64)


def flag_names(cls) -> st.SearchStrategy:
    return st.lists(st.sampled_from([f.name for f in cls.defined_flags]), unique=True) \
        if cls.defined_flags else st.just([])


def parse(data: bytes, strict: bool = False) -> Frame:
    frame, length = Frame.parse_frame_header(memoryview(data)[:9], strict=strict)
    frame.parse_body(memoryview(data)[9:9 + length])
    return frame


# --- frames from field values -----------------------------------------------------------


@st.composite
def built_frames(draw) -> Frame:
    kind = draw(st.sampled_from([
        "data", "headers", "priority", "rst", "settings", "push", "ping", "goaway", "window",
        "continuation", "altsvc", "extension"]))
    if kind == "data":
        flags = draw(flag_names(fc.DataFrame))
        pad = draw(u8) if "PADDED" in flags else 0
        return fc.DataFrame(draw(stream_ids), data=draw(st.binary(max_size=2000)), pad_length=pad, flags=flags)
    if kind == "headers":
        flags = draw(flag_names(fc.HeadersFrame))
        return fc.HeadersFrame(draw(stream_ids), data=draw(blobs), flags=flags,
                               pad_length=draw(u8) if "PADDED" in flags else 0,
                               depends_on=draw(u31) if "PRIORITY" in flags else 0,
                               stream_weight=draw(u8) if "PRIORITY" in flags else 0,
                               exclusive=draw(st.booleans()) if "PRIORITY" in flags else False)
    if kind == "priority":
        return fc.PriorityFrame(draw(stream_ids), depends_on=draw(u31), stream_weight=draw(u8),
                                exclusive=draw(st.booleans()))
    if kind == "rst":
        return fc.RstStreamFrame(draw(stream_ids), error_code=draw(u32))
    if kind == "settings":
        if draw(st.booleans()):
            return fc.SettingsFrame(0, flags=["ACK"])
        return fc.SettingsFrame(0, settings=draw(st.dictionaries(st.integers(0, 0xFFFF), u32, max_size=8)))
    if kind == "push":
        flags = draw(flag_names(fc.PushPromiseFrame))
        return fc.PushPromiseFrame(draw(stream_ids), promised_stream_id=2 * draw(st.integers(1, 2 ** 30 - 1)),
                                   data=draw(blobs), flags=flags,
                                   pad_length=draw(u8) if "PADDED" in flags else 0)
    if kind == "ping":
        return fc.PingFrame(0, opaque_data=draw(st.binary(max_size=8)), flags=draw(flag_names(fc.PingFrame)))
    if kind == "goaway":
        return fc.GoAwayFrame(0, last_stream_id=draw(u31), error_code=draw(u32), additional_data=draw(blobs))
    if kind == "window":
        return fc.WindowUpdateFrame(draw(any_stream), window_increment=draw(st.integers(1, 2 ** 31 - 1)))
    if kind == "continuation":
        return fc.ContinuationFrame(draw(stream_ids), data=draw(blobs), flags=draw(flag_names(fc.ContinuationFrame)))
    if kind == "altsvc":
        return fc.AltSvcFrame(draw(any_stream), origin=draw(blobs), field=draw(blobs))
    return fc.ExtensionFrame(type=draw(st.integers(0x0B, 0xFF)), stream_id=draw(any_stream),
                             flag_byte=draw(u8), body=draw(blobs))


FIELDS = ["stream_id", "data", "pad_length", "depends_on", "stream_weight", "exclusive", "error_code",
          "settings", "promised_stream_id", "opaque_data", "last_stream_id", "additional_data",
          "window_increment", "origin", "field", "type", "flag_byte", "body"]


def fields(frame: Frame) -> dict:
    out = {n: getattr(frame, n) for n in FIELDS if hasattr(frame, n)}
    out["flags"] = set(frame.flags)
    if isinstance(frame, fc.PingFrame):
        out["opaque_data"] = frame.opaque_data.ljust(8, b"\0")
    if isinstance(frame, fc.HeadersFrame) and "PRIORITY" not in frame.flags:
        out.update(depends_on=0, stream_weight=0, exclusive=False)
    return out


@SETTINGS
@given(built_frames())
def test_built_frames_round_trip(frame):
    first = frame.serialize()
    again = parse(first)
    assert type(again) is type(frame)
    assert again.serialize() == first
    assert fields(again) == fields(frame)
    assert again.body_len == len(first) - 9 == frame.body_len


# --- wire frames with random flags, reserved bits and padding ---------------------------


@st.composite
def wire_frames(draw) -> bytes:
    """A frame as a peer might send it: any flag byte, either reserved bit, any padding bytes."""
    ftype = draw(st.sampled_from(list(range(0x0B)) + [0x0B, 0x10, 0xEE, 0xFF]))
    flag_byte = draw(u8)
    cls = fc.FRAMES.get(ftype, fc.ExtensionFrame)
    if cls.stream_association == "has-stream":
        sid = draw(stream_ids)
    elif cls.stream_association == "no-stream":
        sid = 0
    else:
        sid = draw(st.one_of(st.just(0), stream_ids))
    sid |= draw(st.sampled_from([0, 0x80000000]))

    def padded(core: bytes) -> bytes:
        if not flag_byte & 0x08:
            return core
        padding = draw(st.binary(max_size=20))
        return bytes([len(padding)]) + core + padding

    if ftype == 0x0:
        body = padded(draw(blobs))
    elif ftype == 0x1:
        prio = draw(st.binary(min_size=5, max_size=5)) if flag_byte & 0x20 else b""
        body = padded(prio + draw(blobs))
    elif ftype == 0x2:
        body = draw(st.binary(min_size=5, max_size=5))
    elif ftype in (0x3,):
        body = draw(st.binary(min_size=4, max_size=4))
    elif ftype == 0x4:
        body = b"" if flag_byte & 0x01 else draw(st.binary(max_size=8 * 6).map(lambda b: b[:len(b) // 6 * 6]))
    elif ftype == 0x5:
        promised = 2 * draw(st.integers(1, 2 ** 30 - 1)) | draw(st.sampled_from([0, 0x80000000]))
        body = padded(promised.to_bytes(4, "big") + draw(blobs))
    elif ftype == 0x6:
        body = draw(st.binary(min_size=8, max_size=8))
    elif ftype == 0x7:
        body = draw(st.binary(min_size=8, max_size=8)) + draw(blobs)
    elif ftype == 0x8:
        body = draw(st.integers(1, 2 ** 31 - 1)).to_bytes(4, "big")
    elif ftype == 0xA:
        origin = draw(blobs)
        body = len(origin).to_bytes(2, "big") + origin + draw(blobs)
    else:  # CONTINUATION and extension frames
        body = draw(blobs)
    return len(body).to_bytes(3, "big") + bytes([ftype, flag_byte]) + sid.to_bytes(4, "big") + body


@SETTINGS
@given(wire_frames())
def test_wire_frames_round_trip_byte_for_byte(data):
    frame = parse(data)
    assert frame.serialize() == data
    assert frame.stream_id == int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
    assert frame.reserved_bit == bool(data[5] & 0x80)
    # Reading the flags (which builds the Flags set) changes nothing on the wire.
    defined = {name for name, bit in type(frame).defined_flags if data[4] & bit}
    assert set(frame.flags) == defined
    assert frame.serialize() == data


@SETTINGS
@given(wire_frames(), st.data())
def test_wire_frames_survive_a_flag_change(data, draw):
    frame = parse(data)
    names = [f.name for f in type(frame).defined_flags if f.name not in ("PADDED", "PRIORITY", "ACK")]
    if not names:
        return
    name = draw.draw(st.sampled_from(names))
    before = set(frame.flags)
    frame.flags.discard(name) if name in before else frame.flags.add(name)
    out = frame.serialize()
    bit = dict(type(frame).defined_flags)[name]
    assert out[4] == data[4] ^ bit
    assert out[:4] + out[5:] == data[:4] + data[5:]


# --- anything at all --------------------------------------------------------------------


@SETTINGS
@given(st.integers(0, 0x0F), u8, u32, st.binary(max_size=48), st.booleans())
def test_any_frame_parses_or_fails_cleanly_and_parsed_ones_round_trip(ftype, flag_byte, sid, body, strict):
    data = len(body).to_bytes(3, "big") + bytes([ftype, flag_byte]) + sid.to_bytes(4, "big") + body
    try:
        frame = parse(data, strict=strict)
    except FrameCodecError:
        return
    assert frame.serialize() == data
    repr(frame)


@SETTINGS
@given(st.binary(max_size=20), st.binary(max_size=40))
def test_garbage_headers_and_bodies_fail_cleanly(head, body):
    try:
        frame, length = Frame.parse_frame_header(head)
        frame.parse_body(memoryview(body))
    except FrameCodecError:
        pass


# --- the reader -------------------------------------------------------------------------


def cut(data: bytes, points: List[int]) -> List[bytes]:
    points = sorted({min(p, len(data)) for p in points})
    chunks, last = [], 0
    for p in points + [len(data)]:
        chunks.append(data[last:p])
        last = p
    return chunks


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12), st.booleans(), st.booleans())
def test_reader_on_random_bytes_fails_only_with_codec_errors(data, points, expect_preface, with_preface):
    if with_preface:
        data = PREFACE + data
    reader = FrameReader(max_frame_size=256, expect_preface=expect_preface)
    try:
        for chunk in cut(data, points):
            for raw in reader.feed(chunk):
                assert raw.length <= 256
                assert len(raw.wire) == 9 + raw.length
                try:
                    raw.parse().serialize()
                except FrameCodecError:
                    pass
            assert reader.buffered <= 256 + 9 + len(PREFACE)
    except FrameCodecError:
        pass


@SETTINGS
@given(st.lists(st.one_of(wire_frames(), built_frames().map(lambda f: f.serialize())), max_size=8),
       st.data(), st.booleans())
def test_reader_gives_back_frame_streams_cut_anywhere(frames, draw, expect_preface):
    stream = (PREFACE if expect_preface else b"") + b"".join(frames)
    points = draw.draw(st.lists(st.integers(0, len(stream)), max_size=16))
    reader = FrameReader(max_frame_size=2 ** 24 - 1, expect_preface=expect_preface)
    out = []
    for chunk in cut(stream, points):
        out.extend(reader.feed(chunk))
    assert [bytes(r.wire) for r in out] == frames
    assert reader.buffered == 0 and reader.frames_in == len(frames) and reader.bytes_in == len(stream)
    for raw, data in zip(out, frames, strict=True):
        assert (raw.type, raw.flags, raw.length) == (data[3], data[4], len(data) - 9)
        assert raw.stream_id == int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        assert raw.parse().serialize() == data
