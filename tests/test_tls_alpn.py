"""Refusing TLS clients that do not offer h2, with the no_application_protocol alert (RFC 7301 3.2)."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from proxy.tlspeek import INCOMPLETE, NOT_TLS, client_hello_alpn
from tests.conftest import need, run


def client_hello(alpn) -> bytes:
    ctx = ssl.create_default_context()
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="example.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("offer", [["h2"], ["h2", "http/1.1"], ["http/1.1"], []])
def test_alpn_offer_is_read_from_a_real_client_hello(offer):
    hello = client_hello(offer or None)
    assert client_hello_alpn(hello) == [p.encode() for p in offer]


def test_partial_and_foreign_bytes():
    hello = client_hello(["h2"])
    assert client_hello_alpn(hello[:3]) == INCOMPLETE
    assert client_hello_alpn(hello[:40]) == INCOMPLETE
    assert client_hello_alpn(b"GET / HTTP/1.1\r\n\r\n") == NOT_TLS
    assert client_hello_alpn(b"\x16\x03\x01\x00\x05\x02\x00\x00\x00\x00") == NOT_TLS


def test_a_client_hello_split_over_two_records_is_left_to_the_tls_layer():
    """Not refused as "no h2 offered": the first record alone cannot tell (RFC 8446 5.1 allows the split)."""
    hello = client_hello(["h2"])
    body = hello[5:]
    cut = len(body) // 2
    first = hello[:3] + cut.to_bytes(2, "big") + body[:cut]
    second = hello[:3] + (len(body) - cut).to_bytes(2, "big") + body[cut:]
    assert client_hello_alpn(first + second) is None


async def _tls_proxy(proxy_factory, pki):
    return await proxy_factory("h2c://127.0.0.1:9", listen="https://127.0.0.1:0", cert=pki["cert"],
                               key=pki["key"])


async def test_python_client_without_h2_gets_the_alert(proxy_factory, pki, caplog):
    px = await _tls_proxy(proxy_factory, pki)
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.set_alpn_protocols(["http/1.1"])
    with pytest.raises(ssl.SSLError) as info:
        r, w = await asyncio.open_connection("127.0.0.1", px.port, ssl=ctx, server_hostname="127.0.0.1")
        await r.read()
    assert "no application protocol" in str(info.value).lower()
    assert any("without h2" in rec.getMessage() and "no_application_protocol" in rec.getMessage()
               for rec in caplog.records)


async def test_openssl_client_sees_the_alert(proxy_factory, pki):
    px = await _tls_proxy(proxy_factory, pki)
    rc, out = await run(need("openssl"), "s_client", "-alpn", "http/1.1", "-connect", f"127.0.0.1:{px.port}",
                        input=b"")
    assert "no application protocol" in out.lower()


async def test_client_offering_h2_gets_through(proxy_factory, pki):
    px = await _tls_proxy(proxy_factory, pki)
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    r, w = await asyncio.open_connection("127.0.0.1", px.port, ssl=ctx, server_hostname="127.0.0.1")
    assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    w.close()
