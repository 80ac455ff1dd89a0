#!/usr/bin/env python3
"""Throughput of the frame codec, against hyperframe 6.1.0, and of the streaming reader.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/codec.py [--quick]

1. parse + serialize: every frame of a realistic mix (SETTINGS, WINDOW_UPDATE, a
   small HEADERS, DATA of 16 KiB, 4 KiB and 100 B, PING, RST_STREAM, PRIORITY)
   goes through ``Frame.parse_frame_header`` + ``parse_body`` + ``serialize``,
   the way a proxy handles a frame it forwards. Both codecs get the same
   memoryviews of the same wire bytes; rounds alternate between them, and the
   median of the rounds is reported in frames/s, with the ratio.
2. the streaming reader: ``framecodec.reader.FrameReader`` fed a 64 MiB stream
   of 16 KiB DATA frames in 64 KiB chunks, in MB/s, next to a bare loop that
   only walks the 9-byte headers of the same stream (the pure-Python floor).

The garbage collector is off while a measurement runs (as ``timeit`` does).
The whole run takes well under a minute.
"""
from __future__ import annotations

import argparse
import gc
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hyperframe  # noqa: E402
from hyperframe import frame as hf  # noqa: E402

from framecodec import frame as fc  # noqa: E402
from framecodec.reader import FrameReader  # noqa: E402

MiB = 1 << 20


def frame_mix(m):
    """The realistic mix, built with codec ``m`` (both must give the same bytes)."""
    block = bytes.fromhex("82864184aa69d29ad1") + b"\x7a\x88" + b"curl/8.5" + b"\x53\x03*/*"
    return [
        ("SETTINGS", m.SettingsFrame(0, settings={1: 4096, 3: 100, 4: 65535}).serialize()),
        ("WINDOW_UPDATE", m.WindowUpdateFrame(0, window_increment=983041).serialize()),
        ("HEADERS", m.HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize()),
        ("DATA 16 KiB", m.DataFrame(1, data=b"\xa5" * 16384).serialize()),
        ("DATA 4 KiB", m.DataFrame(3, data=b"\x5a" * 4096).serialize()),
        ("DATA 100 B", m.DataFrame(5, data=b"z" * 100, flags=["END_STREAM"]).serialize()),
        ("PING", m.PingFrame(0, opaque_data=b"\x01\x02\x03\x04\x05\x06\x07\x08").serialize()),
        ("RST_STREAM", m.RstStreamFrame(7, error_code=8).serialize()),
        ("PRIORITY", m.PriorityFrame(9, depends_on=3, stream_weight=15).serialize()),
    ]


def parse_serialize_rate(module, wires, frames_per_round: int) -> float:
    """frames/s of parse_frame_header + parse_body + serialize over ``wires``, repeated."""
    parse_header = module.Frame.parse_frame_header
    views = [(memoryview(w)[:9], memoryview(w)[9:]) for w in wires]
    reps = max(1, frames_per_round // len(views))
    # A sanity check outside the timed loop: both codecs must give the bytes back.
    for (h, b), w in zip(views, wires, strict=True):
        f, n = parse_header(h)
        f.parse_body(b[:n])
        assert f.serialize() == w, (module.__name__, w[:9].hex())
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(reps):
            for h, b in views:
                f, n = parse_header(h)
                f.parse_body(b)
                f.serialize()
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return reps * len(views) / dt


def bench_codecs(rounds: int, frames_per_round: int) -> None:
    mix_fc = frame_mix(fc)
    mix_hf = frame_mix(hf)
    assert [w for _, w in mix_fc] == [w for _, w in mix_hf], "the two codecs build different bytes"
    wires = [w for _, w in mix_fc]
    print(f"frame mix: {', '.join(name for name, _ in mix_fc)}")
    print(f"           {sum(map(len, wires))} bytes per pass of {len(wires)} frames")
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(parse_serialize_rate(fc, wires, frames_per_round))
        theirs.append(parse_serialize_rate(hf, wires, frames_per_round))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"\nparse + serialize, realistic mix, median of {rounds} rounds of {frames_per_round} frames:")
    print(f"  framecodec        {a:>12,.0f} frames/s   (rounds: {min(ours):,.0f} .. {max(ours):,.0f})")
    print(f"  hyperframe {hyperframe.__version__:6s} {b:>12,.0f} frames/s   "
          f"(rounds: {min(theirs):,.0f} .. {max(theirs):,.0f})")
    print(f"  ratio             {a / b:>12.2f}x")

    print("\nper frame type (median of 3 short rounds, frames/s):")
    print(f"  {'frame':14s} {'framecodec':>12s} {'hyperframe':>12s} {'ratio':>7s}")
    n = max(2000, frames_per_round // 10)
    for (name, w) in mix_fc:
        x = statistics.median(parse_serialize_rate(fc, [w], n) for _ in range(3))
        y = statistics.median(parse_serialize_rate(hf, [w], n) for _ in range(3))
        print(f"  {name:14s} {x:>12,.0f} {y:>12,.0f} {x / y:>6.2f}x")


def data_stream(total: int, payload: int = 16384) -> bytes:
    one = fc.DataFrame(1, data=bytes(range(256)) * (payload // 256)).serialize()
    return one * (total // len(one))


def reader_rate(chunks, total: int) -> tuple:
    gc.disable()
    try:
        t0 = time.perf_counter()
        reader = FrameReader(max_frame_size=16384)
        feed = reader.feed
        frames = 0
        for chunk in chunks:
            frames += len(feed(chunk))
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    assert reader.buffered == 0
    return total / dt / 1e6, frames


def header_walk_rate(stream: bytes) -> tuple:
    """The floor: a loop that reads each 9-byte header and jumps over the body."""
    unpack_from = struct.Struct(">L").unpack_from
    gc.disable()
    try:
        t0 = time.perf_counter()
        pos, end, frames = 0, len(stream), 0
        while pos < end:
            pos += 9 + (unpack_from(stream, pos)[0] >> 8)
            frames += 1
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return len(stream) / dt / 1e6, frames


def bench_reader(total: int, chunk_size: int, rounds: int) -> None:
    stream = data_stream(total)
    chunks = [stream[i:i + chunk_size] for i in range(0, len(stream), chunk_size)]
    reader_runs = [reader_rate(chunks, len(stream)) for _ in range(rounds)]
    walk_runs = [header_walk_rate(stream) for _ in range(rounds)]
    frames = reader_runs[0][1]
    assert frames == walk_runs[0][1], (frames, walk_runs[0][1])
    r = statistics.median(x for x, _ in reader_runs)
    w = statistics.median(x for x, _ in walk_runs)
    print(f"\nstreaming reader: {len(stream) / MiB:.0f} MiB of 16 KiB DATA frames ({frames} frames), "
          f"{chunk_size // 1024} KiB chunks, median of {rounds}:")
    print(f"  FrameReader.feed          {r:>10,.0f} MB/s  ({r * 1e6 / 16393:,.0f} frames/s)")
    print(f"  bare header walk (floor)  {w:>10,.0f} MB/s  ({w * 1e6 / 16393:,.0f} frames/s)")
    print(f"  reader / floor            {r / w:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
          f"hyperframe {hyperframe.__version__}")
    t0 = time.perf_counter()
    if args.quick:
        bench_codecs(rounds=3, frames_per_round=20_000)
        bench_reader(total=16 * MiB, chunk_size=64 * 1024, rounds=3)
    else:
        bench_codecs(rounds=7, frames_per_round=90_000)
        bench_reader(total=64 * MiB, chunk_size=64 * 1024, rounds=5)
    print(f"\n(total run time {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
