"""Fuzz the frame codec: parse every frame of the input, serialize what parsed, compare.

The input is read as a run of frames (9-byte header, then as many body bytes as its length
field says). For each: ``Frame.parse_frame_header`` (plain, and strict), ``parse_body`` on the
body as a memoryview of ``bytes``, as ``bytes`` and as a memoryview of a ``bytearray``; a frame
that parses must ``serialize()`` back to its exact wire bytes, ``repr()`` without error, and
parse again from its own serialization. The only exceptions allowed are framecodec's
(:class:`~framecodec.exceptions.FrameCodecError`); anything else is a crash.

    .venv/bin/python bench/fuzz/fuzz_codec.py /tmp/h2corpus/frames -max_total_time=120
    .venv/bin/python bench/fuzz/fuzz_codec.py --replay /tmp/h2corpus/frames
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import instrumented, main  # noqa: E402

with instrumented(("framecodec",)):
    from framecodec.exceptions import FrameCodecError, UnknownFrameError
    from framecodec.frame import Frame


def _parse(header, body, strict: bool = False):
    frame, length = Frame.parse_frame_header(header, strict=strict)
    frame.parse_body(body)
    return frame, length


def check_frame(wire: bytes) -> None:
    """One frame's wire bytes (the body may be short of its length field)."""
    view = memoryview(wire)
    header = view[:9]
    try:
        Frame.parse_frame_header(header, strict=True)
    except UnknownFrameError as exc:
        assert exc.frame_type == wire[3]
    except FrameCodecError:
        pass
    try:
        frame, length = Frame.parse_frame_header(header)
    except FrameCodecError:
        return
    assert length == int.from_bytes(wire[:3], "big")
    body = view[9:9 + length]
    complete = len(body) == length
    results = []
    for variant in (body, bytes(body), memoryview(bytearray(body))):
        try:
            f, _ = Frame.parse_frame_header(header)
            f.parse_body(variant)
        except FrameCodecError:
            results.append(None)
            continue
        results.append(f)
        repr(f)
        if not complete:
            continue      # a short body may parse (DATA, CONTINUATION...): no round trip to expect
        out = f.serialize()
        assert out == wire[:9 + length], f"round trip: {wire[:9 + length].hex()} -> {out.hex()}"
        again, n = _parse(memoryview(out)[:9], memoryview(out)[9:])
        assert n == length and again.serialize() == out
    # Whether a body parses does not depend on the buffer type it comes in.
    assert len({r is None for r in results}) == 1, f"parse depends on the buffer type: {wire.hex()}"


def TestOneInput(data: bytes) -> None:
    pos = 0
    n = len(data)
    while pos < n:
        end = pos + 9
        if end > n:
            try:
                Frame.parse_frame_header(memoryview(data)[pos:])
            except FrameCodecError:
                pass
            else:
                raise AssertionError("a header shorter than 9 bytes parsed")
            return
        length = int.from_bytes(data[pos:pos + 3], "big")
        check_frame(data[pos:end + length])
        pos = end + length


if __name__ == "__main__":
    main(TestOneInput)
