"""Unit tests of the streaming reader, framecodec.reader.FrameReader."""
from __future__ import annotations

import pytest

from framecodec import frame as fc
from framecodec.exceptions import FrameCodecError, FrameTooLargeError, PrefaceError
from framecodec.reader import DEFAULT_MAX_FRAME_SIZE, PREFACE, FrameReader, RawFrame

SETTINGS = fc.SettingsFrame(0, settings={3: 100, 4: 65535}).serialize()
SETTINGS_ACK = fc.SettingsFrame(0, flags=["ACK"]).serialize()
HEADERS = fc.HeadersFrame(1, data=b"\x82\x86\x84\x41\x8aexample", flags=["END_HEADERS"]).serialize()
DATA = fc.DataFrame(1, data=b"x" * 1000, flags=["END_STREAM"]).serialize()
PING = fc.PingFrame(0, opaque_data=b"12345678").serialize()
STREAM = [SETTINGS, SETTINGS_ACK, HEADERS, DATA, PING]


def wires(frames):
    return [bytes(f.wire) for f in frames]


def feed_all(reader: FrameReader, chunks):
    out = []
    for chunk in chunks:
        out.extend(reader.feed(chunk))
    return out


def test_defaults():
    r = FrameReader()
    assert r.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 16384
    assert not r.preface_pending and r.buffered == 0 and r.bytes_in == 0 and r.frames_in == 0
    assert PREFACE == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_whole_frames_in_one_chunk():
    r = FrameReader()
    chunk = b"".join(STREAM)
    frames = r.feed(chunk)
    assert wires(frames) == STREAM
    assert [(f.type, f.flags, f.stream_id, f.length) for f in frames] == [
        (0x4, 0, 0, 12), (0x4, 1, 0, 0), (0x1, 0x04, 1, len(HEADERS) - 9),
        (0x0, 0x01, 1, 1000), (0x6, 0, 0, 8)]
    assert r.buffered == 0 and r.frames_in == 5 and r.bytes_in == len(chunk)


def test_frames_whole_in_a_chunk_are_views_of_it():
    r = FrameReader()
    chunk = b"".join(STREAM)
    frames = r.feed(chunk)
    for f in frames:
        assert isinstance(f.wire, memoryview) and f.wire.obj is chunk


def test_partial_frame_is_held_until_complete():
    r = FrameReader()
    assert r.feed(DATA[:5]) == []  # part of the header
    assert r.buffered == 5
    assert r.feed(DATA[5:100]) == []  # header complete, body partial
    assert r.buffered == 100
    assert r.feed(DATA[100:-1]) == []
    assert r.buffered == len(DATA) - 1
    frames = r.feed(DATA[-1:] + PING[:3])
    assert wires(frames) == [DATA] and r.buffered == 3
    frames = r.feed(PING[3:])
    assert wires(frames) == [PING] and r.buffered == 0
    assert r.frames_in == 2


def test_one_byte_at_a_time():
    r = FrameReader()
    data = b"".join(STREAM)
    frames = feed_all(r, [data[i:i + 1] for i in range(len(data))])
    assert wires(frames) == STREAM and r.buffered == 0 and r.frames_in == len(STREAM)


def test_zero_length_frames():
    r = FrameReader()
    assert wires(r.feed(SETTINGS_ACK)) == [SETTINGS_ACK]
    assert wires(r.feed(SETTINGS_ACK * 3)) == [SETTINGS_ACK] * 3
    # A zero-length frame whose header is split over chunks, followed by another frame.
    assert r.feed(SETTINGS_ACK[:4]) == []
    assert wires(r.feed(SETTINGS_ACK[4:] + PING)) == [SETTINGS_ACK, PING]
    empty_data = fc.DataFrame(1, flags=["END_STREAM"]).serialize()
    f = r.feed(empty_data)[0]
    assert f.length == 0 and bytes(f.payload) == b""
    assert f.parse().data == b""


def test_empty_chunks_are_harmless():
    r = FrameReader()
    assert r.feed(b"") == []
    r.feed(PING[:4])
    assert r.feed(b"") == [] and r.buffered == 4
    assert wires(r.feed(PING[4:])) == [PING]


def test_raw_frame_accessors_and_parse():
    raw = FrameReader().feed(fc.WindowUpdateFrame(3, window_increment=77).serialize())[0]
    assert isinstance(raw, RawFrame)
    assert (raw.type, raw.flags, raw.stream_id, raw.length) == (0x8, 0, 3, 4)
    assert bytes(raw.payload) == b"\x00\x00\x00\x4d"
    assert not raw.reserved_bit
    assert repr(raw) == "RawFrame(type=0x08, flags=0x00, stream_id=3, length=4)"
    frame = raw.parse()
    assert isinstance(frame, fc.WindowUpdateFrame) and frame.window_increment == 77
    reserved = bytearray(PING)
    reserved[5] |= 0x80
    raw = FrameReader().feed(bytes(reserved))[0]
    assert raw.reserved_bit and raw.stream_id == 0
    assert raw.parse().serialize() == bytes(reserved)


def test_raw_frame_parse_strict():
    ext = fc.ExtensionFrame(0xEE, 1, body=b"abc").serialize()
    raw = FrameReader().feed(ext)[0]
    assert isinstance(raw.parse(), fc.ExtensionFrame)
    with pytest.raises(FrameCodecError):
        raw.parse(strict=True)


# --- the connection preface -----------------------------------------------------------


def test_preface_then_frames_in_one_chunk():
    r = FrameReader(expect_preface=True)
    assert r.preface_pending
    frames = r.feed(PREFACE + SETTINGS + PING)
    assert wires(frames) == [SETTINGS, PING] and not r.preface_pending and r.buffered == 0


def test_preface_in_pieces():
    r = FrameReader(expect_preface=True)
    assert r.feed(PREFACE[:3]) == [] and r.buffered == 3 and r.preface_pending
    assert r.feed(PREFACE[3:20]) == [] and r.buffered == 20
    frames = r.feed(PREFACE[20:] + SETTINGS[:10])
    assert frames == [] and not r.preface_pending and r.buffered == 10
    assert wires(r.feed(SETTINGS[10:])) == [SETTINGS]


def test_preface_byte_by_byte():
    r = FrameReader(expect_preface=True)
    data = PREFACE + SETTINGS
    frames = feed_all(r, [data[i:i + 1] for i in range(len(data))])
    assert wires(frames) == [SETTINGS]


def test_http1_request_fails_at_once():
    r = FrameReader(expect_preface=True)
    with pytest.raises(PrefaceError) as e:
        r.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    msg = str(e.value)
    assert "HTTP/1.1" in msg and "preface" in msg
    assert e.value.received.startswith(b"GET / HTTP/1.1")


@pytest.mark.parametrize("request_line", [b"POST /upload HTTP/1.1\r\n", b"PUT /x HTTP/1.1\r\n",
                                          b"OPTIONS * HTTP/1.1\r\n", b"CONNECT a:443 HTTP/1.1\r\n"])
def test_other_http1_methods(request_line):
    with pytest.raises(PrefaceError, match="HTTP/1.1"):
        FrameReader(expect_preface=True).feed(request_line + b"Host: h\r\n\r\n")


def test_wrong_preface_that_is_not_http1():
    with pytest.raises(PrefaceError) as e:
        FrameReader(expect_preface=True).feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello
    assert "HTTP/1.1" not in str(e.value)
    # A preface that goes wrong late is refused at the first wrong byte.
    r = FrameReader(expect_preface=True)
    r.feed(PREFACE[:10])
    with pytest.raises(PrefaceError):
        r.feed(b"X")


def test_no_preface_expected_means_frames_from_the_first_byte():
    r = FrameReader()
    assert wires(r.feed(SETTINGS)) == [SETTINGS]


# --- the maximum frame size ------------------------------------------------------------


def test_frame_larger_than_max_frame_size():
    big = fc.DataFrame(5, data=b"x" * 16385).serialize()
    r = FrameReader()
    with pytest.raises(FrameTooLargeError) as e:
        r.feed(big)
    err = e.value
    assert (err.frame_type, err.stream_id, err.length, err.max_frame_size) == (0x0, 5, 16385, 16384)
    msg = str(err)
    assert "0x00" in msg and "stream 5" in msg and "16385" in msg and "16384" in msg
    assert "FRAME_SIZE_ERROR" in msg
    assert isinstance(err, FrameCodecError)


def test_frame_too_large_is_refused_as_soon_as_its_header_is_seen():
    header = (20000).to_bytes(3, "big") + b"\x01\x04\x00\x00\x00\x07"
    r = FrameReader()
    r.feed(header[:4])
    with pytest.raises(FrameTooLargeError) as e:
        r.feed(header[4:])  # no body byte has arrived yet
    assert (e.value.frame_type, e.value.stream_id, e.value.length) == (0x1, 7, 20000)
    with pytest.raises(FrameTooLargeError):
        FrameReader().feed(PING + header)


def test_max_frame_size_is_configurable():
    frame = fc.DataFrame(1, data=b"y" * 20000).serialize()
    assert wires(FrameReader(max_frame_size=32768).feed(frame)) == [frame]
    with pytest.raises(FrameTooLargeError):
        FrameReader(max_frame_size=999).feed(DATA)
    exact = fc.DataFrame(1, data=b"z" * 1000).serialize()
    assert wires(FrameReader(max_frame_size=1000).feed(exact)) == [exact]


def test_buffered_is_bounded_by_the_largest_frame():
    r = FrameReader(max_frame_size=16384)
    frame = fc.DataFrame(1, data=b"q" * 16384).serialize()
    peak = 0
    out = []
    for i in range(0, len(frame) * 3, 700):
        out.extend(r.feed((frame * 3)[i:i + 700]))
        peak = max(peak, r.buffered)
    assert wires(out) == [frame] * 3
    assert peak <= 16384 + 9 and r.buffered == 0
    # A byte-at-a-time peer cannot make it hold more than one frame either.
    r = FrameReader(max_frame_size=100)
    small = fc.DataFrame(1, data=b"s" * 100).serialize()
    for i in range(len(small) - 1):
        r.feed(small[i:i + 1])
        assert r.buffered <= 109


def test_frames_before_an_oversized_one_are_handed_back_with_the_error():
    from framecodec.exceptions import FrameTooLargeError
    from framecodec.reader import FrameReader
    ok = bytes.fromhex("000004" "08" "00" "00000000") + (1).to_bytes(4, "big")
    big = bytes.fromhex("004001" "00" "00" "00000001")
    reader = FrameReader(max_frame_size=16384)
    try:
        reader.feed(ok + ok + big)
    except FrameTooLargeError as exc:
        assert [bytes(f.wire) for f in exc.frames] == [ok, ok]
    else:
        raise AssertionError("the oversized frame was accepted")


def test_a_frame_spanning_chunks_is_rebuilt_from_views_of_immutable_chunks():
    from framecodec.reader import FrameReader
    frame = bytes.fromhex("000010" "00" "00" "00000001") + bytes(range(16))
    reader = FrameReader()
    assert reader.feed(frame[:5]) == [] and reader.feed(frame[5:12]) == []
    [got] = reader.feed(frame[12:] + frame[:3])
    assert bytes(got.wire) == frame and reader.buffered == 3


def _walk_like_the_relay(reader: FrameReader, chunks, stop_every: int = 0):
    """Feed ``chunks`` through take/rest as the relay does: walk whole frames with unpack_header, and every
    ``stop_every``-th walked frame hand the rest of the chunk back (as behind an awaited hook)."""
    from framecodec.reader import unpack_header
    got = []
    walked_total = 0
    for chunk in chunks:
        frames, view, pos = reader.take(chunk)
        got += [(t, fl, sid, ln, bytes(w)) for t, fl, sid, ln, w in frames]
        size, walked = len(view), 0
        while size - pos >= 9:
            lt, flags, sid = unpack_header(view, pos)
            end = pos + 9 + (lt >> 8)
            if end > size:
                break
            got.append((lt & 0xFF, flags, sid & 0x7FFFFFFF, lt >> 8, bytes(view[pos:end])))
            pos = end
            walked += 1
            walked_total += 1
            if stop_every and walked_total % stop_every == 0:
                break
        got += [(t, fl, sid, ln, bytes(w)) for t, fl, sid, ln, w in reader.rest(view, pos, walked)]
    return got


@pytest.mark.parametrize("stop_every", [0, 1, 3])
def test_take_and_rest_give_the_frames_feed_fields_gives(stop_every):
    import random
    rng = random.Random(1606)
    frames = [fc.DataFrame(1 + 2 * (i % 7), data=bytes(rng.randrange(0, 300)), flags=["END_STREAM"] if i % 5 else [])
              for i in range(200)] + [fc.PingFrame(0, opaque_data=b"12345678"), fc.SettingsFrame(0, flags=["ACK"])]
    data = PREFACE + b"".join(f.serialize() for f in frames)
    cuts = sorted(rng.sample(range(1, len(data)), 120))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]
    whole = FrameReader(expect_preface=True)
    expected = [(t, fl, sid, ln, bytes(w)) for chunk in chunks for t, fl, sid, ln, w in whole.feed_fields(chunk)]
    reader = FrameReader(expect_preface=True)
    got = _walk_like_the_relay(reader, chunks, stop_every)
    assert got == expected
    assert len(got) == len(frames)
    assert reader.frames_in == whole.frames_in == len(frames)
    assert reader.buffered == 0


def test_rest_refuses_an_oversized_frame_after_handing_back_those_before_it():
    reader = FrameReader(max_frame_size=100)
    ok = fc.PingFrame(0, opaque_data=b"12345678").serialize()
    big = fc.DataFrame(1, data=b"x" * 101).serialize()
    frames, view, pos = reader.take(ok + ok + big)
    assert frames == [] and pos == 0
    with pytest.raises(FrameTooLargeError) as err:
        reader.rest(view, 0)
    assert [bytes(f[4]) for f in err.value.frames] == [ok, ok]
    assert err.value.length == 101


def test_take_completes_the_frame_left_open_and_hands_back_the_rest_unsplit():
    reader = FrameReader()
    a = fc.DataFrame(1, data=b"a" * 50).serialize()
    b = fc.DataFrame(3, data=b"b" * 20).serialize()
    frames, view, pos = reader.take(a[:30])
    assert frames == [] and pos == 0 and reader.buffered == 0     # (the caller walks it, and hands back the tail)
    assert reader.rest(view, pos) == [] and reader.buffered == 30
    frames, view, pos = reader.take(a[30:] + b)
    assert [bytes(f[4]) for f in frames] == [a]
    assert bytes(view[pos:]) == b
    assert reader.rest(view, len(view), 1) == [] and reader.buffered == 0
