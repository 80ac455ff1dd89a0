"""The proxy's own certificate authority, and the leaf certificates it issues.

The CA is created on first use in ``~/.h2proxy/`` (directory 0700, private key
0600), valid 10 years, and never shipped with the package. Leaf certificates
are valid at most 397 days (the CA/Browser Forum limit browsers enforce), share
one EC key, carry a DNS or IP subjectAltName, and are cached per name in a
bounded LRU.
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("h2proxy")

CA_CERT = "h2proxy-ca.pem"
CA_KEY = "h2proxy-ca-key.pem"
CA_DAYS = 3650
LEAF_DAYS = 397


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner may read (0600 from the start, not chmod'ed later)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name)


def _issue(ca_cert: x509.Certificate, ca_key, subject_key, names: List[str], days: int) -> x509.Certificate:
    now = _now()
    cn = names[0][:64]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca_cert.subject)
               .public_key(subject_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=days - 1))
               .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    return builder.sign(ca_key, hashes.SHA256())


def _make_ca(common_name: str) -> Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "h2proxy")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


class CertificateAuthority:
    """Loads the proxy's CA from ``directory`` (default ``~/.h2proxy``), creating it on first use."""

    def __init__(self, directory: Union[str, Path, None] = None, cache_size: int = 256) -> None:
        self.directory = Path(directory).expanduser() if directory else Path.home() / ".h2proxy"
        self.ca_cert_path = self.directory / CA_CERT
        self.ca_key_path = self.directory / CA_KEY
        self.cache_size = cache_size
        self._cache: "OrderedDict[str, Tuple[Path, Path]]" = OrderedDict()
        self._contexts: "OrderedDict[Tuple[str, tuple], ssl.SSLContext]" = OrderedDict()
        self._load_or_create()
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_dir = Path(tempfile.mkdtemp(prefix="h2proxy-leaves-"))
        os.chmod(self._leaf_dir, 0o700)
        self._leaf_key_path = self._leaf_dir / "leaf-key.pem"
        _write_private(self._leaf_key_path, _key_pem(self._leaf_key))

    def _load_or_create(self) -> None:
        d = self.directory
        if self.ca_cert_path.exists() and self.ca_key_path.exists():
            mode = d.stat().st_mode & 0o777
            if mode & 0o077:
                log.warning("%s is readable by others (mode %o); it holds the proxy's CA key", d, mode)
            self.cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            self.key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
            return
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        self.cert, self.key = _make_ca("h2proxy CA")
        _write_private(self.ca_key_path, _key_pem(self.key))
        self.ca_cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(self.ca_cert_path, 0o644)
        log.info("created the h2proxy CA in %s (run 'h2proxy ca' to see how to trust it)", d)

    def leaf(self, name: str) -> Tuple[Path, Path]:
        """Certificate chain (leaf + CA) and key files for ``name`` (a DNS name or an IP address)."""
        name = name.strip().lower().rstrip(".")
        hit = self._cache.get(name)
        if hit is not None:
            self._cache.move_to_end(name)
            return hit
        cert = _issue(self.cert, self.key, self._leaf_key, [name], LEAF_DAYS)
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
        path = self._leaf_dir / f"{safe}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                         + self.cert.public_bytes(serialization.Encoding.PEM))
        self._cache[name] = (path, self._leaf_key_path)
        while len(self._cache) > self.cache_size:
            old, (old_path, _) = self._cache.popitem(last=False)
            try:
                old_path.unlink()
            except OSError:
                pass
        return path, self._leaf_key_path

    def ssl_context_for(self, name: str, alpn=("h2",)) -> ssl.SSLContext:
        """A server-side TLS context presenting a leaf certificate for ``name``."""
        key = (name.strip().lower(), tuple(alpn or ()))
        ctx = self._contexts.get(key)
        if ctx is not None:
            self._contexts.move_to_end(key)
            return ctx
        from .tlsutil import server_context
        certfile, keyfile = self.leaf(name)
        ctx = server_context(str(certfile), str(keyfile), alpn=alpn)
        self._contexts[key] = ctx
        while len(self._contexts) > self.cache_size:
            self._contexts.popitem(last=False)
        return ctx

    def export(self, out_dir: Union[str, Path]) -> List[Path]:
        """Write the CA certificate as PEM and DER (never the key)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pem = out / "h2proxy-ca.pem"
        der = out / "h2proxy-ca.cer"
        pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        der.write_bytes(self.cert.public_bytes(serialization.Encoding.DER))
        return [pem, der]


def describe_ca(ca: CertificateAuthority) -> str:
    """What ``h2proxy ca`` prints: where the CA certificate is and how to trust it."""
    path = ca.ca_cert_path
    fp = ca.cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return f"""h2proxy CA certificate: {path}
  subject: {ca.cert.subject.rfc4514_string()}
  valid until: {ca.cert.not_valid_after_utc:%Y-%m-%d}
  SHA-256 fingerprint: {fp}
The private key ({ca.ca_key_path}) never leaves that directory.

Trust it in:
  curl:        curl --cacert {path} https://...
  Python:      SSL_CERT_FILE={path} (ssl, httpx) or REQUESTS_CA_BUNDLE={path} (requests)
  Firefox:     Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import
  Chrome:      Settings > Privacy and security > Security > Manage certificates > Authorities > Import
  Debian:      sudo cp {path} /usr/local/share/ca-certificates/h2proxy.crt && sudo update-ca-certificates
Export it in PEM and DER with: h2proxy ca export DIR"""


def make_test_pki(directory: Union[str, Path]) -> Dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, for tests.

    Returns paths: ``ca`` (CA certificate), ``ca_key``, ``cert`` (server certificate chain), ``key``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca("h2proxy test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(ca_cert, ca_key, key, ["127.0.0.1", "localhost", "::1"], 30)
    paths = {"ca": d / "test-ca.pem", "ca_key": d / "test-ca-key.pem", "cert": d / "server.pem",
             "key": d / "server-key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["ca_key"], _key_pem(ca_key))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], _key_pem(key))
    return {k: str(v) for k, v in paths.items()}
