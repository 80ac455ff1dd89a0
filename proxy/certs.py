"""The proxy's own certificate authority, and the leaf certificates it issues.

The CA is created on first use in ``~/.h2proxy/`` (or the directory given):
``h2proxy-ca.pem`` (the certificate, mode 0644) and ``h2proxy-ca-key.pem``
(its EC P-256 private key, mode 0600, written with that mode from the start),
in a directory created with mode 0700. An existing directory is never
chmod'ed: a warning says when others could read it. Nothing of the CA ships
with the package; every installation makes its own.

Leaf certificates, for the names (or IP literals) clients connect to, are
valid at most 397 days (the CA/Browser Forum limit browsers enforce) starting
a day in the past, carry a DNS or IP subjectAltName, serverAuth, and key
identifiers, and all use one EC P-256 key made once per
:class:`CertificateAuthority`. They live in a private temporary directory (mode
0700, removed when the object goes away or the interpreter exits) because
:meth:`ssl.SSLContext.load_cert_chain` only reads files, and are cached per
name in a bounded LRU. Private keys are never logged.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("h2proxy")

#: The key types a CA may sign leaves with (SHA-256 signatures).
CAKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

CA_CERT = "h2proxy-ca.pem"
CA_KEY = "h2proxy-ca-key.pem"
CA_COMMON_NAME = "h2proxy CA"
CA_DAYS = 3650
LEAF_DAYS = 397
DEFAULT_DIRECTORY = "~/.h2proxy"
DEFAULT_CACHE_SIZE = 256


class CAError(OSError):
    """The CA directory holds something we cannot use (half a CA, a key that does not match)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def not_valid_before(cert: x509.Certificate) -> datetime.datetime:
    try:
        return cert.not_valid_before_utc
    except AttributeError:                                   # cryptography < 42
        return cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_valid_after(cert: x509.Certificate) -> datetime.datetime:
    try:
        return cert.not_valid_after_utc
    except AttributeError:                                   # cryptography < 42
        return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically (temporary file + rename) with ``mode`` from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)                                  # the umask may have taken bits away
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def normalize_name(name: str) -> str:
    """The canonical form of a host name or IP literal: lower case, no trailing dot, no brackets."""
    name = name.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        pass
    name = name.rstrip(".").lower()
    if not name:
        raise ValueError("empty host name")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issue(ca_cert: x509.Certificate, ca_key: CAKey, subject_public_key: ec.EllipticCurvePublicKey, names: List[str],
           days: int) -> x509.Certificate:
    """A server certificate for ``names`` (already normalized), signed by the CA."""
    now = _now()
    start = now - datetime.timedelta(days=1)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
               .issuer_name(ca_cert.subject)
               .public_key(subject_public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    return builder.sign(ca_key, hashes.SHA256())


def _make_ca(common_name: str, days: int = CA_DAYS) -> Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "h2proxy")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


class _DirLock:
    """An exclusive ``flock`` on ``directory/.lock`` while a CA is loaded or created (several workers may race)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> "_DirLock":
        try:
            import fcntl
        except ImportError:                                  # not POSIX: no lock
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)                                # releases the lock
            self.fd = None


class CertificateAuthority:
    """The proxy's CA in ``directory`` (default ``~/.h2proxy``), loaded, or created on first use."""

    def __init__(self, directory: Union[str, Path, None] = None, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.directory = Path(directory if directory else DEFAULT_DIRECTORY).expanduser()
        self.ca_cert_path = self.directory / CA_CERT
        self.ca_key_path = self.directory / CA_KEY
        self.cache_size = max(1, int(cache_size))
        self.created = False
        #: The CA's signing key: EC when h2proxy made the CA, EC or RSA when one was brought.
        self.key: CAKey
        self._lock = threading.Lock()
        self._cache: "OrderedDict[str, Tuple[Path, Path]]" = OrderedDict()
        self._contexts: "OrderedDict[Tuple[str, tuple], ssl.SSLContext]" = OrderedDict()
        self._load_or_create()
        self._ca_pem = _cert_pem(self.cert)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_public = self._leaf_key.public_key()
        self._leaf_dir = Path(tempfile.mkdtemp(prefix="h2proxy-leaves-"))   # mkdtemp makes it 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._leaf_dir), True)
        self._leaf_key_path = self._leaf_dir / "leaf-key.pem"
        _write_file(self._leaf_key_path, _key_pem(self._leaf_key), 0o600)

    # -- the CA itself ------------------------------------------------------------

    def _load_or_create(self) -> None:
        d = self.directory
        if not d.exists():
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)                               # whatever the umask
        else:
            mode = d.stat().st_mode & 0o777
            if mode & 0o077:
                log.warning("the CA directory %s can be read by others (mode %03o); it holds the proxy's CA key: "
                            "chmod 700 %s", d, mode, d)
        with _DirLock(d):
            have_cert, have_key = self.ca_cert_path.exists(), self.ca_key_path.exists()
            if have_cert and have_key:
                self._load()
            elif have_cert or have_key:
                missing = self.ca_key_path if have_cert else self.ca_cert_path
                raise CAError(f"{missing} is missing, so the CA in {d} cannot be used; move the other file "
                              f"away to make a new CA (which clients then have to trust again)")
            else:
                self.cert, self.key = _make_ca(CA_COMMON_NAME)
                _write_file(self.ca_key_path, _key_pem(self.key), 0o600)
                _write_file(self.ca_cert_path, _cert_pem(self.cert), 0o644)
                self.created = True
                log.info("created the h2proxy CA in %s (run 'h2proxy ca' to see how to trust it)", d)

    def _load(self) -> None:
        try:
            self.cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise CAError(f"cannot load the CA in {self.directory}: {exc}") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            # Leaves are signed with SHA-256, which EC and RSA keys do and others (Ed25519, DH) do not.
            raise CAError(f"{self.ca_key_path} is a {type(key).__name__}: the CA key must be an EC or RSA key")
        self.key = key
        if self.key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo) != \
                self.cert.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo):
            raise CAError(f"{self.ca_key_path} is not the key of {self.ca_cert_path}")
        mode = self.ca_key_path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("the CA key %s can be read by others (mode %03o): chmod 600 %s",
                        self.ca_key_path, mode, self.ca_key_path)

    # -- leaves --------------------------------------------------------------------

    def leaf(self, name: str) -> Tuple[Path, Path]:
        """Files for ``name`` (a DNS name or an IP literal): the chain (leaf, then CA) and the key, both PEM."""
        name = normalize_name(name)
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None:
                self._cache.move_to_end(name)
                return hit
            cert = _issue(self.cert, self.key, self._leaf_public, [name], LEAF_DAYS)
            safe = "".join(c if c.isalnum() or c in "-." else "_" for c in name)[:60]
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            path = self._leaf_dir / f"{safe}-{digest}.pem"
            _write_file(path, _cert_pem(cert) + self._ca_pem, 0o644)
            self._cache[name] = (path, self._leaf_key_path)
            while len(self._cache) > self.cache_size:
                _, (old_path, _key) = self._cache.popitem(last=False)
                try:
                    old_path.unlink()
                except OSError:
                    pass
            return path, self._leaf_key_path

    def ssl_context_for(self, name: str, alpn=("h2",)) -> ssl.SSLContext:
        """A server-side TLS context presenting a leaf certificate for ``name`` and offering ``alpn``."""
        key = (normalize_name(name), tuple(alpn or ()))
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is not None:
                self._contexts.move_to_end(key)
                return ctx
        from .tlsutil import server_context
        certfile, keyfile = self.leaf(name)
        ctx = server_context(str(certfile), str(keyfile), alpn=alpn)
        with self._lock:
            self._contexts[key] = ctx
            while len(self._contexts) > self.cache_size:
                self._contexts.popitem(last=False)
        return ctx

    def close(self) -> None:
        """Remove the leaf files now (contexts already made keep working)."""
        with self._lock:
            self._cache.clear()
        self._cleanup()

    # -- export --------------------------------------------------------------------

    def export(self, out_dir: Union[str, Path]) -> List[Path]:
        """Write the CA certificate (never the key) as ``h2proxy-ca.pem`` (PEM) and ``h2proxy-ca.cer`` (DER)."""
        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        pem = out / "h2proxy-ca.pem"
        der = out / "h2proxy-ca.cer"
        _write_file(pem, self._ca_pem, 0o644)
        _write_file(der, self.cert.public_bytes(serialization.Encoding.DER), 0o644)
        return [pem, der]

    @property
    def fingerprint(self) -> str:
        """The CA certificate's SHA-256 fingerprint, as colon-separated hex."""
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe_ca(ca: CertificateAuthority) -> str:
    """What ``h2proxy ca`` prints: where the CA certificate is and how to trust it."""
    path = ca.ca_cert_path
    return f"""h2proxy CA certificate: {path}
  subject:     {ca.cert.subject.rfc4514_string()}
  valid until: {not_valid_after(ca.cert):%Y-%m-%d}
  SHA-256:     {ca.fingerprint}
Its private key ({ca.ca_key_path}) stays in that directory; never share it.
Trust the certificate only where you want h2proxy to be able to intercept TLS.

How to trust it:
  curl:      curl --cacert {path} https://...
  Python:    SSL_CERT_FILE={path} (ssl, urllib, httpx, aiohttp)
             REQUESTS_CA_BUNDLE={path} (requests)
  Node.js:   NODE_EXTRA_CA_CERTS={path}
  Firefox:   Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import...
  Chrome:    Settings > Privacy and security > Security > Manage certificates > Authorities > Import
             (on Linux; elsewhere Chrome uses the system store)
  Debian/Ubuntu (system-wide):
             sudo cp {path} /usr/local/share/ca-certificates/h2proxy.crt
             sudo update-ca-certificates
  Undo:      remove the file and run sudo update-ca-certificates --fresh
Export it as PEM and DER (h2proxy-ca.pem, h2proxy-ca.cer) with: h2proxy ca export DIR"""


def make_test_pki(directory: Union[str, Path], names=("127.0.0.1", "localhost", "::1")) -> Dict[str, str]:
    """A throwaway CA and a server certificate for ``names`` (by default 127.0.0.1, localhost, ::1), for tests.

    Nothing to do with the proxy's own CA. Returns paths as strings: ``ca``
    (CA certificate), ``ca_key``, ``cert`` (server certificate) and ``key``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca("h2proxy test CA", days=30)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(ca_cert, ca_key, key.public_key(), [normalize_name(n) for n in names], 30)
    paths = {"ca": d / "test-ca.pem", "ca_key": d / "test-ca-key.pem", "cert": d / "server.pem",
             "key": d / "server-key.pem"}
    _write_file(paths["ca"], _cert_pem(ca_cert), 0o644)
    _write_file(paths["ca_key"], _key_pem(ca_key), 0o600)
    _write_file(paths["cert"], _cert_pem(cert), 0o644)
    _write_file(paths["key"], _key_pem(key), 0o600)
    return {k: str(v) for k, v in paths.items()}
