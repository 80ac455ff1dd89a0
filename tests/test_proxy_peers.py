"""The proxy core against real peers: nghttp, curl, h2load, nghttpd and h2-library endpoints."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys

import h2.config
import h2.connection
import h2.events
import pytest

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader
from tests.conftest import Nghttpd, await_port, free_port, http_url, need, run
from tests.peers import h2load as checked_h2load
from tests.peers import nghttp as checked_nghttp  # (runs the shared SETTINGS-first / blame check)

pytestmark = pytest.mark.peers


async def test_nghttp_through_h2c(nghttpd, proxy_factory):
    origin = nghttpd()
    px = await proxy_factory(origin.url)
    rc, out = await checked_nghttp("-nv", f"{http_url(px)}/index.html")
    assert rc == 0, out
    assert ":status: 200" in out
    assert "recv DATA frame <length=45" in out


async def test_curl_prior_knowledge_body_intact(nghttpd, proxy_factory, docroot, tmp_path):
    origin = nghttpd()
    px = await proxy_factory(origin.url)
    target = tmp_path / "out.bin"
    rc, out = await run(need("curl"), "-sS", "--http2-prior-knowledge", "-o", str(target), "-w",
                        "%{http_version} %{http_code}", f"{http_url(px)}/1m.bin")
    assert rc == 0, out
    assert out.strip() == "2 200"
    assert target.read_bytes() == (docroot / "1m.bin").read_bytes()


async def test_tls_both_legs_nghttp_and_curl(nghttpd, proxy_factory, pki, tmp_path, docroot):
    origin = nghttpd(tls=pki)
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", ca_dir=str(tmp_path / "ca"),
                             upstream_ca=pki["ca"])
    url = px.url.replace("https://", "https://") + "/index.html"
    rc, out = await checked_nghttp("-nv", url)
    assert rc == 0, out
    assert ":status: 200" in out and "h2" in out
    ca_pem = str(tmp_path / "ca" / "h2proxy-ca.pem")
    rc, out = await run(need("curl"), "-sS", "--http2", "--cacert", ca_pem, "-o", "/dev/null", "-w",
                        "%{http_version} %{http_code}", url)
    assert rc == 0, out
    assert out.strip() == "2 200"


@pytest.mark.parametrize("order, chosen", [
    ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
    ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")])
async def test_tls_listener_takes_the_clients_cipher_order(nghttpd, proxy_factory, pki, order, chosen):
    """The client's TLS 1.3 suite order decides (OpenSSL's own order, which Python would apply, puts
    AES-256-GCM first whatever the client prefers)."""
    origin = nghttpd()
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", cert=pki["cert"], key=pki["key"])
    result = await checked_h2load(px.url + "/small.txt", 2, 1, 1, f"--tls13-ciphers={order}")
    assert result["succeeded"] == 2, result.output
    assert f"Cipher: {chosen}" in result.output, result.output


async def test_tls_listener_mixed_with_h2c_upstream(nghttpd, proxy_factory, pki):
    origin = nghttpd()
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", cert=pki["cert"], key=pki["key"])
    rc, out = await run(need("curl"), "-sS", "--http2", "--cacert", pki["ca"], "-o", "/dev/null", "-w",
                        "%{http_version} %{http_code}", f"{px.url}/small.txt")
    assert rc == 0, out
    assert out.strip() == "2 200"


async def test_tls_client_without_h2_is_refused(nghttpd, proxy_factory, pki):
    origin = nghttpd()
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", cert=pki["cert"], key=pki["key"])
    rc, out = await run(need("curl"), "-sS", "--http1.1", "--cacert", pki["ca"], f"{px.url}/small.txt")
    assert rc != 0


async def test_h2load_10000_requests(nghttpd, proxy_factory):
    origin = nghttpd()
    px = await proxy_factory(origin.url)
    rc, out = await run(need("h2load"), "-n", "10000", "-c", "20", "-m", "10", f"{http_url(px)}/small.txt",
                        timeout=120)
    assert rc == 0, out
    assert "10000 succeeded, 0 failed" in out, out


async def test_100_mib_download_intact(proxy_factory, tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    blob = os.urandom(1 << 20) * 100
    (docroot / "big.bin").write_bytes(blob)
    origin = Nghttpd(docroot).start()
    try:
        px = await proxy_factory(origin.url)
        target = tmp_path / "got.bin"
        rc, out = await run(need("curl"), "-sS", "--http2-prior-knowledge", "-o", str(target),
                            f"{http_url(px)}/big.bin", timeout=120)
        assert rc == 0, out
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(blob).digest()
    finally:
        origin.stop()


# ---------------------------------------------------------------- byte-exact relaying

class RecordingH2Server:
    """An h2-library server that keeps every byte it received and sent."""

    def __init__(self, extra_response_frames: bytes = b"") -> None:
        self.received = bytearray()
        self.sent = bytearray()
        self.extra = extra_response_frames
        self.server = None
        self.port = None
        self.done = asyncio.Event()

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader, writer):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        self._send(writer, conn.data_to_send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.received += data
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        conn.send_headers(event.stream_id, [(":status", "200"), ("server", "recorder")])
                        self._send(writer, conn.data_to_send())
                        if self.extra:
                            self._send(writer, self.extra)
                        conn.send_data(event.stream_id, b"padded body", pad_length=7, end_stream=True)
                self._send(writer, conn.data_to_send())
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.done.set()
            writer.close()

    def _send(self, writer, data):
        if data:
            self.sent += data
            writer.write(data)

    async def stop(self):
        self.server.close()


async def test_frames_pass_byte_for_byte(proxy_factory):
    """What a real client sent is what the server received, and the other way round, including padding,
    undefined flag bits, the reserved stream-id bit and unknown extension frames."""
    ext_down = fc.ExtensionFrame(type=0xEE, stream_id=1, flag_byte=0xA5, body=b"to the client").serialize()
    server = await RecordingH2Server(extra_response_frames=ext_down).start()
    px = await proxy_factory(f"h2c://127.0.0.1:{server.port}")
    reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "example"),
                          (":path", "/x")])
    conn.send_data(1, b"request body", pad_length=3)
    sent = bytearray(conn.data_to_send())
    # Oddities h2 would not produce: an unknown frame, a PING with undefined flags, a WINDOW_UPDATE with
    # the reserved bit set, then the end of the request.
    sent += fc.ExtensionFrame(type=0xCC, stream_id=0, flag_byte=0x0F, body=b"extension").serialize()
    sent += bytes.fromhex("000008" "06" "f0" "00000000") + b"12345678"
    sent += bytes.fromhex("000004" "08" "00" "80000000") + (1000).to_bytes(4, "big")
    conn.send_data(1, b"", end_stream=True)
    sent += conn.data_to_send()
    writer.write(bytes(sent))
    received = bytearray()
    ended = False
    while not ended:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "proxy closed the connection early"
        received += data
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamEnded):
                ended = True
        out = conn.data_to_send()
        if out:
            sent += out
            writer.write(out)
    writer.close()
    await asyncio.wait_for(server.done.wait(), 10)
    await server.stop()
    assert bytes(server.received).startswith(PREFACE)
    assert bytes(server.received) == bytes(sent)
    assert bytes(received) == bytes(server.sent)
    assert ext_down in received


# ---------------------------------------------------------------- violations

def _client_frames(*frames) -> bytes:
    return PREFACE + fc.SettingsFrame(0).serialize() + b"".join(f.serialize() if hasattr(f, "serialize") else f
                                                                 for f in frames)


async def _exchange(port: int, payload: bytes, until_closed: bool = True, timeout: float = 5.0) -> list:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    frames = []
    r = FrameReader()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                break
            frames.extend(f.parse() for f in r.feed(data))
            if not until_closed and any(isinstance(f, fc.GoAwayFrame) for f in frames):
                break
    except (asyncio.TimeoutError, ConnectionResetError):
        pass
    writer.close()
    return frames


async def test_violation_forwarded_by_default_and_logged(proxy_factory, caplog):
    server = await RecordingH2Server().start()
    px = await proxy_factory(f"h2c://127.0.0.1:{server.port}")
    bad = fc.DataFrame(1, data=b"no such stream")
    await _exchange(px.port, _client_frames(bad), timeout=2)
    await asyncio.wait_for(server.done.wait(), 5)
    await server.stop()
    assert bad.serialize() in bytes(server.received)
    assert any("violation by the client" in r.getMessage() and "idle stream 1" in r.getMessage()
               and "PROTOCOL_ERROR" in r.getMessage() for r in caplog.records)


async def test_strict_answers_violation_and_does_not_forward(proxy_factory):
    server = await RecordingH2Server().start()
    px = await proxy_factory(f"h2c://127.0.0.1:{server.port}", strict=True)
    bad = fc.DataFrame(0, data=b"stream zero") if False else bytes.fromhex("000003" "00" "00" "00000000") + b"abc"
    frames = await _exchange(px.port, _client_frames(bad))
    await asyncio.wait_for(server.done.wait(), 5)
    await server.stop()
    goaways = [f for f in frames if isinstance(f, fc.GoAwayFrame)]
    assert goaways and goaways[0].error_code == 1  # PROTOCOL_ERROR
    assert b"DATA on stream 0" in goaways[0].additional_data
    assert bad not in bytes(server.received)


async def test_strict_stream_error_resets_stream(proxy_factory):
    server = await RecordingH2Server().start()
    px = await proxy_factory(f"h2c://127.0.0.1:{server.port}", strict=True)
    # PRIORITY with a 4-byte body: a stream error (FRAME_SIZE_ERROR) on stream 3.
    bad = bytes.fromhex("000004" "02" "00" "00000003") + b"\x00\x00\x00\x01"
    frames = await _exchange(px.port, _client_frames(bad), until_closed=False, timeout=1)
    await server.stop()
    resets = [f for f in frames if isinstance(f, fc.RstStreamFrame)]
    assert resets and resets[0].stream_id == 3 and resets[0].error_code == 6
    assert bad not in bytes(server.received)


# ---------------------------------------------------------------- failures

async def test_upstream_unreachable_gives_goaway_with_reason(proxy_factory):
    px = await proxy_factory(f"h2c://127.0.0.1:{free_port()}")
    frames = await _exchange(px.port, _client_frames())
    assert isinstance(frames[0], fc.SettingsFrame)
    goaway = [f for f in frames if isinstance(f, fc.GoAwayFrame)][0]
    assert b"unreachable" in goaway.additional_data
    rc, out = await checked_nghttp("-nv", f"{http_url(px)}/")
    assert "recv GOAWAY" in out and "unreachable" in out


async def test_upstream_tls_failure_gives_goaway(proxy_factory, nghttpd, pki):
    origin = nghttpd(tls=pki)
    px = await proxy_factory(origin.url)   # no upstream_ca: the test CA is not trusted
    frames = await _exchange(px.port, _client_frames())
    goaway = [f for f in frames if isinstance(f, fc.GoAwayFrame)][0]
    assert b"certificate" in goaway.additional_data


async def test_upstream_closing_ends_client_with_goaway(proxy_factory):
    async def slam(reader, writer):
        await reader.read(100)
        writer.close()
    srv = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    px = await proxy_factory(f"h2c://127.0.0.1:{port}")
    frames = await _exchange(px.port, _client_frames())
    srv.close()
    goaways = [f for f in frames if isinstance(f, fc.GoAwayFrame)]
    assert goaways and b"upstream closed" in goaways[-1].additional_data


async def test_client_vanishing_closes_upstream(proxy_factory):
    closed = asyncio.Event()

    async def wait_eof(reader, writer):
        while await reader.read(65536):
            pass
        closed.set()
        writer.close()
    srv = await asyncio.start_server(wait_eof, "127.0.0.1", 0)
    px = await proxy_factory(f"h2c://127.0.0.1:{srv.sockets[0].getsockname()[1]}")
    reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
    writer.write(_client_frames())
    await writer.drain()
    writer.transport.abort()
    await asyncio.wait_for(closed.wait(), 5)
    srv.close()


async def test_http1_client_gets_plain_text_error(nghttpd, proxy_factory):
    origin = nghttpd()
    px = await proxy_factory(origin.url)
    rc, out = await run(need("curl"), "-sS", "--http1.1", "-i", f"{http_url(px)}/")
    assert "505" in out and "HTTP/2 only" in out


async def test_bad_preface_gets_error_and_close(nghttpd, proxy_factory):
    origin = nghttpd()
    px = await proxy_factory(origin.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
    writer.write(b"PRI * HTTP/1.0\r\n\r\nXX\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert b"HTTP/2 only" in data
    writer.close()


async def test_sigterm_sends_goaway_and_exits_zero(nghttpd, tmp_path):
    origin = nghttpd()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{port}", "--upstream", origin.url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await await_port(port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_client_frames())
        await writer.drain()
        r = FrameReader()
        frames = []
        # The origin's SETTINGS relayed to us: the proxy has the connection up on both legs.
        while not any(isinstance(f, fc.SettingsFrame) for f in frames):
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data
            frames.extend(f.parse() for f in r.feed(data))
        proc.send_signal(signal.SIGTERM)
        while not any(isinstance(f, fc.GoAwayFrame) for f in frames):
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data
            frames.extend(f.parse() for f in r.feed(data))
        goaway = [f for f in frames if isinstance(f, fc.GoAwayFrame)][0]
        assert goaway.error_code == 0
        writer.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
