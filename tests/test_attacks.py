"""Attacks on the running proxy process from raw sockets (issue 14), one regression test per hole.

Each test runs ``h2proxy`` as its own process (memory from /proc) in front of an
``h2``-library origin that records what it receives, attacks it from a raw socket, and
checks what the attacker gets, what the origin received, and that a well-behaved client on
another connection is served before and after. docs/robustness.md lists the figures.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from framecodec import frame as fc
from tests.rawpeers import Origin, RawClient, h2_get, raw, req
from tests.test_load import H2PROXY, MiB, PeakSampler, ProxyProcess, report

#: Control characters a hostile peer puts in what the operator reads (ESC sequences, BEL).
EVIL_NAME = "x-evil\x1b[2J"
EVIL_VALUE = "\x1b]0;owned\x07\x1b[31mred\x9b"
EVIL_PATH = "/\x1b[1Ahidden\x07"


@pytest.fixture
def proxy_process(tmp_path):
    started = []

    def start(upstream: str, *extra: str) -> ProxyProcess:
        p = ProxyProcess(upstream, tmp_path, *extra)
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


async def served(get) -> None:
    """The bystander's request gets its answer."""
    status, body = await get("/")
    assert (status, body) == ("200", b"ok")


def control_bytes(text: bytes) -> set:
    """Control bytes other than the newline (ESC, BEL, CSI, ...) present in ``text``."""
    return {b for b in text if (b < 0x20 and b != 0x0A) or b == 0x7F} | \
        ({0x9B} if "\x9b".encode() in text else set())


# ------------------------------------------------------------------ 4: terminal escape injection

async def test_control_characters_are_escaped_in_live_and_log_text(proxy_process, tmp_path):
    origin = await Origin().start()
    log = tmp_path / "frames.jsonl"
    px = proxy_process(origin.url, "-v", "--record", str(log))
    try:
        get, close = await h2_get(px.port)
        await served(get)
        c = await RawClient.connect(px.port)
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", EVIL_PATH),
                   (EVIL_NAME, EVIL_VALUE)]
        wire = c.headers(1, headers)
        c.send(wire)
        # (The h2 origin refuses such a request: GOAWAY PROTOCOL_ERROR, or RST_STREAM.)
        await c.until(lambda f: getattr(f, "stream_id", 0) == 1 or isinstance(f, fc.GoAwayFrame))
        # The origin got the request exactly as the client sent it (transparent mode changes nothing).
        assert any(wire in conn.received for conn in origin.conns), [bytes(conn.received[-200:]) for conn in origin.conns]
        await served(get)
        c.close()
        close()
    finally:
        px.stop()
        await origin.stop()
    live = px.err.read_bytes()
    assert b"x-evil" in live and b"hidden" in live, live[-2000:]
    assert not control_bytes(live), sorted(control_bytes(live))
    assert rb"x-evil\x1b[2J: \x1b]0;owned\x07\x1b[31mred\x9b" in live
    assert rb"/\x1b[1Ahidden\x07" in live
    text = subprocess.run([str(H2PROXY), "log", "text", str(log)], capture_output=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert b"x-evil" in text.stdout and not control_bytes(text.stdout), sorted(control_bytes(text.stdout))
    assert rb"x-evil\x1b[2J: \x1b]0;owned\x07\x1b[31mred\x9b" in text.stdout

