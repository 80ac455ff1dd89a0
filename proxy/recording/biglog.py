"""Large frame logs made on demand, for measuring the converters (speed, memory) without a network.

One connection is simulated once (:func:`proxy.recording.simulate.simulate`,
fixed clock, so the bytes are the same every run); its lines are then
repeated with new connection ids, ``concurrency`` connections at a time with
their lines interleaved, the way a proxy under ``h2load -c N`` writes them,
until the file reaches the size asked for. Every copy is a complete, valid
connection: converters see many open connections and many streams, as in a
real recording of a load test.
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Optional

__all__ = ["template_lines", "write_big_log"]


def template_lines(requests: int = 2000, large_every: int = 50) -> List[bytes]:
    """The record lines (no header) of one simulated connection with ``requests`` GETs (conn id 1)."""
    from .recorder import JsonlRecorder
    from .simulate import Request, simulate

    reqs: List[Request] = [("GET", f"/size/{70000 if i % large_every == large_every - 1 else 1024}", [], b"")
            for i in range(requests)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "one.jsonl")
        rec = JsonlRecorder(path)
        simulate(rec, reqs, t0=1_700_000_000.0, ping=True)
        rec.close()
        with open(path, "rb") as fh:
            lines = fh.read().splitlines(keepends=True)
    return lines


def write_big_log(path: str, size: int, *, concurrency: int = 10, requests: int = 2000,
                  template: Optional[List[bytes]] = None) -> int:
    """Write a frame log of at least ``size`` bytes (and one group of connections) at ``path``; returns
    the connections it holds."""
    lines = template if template is not None else template_lines(requests)
    header, body = lines[0], lines[1:]
    marker = b'"conn":1,'
    # Split each line around its connection id once, so a copy is a join, not a search.
    parts = []
    for line in body:
        i = line.find(marker)
        parts.append((line, None) if i < 0 else (line[:i + 7], line[i + 8:]))
    written = 0
    conns = 0
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(header)
        written += len(header)
        while written < size or not conns:
            ids = [str(conns + k + 1).encode() for k in range(concurrency)]
            conns += concurrency
            for head, tail in parts:
                for cid in ids:
                    chunk = head if tail is None else head + cid + tail
                    out.write(chunk)
                    written += len(chunk)
    return conns
