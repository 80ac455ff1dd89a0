"""The embedded demo origin against real clients, and the proxy's CA."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from proxy.certs import CertificateAuthority, describe_ca
from proxy.demo_origin import BIG, body_bytes
from tests.conftest import http_url, need, run
from tests.peers import nghttp as checked_nghttp  # (runs the shared SETTINGS-first / blame check)


async def test_origin_routes_with_nghttp(origin):
    url = origin.url.replace("h2c://", "http://")
    rc, out = await checked_nghttp("-nv", f"{url}/push")
    assert rc == 0 and "recv PUSH_PROMISE frame" in out and ":path: /pushed.css" in out
    rc, out = await checked_nghttp("-nv", f"{url}/altsvc")
    assert rc == 0 and "recv ALTSVC frame" in out
    rc, out = await checked_nghttp("-nv", f"{url}/nope")
    assert ":status: 404" in out and "server: h2proxy-demo-origin" in out


async def test_origin_big_body_is_exact(origin, tmp_path):
    target = tmp_path / "big"
    url = origin.url.replace("h2c://", "http://")
    rc, out = await run(need("curl"), "-sS", "--http2-prior-knowledge", "-o", str(target), f"{url}/big")
    assert rc == 0, out
    assert target.read_bytes() == bytes(body_bytes(BIG))


async def test_origin_under_h2load(origin):
    url = origin.url.replace("h2c://", "http://")
    rc, out = await run(need("h2load"), "-n", "3000", "-c", "4", "-m", "10", f"{url}/size/1024")
    assert "3000 succeeded, 0 failed" in out, out


async def test_proxy_in_front_of_the_origin_keeps_push_and_drops_altsvc(origin, proxy_factory):
    from proxy.hooks.builtin.altsvc import AltSvcHook
    px = await proxy_factory(origin.url, hooks=[AltSvcHook()])
    rc, out = await checked_nghttp("-nv", f"{http_url(px)}/altsvc")
    assert rc == 0 and ":status: 200" in out and "ALTSVC" not in out
    rc, out = await checked_nghttp("-nv", f"{http_url(px)}/push")
    assert "recv PUSH_PROMISE frame" in out and ":path: /pushed.css" in out


async def test_altsvc_forward_and_rewrite(origin, proxy_factory):
    from proxy.hooks.builtin.altsvc import AltSvcHook
    px = await proxy_factory(origin.url, hooks=[AltSvcHook(mode="rewrite", ma=5, add=['h2="alt.test:443"'])])
    rc, out = await checked_nghttp("-nv", f"{http_url(px)}/altsvc")
    assert "recv ALTSVC frame" in out and 'h2="alt.test:443"; ma=5' in out
    px2 = await proxy_factory(origin.url, hooks=[AltSvcHook(mode="forward")])
    rc, out = await checked_nghttp("-nv", f"{http_url(px2)}/altsvc")
    assert "recv ALTSVC frame" in out and "ma=60" in out


def test_ca_files_modes_and_reload(tmp_path):
    d = tmp_path / "ca"
    ca = CertificateAuthority(d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ca.ca_key_path).st_mode) == 0o600
    again = CertificateAuthority(d)
    assert again.cert == ca.cert
    valid = ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc
    assert datetime.timedelta(days=3649) < valid <= datetime.timedelta(days=3652)
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert str(ca.ca_cert_path) in describe_ca(ca) and "update-ca-certificates" in describe_ca(ca)
    pem, der = ca.export(tmp_path / "out")
    assert pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE") and x509.load_der_x509_certificate(der.read_bytes())


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
async def test_leaf_verifies_to_the_ca_over_real_tls(tmp_path, name):
    ca = CertificateAuthority(tmp_path / "ca")
    leaf = x509.load_pem_x509_certificate(ca.leaf(name)[0].read_bytes())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= datetime.timedelta(days=397)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if name == "localhost":
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    else:
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(name)]

    async def serve(reader, writer):
        writer.write(b"ok")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ca.ssl_context_for(name, alpn=None))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=name)
    assert await reader.read() == b"ok"
    writer.close()
    server.close()


def test_leaf_cache_is_bounded(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca", cache_size=3)
    first = ca.leaf("a.test")
    for n in ("b.test", "c.test", "d.test"):
        ca.leaf(n)
    assert len(ca._cache) == 3 and "a.test" not in ca._cache and not first[0].exists()


def test_ca_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "ca", "--ca-dir", str(tmp_path / "ca")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "h2proxy-ca.pem" in out.stdout and "curl --cacert" in out.stdout
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "ca", "--ca-dir", str(tmp_path / "ca"), "export",
                          str(tmp_path / "exp")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and (tmp_path / "exp" / "h2proxy-ca.cer").exists()
