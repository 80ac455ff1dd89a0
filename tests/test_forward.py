"""Forward-proxy mode: CONNECT, TLS interception with per-host certificates, tunnels and refusals.

Every origin is on loopback: nghttpd (h2 only) or a tiny asyncio TLS origin in
this file that speaks h2 and/or HTTP/1.1, both with a certificate from a
throwaway test CA (``make_test_pki``) the proxy trusts through ``upstream_ca``.
The proxy's own CA lives in a temporary directory.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import List, Optional

import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from proxy.forward import MAX_HEAD, ForwardProxyServer, listen_warning, parse_authority
from proxy.recording.sink import FrameSink
from proxy.server import ConfigError, ProxySettings, parse_endpoint
from tests.conftest import free_port, need, run

DATA, HEADERS = 0x0, 0x1


class Recorder(FrameSink):
    """Collects what the relay reports: connection infos and (conn, leg, direction, type) per frame."""

    def __init__(self) -> None:
        self.opened = {}
        self.frames: List[tuple] = []
        self.closed = []

    def connection_opened(self, conn_id, t, info):
        self.opened[conn_id] = dict(info)

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, *, seq=None):
        self.frames.append((conn_id, leg, direction, bytes(wire[3:4])[0]))
        return super().frame(conn_id, leg, direction, t, wire, headers, origin, actions, seq=seq)

    def connection_closed(self, conn_id, t, reason):
        self.closed.append(conn_id)

    def types(self, leg: str, direction: str) -> set:
        return {f[3] for f in self.frames if f[1] == leg and f[2] == direction}


class TinyOrigin:
    """A TLS origin on loopback speaking h2 (on the h2 library) and/or HTTP/1.1, as its ALPN list says."""

    def __init__(self, pki: dict, alpn: List[str], host: str = "127.0.0.1") -> None:
        self.pki = pki
        self.alpn = alpn
        self.host = host
        self.seen: List[Optional[str]] = []   # the ALPN protocol of every connection that completed TLS
        self.server: Optional[asyncio.AbstractServer] = None
        self.port = 0

    async def start(self) -> "TinyOrigin":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki["cert"], self.pki["key"])
        ctx.set_alpn_protocols(self.alpn)
        self.server = await asyncio.start_server(self._handle, self.host, 0, ssl=ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        proto = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        self.seen.append(proto)
        try:
            if proto == "h2":
                await self._h2(reader, writer)
            else:
                await self._h1(reader, writer, proto)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    async def _h1(self, reader, writer, proto) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = f"hello over http/1.1 (origin ALPN {proto}) for {head.split()[1].decode()}\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async def _h2(self, reader, writer) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers)[b":path"].decode()
                    body = f"hello over h2 for {path}\n".encode()
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                    conn.send_data(ev.stream_id, body, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()


@pytest.fixture(autouse=True)
def info_logs(caplog):
    """The proxy reports tunnels and non-HTTP/2 connections at INFO level."""
    caplog.set_level(logging.INFO, logger="h2proxy")


@pytest.fixture
async def origins(pki):
    started = []

    async def start(alpn, host="127.0.0.1"):
        o = await TinyOrigin(pki, alpn, host).start()
        started.append(o)
        return o
    yield start
    for o in started:
        await o.stop()


@pytest.fixture
def ca_dir(tmp_path) -> Path:
    return tmp_path / "proxy-ca"


@pytest.fixture
async def forward(pki, ca_dir):
    """Start forward proxies: ``await forward(sink=..., hooks=..., ignore_hosts=[...], **settings)``."""
    from proxy.hooks.chain import HookChain
    started = []

    async def start(sink=None, hooks=None, ignore_hosts=None, allow_hosts=None, **kw):
        kw.setdefault("upstream_ca", pki["ca"])
        settings = ProxySettings(listen=parse_endpoint("http://127.0.0.1:0"), ca_dir=str(ca_dir), **kw)
        if isinstance(hooks, list):
            hooks = HookChain(hooks)
        srv = ForwardProxyServer(settings, hooks=hooks, sink=sink, ignore_hosts=ignore_hosts,
                                 allow_hosts=allow_hosts)
        await srv.start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        await srv.stop(grace=0.5)


def proxy_ca(px) -> str:
    return str(px.ca.ca_cert_path)


async def curl(px, url: str, *args: str) -> tuple:
    """curl through the proxy; returns (exit code, output ending with 'HTTP_VERSION HTTP_CODE')."""
    return await run(need("curl"), "-sS", "-x", px.url, "-w", "\n%{http_version} %{http_code}", *args, url,
                     timeout=30)


async def raw_request(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send bytes to the proxy and read its whole answer (it closes after an error)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    if half_close:
        w.write_eof()
    try:
        return await asyncio.wait_for(r.read(), 10)
    finally:
        w.close()


def tls_through(proxy_port: int, target: str, server_hostname: str, cafile: str, alpn=("h2", "http/1.1")):
    """CONNECT by hand on a blocking socket, then a verifying TLS client; returns (leaf, ALPN)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    try:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):   # byte by byte: nothing of the TLS stream is consumed
            b = sock.recv(1)
            assert b, f"proxy closed the connection after {head!r}"
            head += b
        assert head.startswith(b"HTTP/1.1 200 "), head
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(list(alpn))
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)), tls.selected_alpn_protocol()
    finally:
        sock.close()


def issuer_cn(cert: x509.Certificate) -> str:
    return cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def sans(cert: x509.Certificate) -> list:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in ext.get_values_for_type(x509.IPAddress)]


# -- interception ----------------------------------------------------------------------------------------------


async def test_curl_gets_h2_from_nghttpd_through_the_relay(forward, nghttpd, pki, docroot, tmp_path):
    origin = nghttpd(tls=pki)
    rec = Recorder()
    px = await forward(sink=rec)
    out_file = tmp_path / "index.html"
    rc, out = await curl(px, f"https://localhost:{origin.port}/index.html", "--cacert", proxy_ca(px),
                         "-o", str(out_file))
    assert rc == 0, out
    assert out.strip().endswith("2 200"), out
    assert out_file.read_bytes() == (docroot / "index.html").read_bytes()
    # The frames went through the relay, on both legs and both ways.
    assert {HEADERS, DATA} <= rec.types("upstream", "recv")
    assert {HEADERS, DATA} <= rec.types("client", "send")
    assert HEADERS in rec.types("client", "recv") and HEADERS in rec.types("upstream", "send")
    (info,) = rec.opened.values()
    assert info["mode"] == "forward" and info["target"] == f"localhost:{origin.port}"
    assert info["client_tls"]["alpn"] == "h2" and info["client_tls"]["sni"] == "localhost"
    assert info["upstream_tls"]["alpn"] == "h2"
    assert px.total_connections == 1


async def test_client_sni_names_the_certificate(forward, nghttpd, pki):
    """curl --connect-to: the CONNECT names 127.0.0.1, the SNI (and the leaf) is origin.test."""
    origin = nghttpd(tls=pki)
    rec = Recorder()
    px = await forward(sink=rec)
    rc, out = await curl(px, "https://origin.test/index.html", "--cacert", proxy_ca(px),
                         "--connect-to", f"origin.test:443:127.0.0.1:{origin.port}", "-o", os.devnull)
    assert rc == 0 and out.strip().endswith("2 200"), out
    (info,) = rec.opened.values()
    assert info["target"] == f"127.0.0.1:{origin.port}" and info["client_tls"]["sni"] == "origin.test"


async def test_hooks_apply_to_intercepted_connections(forward, nghttpd, pki):
    class Stamp:
        def on_headers(self, ctx, frame, headers):
            if ctx.direction == "server->client":
                return list(headers) + [("x-h2proxy", "forward")]
    origin = nghttpd(tls=pki)
    px = await forward(hooks=[Stamp()])
    rc, out = await curl(px, f"https://localhost:{origin.port}/index.html", "--cacert", proxy_ca(px),
                         "-o", os.devnull, "-D", "-")
    assert rc == 0 and "x-h2proxy: forward" in out and out.strip().endswith("2 200"), out


async def test_python_client_verifies_leaves_for_dns_names_and_ips(forward, nghttpd, pki):
    origin = nghttpd(tls=pki)
    px = await forward()
    ca = proxy_ca(px)
    # A DNS name (also the SNI).
    leaf, alpn = await asyncio.to_thread(tls_through, px.port, f"localhost:{origin.port}", "localhost", ca)
    assert issuer_cn(leaf) == "h2proxy CA" and sans(leaf) == ["localhost"] and alpn == "h2"
    # An IP address: no SNI is sent, the leaf carries an IP SAN.
    leaf, alpn = await asyncio.to_thread(tls_through, px.port, f"127.0.0.1:{origin.port}", "127.0.0.1", ca)
    assert issuer_cn(leaf) == "h2proxy CA" and sans(leaf) == ["127.0.0.1"]
    assert ipaddress.ip_address("127.0.0.1") in leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    # An SNI different from the CONNECT host wins.
    leaf, _ = await asyncio.to_thread(tls_through, px.port, f"127.0.0.1:{origin.port}", "www.origin.test", ca)
    assert sans(leaf) == ["www.origin.test"]
    # The leaf does not verify against anything but the proxy's CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(tls_through, px.port, f"localhost:{origin.port}", "localhost", pki["ca"])


async def test_ca_and_leaf_key_files_are_private(forward, ca_dir):
    px = await forward()
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(px.ca.ca_key_path).st_mode) == 0o600
    px.ca.leaf("example.test")
    assert stat.S_IMODE(os.stat(px.ca._leaf_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(px.ca._leaf_key_path.parent).st_mode) == 0o700


async def test_untrusting_client_fails_and_the_proxy_says_why(forward, nghttpd, pki, caplog):
    origin = nghttpd(tls=pki)
    px = await forward()
    rc, out = await curl(px, f"https://localhost:{origin.port}/", "--cacert", pki["ca"])
    assert rc == 60, out   # curl: peer certificate cannot be authenticated with the given CA
    assert any("TLS handshake with the client" in r.getMessage() and "h2proxy ca" in r.getMessage()
               for r in caplog.records)


# -- peers that are not HTTP/2 ---------------------------------------------------------------------------------


async def test_http11_client_is_relayed_as_bytes(forward, origins, caplog):
    """The origin picks h2, the client offers only http/1.1: the proxy asks the origin again for http/1.1."""
    origin = await origins(["h2", "http/1.1"])
    rec = Recorder()
    px = await forward(sink=rec)
    rc, out = await curl(px, f"https://localhost:{origin.port}/one", "--http1.1", "--cacert", proxy_ca(px))
    assert rc == 0, out
    assert "hello over http/1.1 (origin ALPN http/1.1) for /one" in out and out.strip().endswith("1.1 200"), out
    assert origin.seen == ["h2", "http/1.1"]
    assert rec.frames == [] and rec.opened == {}
    assert any("not HTTP/2 (client ALPN http/1.1, origin ALPN http/1.1)" in r.getMessage() for r in caplog.records)
    # The same origin with an h2 client goes through the relay.
    rc, out = await curl(px, f"https://localhost:{origin.port}/two", "--cacert", proxy_ca(px))
    assert "hello over h2 for /two" in out and out.strip().endswith("2 200"), out
    assert HEADERS in rec.types("upstream", "recv")


async def test_h2_only_python_origin_and_http11_client_get_502(forward, origins):
    """An origin whose ALPN list is only h2 (Python's ssl): the HTTP/1.1 client gets the 502 too."""
    origin = await origins(["h2"])
    px = await forward()
    rc, out = await curl(px, f"https://localhost:{origin.port}/x", "--http1.1", "-m", "8", "--cacert", proxy_ca(px))
    assert rc == 0 and out.strip().endswith("1.1 502") and "speaks only HTTP/2" in out, out


async def test_no_sni_is_sent_for_an_ip_target_and_the_log_says_so(forward, pki):
    """CONNECT 127.0.0.1:PORT: RFC 6066 forbids IP literals in SNI. The origin (a real TLS server
    reading the ClientHello) gets none, and the frame log's upstream_tls says none; a DNS name is sent."""
    names: List[Optional[str]] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    ctx.set_alpn_protocols(["h2"])
    ctx.sni_callback = lambda sslobj, name, _ctx: names.append(name)
    origin = TinyOrigin(pki, ["h2"])
    origin.server = await asyncio.start_server(origin._handle, "127.0.0.1", 0, ssl=ctx)
    origin.port = origin.server.sockets[0].getsockname()[1]
    rec = Recorder()
    px = await forward(sink=rec)
    try:
        for host in ("127.0.0.1", "localhost"):
            rc, out = await curl(px, f"https://{host}:{origin.port}/", "--cacert", proxy_ca(px))
            assert rc == 0 and out.strip().endswith("2 200"), out
    finally:
        await origin.stop()
    assert names == [None, "localhost"]
    sent = [info["upstream_tls"]["sni"] for info in rec.opened.values()]
    assert sent == [None, "localhost"], rec.opened


async def test_http11_only_origin_is_relayed_as_bytes(forward, origins, caplog):
    origin = await origins(["http/1.1"])
    rec = Recorder()
    px = await forward(sink=rec)
    leaf, alpn = await asyncio.to_thread(tls_through, px.port, f"localhost:{origin.port}", "localhost",
                                         proxy_ca(px))
    assert alpn == "http/1.1" and issuer_cn(leaf) == "h2proxy CA"   # the client is offered what the origin chose
    rc, out = await curl(px, f"https://localhost:{origin.port}/x", "--cacert", proxy_ca(px))
    assert rc == 0 and "hello over http/1.1 (origin ALPN http/1.1) for /x" in out, out
    assert out.strip().endswith("1.1 200"), out
    assert rec.frames == []
    assert any("not HTTP/2 (client ALPN http/1.1, origin ALPN http/1.1)" in r.getMessage() for r in caplog.records)


async def test_h2_only_origin_and_http11_client_fail_fast_and_clean_up(forward, nghttpd, pki, caplog):
    """nghttpd speaks only h2: asked again for http/1.1 it chooses no ALPN. The HTTP/1.1 client gets a
    502 saying why at once (issue 13, item 9), not a bare close (curl exit 52) nor a timeout."""
    origin = nghttpd(tls=pki)
    px = await forward()
    rc, out = await curl(px, f"https://localhost:{origin.port}/", "--cacert", proxy_ca(px), "-o", os.devnull)
    assert rc == 0 and out.strip().endswith("2 200"), out
    for _ in range(3):
        rc, out = await curl(px, f"https://localhost:{origin.port}/", "--http1.1", "-m", "8",
                             "--cacert", proxy_ca(px))
        assert rc == 0 and out.strip().endswith("1.1 502"), out
        assert "speaks only HTTP/2" in out and "curl --http2" in out, out
    assert any("speaks only HTTP/2" in r.getMessage() and "answered 502" in r.getMessage() for r in caplog.records)
    deadline = asyncio.get_running_loop().time() + 5
    while px.bridges:
        assert asyncio.get_running_loop().time() < deadline, "connections left open"
        await asyncio.sleep(0.02)


# -- refusals --------------------------------------------------------------------------------------------------


async def test_untrusted_upstream_certificate_gives_502_with_the_reason(forward, nghttpd, pki, tmp_path, caplog):
    from proxy.certs import make_test_pki
    other = make_test_pki(tmp_path / "other")    # the proxy trusts only this CA, not the origin's
    origin = nghttpd(tls=pki)
    px = await forward(upstream_ca=other["ca"])
    answer = await raw_request(px.port, f"CONNECT localhost:{origin.port} HTTP/1.1\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway"), answer
    assert b"TLS certificate rejected: unable to get local issuer certificate" in body, body
    assert any("refused with 502" in r.getMessage() and "certificate" in r.getMessage() for r in caplog.records)
    rc, out = await curl(px, f"https://localhost:{origin.port}/", "--cacert", proxy_ca(px))
    assert rc != 0 and "502" in out, out


async def test_upstream_certificate_for_another_name_gives_502(forward, origins):
    """The origin's certificate is valid for 127.0.0.1 and localhost, not 127.0.0.2 (also loopback)."""
    origin = await origins(["h2"], host="127.0.0.2")
    px = await forward()
    answer = await raw_request(px.port, f"CONNECT 127.0.0.2:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 ") and b"IP address mismatch" in answer, answer
    assert origin.seen == []


async def test_system_store_does_not_trust_the_test_origin(forward, nghttpd, pki):
    origin = nghttpd(tls=pki)
    px = await forward(upstream_ca=None)
    answer = await raw_request(px.port, f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 ") and b"unable to get local issuer certificate" in answer, answer


async def test_insecure_skips_upstream_verification(forward, nghttpd, pki):
    origin = nghttpd(tls=pki)
    px = await forward(upstream_ca=None, insecure=True)
    rc, out = await curl(px, f"https://localhost:{origin.port}/", "--cacert", proxy_ca(px), "-o", os.devnull)
    assert rc == 0 and out.strip().endswith("2 200"), out


async def test_unreachable_upstream_gives_502(forward):
    px = await forward()
    port = free_port()
    answer = await raw_request(px.port, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway") and b"unreachable" in answer, answer


async def test_plain_http_requests_are_refused(forward):
    px = await forward()
    rc, out = await curl(px, "http://localhost:9/page")
    assert "h2proxy intercepts HTTP/2 over TLS only; use CONNECT" in out and out.strip().endswith("501"), out
    answer = await raw_request(px.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 Not Implemented")


async def test_connect_to_the_proxy_itself_is_refused(forward, caplog):
    px = await forward()
    for host in ("127.0.0.1", "localhost", "127.0.0.2", "0.0.0.0"):
        answer = await raw_request(px.port, f"CONNECT {host}:{px.port} HTTP/1.1\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403 Forbidden") and b"loop" in answer, (host, answer)
    assert px.total_connections == 0


async def test_bad_heads_are_refused(forward):
    px = await forward()
    answer = await raw_request(px.port, b"CONNECT localhost HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    answer = await raw_request(px.port, b"CONNECT localhost:99999 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    answer = await raw_request(px.port, b"garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    # Longer than 8 KiB without an end: 431 before the whole thing is even sent.
    answer = await raw_request(px.port, b"CONNECT localhost:443 HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    # A head that ends only past 8 KiB.
    answer = await raw_request(px.port, b"CONNECT localhost:443 HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer


async def test_slow_head_times_out(forward):
    px = await forward()
    px.head_timeout = 0.3
    r, w = await asyncio.open_connection("127.0.0.1", px.port)
    w.write(b"CONNECT localhost:443 HTTP/1.1\r\n")
    answer = await asyncio.wait_for(r.read(), 10)
    w.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_stop_closes_connections_in_setup(forward):
    px = await forward()
    r, w = await asyncio.open_connection("127.0.0.1", px.port)
    w.write(b"CONNECT localhost:443 HTTP/1.1\r\n")
    await w.drain()
    while not any(p.buf for p in px.pending):    # the proxy has read the partial head
        await asyncio.sleep(0.01)
    await px.stop(grace=0.1)
    answer = await asyncio.wait_for(r.read(), 5)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"stopping" in answer, answer
    w.close()


# -- ignore / allow hosts -------------------------------------------------------------------------------------


async def test_ignored_host_is_tunnelled_untouched(forward, nghttpd, pki, caplog):
    origin = nghttpd(tls=pki)
    rec = Recorder()
    px = await forward(sink=rec, ignore_hosts=[r"^localhost:\d+$"])
    # TLS ends at the origin: the client trusts only the origin's CA and sees the origin's certificate.
    rc, out = await curl(px, f"https://localhost:{origin.port}/", "--cacert", pki["ca"], "-o", os.devnull)
    assert rc == 0 and out.strip().endswith("2 200"), out
    leaf, alpn = await asyncio.to_thread(tls_through, px.port, f"localhost:{origin.port}", "localhost", pki["ca"])
    assert issuer_cn(leaf) == "h2proxy test CA" and alpn == "h2"
    assert rec.frames == [] and rec.opened == {}
    assert any("tunnelled without interception" in r.getMessage() for r in caplog.records)
    # A host the pattern does not match is intercepted.
    leaf, _ = await asyncio.to_thread(tls_through, px.port, f"127.0.0.1:{origin.port}", "127.0.0.1", proxy_ca(px))
    assert issuer_cn(leaf) == "h2proxy CA"


async def test_allow_hosts_limits_interception(forward, nghttpd, pki):
    origin = nghttpd(tls=pki)
    px = await forward(allow_hosts=[r"^127\.0\.0\.1$"])
    leaf, _ = await asyncio.to_thread(tls_through, px.port, f"127.0.0.1:{origin.port}", "127.0.0.1", proxy_ca(px))
    assert issuer_cn(leaf) == "h2proxy CA"
    leaf, _ = await asyncio.to_thread(tls_through, px.port, f"localhost:{origin.port}", "localhost", pki["ca"])
    assert issuer_cn(leaf) == "h2proxy test CA"


def test_policy_and_parsing():
    settings = ProxySettings(listen=parse_endpoint("http://127.0.0.1:0"))
    both = ForwardProxyServer(settings, ignore_hosts=[r"\.internal$"], allow_hosts=[r"example", r"^10\."])
    assert both.intercepts("api.example.com", 443)
    assert not both.intercepts("db.example.internal", 443)      # ignored wins
    assert not both.intercepts("other.org", 443)                 # not allowed
    assert both.intercepts("10.1.2.3", 8443)
    ports = ForwardProxyServer(settings, ignore_hosts=[r":8443$"])
    assert not ports.intercepts("a.test", 8443) and ports.intercepts("a.test", 443)
    with pytest.raises(ConfigError, match="ignore_hosts"):
        ForwardProxyServer(settings, ignore_hosts=["("])
    assert parse_authority("Example.COM:443") == ("example.com", 443)
    assert parse_authority("[::1]:8443") == ("::1", 8443)
    for bad in ("example.com", "example.com:0", "[::1]", "a b:1", "::1:443", "http://x:1"):
        with pytest.raises(ValueError):
            parse_authority(bad)
    assert listen_warning("127.0.0.1") is None and listen_warning("localhost") is None
    assert listen_warning("::1") is None
    assert "not a loopback address" in listen_warning("0.0.0.0")


async def test_tls_listen_is_a_config_error(ca_dir):
    settings = ProxySettings(listen=parse_endpoint("https://127.0.0.1:0"), ca_dir=str(ca_dir))
    with pytest.raises(ConfigError, match="http://"):
        await ForwardProxyServer(settings).start()
