"""The proxy's CA and leaf certificates (proxy/certs.py) and the TLS context builders (proxy/tlsutil.py).

Every CA lives in a pytest temporary directory; the real ~/.h2proxy is never
touched (the default-directory test points HOME at a temporary directory).
Leaves are checked by real TLS handshakes over loopback.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import socket
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.certs import CAError, CertificateAuthority, describe_ca, make_test_pki, not_valid_after, not_valid_before
from proxy.tlsutil import alpn_refused, client_context, keylog, server_context


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def load_chain(path):
    return x509.load_pem_x509_certificates(open(path, "rb").read())


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority(tmp_path / "ca")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def handshake(server_ctx, client_ctx, server_hostname, host="127.0.0.1"):
    """A real TLS connection over loopback; returns (client ssl_object, what the server wrote)."""
    async def serve(reader, writer):
        writer.write(b"hello over TLS")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, host, 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_ctx, server_hostname=server_hostname), 10)
        sslobj = writer.get_extra_info("ssl_object")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return sslobj, data
    finally:
        server.close()
        await server.wait_closed()


# -- the CA -------------------------------------------------------------------------------------------

def test_ca_is_created_with_private_modes(tmp_path):
    d = tmp_path / "new" / "ca"
    ca = CertificateAuthority(d)
    assert ca.created
    assert ca.ca_cert_path == d / "h2proxy-ca.pem" and ca.ca_key_path == d / "h2proxy-ca-key.pem"
    assert mode(d) == 0o700
    assert mode(ca.ca_key_path) == 0o600
    assert mode(ca.ca_cert_path) == 0o644
    assert b"PRIVATE KEY" in ca.ca_key_path.read_bytes()
    assert b"PRIVATE KEY" not in ca.ca_cert_path.read_bytes()


def test_ca_certificate_fields(ca):
    cert = load(ca.ca_cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "h2proxy CA"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)                 # self-signed
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(key)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = not_valid_before(cert), not_valid_after(cert)
    assert datetime.timedelta(hours=23) < now - start < datetime.timedelta(days=1, minutes=5)
    assert datetime.timedelta(days=3649) < end - now <= datetime.timedelta(days=3650, minutes=5)   # 10 years


def test_reload_gives_the_same_ca(tmp_path):
    first = CertificateAuthority(tmp_path / "ca")
    cert_bytes = first.ca_cert_path.read_bytes()
    again = CertificateAuthority(tmp_path / "ca")
    assert not again.created
    assert again.cert == first.cert and again.ca_cert_path.read_bytes() == cert_bytes
    # a leaf issued by the reloaded CA verifies against the certificate saved the first time
    load_chain(again.leaf("reload.test")[0])[0].verify_directly_issued_by(load(first.ca_cert_path))


def test_existing_loose_directory_is_only_warned_about(tmp_path, caplog):
    d = tmp_path / "loose"
    d.mkdir()
    os.chmod(d, 0o755)
    with caplog.at_level(logging.WARNING, logger="h2proxy"):
        ca = CertificateAuthority(d)
    assert mode(d) == 0o755                              # not chmod'ed behind the user's back
    assert mode(ca.ca_key_path) == 0o600
    assert any("can be read by others" in r.getMessage() and str(d) in r.getMessage() for r in caplog.records)


def test_half_a_ca_is_an_error_not_silently_replaced(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    cert_bytes = ca.ca_cert_path.read_bytes()
    ca.ca_key_path.unlink()
    with pytest.raises(CAError, match="missing"):
        CertificateAuthority(tmp_path / "ca")
    assert ca.ca_cert_path.read_bytes() == cert_bytes


def test_mismatched_key_is_an_error(tmp_path):
    a = CertificateAuthority(tmp_path / "a")
    b = CertificateAuthority(tmp_path / "b")
    b.ca_key_path.write_bytes(a.ca_key_path.read_bytes())
    with pytest.raises(CAError, match="not the key"):
        CertificateAuthority(tmp_path / "b")


def test_default_directory_is_home_dot_h2proxy_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ca = CertificateAuthority()
    assert ca.directory == tmp_path / "home" / ".h2proxy"
    assert ca.ca_cert_path.exists() and mode(ca.directory) == 0o700


def test_export_pem_and_der(ca, tmp_path):
    paths = ca.export(tmp_path / "out")
    assert [p.name for p in paths] == ["h2proxy-ca.pem", "h2proxy-ca.cer"]
    pem, der = paths
    assert x509.load_pem_x509_certificate(pem.read_bytes()) == ca.cert
    assert x509.load_der_x509_certificate(der.read_bytes()) == ca.cert
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["h2proxy-ca.cer", "h2proxy-ca.pem"]
    assert not any(b"PRIVATE" in p.read_bytes() for p in paths)


def test_describe_ca(ca):
    text = describe_ca(ca)
    path = str(ca.ca_cert_path)
    assert path in text
    assert f"curl --cacert {path}" in text
    assert f"SSL_CERT_FILE={path}" in text and f"REQUESTS_CA_BUNDLE={path}" in text
    assert "Firefox" in text and "Chrome" in text
    assert "/usr/local/share/ca-certificates/h2proxy.crt" in text and "update-ca-certificates" in text
    assert ca.fingerprint in text


# -- leaves -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [("www.example.test", x509.DNSName), ("127.0.0.1", x509.IPAddress),
                                        ("::1", x509.IPAddress), ("[::1]", x509.IPAddress)])
def test_leaf_fields(ca, name, kind):
    chain_path, key_path = ca.leaf(name)
    leaf, issuer = load_chain(chain_path)
    assert issuer == ca.cert                               # the chain file ends with the CA
    leaf.verify_directly_issued_by(ca.cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = name.strip("[]")
    if kind is x509.IPAddress:
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(expected)]
        assert san.get_values_for_type(x509.DNSName) == []
    else:
        assert san.get_values_for_type(x509.DNSName) == [expected]
        assert san.get_values_for_type(x509.IPAddress) == []
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    start, end = not_valid_before(leaf), not_valid_after(leaf)
    assert end - start <= datetime.timedelta(days=397)
    assert start < datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=23)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_one_leaf_key_private_files(ca):
    cert_a, key_a = ca.leaf("a.test")
    cert_b, key_b = ca.leaf("b.test")
    assert key_a == key_b                                  # one key for every leaf
    assert load_chain(cert_a)[0].public_key() == load_chain(cert_b)[0].public_key()
    assert mode(key_a) == 0o600 and mode(key_a.parent) == 0o700
    assert not str(key_a).startswith(str(ca.directory))   # leaves never go into the CA directory
    assert ca.leaf("A.Test.") == (cert_a, key_a)           # names are normalized: same cache entry


def test_leaf_cache_is_a_bounded_lru(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca", cache_size=3)
    a = ca.leaf("a.test")[0]
    ca.leaf("b.test")
    ca.leaf("c.test")
    assert ca.leaf("a.test")[0] == a                       # a hit: a is now the most recent
    ca.leaf("d.test")                                      # evicts b, the least recently used
    assert list(ca._cache) == ["c.test", "a.test", "d.test"]
    assert a.exists()
    for i in range(20):
        ca.leaf(f"n{i}.test")
    assert len(ca._cache) == 3 and not a.exists()          # evicted leaves' files are removed
    assert len([p for p in a.parent.iterdir() if p.name != "leaf-key.pem"]) == 3
    for i in range(5):
        ca.ssl_context_for(f"ctx{i}.test")
    assert len(ca._contexts) <= 3


def test_default_cache_size_and_leaf_dir_removal(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    assert ca.cache_size == 256
    leaf_dir = ca.leaf("x.test")[0].parent
    assert leaf_dir.is_dir()
    ca.close()
    assert not leaf_dir.exists()


@pytest.mark.parametrize("name, host", [("localhost", "127.0.0.1"), ("www.example.test", "127.0.0.1"),
                                        ("127.0.0.1", "127.0.0.1"), ("::1", "::1")])
async def test_leaf_verifies_over_real_tls(ca, name, host):
    if host == "::1" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    server_ctx = ca.ssl_context_for(name)
    assert ca.ssl_context_for(name) is server_ctx          # cached
    client = client_context(cafile=str(ca.ca_cert_path))    # verification and hostname checks on
    sslobj, data = await handshake(server_ctx, client, name, host)
    assert data == b"hello over TLS"
    assert sslobj.selected_alpn_protocol() == "h2" and not alpn_refused(sslobj)
    peer = x509.load_der_x509_certificate(sslobj.getpeercert(binary_form=True))
    assert peer.issuer == ca.cert.subject


async def test_leaf_for_another_name_or_another_ca_is_refused(ca, tmp_path):
    client = client_context(cafile=str(ca.ca_cert_path))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
        await handshake(ca.ssl_context_for("one.test"), client, "other.test")
    other = CertificateAuthority(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(other.ssl_context_for("one.test"), client, "one.test")
    # the default client context uses the system store, which does not know our CA
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(ca.ssl_context_for("one.test"), client_context(), "one.test")


# -- make_test_pki and tlsutil --------------------------------------------------------------------------

async def test_make_test_pki(tmp_path):
    pki = make_test_pki(tmp_path / "pki")
    assert set(pki) >= {"ca", "cert", "key"}
    assert mode(pki["key"]) == 0o600
    cert = load(pki["cert"])
    cert.verify_directly_issued_by(load(pki["ca"]))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    sslobj, data = await handshake(server_context(pki["cert"], pki["key"]), client_context(cafile=pki["ca"]),
                                   "127.0.0.1")
    assert data == b"hello over TLS" and sslobj.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize("offer, refused", [(["h2"], False), (["http/1.1", "h2"], False),
                                            (["http/1.1"], True), (None, True)])
async def test_alpn_refused(ca, offer, refused):
    client = client_context(cafile=str(ca.ca_cert_path), alpn=offer)
    sslobj, _ = await handshake(ca.ssl_context_for("localhost"), client, "localhost")
    # Python's ssl completes the handshake without a protocol (no alert): alpn_refused tells the caller to close
    assert alpn_refused(sslobj) is refused
    assert alpn_refused(None) is False


def test_contexts(tmp_path):
    pki = make_test_pki(tmp_path)
    srv = server_context(pki["cert"], pki["key"])
    assert srv.minimum_version == ssl.TLSVersion.TLSv1_2
    assert srv.options & ssl.OP_NO_COMPRESSION
    tls12 = [c["name"] for c in srv.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(("GCM" in c or "CHACHA20" in c) and "DHE" in c for c in tls12)
    cli = client_context()
    assert cli.verify_mode == ssl.CERT_REQUIRED and cli.check_hostname
    assert cli.minimum_version == ssl.TLSVersion.TLSv1_2
    off = client_context(verify=False)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


async def test_server_context_takes_the_clients_tls12_order(tmp_path):
    """Under TLS 1.2 too the client's order decides among the HTTP/2 suites (with the server's, OpenSSL
    ranks AES-256 first)."""
    pki = make_test_pki(tmp_path / "pki")
    for first, second in (("AES128", "AES256"), ("AES256", "AES128")):
        client = client_context(cafile=pki["ca"])
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(":".join(f"ECDHE-{k}-{a}-GCM-SHA{256 if a == 'AES128' else 384}"
                                    for a in (first, second) for k in ("ECDSA", "RSA")))
        sslobj, _ = await handshake(server_context(pki["cert"], pki["key"]), client, "localhost")
        name, version, _bits = sslobj.cipher()
        assert version == "TLSv1.2" and first in name, (first, name)


async def test_sslkeylogfile(tmp_path, monkeypatch):
    pki = make_test_pki(tmp_path / "pki")
    log_path = tmp_path / "keys.log"
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    keylog(plain)
    assert plain.keylog_filename is None
    monkeypatch.setenv("SSLKEYLOGFILE", str(log_path))
    client = client_context(cafile=pki["ca"])
    assert client.keylog_filename == str(log_path)
    await handshake(server_context(pki["cert"], pki["key"]), client, "localhost")
    text = log_path.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text or "CLIENT_RANDOM" in text
