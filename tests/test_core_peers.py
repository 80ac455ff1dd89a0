"""The relay's own rules against real peers: what the proxy originates, and when.

nghttp and the h2 library are the clients, nghttpd the origin, often behind a
:class:`tests.peers.HeldUpstream` that holds the origin's first bytes (its
SETTINGS) until the proxy has done what the test is about: an upstream that is
late by an event, not by a sleep.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.core.limits import Limits
from proxy.faults.hook import FaultHook
from proxy.hooks.builtin.push import PushHook
from proxy.hooks.chain import load_hook
from tests.peers import HeldUpstream, http_url, nghttp

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[1]


def first_received(out: str) -> str:
    """The type of the first frame nghttp -v says it received."""
    m = re.search(r"recv (\w+) frame", out)
    assert m, f"nghttp received no frame:\n{out[-3000:]}"
    return m.group(1)


def requests_forwarded(n: int):
    """A release_when for HeldUpstream: the proxy has forwarded n request HEADERS."""
    return lambda frames: sum(1 for t, _, sid in frames if t == 0x1 and sid & 1) >= n


# --------------------------------------------------- issue 13.1: SETTINGS first


async def test_ping_and_push_example_with_a_late_origin(nghttpd, proxy_factory):
    """docs/examples/ping_and_push.py: the injected PING waits for the server's SETTINGS."""
    origin = nghttpd()
    async with HeldUpstream(origin.port, release_when=requests_forwarded(2)) as held:
        px = await proxy_factory(held.url, hooks=load_hook(str(ROOT / "docs/examples/ping_and_push.py")))
        url = http_url(px.url)
        rc, out = await nghttp("-nv", f"{url}/", f"{url}/ping-me")
    assert first_received(out) == "SETTINGS", out
    assert rc == 0, out
    assert re.search(r"recv PING frame <length=8, flags=0x00", out), out
    assert "recv PUSH_PROMISE" in out and "recv GOAWAY" not in out


async def test_push_when_request_with_a_late_origin(nghttpd, proxy_factory):
    origin = nghttpd()
    push = PushHook(rules=[{"path": "/index.html", "push": [{"path": "/pushed.txt", "body": "pushed\n"}]}],
                    when="request")
    async with HeldUpstream(origin.port, release_when=requests_forwarded(1)) as held:
        px = await proxy_factory(held.url, hooks=[push])
        rc, out = await nghttp("-nv", f"{http_url(px.url)}/index.html")
    assert first_received(out) == "SETTINGS", out
    assert rc == 0 and push.pushed == 1, out
    assert "recv PUSH_PROMISE" in out and "recv GOAWAY" not in out


@pytest.mark.parametrize("rule, seen", [
    ("inject frame=ping opaque=6832707278792121 type=headers direction=c2s towards=client",
     r"recv PING frame <length=8, flags=0x00"),
    ("rst_stream code=REFUSED_STREAM type=headers direction=c2s towards=client",
     r"recv RST_STREAM frame <length=4, flags=0x00, stream_id=13>\s+\(error_code=REFUSED_STREAM"),
    ("goaway code=NO_ERROR type=headers direction=c2s keep=true",
     r"recv GOAWAY frame <length=\d+, flags=0x00, stream_id=0>\s+\(last_stream_id=\d+, error_code=NO_ERROR"),
])
async def test_fault_actions_on_a_request_with_a_late_origin(nghttpd, proxy_factory, rule, seen):
    origin = nghttpd()
    faults = FaultHook([rule])
    async with HeldUpstream(origin.port, release_when=requests_forwarded(1)) as held:
        # (rst_stream on the request: the request never reaches the origin; release on the preface.)
        if rule.startswith("rst_stream"):
            held.release_when = lambda frames: len(frames) >= 1
        px = await proxy_factory(held.url, hooks=[faults])
        rc, out = await nghttp("-nv", f"{http_url(px.url)}/index.html")
    assert first_received(out) == "SETTINGS", out
    assert re.search(seen, out), out
    assert "unexpected data" not in out and "PROTOCOL_ERROR" not in out, out


async def test_strict_stream_error_with_a_late_origin(nghttpd, proxy_factory):
    """--strict refuses a request with a connection-specific field: the RST_STREAM follows SETTINGS."""
    origin = nghttpd()
    # Released once the proxy forwarded the client's SETTINGS: the proxy made its RST_STREAM in the
    # same read (nghttp's SETTINGS and HEADERS come in one write), before the origin's SETTINGS.
    async with HeldUpstream(origin.port, release_when=lambda frames: len(frames) >= 1) as held:
        px = await proxy_factory(held.url, strict=True)
        rc, out = await nghttp("-nv", "-H", "connection: close", f"{http_url(px.url)}/index.html",
                               check=False)     # (nghttp sends a malformed request on purpose)
    assert first_received(out) == "SETTINGS", out
    assert re.search(r"recv RST_STREAM frame <length=4, flags=0x00, stream_id=13>\s+"
                     r"\(error_code=PROTOCOL_ERROR", out), out


async def test_limit_goaway_reaches_the_client_when_the_origin_is_late(nghttpd, proxy_factory):
    """--limit max_streams=2 with 4 requests: the client sees SETTINGS, then GOAWAY ENHANCE_YOUR_CALM."""
    origin = nghttpd()
    async with HeldUpstream(origin.port) as held:     # (the origin never gets to speak)
        px = await proxy_factory(held.url, limits=Limits(max_streams=2))
        url = http_url(px.url)
        rc, out = await nghttp("-nv", f"{url}/index.html", f"{url}/small.txt", f"{url}/1m.bin",
                               f"{url}/index.html?2")
    assert first_received(out) == "SETTINGS", out
    assert re.search(r"recv GOAWAY frame .*\n.*error_code=ENHANCE_YOUR_CALM", out), out


# ------------------------------------------- issue 13.2: the receiver's HPACK table size

def _rewriting_hook():
    from proxy.hooks.builtin.headers import HeadersHook
    return HeadersHook(rules=[{"match": {"direction": "both"}, "set": {"x-via": "h2proxy"}}])


@pytest.mark.parametrize("size", [0, 64, 4096])
async def test_nghttp_header_table_size_through_a_rewriting_hook(nghttpd, proxy_factory, size):
    origin = nghttpd()
    px = await proxy_factory(origin.url, hooks=[_rewriting_hook()])
    url = http_url(px.url)
    rc, out = await nghttp("-nv", "-c", str(size), f"{url}/index.html", f"{url}/small.txt", f"{url}/index.html?x")
    assert rc == 0, out
    assert "COMPRESSION_ERROR" not in out and "recv GOAWAY" not in out, out
    assert out.count("x-via: h2proxy") == 3, out


@pytest.mark.parametrize("size", [0, 64, 4096])
async def test_h2load_header_table_size_through_a_rewriting_hook(nghttpd, proxy_factory, size):
    from tests.peers import h2load
    origin = nghttpd()
    px = await proxy_factory(origin.url, hooks=[_rewriting_hook()])
    result = await h2load(f"{http_url(px.url)}/index.html", 200, 2, 10, f"--header-table-size={size}")
    assert result["succeeded"] == 200 and result["errored"] == 0, result.output


# ------------------------------------------- issue 13.5: a hook returning a wrong type

class ReturnsFortyTwo:
    name = "forty-two"

    def on_data(self, ctx, frame):
        return 42


async def test_a_hook_returning_an_int_loses_no_frame(nghttpd, proxy_factory, caplog):
    origin = nghttpd()
    px = await proxy_factory(origin.url, hooks=[ReturnsFortyTwo()])
    with caplog.at_level("ERROR", logger="h2proxy"):
        rc, out = await nghttp("-n", f"{http_url(px.url)}/small.txt", timeout=10)
    assert rc == 0, out
    assert any("forty-two" in r.getMessage() and "on_data returned int" in r.getMessage()
               and "stream 13" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


# ------------------------------------------- raw-socket attacks (issue 14)

async def wait_log(caplog, text: str, timeout: float = 5.0) -> str:
    """Wait for a log line of the in-process proxy that contains ``text`` (a log line is the event)."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for r in caplog.records:
            if text in r.getMessage():
                return r.getMessage()
        if loop.time() > deadline:
            raise AssertionError(f"no log line with {text!r}; got {[r.getMessage() for r in caplog.records][-10:]}")
        await asyncio.sleep(0.01)


async def test_transparent_mode_reports_a_frame_above_the_receivers_max_frame_size(proxy_factory, caplog):
    """Issue 14.5: 16,385 bytes of DATA where the origin announced 16,384: a violation is logged."""
    from tests.rawpeers import Origin, RawClient, raw
    origin = await Origin().start()
    try:
        px = await proxy_factory(origin.url)
        with caplog.at_level("WARNING", logger="h2proxy"):
            c = await RawClient.connect(px.port)
            c.send(c.headers(1, end=False) + raw(0x0, 0x1, 1, b"x" * 16385))
            line = await wait_log(caplog, "violation by the client")
        assert "16385 bytes" in line and "SETTINGS_MAX_FRAME_SIZE 16384" in line and "4.2" in line, line
        c.close()
    finally:
        await origin.stop()


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x09https://", b"\xff\xffx"])
async def test_malformed_altsvc_is_dropped_by_default(proxy_factory, caplog, body):
    """Issue 14.6: a malformed ALTSVC from the origin does not reach the client either."""
    from proxy.hooks.builtin.altsvc import AltSvcHook
    from tests.rawpeers import Origin, RawClient, raw

    async def altsvc_first(conn):
        conn.writer.write(raw(0xA, 0, 0, body) + raw(0xA, 0, 0, b"\x00\x12https://o.example" + b'h2=":1"'))
    origin = await Origin(misbehave=altsvc_first).start()
    try:
        px = await proxy_factory(origin.url, hooks=[AltSvcHook()])
        with caplog.at_level("INFO", logger="h2proxy"):
            c = await RawClient.connect(px.port)
            # The origin wrote its ALTSVC frames first: once its PING ACK is here, they went by.
            c.send(c.headers(1) + raw(0x6, 0, 0, b"altsvc?!"))
            await c.until(lambda f: getattr(f, "type", None) == 0x6 and "ACK" in f.flags)
            line = await wait_log(caplog, "malformed ALTSVC")
        assert not any(getattr(f, "type", None) == 0xA for f in c.frames), c.frames
        assert "dropped" in line and "RFC 7838" in line, line
        c.close()
    finally:
        await origin.stop()


def _made_you_reset(kind: str):
    """Bytes of one MadeYouReset request on stream sid: HEADERS, then a frame that is a stream error."""
    from tests.rawpeers import raw

    def attack(c, sid: int) -> bytes:
        if kind == "window_update_0":
            return c.headers(sid, end=True) + raw(0x8, 0, sid, b"\0\0\0\0")
        if kind == "self_priority":
            return c.headers(sid, end=True) + raw(0x2, 0, sid, sid.to_bytes(4, "big") + b"\x10")
        return c.headers(sid, end=True) + raw(0x0, 0x1, sid, b"late")       # DATA after END_STREAM
    return attack


@pytest.mark.parametrize("kind", ["window_update_0", "self_priority", "data_after_end"])
async def test_made_you_reset_is_stopped_under_strict(proxy_factory, caplog, kind):
    """Issue 14.1 (CVE-2025-8671): requests each followed by a stream error make the proxy reset them;
    those resets count like RST_STREAMs: GOAWAY ENHANCE_YOUR_CALM long before 5,000 reach the origin,
    while a well-behaved client on another connection is served."""
    import asyncio

    from framecodec import frame as fc
    from tests.rawpeers import Origin, RawClient, h2_get
    origin = await Origin().start()
    try:
        px = await proxy_factory(origin.url, strict=True)
        get, close = await h2_get(px.port)
        assert (await get("/"))[0] == "200"
        c = await RawClient.connect(px.port)
        goaway = asyncio.ensure_future(c.until(lambda f: isinstance(f, fc.GoAwayFrame), timeout=15))
        attack = _made_you_reset(kind)
        sid = 1
        with caplog.at_level("WARNING", logger="h2proxy"):
            for batch in range(50):
                if goaway.done() or c.writer.is_closing():
                    break
                c.send(b"".join(attack(c, sid + 2 * i) for i in range(100)))
                sid += 200
                try:
                    await c.writer.drain()
                except ConnectionError:
                    break
                if batch % 10 == 0:
                    assert (await get("/"))[0] == "200"      # the bystander is served meanwhile
            frame = await goaway
        assert frame.error_code == 0xB, frame                # ENHANCE_YOUR_CALM
        assert "max_resets_per_second" in frame.additional_data.decode()
        reached = sum(len(conn.streams) for conn in origin.conns[1:])
        assert reached < 1000, f"{reached} of {sid // 2} requests reached the origin"
        assert (await get("/"))[0] == "200"
        close()
        c.close()
    finally:
        await origin.stop()


# ------------------------------------------- issue 13.3: after the proxy's own reset

async def wait_until(pred, what: str, timeout: float = 10.0) -> None:
    """Wait for a condition on a peer's recorded state (checked as the event loop runs)."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("strict", [False, True], ids=["transparent", "strict"])
@pytest.mark.parametrize("towards", ["client", "both"])
async def test_frames_in_flight_after_a_fault_reset_are_discarded_quietly(proxy_factory, caplog, strict, towards):
    """rst_stream on the response HEADERS (config/faults/flaky-resets.toml's rule): the DATA the server
    still sends is expected, not a violation, and draws no RST_STREAM; with towards=client the server
    finishes its response (window credit returned) while the client's connection goes on."""
    from framecodec import frame as fc
    from tests.rawpeers import Origin, h2_get
    size = 300000        # (more than the stream's initial window: the server needs credit to finish)
    origin = await Origin().start()
    try:
        faults = FaultHook([f"rst_stream code=REFUSED_STREAM towards={towards} type=headers direction=s2c "
                            f"path=/size/*"])
        px = await proxy_factory(origin.url, hooks=[faults], strict=strict)
        with caplog.at_level("INFO", logger="h2proxy"):
            get, close = await h2_get(px.port)
            with pytest.raises(ConnectionError, match="REFUSED_STREAM|error_code=7|StreamReset"):
                await get(f"/size/{size}")
            conn = origin.conns[0]
            if towards == "client":
                await wait_until(lambda: conn.sent_bytes == size, f"the origin sent all {size} bytes")
            assert await get("/") == ("200", b"ok")       # the connection is healthy both ways
            close()
        violations = [r.getMessage() for r in caplog.records if "violation by the" in r.getMessage()]
        assert not violations, violations
        to_origin = [f for f in conn.frames() if isinstance(f, fc.RstStreamFrame)]
        if towards == "client":
            assert not to_origin, to_origin
        else:
            assert [f.error_code for f in to_origin] == [0x7], to_origin     # the rule's one RST_STREAM
    finally:
        await origin.stop()


@pytest.mark.parametrize("size", [0, 64])
async def test_nghttp_header_table_size_with_a_push(nghttpd, proxy_factory, size):
    """Issue 13.2 with the proxy's own push: its PUSH_PROMISE and pushed response honour the client's table."""
    origin = nghttpd()
    push = PushHook(rules=[{"path": "/index.html", "push": [{"path": "/pushed.txt", "body": "pushed\n"}]}])
    px = await proxy_factory(origin.url, hooks=[push])
    url = http_url(px.url)
    rc, out = await nghttp("-nv", "-c", str(size), f"{url}/index.html", f"{url}/small.txt")
    assert rc == 0 and push.pushed == 1, out
    assert "recv PUSH_PROMISE" in out and "COMPRESSION_ERROR" not in out and "recv GOAWAY" not in out, out
