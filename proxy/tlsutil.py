"""SSL contexts for both legs, with ALPN and SSLKEYLOGFILE support."""
from __future__ import annotations

import os
import ssl
from typing import Optional, Sequence


def server_context(certfile: str, keyfile: str, alpn: Optional[Sequence[str]] = ("h2",)) -> ssl.SSLContext:
    """A TLS 1.2+ server context offering ``alpn``.

    Python's ssl module cannot send the no_application_protocol alert itself;
    the listener reads the ClientHello first for that (see :mod:`proxy.tlspeek`).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    # RFC 9113 9.2.2: no renegotiation, no compression.
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    keylog(ctx)
    return ctx


def client_context(verify: bool = True, cafile: Optional[str] = None,
                   alpn: Optional[Sequence[str]] = ("h2",)) -> ssl.SSLContext:
    """A client context: the system store (or ``cafile``) and hostname checks unless ``verify`` is off."""
    if verify:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    keylog(ctx)
    return ctx


def keylog(ctx: ssl.SSLContext) -> None:
    """Honour SSLKEYLOGFILE, so that a capture of either leg can be decrypted."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        ctx.keylog_filename = path
