"""Fuzz the streaming reader: the same bytes in random chunks give the same frames as in one piece.

From the input (its CRC picks the settings, so that any run of frames is a useful seed): whether
the preface is expected, the maximum frame size (16384, 100 or 2**24-1) and a sequence of chunk
sizes. The input goes into one :class:`~framecodec.reader.FrameReader` whole, into another in
chunks (``bytes``), and into a third in chunks of ``bytearray`` through ``feed_fields``. All
three must give the same frames (type, flags, stream id, length, exact wire bytes), fail with
the same framecodec error after the same frames, and hold the same number of bytes at the end;
each frame's ``wire`` must be exactly its header's length plus 9 bytes, and ``buffered`` never
above the frame size limit + 9 (+ the preface). Every frame the reader gives is then parsed
(``RawFrame.parse``): framecodec errors only.

    .venv/bin/python bench/fuzz/fuzz_reader.py /tmp/h2corpus/frames -max_total_time=120
    .venv/bin/python bench/fuzz/fuzz_reader.py --replay /tmp/h2corpus/frames
"""
from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import instrumented, main  # noqa: E402

with instrumented(("framecodec",)):
    from framecodec.exceptions import FrameCodecError
    from framecodec.reader import PREFACE, FrameReader, RawFrame

SIZES = (16384, 100, 2 ** 24 - 1)


def _run(data: bytes, cuts, max_size: int, preface: bool, kind: str):
    reader = FrameReader(max_size, expect_preface=preface)
    frames = []
    error = None
    pos = 0
    limit = max_size + 9 + len(PREFACE)
    for size in cuts:
        chunk = data[pos:pos + size]
        pos += size
        try:
            if kind == "fields":
                got = [RawFrame(*f) for f in reader.feed_fields(bytearray(chunk))]
            else:
                got = reader.feed(chunk)
        except FrameCodecError as exc:
            before = getattr(exc, "frames", [])
            frames += [f if isinstance(f, RawFrame) else RawFrame(*f) for f in before]
            error = type(exc)
            break
        # Copy now: a frame of a bytearray chunk is a view of it.
        frames += [RawFrame(f.type, f.flags, f.stream_id, f.length, bytes(f.wire)) for f in got]
        assert reader.buffered <= limit, f"reader holds {reader.buffered} bytes (limit {max_size})"
    return [(f.type, f.flags, f.stream_id, f.length, bytes(f.wire)) for f in frames], error, \
        (reader.buffered if error is None else None), reader.preface_pending


def TestOneInput(data: bytes) -> None:
    crc = zlib.crc32(data)
    preface = bool(crc & 1)
    max_size = SIZES[(crc >> 1) % 3]
    if preface and crc & 8:
        data = PREFACE + data          # mostly a good preface, sometimes a bad one
    rng = random.Random(crc)
    cuts = []
    left = len(data)
    while left > 0:
        size = rng.choice((1, 2, 8, 9, 10, rng.randint(1, 64), rng.randint(1, 4096)))
        cuts.append(size)
        left -= size
    whole = _run(data, [len(data)] if data else [], max_size, preface, "bytes")
    chunked = _run(data, cuts, max_size, preface, "bytes")
    fields = _run(data, cuts, max_size, preface, "fields")
    assert chunked == whole, "chunked feeding differs from whole-buffer feeding"
    assert fields == whole, "feed_fields with bytearray chunks differs from whole-buffer feeding"
    frames, error, buffered, preface_pending = whole
    total = sum(len(w) for *_, w in frames)
    for t, flags, sid, length, wire in frames:
        assert len(wire) == length + 9 and wire[3] == t and wire[4] == flags
        assert length <= max_size
        assert sid == int.from_bytes(wire[5:9], "big") & 0x7FFFFFFF
        try:
            RawFrame(t, flags, sid, length, wire).parse()
        except FrameCodecError:
            pass
    if error is None:
        skip = len(PREFACE) if preface and not preface_pending else 0
        assert skip + total + buffered == len(data), "bytes lost or invented"


if __name__ == "__main__":
    main(TestOneInput)
