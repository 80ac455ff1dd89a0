"""Every resource limit in :class:`proxy.core.limits.Limits`, tripped from a raw-socket peer.

Each test runs an in-process proxy with small limits in front of an ``h2``-library origin
that records what it receives, keeps a second connection (the bystander) open through the
same proxy, trips one limit and checks: the offender gets GOAWAY ENHANCE_YOUR_CALM (or the
code its rule calls for), the other side of that connection a clean GOAWAY (NO_ERROR), a log
line names the limit and its value, and the bystander still gets its answers. Floods run in
transparent mode and, for a sample, in strict mode too.
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path

import hpack
import pytest

from framecodec import frame as fc
from framecodec.reader import PREFACE
from proxy.core.limits import Limits
from proxy.core.protocol import ErrorCode
from tests.rawpeers import Origin, RawClient, SilentUpstream, goaways, h2_get, raw, req

ROOT = Path(__file__).resolve().parents[1]
EYC = int(ErrorCode.ENHANCE_YOUR_CALM)

#: Limit name -> the tests in this module that trip it (checked by test_every_limit_is_tested).
COVERED = {}


def covers(*names):
    def mark(fn):
        for n in names:
            COVERED.setdefault(n, []).append(fn.__name__)
        return fn
    return mark


@pytest.fixture
def h2log(caplog):
    """The proxy's log records (attached to the "h2proxy" logger itself, whatever propagates)."""
    logger = logging.getLogger("h2proxy")
    old = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


async def logged(caplog, pattern: str, timeout: float = 5.0) -> str:
    """Wait for a log line matching ``pattern`` (a regular expression); returns it."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for rec in caplog.records:
            msg = rec.getMessage()
            if rx.search(msg):
                return msg
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}; got {[r.getMessage() for r in caplog.records]}")
        await asyncio.sleep(0.02)


class Setup:
    """A proxy with the given limits, an origin, and a bystander connection that already works."""

    @classmethod
    async def make(cls, proxy_factory, strict=False, origin=None, decode_headers=False, hooks=None, **limits):
        self = cls()
        self.origin = origin or await Origin().start()
        self.limits = Limits(**limits)
        self.px = await proxy_factory(self.origin.url, strict=strict, limits=self.limits,
                                      decode_headers=decode_headers, hooks=hooks)
        self.get, self._close = await h2_get(self.px.port)
        assert (await self.get("/"))[0] == "200"
        assert len(self.origin.conns) == 1
        return self

    async def offender(self, proxy_sndbuf=None, **kw) -> RawClient:
        c = await RawClient.connect(self.px.port, **kw)
        await asyncio.wait_for(self._second_conn(), 5)
        if proxy_sndbuf is not None:
            # The proxy's socket towards this client gets a small kernel buffer, so that a test of
            # what queues in the proxy past it needs kilobytes, not the megabytes of loopback's autotuning.
            bridge = max(self.px.bridges, key=lambda b: b.conn_id)
            bridge.transports[0].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                                     proxy_sndbuf)
        return c

    async def _second_conn(self):
        while len(self.origin.conns) < 2:
            await asyncio.sleep(0.01)

    @property
    def upstream(self):
        """The origin's side of the offender's connection."""
        return self.origin.conns[1]

    async def bystander_ok(self):
        status, body = await self.get("/")
        assert status == "200" and body == b"ok"
        assert not self.origin.conns[0].closed.is_set()

    async def clean_goaway_upstream(self):
        """The origin got a GOAWAY NO_ERROR on the offender's connection, and the connection closed."""
        await asyncio.wait_for(self.upstream.closed.wait(), 5)
        got = goaways(self.upstream.frames())
        assert got and got[-1].error_code == 0, got

    async def close(self):
        self._close()
        await self.origin.stop()


async def check_tripped(s: Setup, c: RawClient, h2log, name: str, value, code: int = EYC):
    g = await c.goaway()
    assert g.error_code == code, g
    line = await logged(h2log, rf"limit {name} = {re.escape(str(value))}\b")
    assert name in line
    if code == EYC:
        assert f"limit {name} = {value}".encode() in g.additional_data
    await s.clean_goaway_upstream()
    await s.bystander_ok()
    await c.read_to_eof()


# ------------------------------------------------------------------ client floods

def bomb_block(enc: hpack.Encoder, refs: int) -> bytes:
    """A header block that indexes one 1,000-byte field, then refers to it ``refs`` times."""
    return enc.encode(req("/") + [("x-bomb", "b" * 1000)] * refs)


FLOODS = {
    # name: (limits, value, code, build(client) -> bytes)
    "max_continuations": (dict(max_continuations=4), 4, EYC,
                          lambda c: c.headers(1, end_headers=False) + raw(0x9, 0, 1) * 6),
    "max_header_block_size": (dict(max_header_block_size=1000), 1000, EYC,
                              lambda c: c.headers(1, end_headers=False) + raw(0x9, 0, 1, b"\0" * 400) * 3),
    "max_header_block_size/one-frame": (dict(max_header_block_size=1000), 1000, EYC,
                                        lambda c: c.headers(1, req("/") + [("x-big", "v" * 1500)])),
    "max_header_list_size": (dict(max_header_list_size=4096), 4096, EYC,
                             lambda c: raw(0x1, 0x5, 1, bomb_block(c.enc, 40))),
    "max_resets_per_second": (dict(max_resets_per_second=10), 10, EYC,
                              lambda c: b"".join(c.headers(sid, req("/hold")) + raw(0x3, 0, sid, b"\0\0\0\x08")
                                                 for sid in range(1, 30, 2))),
    "max_empty_frames_per_second": (dict(max_empty_frames_per_second=10), 10, EYC,
                                    lambda c: c.headers(1, req("/hold"), end=False) + raw(0x0, 0, 1) * 12),
    "max_control_frames_per_second/PING": (dict(max_control_frames_per_second=20), 20, EYC,
                                           lambda c: raw(0x6, 0, 0, b"12345678") * 25),
    "max_control_frames_per_second/SETTINGS": (dict(max_control_frames_per_second=20), 20, EYC,
                                               lambda c: raw(0x4, 0, 0) * 25),
    "max_control_frames_per_second/PRIORITY": (dict(max_control_frames_per_second=20), 20, EYC,
                                               lambda c: b"".join(raw(0x2, 0, sid, b"\0\0\0\0\x10")
                                                                  for sid in range(101, 151, 2))),
    "max_control_frames_per_second/WINDOW_UPDATE": (dict(max_control_frames_per_second=20), 20, EYC,
                                                    lambda c: raw(0x8, 0, 0, b"\0\0\0\x01") * 25),
    "max_settings_entries": (dict(max_settings_entries=8), 8, EYC,     # (the h2 origin sends 7)
                             lambda c: raw(0x4, 0, 0, b"".join(bytes([0, 0x10 + i, 0, 0, 0, 1]) for i in range(9)))),
    "max_streams": (dict(max_streams=5), 5, EYC,
                    lambda c: b"".join(c.headers(sid, req("/hold")) for sid in range(1, 14, 2))),
    "max_frame_size": (dict(max_frame_size=16384), 16384, int(ErrorCode.FRAME_SIZE_ERROR),
                       lambda c: raw(0x0, 0, 1, b"\0" * 20000)),
}
for _name in FLOODS:
    COVERED.setdefault(_name.split("/")[0], []).append("test_client_flood")
#: Strict mode for a sample (the same limits, the same answers).
STRICT_SAMPLE = {"max_continuations", "max_header_list_size", "max_resets_per_second",
                 "max_control_frames_per_second/PING", "max_streams", "max_frame_size"}


@pytest.mark.parametrize("case, strict", [
    pytest.param(case, strict, id=f"{case}-{'strict' if strict else 'transparent'}")
    for case in sorted(FLOODS) for strict in (False, True) if not strict or case in STRICT_SAMPLE])
async def test_client_flood(proxy_factory, h2log, case, strict):
    limits, value, code, build = FLOODS[case]
    name = case.split("/")[0]
    # The HPACK bomb needs decoding, which strict mode does anyway (without decoding nothing inflates).
    s = await Setup.make(proxy_factory, strict=strict, decode_headers=name == "max_header_list_size", **limits)
    try:
        c = await s.offender()
        c.send(build(c))
        await check_tripped(s, c, h2log, name, value, code)
    finally:
        await s.close()


# ------------------------------------------------------------------ the server misbehaves

def server_pings(n):
    async def misbehave(conn):
        conn.writer.write(raw(0x6, 0, 0, b"pingpong") * n)
    return misbehave


def server_pushes(n):
    async def misbehave(conn):
        while not conn.streams:
            await asyncio.sleep(0.01)
        sid = min(conn.streams)
        block = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in req("/pushed")])
        conn.writer.write(b"".join(raw(0x5, 0x4, sid, (2 * i).to_bytes(4, "big") + block)
                                   for i in range(1, n + 1)))
    return misbehave


def server_big_headers():
    async def misbehave(conn):
        while not conn.streams:
            await asyncio.sleep(0.01)
        sid = min(conn.streams)
        conn.writer.write(raw(0x1, 0x4, sid, b"\0" * 3000))
    return misbehave


@covers("max_control_frames_per_second", "max_streams", "max_header_block_size")
@pytest.mark.parametrize("case", ["pings", "pushes", "headers"])
async def test_server_side_limits(proxy_factory, h2log, case):
    """The upstream trips a limit: it gets ENHANCE_YOUR_CALM, the client a clean GOAWAY."""
    name, value, misbehave, limits = {
        "pings": ("max_control_frames_per_second", 20, server_pings(30), dict(max_control_frames_per_second=20)),
        "pushes": ("max_streams", 4, server_pushes(6), dict(max_streams=4)),
        "headers": ("max_header_block_size", 2000, server_big_headers(), dict(max_header_block_size=2000)),
    }[case]
    origin = await Origin().start()
    s = await Setup.make(proxy_factory, origin=origin, **limits)
    try:
        origin.misbehave = misbehave
        c = await s.offender()
        c.send(c.headers(1, req("/hold")))
        g = await c.goaway()
        assert g.error_code == 0, g        # the client did nothing wrong
        await logged(h2log, rf"server hit a limit: limit {name} = {value}\b")
        await asyncio.wait_for(s.upstream.closed.wait(), 5)
        got = goaways(s.upstream.frames())
        assert got and got[-1].error_code == EYC and f"limit {name} = {value}".encode() in got[-1].additional_data
        await s.bystander_ok()
    finally:
        await s.close()


# ------------------------------------------------------------------ connections

@covers("max_connections")
async def test_max_connections(proxy_factory, h2log):
    s = await Setup.make(proxy_factory, max_connections=2)
    try:
        second = await s.offender()
        third = await RawClient.connect(s.px.port, ack=False)
        await third.read_to_eof()
        frames = third.frames
        assert isinstance(frames[0], fc.SettingsFrame)
        g = goaways(frames)[-1]
        assert g.error_code == EYC and b"limit max_connections = 2" in g.additional_data
        await logged(h2log, r"limit max_connections = 2 reached")
        await s.bystander_ok()
        second.send(second.headers(1, req("/")))
        await second.until(lambda f: isinstance(f, fc.HeadersFrame) and f.stream_id == 1)
        second.close()
    finally:
        await s.close()


# ------------------------------------------------------------------ timeouts

@covers("preface_timeout")
async def test_preface_timeout(proxy_factory, h2log):
    s = await Setup.make(proxy_factory, preface_timeout=0.5)
    try:
        c = await RawClient.connect(s.px.port, preface=False)
        c.send(PREFACE[:10])                  # half a preface, then nothing
        await c.read_to_eof(5)
        assert isinstance(c.frames[0], fc.SettingsFrame)
        g = goaways(c.frames)[-1]
        assert g.error_code == EYC and b"limit preface_timeout = 0.5" in g.additional_data
        await logged(h2log, r"limit preface_timeout = 0\.5\b")
        await s.bystander_ok()
    finally:
        await s.close()


@covers("handshake_timeout")
async def test_tls_handshake_timeout(proxy_factory, h2log, pki):
    origin = await Origin().start()
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", cert=pki["cert"],
                             key=pki["key"], limits=Limits(handshake_timeout=0.5))
    try:
        # Silent: no ClientHello at all.
        r, w = await asyncio.open_connection("127.0.0.1", px.port)
        assert await asyncio.wait_for(r.read(), 5) == b""
        await logged(h2log, r"limit handshake_timeout = 0\.5\b")
        w.close()
    finally:
        await origin.stop()


@covers("connect_timeout")
async def test_connect_timeout(proxy_factory, h2log):
    """An upstream that accepts TCP and never answers the TLS handshake: the client hears why in time."""
    async def silent(reader, writer):
        await reader.read()          # (accepts, reads the ClientHello, says nothing)
    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    px = await proxy_factory(f"https://127.0.0.1:{port}", insecure=True, limits=Limits(connect_timeout=0.5))
    try:
        start = time.monotonic()
        c = await RawClient.connect(px.port, ack=False)
        g = await c.goaway(5)
        assert time.monotonic() - start < 3
        assert g.error_code == int(ErrorCode.INTERNAL_ERROR)
        assert b"limit connect_timeout = 0.5" in g.additional_data, g
        await logged(h2log, r"limit connect_timeout = 0\.5\b")
        c.close()
    finally:
        srv.close()


@covers("upstream_silence_timeout")
async def test_upstream_silence_timeout(proxy_factory, h2log):
    """The origin holds /hold without a byte: the client's stream is reset, not left waiting."""
    s = await Setup.make(proxy_factory, upstream_silence_timeout=1.0)
    try:
        c = await s.offender()
        c.send(c.headers(1, req("/hold")))
        rst = await c.until(lambda f: isinstance(f, fc.RstStreamFrame) and f.stream_id == 1)
        assert rst.error_code == int(ErrorCode.INTERNAL_ERROR)
        g = await c.goaway()
        assert g.error_code == int(ErrorCode.INTERNAL_ERROR) and g.last_stream_id == 1
        assert b"limit upstream_silence_timeout = 1.0 exceeded" in g.additional_data, g
        await logged(h2log, r"upstream timeout: limit upstream_silence_timeout = 1\.0 exceeded")
        await s.clean_goaway_upstream()
        assert any(isinstance(f, fc.RstStreamFrame) and f.stream_id == 1 and f.error_code == int(ErrorCode.CANCEL)
                   for f in s.upstream.frames())
        await s.bystander_ok()
        await c.read_to_eof()
    finally:
        await s.close()


@covers("upstream_settings_timeout")
async def test_upstream_settings_timeout(proxy_factory, h2log):
    """The first upstream connection is the origin (the bystander's); the next one accepts and never speaks."""
    origin = await Origin().start()
    upstream = await SilentUpstream(origin, lambda: bool(origin.conns)).start()
    px = await proxy_factory(upstream.url, limits=Limits(upstream_settings_timeout=1.0))
    try:
        get, close = await h2_get(px.port)
        assert (await get("/"))[0] == "200"
        c = await RawClient.connect(px.port, ack=False)
        c.send(c.headers(1, req("/")))
        rst = await c.until(lambda f: isinstance(f, fc.RstStreamFrame) and f.stream_id == 1)
        assert rst.error_code == int(ErrorCode.INTERNAL_ERROR)
        g = await c.goaway()
        assert g.error_code == int(ErrorCode.INTERNAL_ERROR)
        assert b"limit upstream_settings_timeout = 1.0 exceeded" in g.additional_data, g
        await logged(h2log, r"upstream timeout: limit upstream_settings_timeout = 1\.0 exceeded")
        assert (await get("/"))[0] == "200"
        await c.read_to_eof()
        close()
    finally:
        upstream.stop()
        await origin.stop()


@covers("settings_ack_timeout")
async def test_settings_ack_timeout(proxy_factory, h2log):
    s = await Setup.make(proxy_factory, settings_ack_timeout=1.0)
    try:
        c = await s.offender(ack=False)      # never acknowledges the server's SETTINGS
        g = await c.goaway(5)
        assert g.error_code == int(ErrorCode.SETTINGS_TIMEOUT)
        await logged(h2log, r"limit settings_ack_timeout = 1\.0\b")
        await s.clean_goaway_upstream()
        await s.bystander_ok()
    finally:
        await s.close()


@covers("idle_timeout")
async def test_idle_timeout(proxy_factory, h2log):
    s = await Setup.make(proxy_factory, idle_timeout=1.0)
    try:
        c = await s.offender()
        t0 = time.monotonic()
        g = await c.goaway(5)
        assert g.error_code == 0 and b"idle" in g.additional_data
        await logged(h2log, r"limit idle_timeout = 1\.0\b")
        await s.clean_goaway_upstream()
        # The bystander was idle as long: it is closed the same way, and a new connection works.
        get, close = await h2_get(s.px.port)
        assert (await get("/"))[0] == "200"
        close()
        assert time.monotonic() - t0 < 4
    finally:
        await s.close()


@covers("zero_window_timeout")
async def test_zero_window_timeout_flow_control(proxy_factory, h2log):
    """The client opens no window for the response it asked for."""
    s = await Setup.make(proxy_factory, zero_window_timeout=1.0)
    try:
        c = await s.offender(settings=raw(0x4, 0, 0, b"\0\x04\0\0\0\0"))     # INITIAL_WINDOW_SIZE 0
        c.send(c.headers(1, req("/size/1000")))
        await check_tripped(s, c, h2log, "zero_window_timeout", 1.0)
    finally:
        await s.close()


@covers("zero_window_timeout", "high_water")
async def test_zero_window_timeout_socket(proxy_factory, h2log):
    """The client opens its windows wide but reads nothing from its socket."""
    s = await Setup.make(proxy_factory, zero_window_timeout=1.0, high_water=16384)
    try:
        c = await s.offender(rcvbuf=4096, proxy_sndbuf=4096, settings=raw(0x4, 0, 0, b"\0\x04\x7f\xff\xff\xff"))
        c.send(raw(0x8, 0, 0, (2 ** 30).to_bytes(4, "big")) + c.headers(1, req("/size/50000000")))
        await logged(h2log, r"client hit a limit: limit zero_window_timeout = 1\.0\b", 8)
        # Backpressure held the upstream back meanwhile: it got only a few MB out.
        assert s.upstream.sent_bytes < 16 * 2 ** 20
        await check_tripped(s, c, h2log, "zero_window_timeout", 1.0)
    finally:
        await s.close()


# ------------------------------------------------------------------ queues towards a side that does not read

async def flood_until_logged(c: RawClient, h2log, pattern: str, chunks, max_chunks: int = 3000) -> None:
    """Send chunks (and let the proxy run) until a log line matches ``pattern``."""
    rx = re.compile(pattern)
    for _ in range(max_chunks):
        c.send(next(chunks))
        await c.writer.drain()
        await asyncio.sleep(0)
        if any(rx.search(r.getMessage()) for r in h2log.records):
            return
    await logged(h2log, pattern, 2)


def self_dependent_priorities(first: int, n: int) -> bytes:
    """PRIORITY frames on idle streams that depend on themselves: strict mode resets each stream."""
    return b"".join(raw(0x2, 0, sid, sid.to_bytes(4, "big") + b"\x10") for sid in range(first, first + 2 * n, 2))


@covers("max_queued_control_frames")
@pytest.mark.parametrize("strict", [False, True], ids=["transparent", "strict"])
async def test_max_queued_control_frames(proxy_factory, h2log, strict):
    """The proxy answers the client's frames (strict: RST_STREAM per bad frame; transparent: window
    credit for DATA a hook dropped) while the client reads nothing."""
    hooks = None
    if not strict:
        class DropData:
            def on_data(self, ctx, frame):
                if ctx.direction == "client->server":
                    return []
        hooks = [DropData()]
    # (Self-dependent PRIORITY frames are stream errors that also count as resets and PRIORITY churn
    # since MadeYouReset: those limits are set out of the way of the one under test.)
    s = await Setup.make(proxy_factory, strict=strict, hooks=hooks, high_water=4096, max_queued_control_frames=50,
                         max_resets_per_second=10 ** 9, max_control_frames_per_second=10 ** 9)
    try:
        c = await s.offender(rcvbuf=4096, proxy_sndbuf=4096)
        if strict:
            chunks = (self_dependent_priorities(1001 + 2000 * i, 1000) for i in range(10 ** 6))
        else:
            c.send(c.headers(1, req("/hold"), end=False))
            chunks = (raw(0x0, 0, 1, b"x") * 1000 for _ in range(10 ** 6))
        await flood_until_logged(c, h2log, r"client hit a limit: limit max_queued_control_frames = 50\b", chunks)
        await check_tripped(s, c, h2log, "max_queued_control_frames", 50)
    finally:
        await s.close()


@covers("max_queued_bytes")
async def test_max_queued_bytes(proxy_factory, h2log):
    s = await Setup.make(proxy_factory, strict=True, high_water=4096, max_queued_bytes=20000,
                         max_resets_per_second=10 ** 9, max_control_frames_per_second=10 ** 9)
    try:
        c = await s.offender(rcvbuf=4096, proxy_sndbuf=4096)
        chunks = (self_dependent_priorities(1001 + 2000 * i, 1000) for i in range(10 ** 6))
        await flood_until_logged(c, h2log, r"client hit a limit: limit max_queued_bytes = 20000\b", chunks)
        await check_tripped(s, c, h2log, "max_queued_bytes", 20000)
    finally:
        await s.close()


@covers("high_water")
async def test_high_water_holds_the_sender_back(proxy_factory):
    """A client that stops reading: the proxy stops reading the upstream; it resumes when the client reads."""
    s = await Setup.make(proxy_factory, high_water=16384)
    try:
        c = await s.offender(rcvbuf=4096, proxy_sndbuf=4096, settings=raw(0x4, 0, 0, b"\0\x04\x7f\xff\xff\xff"))
        size = 32 * 2 ** 20
        c.send(raw(0x8, 0, 0, (2 ** 30).to_bytes(4, "big")) + c.headers(1, req(f"/size/{size}")))
        # Wait until the upstream is stuck (its byte count stops moving).
        last, still = -1, 0
        while still < 5:
            await asyncio.sleep(0.1)
            still = still + 1 if s.upstream.sent_bytes == last else 0
            last = s.upstream.sent_bytes
        bridge = next(b for b in s.px.bridges if b.conn_id == max(x.conn_id for x in s.px.bridges))
        queued = bridge.transports[0].get_write_buffer_size() + bridge.relay.buffered
        assert bridge.paused_reading[1], "the upstream is still read"
        assert queued < 16384 + 512 * 1024, queued
        assert last < size
        # Reading again drains everything.
        while c.data_bytes < size:
            assert await c.read_some(5)
        assert c.data_bytes == size
        await s.bystander_ok()
    finally:
        await s.close()


# ------------------------------------------------------------------ configuration

def test_every_limit_is_documented_and_settable():
    """Each limit: a comment in limits.py, a commented key with its default in config/default.toml,
    and ``--limit NAME=VALUE`` sets it."""
    from proxy.cli import build_parser, merge_args
    from proxy.config import Config
    src = (ROOT / "proxy/core/limits.py").read_text().splitlines()
    toml = (ROOT / "config/default.toml").read_text().splitlines()
    start = toml.index("[limits]")
    defaults = Limits()
    for name in Limits.names():
        i = next(i for i, line in enumerate(src) if re.match(rf"\s+{name}: ", line))
        assert src[i - 1].strip().startswith("#:"), f"limits.py: {name} has no comment"
        j = next(j for j in range(start, len(toml)) if re.match(rf"{name} = ", toml[j]))
        assert toml[j - 1].startswith("#"), f"default.toml: {name} has no comment"
        value = toml[j].split("=", 1)[1].strip()
        assert type(getattr(defaults, name))(value) == getattr(defaults, name), f"default.toml: {name} = {value}"
        # Another valid value (an integer limit one less: max_frame_size is at its ceiling).
        other = f"{value}1" if isinstance(getattr(defaults, name), float) else str(int(value) - 1)
        args = build_parser().parse_args(["--limit", f"{name}={other}"])
        cfg = merge_args(Config(), args)
        assert getattr(cfg.limits, name) == type(getattr(defaults, name))(other)


def test_every_limit_is_tested():
    untested = set(Limits.names()) - set(COVERED) - {"grace_period"}   # (the shutdown grace: test_proxy_peers)
    assert not untested, f"limits no test trips: {sorted(untested)}"
