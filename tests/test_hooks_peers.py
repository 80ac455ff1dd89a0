"""The built-in hooks and the docs' example hooks through the proxy, against real peers on loopback.

nghttp, curl and h2load are the clients; nghttpd, the demo origin (the h2
library) and small h2-library servers written here are the origins.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import h2.config
import h2.connection
import h2.events
import pytest

from framecodec.reader import FrameReader
from proxy.demo_origin import INDEX
from proxy.hooks.api import Hook
from proxy.hooks.builtin.altsvc import AltSvcHook
from proxy.hooks.builtin.extension import ExtensionHook
from proxy.hooks.builtin.headers import HeadersHook
from proxy.hooks.builtin.push import PushHook
from proxy.hooks.chain import load_hook
from tests.peers import Nghttpd, curl, h2load, http_url, make_docroot, nghttp

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[1]
MARKER = b"PUSHED-BY-H2PROXY-0123456789"
BIG_SIZE = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An nghttpd on a document root with /index.html and a 10 MiB /big.bin, for the whole module."""
    root = make_docroot(tmp_path_factory.mktemp("site"), {
        "index.html": "<html><link rel=stylesheet href=/style.css>hello</html>\n",
        "big.bin": BIG_SIZE,
    })
    with Nghttpd(root) as server:
        yield server


# ------------------------------------------------------------- parsing nghttp -v

_FRAME = re.compile(r"^\[\s*[\d.]+\] (send|recv) (\w+) frame <length=(\d+), flags=0x([0-9a-f]{2}), stream_id=(\d+)>")
_HEADER = re.compile(r"^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) ([^:]*:?[^:]+): (.*)$")


class NghttpLog:
    """What `nghttp -v` printed: frames in order, request paths by stream, received headers by stream."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.frames: List[Tuple[str, str, int, int, int]] = []      # (send|recv, TYPE, length, flags, stream)
        self.paths: Dict[str, int] = {}                               # path asked for -> stream id
        self.headers: Dict[int, List[Tuple[str, str]]] = {}
        last_send_headers = None
        for line in text.splitlines():
            m = _FRAME.match(line)
            if m:
                way, ftype, length, flags, sid = m.group(1), m.group(2), int(m.group(3)), int(m.group(4), 16), \
                    int(m.group(5))
                self.frames.append((way, ftype, length, flags, sid))
                last_send_headers = sid if (way, ftype) == ("send", "HEADERS") else None
                continue
            h = _HEADER.match(line)
            if h:
                self.headers.setdefault(int(h.group(1)), []).append((h.group(2), h.group(3)))
                continue
            if last_send_headers is not None and line.strip().startswith(":path: "):
                self.paths[line.strip()[7:]] = last_send_headers

    def data(self, sid: int) -> List[Tuple[int, int]]:
        """(index in frames, length) of each DATA frame received on ``sid``."""
        return [(i, f[2]) for i, f in enumerate(self.frames) if f[:2] == ("recv", "DATA") and f[4] == sid]

    def index(self, way: str, ftype: str) -> List[int]:
        return [i for i, f in enumerate(self.frames) if f[0] == way and f[1] == ftype]

    def header(self, sid: int, name: str) -> Optional[str]:
        for n, v in self.headers.get(sid, []):
            if n == name:
                return v
        return None


# ------------------------------------------------------------- altsvc

async def test_altsvc_dropped_by_default_and_rewritten_on_request(origin, proxy_factory):
    from proxy.cli import build_hooks
    from proxy.config import Config, load_config

    # Without hooks the origin's ALTSVC does arrive (so the assertions below can fail).
    bare = await proxy_factory(origin.url)
    rc, out = await nghttp("-nv", f"{http_url(bare.url)}/altsvc")
    assert rc == 0 and f'altsvc_field_value=[h2="127.0.0.1:{origin.port}"; ma=60]' in out

    # The proxy's default hooks (what `h2proxy` runs with no options) drop it; the response is intact.
    default = await proxy_factory(origin.url, hooks=build_hooks(Config()))
    rc, out = await nghttp("-nv", f"{http_url(default.url)}/altsvc")
    log = NghttpLog(out)
    assert rc == 0 and "ALTSVC" not in out
    sid = log.paths["/altsvc"]
    assert log.header(sid, ":status") == "200" and sum(n for _, n in log.data(sid)) == 40

    # rewrite: remove the origin's h2 alternative, add two, set ma.
    hook = AltSvcHook(mode="rewrite", remove=["h2"], add=['h3=":8443"', 'h2="alt.test:443"'], ma=30)
    rw = await proxy_factory(origin.url, hooks=[hook])
    rc, out = await nghttp("-nv", f"{http_url(rw.url)}/altsvc")
    assert rc == 0 and 'altsvc_field_value=[h3=":8443"; ma=30, h2="alt.test:443"; ma=30]' in out
    assert f"127.0.0.1:{origin.port}" not in out.split("ALTSVC", 1)[1].splitlines()[1]
    assert hook.rewritten == 1

    # The same through the example config file.
    cfg = load_config(str(ROOT / "config/hooks-altsvc-rewrite.toml"))
    px = await proxy_factory(origin.url, hooks=build_hooks(cfg))
    rc, out = await nghttp("-nv", f"{http_url(px.url)}/altsvc")
    assert rc == 0 and (f'altsvc_field_value=[h2="127.0.0.1:{origin.port}"; ma=60, '
                        f'h2="alt.example.test:8443"; ma=60]') in out


# ------------------------------------------------------------- push

async def test_push_arrives_while_a_10_mib_download_runs_on_the_same_connection(site, proxy_factory):
    hook = PushHook(rules=[{"path": "/index.html",
                            "push": [{"path": "/style.css", "headers": {"content-type": "text/css"},
                                      "body": MARKER.decode()}]}])
    px = await proxy_factory(site.url, hooks=[hook])
    url = http_url(px.url)
    rc, out = await nghttp("-nv", "-s", f"{url}/big.bin", f"{url}/index.html", timeout=60)
    log = NghttpLog(out)
    assert rc == 0, out[-2000:]
    assert hook.pushed == 1 and not hook.refusals

    # The promise, on the index.html stream, for /style.css.
    [promise] = log.index("recv", "PUSH_PROMISE")
    index_sid, big_sid = log.paths["/index.html"], log.paths["/big.bin"]
    assert log.frames[promise][4] == index_sid
    pushed = [sid for sid, hs in log.headers.items() if (":path", "/style.css") in hs]
    assert len(pushed) == 1
    # The pushed stream's response headers and body.
    [psid] = [sid for sid in log.headers if sid % 2 == 0 and log.header(sid, ":status")]
    assert log.header(psid, ":status") == "200" and log.header(psid, "content-type") == "text/css"
    assert log.header(psid, "content-length") == str(len(MARKER))
    assert sum(n for _, n in log.data(psid)) == len(MARKER)
    # nghttp prints durations under 1 ms in us, under 1 s in ms: a fast run can start the push at "+950us".
    stat = re.search(r"\*\s*\+[\d.]+(?:us|ms|s)\s+[\d.]+(?:us|ms|s)\s+200\s+\d+ /style\.css", out)
    assert stat, "stats show the push"

    # It came while the big download was under way (requested, not finished), its body was interleaved
    # with the big body, and the big body arrived whole.
    big = log.data(big_sid)
    big_request = min(i for i, f in enumerate(log.frames) if f[:2] == ("send", "HEADERS") and f[4] == big_sid)
    assert big_request < promise and max(i for i, _ in log.data(psid)) < big[-1][0]
    assert sum(n for _, n in big) == BIG_SIZE
    assert "RST_STREAM" not in out and "recv GOAWAY" not in out
    # The promise precedes the response HEADERS of index.html (when = "response").
    first_index_headers = min(i for i, f in enumerate(log.frames) if f[:2] == ("recv", "HEADERS")
                              and f[4] == index_sid)
    assert promise < first_index_headers

    # Without -n nghttp prints bodies: the pushed one is the proxy's.
    rc, out = await nghttp("-v", f"{url}/index.html")
    assert rc == 0 and MARKER.decode() in out and "PUSH_PROMISE" in out


async def test_push_refused_when_the_client_disables_push_and_config_example(site, proxy_factory, monkeypatch):
    from proxy.cli import build_hooks
    from proxy.config import load_config
    monkeypatch.chdir(ROOT)
    chain = build_hooks(load_config(str(ROOT / "config/hooks-push.toml")))
    push = chain.hooks[1]
    px = await proxy_factory(site.url, hooks=chain)
    url = http_url(px.url)
    rc, out = await nghttp("-v", f"{url}/index.html")
    log = NghttpLog(out)
    assert rc == 0 and len(log.index("recv", "PUSH_PROMISE")) == 2
    assert 'console.log("pushed by h2proxy");' in out and "body { font-family: sans-serif }" in out
    assert push.pushed == 2
    # nghttp --no-push sets SETTINGS_ENABLE_PUSH = 0: the proxy refuses, says why, the page still loads.
    rc, out = await nghttp("-nv", "--no-push", f"{url}/index.html")
    assert rc == 0 and "PUSH_PROMISE" not in out and ":status: 200" in out
    assert push.refused == 2 and all("disabled push" in why for _, why in push.refusals)


# ------------------------------------------------------------- headers

RESPONSE_RULES = [
    {"match": {"direction": "response", "path": "/index.html", "status": "2*"},
     "set": {"x-via-h2proxy": "yes"}, "remove": ["server"],
     "replace": {"content-type": ["^text/html$", "text/html; charset=utf-8"]}},
    {"match": {"direction": "request"}, "set": {"x-from-proxy": "1"}},
]


async def test_header_rewrite_over_5000_h2load_requests(site, proxy_factory):
    hook = HeadersHook(rules=RESPONSE_RULES)
    px = await proxy_factory(site.url, hooks=[hook])
    url = http_url(px.url)
    result = await h2load(f"{url}/index.html", 5000, 2, 10, timeout=60)
    assert result["failed"] == 0 and result["errored"] == 0, result.output[-1500:]
    assert result["succeeded"] == 5000 and result["2xx"] == 5000
    assert hook.rules[0].applied == 5000 and hook.rules[1].applied == 5000

    # Every response on one long connection carries the change (the re-encoded HPACK state holds).
    rc, out = await nghttp("-nv", "-m", "300", f"{url}/index.html", timeout=60)
    assert rc == 0
    assert out.count("x-via-h2proxy: yes") == 300
    assert out.count("content-type: text/html; charset=utf-8") == 300
    assert "server: nghttpd" not in out


async def test_request_header_rewrite_reaches_the_origin(origin, proxy_factory):
    hook = HeadersHook(rules=[{"match": {"direction": "request", "path": "/headers"},
                               "replace": {"user-agent": ["^nghttp2/", "rewritten-by-h2proxy/"]},
                               "set": {"x-added": "hello"}, "remove": ["accept-encoding"]}])
    px = await proxy_factory(origin.url, hooks=[hook])
    rc, out = await nghttp(f"{http_url(px.url)}/headers")
    assert rc == 0
    seen = json.loads(out)          # the request headers as the origin got them
    seen = {n: v for n, v in (seen["headers"] if isinstance(seen, dict) else seen)}
    assert seen["user-agent"].startswith("rewritten-by-h2proxy/") and seen["x-added"] == "hello"
    assert "accept-encoding" not in seen and seen[":path"] == "/headers"


async def test_a_header_hook_and_the_push_hook_after_it_both_act(site, proxy_factory):
    """Hooks run in order: the push hook still sees the response a header hook changed."""
    headers = HeadersHook(rules=[{"match": {"direction": "response"}, "set": {"x-first": "1"}}])
    push = PushHook(rules=[{"path": "/index.html", "push": [{"path": "/a.css", "body": "a{}"}]}])
    px = await proxy_factory(site.url, hooks=[headers, push])
    rc, out = await nghttp("-nv", f"{http_url(px.url)}/index.html")
    assert rc == 0 and "x-first: 1" in out and "recv PUSH_PROMISE" in out and push.pushed == 1


# ------------------------------------------------------------- dropped DATA

async def test_dropping_data_mid_download_ends_promptly(site, proxy_factory):
    [drop] = load_hook(str(ROOT / "docs/examples/drop_data.py"), {"after_bytes": 2 << 20, "frames": 10})
    px = await proxy_factory(site.url, hooks=[drop])
    url = http_url(px.url)
    # Small windows (2^16-1): without the proxy's window credit the server would stall for good.
    started = time.monotonic()
    rc, out = await nghttp("-n", "-s", "-w", "16", "-W", "16", f"{url}/big.bin", f"{url}/index.html", timeout=20)
    assert time.monotonic() - started < 20
    assert drop.dropped == 10 and drop.dropped_bytes > 0
    # The short body is a content-length mismatch: nghttp does not count the request as processed ...
    assert "Some requests were not processed" in out
    # ... and the other request on the same connection completed.
    assert re.search(r"\s200\s+\d+\s+/index.html", out) and not re.search(r"\s200\s+\S+\s+/big.bin", out)

    rc, out = await curl("--http2-prior-knowledge", "-o", os.devnull, "-w", "size=%{size_download}\n",
                         f"{url}/big.bin", timeout=20)
    assert rc in (18, 92), out           # partial file / stream not closed cleanly
    size = int(re.search(r"size=(\d+)", out).group(1))
    assert BIG_SIZE - 2 * drop.dropped_bytes < size < BIG_SIZE
    assert drop.dropped == 20


# ------------------------------------------------------------- extension frames

def raw_frame(ftype: int, flags: int, sid: int, body: bytes, reserved: bool = False) -> bytes:
    """A frame's exact bytes, with the reserved bit set on request."""
    return (len(body).to_bytes(3, "big") + bytes([ftype, flags])
            + ((sid | (0x80000000 if reserved else 0)).to_bytes(4, "big")) + body)


class RawCaptureServer:
    """An h2-library server that keeps every byte it receives and answers GET with 200 ``ok``.

    After each response it writes ``extra`` (raw bytes) after the h2 library's own output.
    """

    def __init__(self, extra=lambda sid: b"", response_headers=()) -> None:
        self.extra = extra
        self.response_headers = list(response_headers)
        self.received = bytearray()
        self.unknown: List[int] = []
        self.got = asyncio.Event()
        self.server = None
        self.port = 0

    async def start(self) -> "RawCaptureServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"h2c://127.0.0.1:{self.port}"

    async def _serve(self, reader, writer) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.received += data
                self.got.set()
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.UnknownFrameReceived):
                        self.unknown.append(ev.frame.type)
                    if isinstance(ev, h2.events.RequestReceived):
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", "2")]
                                          + self.response_headers)
                        conn.send_data(ev.stream_id, b"ok", end_stream=True)
                        writer.write(conn.data_to_send() + self.extra(ev.stream_id))
                writer.write(conn.data_to_send())
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def h2_client_exchange(port: int, extra: bytes, wait_for: bytes, timeout: float = 10.0):
    """An h2-library client: sends a GET, then ``extra`` raw bytes after h2's own output; reads until
    ``wait_for`` has arrived; returns (every byte received, the h2 events)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                            (":path", "/ext")], end_stream=True)
    writer.write(conn.data_to_send() + extra)
    received = bytearray()
    events = []
    try:
        async with asyncio.timeout(timeout):
            while wait_for not in received:
                data = await reader.read(65536)
                if not data:
                    break
                received += data
                events += conn.receive_data(data)
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    return bytes(received), events


def frames_in(data: bytes, preface: bool = False) -> List[bytes]:
    return [bytes(f.wire) for f in FrameReader(1 << 24, expect_preface=preface).feed(data)]


@pytest.mark.parametrize("hooks", ["none", "extension"])
async def test_extension_frames_cross_the_proxy_byte_identical(proxy_factory, hooks):
    up = [raw_frame(0xEE, 0x5A, 0, os.urandom(40)), raw_frame(0xEF, 0xFF, 1, os.urandom(17), reserved=True)]
    down = [raw_frame(0xEE, 0x01, 0, os.urandom(33), reserved=True), raw_frame(0xEF, 0x80, 1, b"")]
    server = await RawCaptureServer(extra=lambda sid: b"".join(down)).start()
    hook = ExtensionHook()
    try:
        px = await proxy_factory(server.url, hooks=[hook] if hooks == "extension" else None)
        received, events = await h2_client_exchange(px.port, b"".join(up), wait_for=down[-1])
        got_down = frames_in(received)
        assert [f for f in got_down if f in down] == down
        assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
        async with asyncio.timeout(5):
            while up[-1] not in server.received:
                server.got.clear()
                await server.got.wait()
        got_up = frames_in(bytes(server.received), preface=True)
        assert [f for f in got_up if f in up] == up
        assert server.unknown == [0xEE, 0xEF]          # the h2 library saw them as frames, in order
        if hooks == "extension":
            assert hook.seen == {0xEE: 2, 0xEF: 2} and not hook.dropped
    finally:
        await server.stop()


async def test_extension_hook_drops_chosen_types_only(proxy_factory):
    up = [raw_frame(0xEE, 0, 0, b"drop me"), raw_frame(0xEF, 0, 0, b"keep me")]
    down = [raw_frame(0xEE, 0, 0, b"drop me too"), raw_frame(0xEF, 0, 0, b"keep me too")]
    server = await RawCaptureServer(extra=lambda sid: b"".join(down)).start()
    hook = ExtensionHook(drop_types=[0xEE])
    try:
        px = await proxy_factory(server.url, hooks=[hook])
        received, _ = await h2_client_exchange(px.port, b"".join(up), wait_for=down[1])
        got_down = frames_in(received)
        assert down[1] in got_down and down[0] not in got_down
        async with asyncio.timeout(5):
            while up[1] not in server.received:
                server.got.clear()
                await server.got.wait()
        got_up = frames_in(bytes(server.received), preface=True)
        assert up[1] in got_up and up[0] not in got_up
        assert hook.dropped == {0xEE: 2} and hook.seen == {0xEE: 2, 0xEF: 2}
    finally:
        await server.stop()


async def test_altsvc_header_rewrite_through_the_proxy(proxy_factory):
    server = await RawCaptureServer(response_headers=[("alt-svc", 'h3=":443"; ma=86400, h2=":443"')]).start()
    try:
        keep = await proxy_factory(server.url, hooks=[AltSvcHook()])
        rc, out = await nghttp("-nv", f"{http_url(keep.url)}/")
        assert rc == 0 and 'alt-svc: h3=":443"; ma=86400, h2=":443"' in out     # end to end by default
        hook = AltSvcHook(header="rewrite", remove=["h3*"], ma=5)
        px = await proxy_factory(server.url, hooks=[hook])
        rc, out = await nghttp("-nv", f"{http_url(px.url)}/")
        assert rc == 0 and 'alt-svc: h2=":443"; ma=5' in out and hook.headers_changed == 1
    finally:
        await server.stop()


# ------------------------------------------------------------- hooks that fail

class Raising(Hook):
    name = "raising"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def on_headers(self, ctx, frame, headers):
        self.calls += 1
        raise RuntimeError("on_headers broke")

    def on_data(self, ctx, frame):
        self.calls += 1
        raise KeyError("on_data broke")

    async def on_settings(self, ctx, frame):
        self.calls += 1
        await asyncio.sleep(0)
        raise ValueError("async on_settings broke")

    def on_frame(self, ctx, frame):
        self.calls += 1
        return 1 / 0


async def test_a_hook_that_raises_leaves_the_connection_working(origin, proxy_factory, caplog):
    bad = Raising()
    stamp = load_hook(str(ROOT / "docs/examples/stamp_header.py"), {})
    px = await proxy_factory(origin.url, hooks=[bad, *stamp])
    url = http_url(px.url)
    with caplog.at_level(logging.ERROR, logger="h2proxy"):
        rc, out = await nghttp("-nv", f"{url}/size/300000", f"{url}/", f"{url}/size/5", timeout=30)
    log = NghttpLog(out)
    assert rc == 0 and "RST_STREAM" not in out and "recv GOAWAY" not in out
    sizes = {path: sum(n for _, n in log.data(sid)) for path, sid in log.paths.items()}
    assert sizes == {"/size/300000": 300000, "/": len(INDEX), "/size/5": 5}
    assert bad.calls > 10
    # The hook after the failing one still ran on every response.
    assert out.count("x-h2proxy-conn: ") == 3 and "server: h2proxy-demo-origin" not in out
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "hook raising raised" in messages
    # A second connection works too.
    rc, out = await nghttp("-nv", f"{url}/size/1000")
    assert rc == 0 and ":status: 200" in out


# ------------------------------------------------------------- the docs' examples

async def test_docs_examples_through_the_proxy(origin, proxy_factory):
    slow = load_hook(str(ROOT / "docs/examples/slow_data.py"), {"delay_ms": 1})
    ping_push = load_hook(str(ROOT / "docs/examples/ping_and_push.py"), {})
    px = await proxy_factory(origin.url, hooks=[*slow, *ping_push])
    url = http_url(px.url)
    rc, out = await nghttp("-nv", f"{url}/", f"{url}/ping-me", f"{url}/size/200000", timeout=30)
    log = NghttpLog(out)
    assert rc == 0
    # ping_and_push: a PING with the hook's payload, and /hello.txt pushed on /.
    assert "recv PING frame" in out and b"h2proxy!".hex() in out
    assert "recv PUSH_PROMISE" in out and any((":path", "/hello.txt") in hs for hs in log.headers.values())
    assert [type(r).__name__ for r in ping_push[1].results] == ["PushStarted"]
    # slow_data: every DATA frame was held a little, and the bodies still arrived whole.
    assert slow[0].delayed > 10
    assert sum(n for _, n in log.data(log.paths["/size/200000"])) == 200000
