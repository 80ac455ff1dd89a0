"""The embedded demo origin (proxy/demo_origin.py) against real HTTP/2 clients: nghttp, curl, h2load, h2.

Every origin runs in the test's event loop on a free loopback port; the
clients run as subprocesses through asyncio, so the origin keeps serving while
the test waits for them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import sys

import h2.config
import h2.connection
import h2.events
import pytest

from proxy.certs import make_test_pki
from proxy.demo_origin import BIG, CSS, SERVER, DemoOrigin, body_bytes
from proxy.tlsutil import server_context
from tests.conftest import need, run


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("origin-pki"))


@pytest.fixture
async def tls_origin(test_pki):
    o = DemoOrigin(ssl_context=server_context(test_pki["cert"], test_pki["key"]))
    await o.start()
    yield o
    await o.stop()


def http(origin) -> str:
    """The URL curl and nghttp want: http:// means prior knowledge to nghttp and h2load."""
    return origin.url.replace("h2c://", "http://")


def h2load_counts(out: str):
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    assert m, out
    return {"total": int(m[1]), "done": int(m[3]), "succeeded": int(m[4]), "failed": int(m[5])}


# -- nghttp and curl --------------------------------------------------------------------------------

async def test_index_with_nghttp(origin):
    assert origin.url == f"h2c://127.0.0.1:{origin.port}"
    rc, out = await run(need("nghttp"), "-v", f"{http(origin)}/")
    assert rc == 0, out
    assert "recv (stream_id=13) :status: 200" in out
    assert f"server: {SERVER}" in out and "content-type: text/html" in out
    assert "<h1>h2proxy demo origin</h1>" in out and "/size/1024" in out


async def test_big_is_exactly_10_mib_with_curl(origin, tmp_path):
    target = tmp_path / "big"
    rc, out = await run(need("curl"), "-sS", "--http2-prior-knowledge", "-D", "-", "-o", str(target),
                        f"{http(origin)}/big")
    assert rc == 0, out
    assert out.startswith("HTTP/2 200") and f"content-length: {BIG}" in out and f"server: {SERVER}" in out
    assert target.stat().st_size == BIG == 10 * 1024 * 1024
    assert target.read_bytes() == body_bytes(BIG)


async def test_altsvc_frame_seen_by_nghttp(origin):
    rc, out = await run(need("nghttp"), "-nv", f"{http(origin)}/altsvc")
    assert rc == 0, out
    assert re.search(r"recv ALTSVC frame <length=\d+, flags=0x00, stream_id=13>", out), out
    assert f'altsvc_field_value=[h2="127.0.0.1:{origin.port}"; ma=60]' in out
    assert ":status: 200" in out


async def test_push_promise_and_pushed_body(origin):
    rc, out = await run(need("nghttp"), "-v", f"{http(origin)}/push")
    assert rc == 0, out
    assert re.search(r"recv PUSH_PROMISE frame <length=\d+, flags=0x04, stream_id=13>", out), out
    assert "promised_stream_id=2)" in out and "recv (stream_id=13) :path: /pushed.css" in out
    assert "recv (stream_id=2) content-type: text/css" in out
    assert CSS.decode().strip() in out                     # the pushed body
    assert "recv (stream_id=13) :status: 200" in out


async def test_no_push_when_the_client_disables_it(origin):
    rc, out = await run(need("nghttp"), "-nv", "--no-push", f"{http(origin)}/push")
    assert rc == 0, out
    assert "PUSH_PROMISE" not in out and "recv (stream_id=13) :status: 200" in out


async def test_errors_head_echo_and_headers_with_curl(origin):
    curl = need("curl")
    base = http(origin)

    async def get(*args):
        rc, out = await run(curl, "-sS", "--http2-prior-knowledge", "-i", *args)
        assert rc == 0, out
        return out
    out = await get(f"{base}/nope")
    assert out.startswith("HTTP/2 404") and f"server: {SERVER}" in out and "not found" in out
    out = await get("-X", "DELETE", f"{base}/")
    assert out.startswith("HTTP/2 405") and "allow: GET, HEAD" in out
    out = await get(f"{base}/size/abc")
    assert out.startswith("HTTP/2 400")
    out = await get(f"{base}/size/{(1 << 30) + 1}")
    assert out.startswith("HTTP/2 400")
    out = await get("-I", f"{base}/size/1048576")          # HEAD: the length, no body
    assert out.startswith("HTTP/2 200") and "content-length: 1048576" in out
    out = await get(f"{base}/size/0")
    assert out.startswith("HTTP/2 200") and "content-length: 0" in out
    rc, out = await run(curl, "-sS", "--http2-prior-knowledge", "--data-binary", "hello, origin",
                        "-H", "x-test: 1", f"{base}/echo?q=1")
    echo = json.loads(out)
    assert echo["method"] == "POST" and echo["path"] == "/echo" and echo["body"] == "hello, origin"
    assert ["x-test", "1"] in echo["headers"] and [":authority", f"127.0.0.1:{origin.port}"] in echo["headers"]
    rc, out = await run(curl, "-sS", "--http2-prior-knowledge", "-H", "x-answer: 42", f"{base}/headers")
    assert ["x-answer", "42"] in json.loads(out)["headers"]


async def test_tls_with_curl_and_nghttp(tls_origin, test_pki, tmp_path):
    assert tls_origin.url == f"https://127.0.0.1:{tls_origin.port}"
    target = tmp_path / "big"
    rc, out = await run(need("curl"), "-sS", "--http2", "--cacert", test_pki["ca"], "-o", str(target),
                        "-w", "%{http_version} %{http_code}", f"{tls_origin.url}/big")
    assert rc == 0 and out == "2 200", out
    assert target.read_bytes() == body_bytes(BIG)
    rc, out = await run(need("nghttp"), "-v", f"{tls_origin.url}/push")
    assert rc == 0, out
    assert "The negotiated protocol: h2" in out and "recv PUSH_PROMISE frame" in out and CSS.decode().strip() in out


async def test_tls_client_without_h2_is_closed(tls_origin, test_pki):
    ctx = ssl.create_default_context(cafile=test_pki["ca"])
    ctx.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_origin.port, ssl=ctx,
                                                   server_hostname="127.0.0.1")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    writer.write(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, ssl.SSLError):
        data = b""
    assert data == b""
    writer.close()


# -- load ---------------------------------------------------------------------------------------------

async def test_h2load_small_responses(origin):
    rc, out = await run(need("h2load"), "-n", "2000", "-c", "4", "-m", "10", f"{http(origin)}/size/1024")
    counts = h2load_counts(out)
    assert counts == {"total": 2000, "done": 2000, "succeeded": 2000, "failed": 0}, out


async def test_h2load_concurrent_big_streams_with_small_windows(origin):
    # 64 KiB stream and connection windows: every body needs many WINDOW_UPDATEs, 20 streams share each.
    rc, out = await run(need("h2load"), "-n", "40", "-c", "2", "-m", "20", "-w", "16", "-W", "16",
                        f"{http(origin)}/size/1048576")
    assert h2load_counts(out)["succeeded"] == 40 and h2load_counts(out)["failed"] == 0, out
    assert re.search(r"traffic: .* 40\.00MB \(41943040\) data", out), out


async def test_h2load_many_big_bodies(origin):
    rc, out = await run(need("h2load"), "-n", "20", "-c", "2", "-m", "10", f"{http(origin)}/big")
    counts = h2load_counts(out)
    assert counts["succeeded"] == 20 and counts["failed"] == 0, out


# -- misbehaving clients, stop(), standalone ----------------------------------------------------------

class RawClient:
    """A bare h2 client over an asyncio connection, to reset streams and drop connections at will."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()

    @classmethod
    async def open(cls, port: int) -> "RawClient":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def get(self, port: int, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                     (":path", path)], end_stream=True)
        self.flush()
        return sid

    async def events(self):
        data = await asyncio.wait_for(self.reader.read(65536), 10)
        if not data:
            return None
        events = self.conn.receive_data(data)
        self.flush()
        return events


async def test_resets_goaway_and_lost_connections_are_quiet(origin, caplog):
    caplog.set_level(logging.INFO)
    # RST_STREAM in the middle of /big, and a GOAWAY after.
    c = await RawClient.open(origin.port)
    sid = c.get(origin.port, "/big")
    got = 0
    while got < 100_000:
        for e in await c.events():
            if isinstance(e, h2.events.DataReceived):
                got += len(e.data)
                c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    c.conn.reset_stream(sid)
    c.conn.close_connection()
    c.flush()
    while await asyncio.wait_for(c.reader.read(65536), 10):     # the origin closes its side
        pass
    c.writer.close()
    # Connections dropped (and aborted) while many bodies are in flight.
    for abort in (False, True):
        c = await RawClient.open(origin.port)
        for _ in range(10):
            c.get(origin.port, "/big")
        await c.events()
        if abort:
            c.writer.transport.abort()
        else:
            c.writer.close()
    # A client that is not speaking HTTP/2 at all.
    r, w = await asyncio.open_connection("127.0.0.1", origin.port)
    w.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    reply = await asyncio.wait_for(r.read(), 10)
    goaway = reply.index(b"\x07\x00\x00\x00\x00\x00")                 # SETTINGS first, then GOAWAY, then EOF
    assert reply[goaway - 3:goaway] == b"\x00\x00\x08" and reply[goaway + 10:goaway + 14] == b"\x00\x00\x00\x01"
    w.close()
    # The origin is still fine, and nobody logged an error or a traceback.
    rc, out = await run(need("curl"), "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                        f"{http(origin)}/")
    assert out == "200"
    for _ in range(100):
        if not origin.connections:
            break
        await asyncio.sleep(0.02)
    assert not origin.connections
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def test_stop_sends_goaway_and_closes(caplog):
    o = DemoOrigin()
    await o.start()
    c = await RawClient.open(o.port)
    c.get(o.port, "/big")                # never acknowledged: the body stalls on flow control
    while not any(isinstance(e, h2.events.ResponseReceived) for e in await c.events()):
        pass
    await asyncio.wait_for(o.stop(), 5)
    seen = []
    while (events := await c.events()) is not None:
        seen += events
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 0 for e in seen)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", o.port)
    c.writer.close()


@pytest.mark.parametrize("tls", [False, True])
async def test_standalone(tls):
    args = [sys.executable, "-m", "proxy.demo_origin", "--port", "0"] + (["--tls"] if tls else [])
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        m = re.fullmatch(r"demo origin listening on (h2c|https)://127\.0\.0\.1:(\d+)\n", line)
        assert m and m[1] == ("https" if tls else "h2c"), line
        url = f"{'https' if tls else 'http'}://127.0.0.1:{m[2]}/size/1000"
        flags = ["--http2", "-k"] if tls else ["--http2-prior-knowledge"]
        rc, out = await run(need("curl"), "-sS", *flags, "-o", "/dev/null", "-w", "%{http_version} %{size_download}",
                            url)
        assert rc == 0 and out == "2 1000", out
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
