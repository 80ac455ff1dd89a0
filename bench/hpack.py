#!/usr/bin/env python3
"""framecodec.hpack against the `hpack` library, side by side.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/hpack.py [--quick] [--corpus DIR]

1. The hpack-test-case stories (tests/data/hpack-test-case, or ``--corpus`` for another copy,
   e.g. the full set): *decode* every story of every encoder directory, case by case in one
   context per story; *encode* every raw-data story with one encoder per story. Blocks/s for each
   library and the ratio. "warm" is the steady state a proxy is in (the codec's bounded caches
   hold what earlier rounds met); "cold" clears those caches before the one measured pass (the
   Huffman transition table, filled on first use for the life of the process, stays).
2. Per block, in microseconds: a 7-field request block and a 6-field response block decoded,
   the response block encoded; "first" is the first block of a connection (a fresh context,
   literals), "repeat" a block after the same one (the dynamic table holds its fields), which is
   what a rewriting proxy sees on a busy connection.

Rounds alternate between the libraries; the median round is reported. The garbage collector is
off while a measurement runs (as ``timeit`` does). About half a minute (``--quick``: ~10 s).
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
# This file is named like the library it measures: take bench/ off the path so `import hpack` finds that.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import hpack  # noqa: E402

from framecodec import hpack as ours  # noqa: E402
from framecodec.hpack import decoder as ours_decoder, encoder as ours_encoder  # noqa: E402

REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "www.example.com"),
           (":path", "/assets/app.js?v=20261202"),
           ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
           ("accept", "*/*"), ("accept-encoding", "gzip, deflate, br")]
RESPONSE = [(":status", "200"), ("server", "nghttpd nghttp2/1.52.0"), ("date", "Wed, 02 Dec 2026 05:30:00 GMT"),
            ("content-length", "1024"), ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"), ("x-via-h2proxy", "1")]


def load(corpus: Path):
    encoded, raw = [], []
    for path in sorted(corpus.glob("*/story_*.json")):
        story = json.loads(path.read_text())
        cases = [(c.get("header_table_size"), bytes.fromhex(c.get("wire", "")),
                  [pair for h in c["headers"] for pair in h.items()]) for c in story["cases"]]
        (raw if path.parent.name == "raw-data" else encoded).append(cases)
    return encoded, raw


def clear_caches() -> None:
    ours_decoder.huffman_cache.clear()
    ours_encoder.plans.clear()
    ours_encoder.never_plans.clear()
    ours_encoder.string_cache.clear()


def decode_all(make, stories) -> int:
    n = 0
    for cases in stories:
        dec = make()
        for size, wire, _ in cases:
            if size is not None:
                dec.max_allowed_table_size = size
            dec.decode(wire)
        n += len(cases)
    return n


def encode_all(make, stories) -> int:
    n = 0
    for cases in stories:
        enc = make()
        for _, _, headers in cases:
            enc.encode(headers)
        n += len(cases)
    return n


def timed(fn: Callable[[], int]) -> float:
    """Items per second of one call."""
    gc.disable()
    try:
        t = time.perf_counter()
        n = fn()
        return n / (time.perf_counter() - t)
    finally:
        gc.enable()


def alternate(a: Callable[[], int], b: Callable[[], int], rounds: int) -> Tuple[float, float]:
    xs, ys = [], []
    for _ in range(rounds):
        xs.append(timed(a))
        ys.append(timed(b))
    return statistics.median(xs), statistics.median(ys)


def row(label: str, a: float, b: float, unit: str) -> None:
    print(f"  {label:42s} {a:>12,.0f} {b:>12,.0f}  {unit:9s} {a / b:>6.1f}x")


def bench_corpus(corpus: Path, rounds: int) -> None:
    encoded, raw = load(corpus)
    blocks = sum(map(len, encoded))
    print(f"corpus {corpus}: {len(encoded)} encoded stories ({blocks} blocks), "
          f"{len(raw)} raw-data stories ({sum(map(len, raw))} header lists)")
    # Both decoders must agree before anything is timed.
    for cases in encoded:
        a, b = ours.Decoder(), hpack.Decoder()
        for size, wire, headers in cases:
            if size is not None:
                a.max_allowed_table_size = b.max_allowed_table_size = size
            assert a.decode(wire) == b.decode(wire) == headers
    print(f"\n  {'':42s} {'framecodec':>12s} {'hpack ' + hpack.__version__:>12s}  {'':9s} {'ratio':>7s}")
    clear_caches()
    cold_dec = timed(lambda: decode_all(ours.Decoder, encoded))
    clear_caches()
    cold_enc = timed(lambda: encode_all(ours.Encoder, raw))
    their_dec = timed(lambda: decode_all(hpack.Decoder, encoded))
    their_enc = timed(lambda: encode_all(hpack.Encoder, raw))
    a, b = alternate(lambda: decode_all(ours.Decoder, encoded), lambda: decode_all(hpack.Decoder, encoded), rounds)
    row("decode stories, warm", a, b, "blocks/s")
    row("decode stories, cold (one pass)", cold_dec, their_dec, "blocks/s")
    a, b = alternate(lambda: encode_all(ours.Encoder, raw), lambda: encode_all(hpack.Encoder, raw), rounds)
    row("encode raw-data stories, warm", a, b, "blocks/s")
    row("encode raw-data stories, cold (one pass)", cold_enc, their_enc, "blocks/s")


def per_block(fn: Callable[[], None], n: int) -> float:
    """Microseconds per call of fn, best of 5 runs of n calls."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t) / n)
    finally:
        gc.enable()
    return best * 1e6


def bench_blocks(n: int) -> None:
    print(f"\nper block, microseconds (best of 5 x {n}):")
    print(f"  {'':42s} {'framecodec':>12s} {'hpack':>12s}  {'':9s} {'speed-up':>7s}")
    for label, headers in (("request, 7 fields", REQUEST), ("response, 6 fields", RESPONSE)):
        first = hpack.Encoder().encode(headers)
        enc = hpack.Encoder()
        enc.encode(headers)
        repeat = enc.encode(headers)
        for kind, block in (("first", first), ("repeat", repeat)):
            def mk(lib):
                if kind == "first":
                    return lambda: lib.Decoder().decode(block)
                dec = lib.Decoder()
                dec.decode(first)
                return lambda: (dec.decode(block), dec.decode(block))[0]   # (the table is unchanged)
            a, b = per_block(mk(ours), n), per_block(mk(hpack), n)
            if kind == "repeat":
                a, b = a / 2, b / 2
            print(f"  {'decode ' + label + ', ' + kind:42s} {a:>12.2f} {b:>12.2f}  {'us':9s} {b / a:>6.1f}x")
    for kind in ("first", "repeat"):
        def mk(lib):
            if kind == "first":
                return lambda: lib.Encoder().encode(RESPONSE)
            enc = lib.Encoder()
            enc.encode(RESPONSE)
            return lambda: enc.encode(RESPONSE)
        a, b = per_block(mk(ours), n), per_block(mk(hpack), n)
        print(f"  {'encode response, 6 fields, ' + kind:42s} {a:>12.2f} {b:>12.2f}  {'us':9s} {b / a:>6.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data" / "hpack-test-case",
                    help="an hpack-test-case directory (default: the repository's subset)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}\n")
    bench_corpus(args.corpus, 3 if args.quick else 7)
    bench_blocks(2000 if args.quick else 10000)
    print(f"\n(total run time {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
