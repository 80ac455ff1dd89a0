"""SSL contexts for both legs of the proxy, with ALPN and SSLKEYLOGFILE support.

About refusing clients that do not offer ``h2`` (RFC 7301 section 3.2 wants a
fatal ``no_application_protocol`` alert): OpenSSL sends that alert when the
server's ALPN select callback returns ``SSL_TLSEXT_ERR_ALERT_FATAL``, but the
callback CPython installs for :meth:`ssl.SSLContext.set_alpn_protocols`
returns ``SSL_TLSEXT_ERR_NOACK`` when nothing matches, so the handshake simply
completes without a protocol and no alert is ever sent. Nothing else in the
ssl module sees the client's ALPN list before the handshake ends (the SNI
callback, which may return an alert, runs before ALPN is looked at and is not
given the offer).

What we do instead, in two layers:

* after the handshake, :func:`alpn_refused` tells whether a connection ended
  up without ``h2``; the demo origin, for example, closes such connections
  at once (the client sees the connection closed, not the alert);
* the proxy's TLS listener gets the real alert on the wire by reading the
  ClientHello before the handshake (:mod:`proxy.tlspeek`): when ``h2`` is not
  offered it writes the plaintext ``no_application_protocol`` alert record
  itself and closes, so OpenSSL and Python clients report "no application
  protocol".
"""
from __future__ import annotations

import os
import ssl
from typing import Optional, Sequence

H2 = "h2"
#: TLS 1.2 suites acceptable for HTTP/2: ECDHE or DHE key exchange, AES-GCM or ChaCha20-Poly1305.
H2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def server_context(certfile: str, keyfile: str, alpn: Optional[Sequence[str]] = ("h2",)) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``certfile`` (a chain is fine) and offering ``alpn``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    # RFC 9113 9.2: no compression, no renegotiation, and under TLS 1.2 only
    # ephemeral key exchange with AEAD ciphers (the suites of RFC 7540
    # appendix A are refused by h2 clients). TLS 1.3 suites are all fine.
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    # Among those suites the client's order decides (Python turns the server's order on by default).
    # The server's order is OpenSSL's, AES-256-GCM first, and the ssl module cannot change it for TLS
    # 1.3; browsers, grpc (BoringSSL) and nghttp2's tools put AES-128-GCM first, as nghttpx's own order
    # does: cheaper on both ends, and a debugging proxy that takes what the client asked for shows the
    # client's own choice.
    ctx.options &= ~getattr(ssl, "OP_CIPHER_SERVER_PREFERENCE", 0)
    ctx.set_ciphers(H2_TLS12_CIPHERS)
    keylog(ctx)
    return ctx


def client_context(verify: bool = True, cafile: Optional[str] = None,
                   alpn: Optional[Sequence[str]] = ("h2",)) -> ssl.SSLContext:
    """A TLS 1.2+ client context.

    With ``verify`` the server must present a certificate that chains to the
    system store, or to ``cafile`` alone when it is given, for the host name
    asked for (``check_hostname``). Without it nothing is checked.
    """
    if verify:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        ctx.check_hostname = True
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    keylog(ctx)
    return ctx


def alpn_refused(ssl_object, protocol: str = H2) -> bool:
    """True when a completed handshake did not select ``protocol`` (by default ``h2``).

    That is the case when the client offered no ALPN at all or only other
    protocols. The caller should close the connection: the ssl module offers no
    way to send ``no_application_protocol`` at this point (see the module
    docstring). ``None`` (no TLS) is never refused.
    """
    if ssl_object is None:
        return False
    return ssl_object.selected_alpn_protocol() != protocol


def keylog(ctx: ssl.SSLContext) -> None:
    """Honour SSLKEYLOGFILE (NSS key log format), so a capture of either leg can be decrypted."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        ctx.keylog_filename = path
