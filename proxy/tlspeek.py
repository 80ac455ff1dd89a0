"""Reading a TLS ClientHello before the handshake, to refuse clients that do not offer h2.

RFC 7301 section 3.2 wants a server that shares no protocol with the client to
answer with a fatal ``no_application_protocol`` alert. Python's ssl module
cannot do that (its ALPN callback only declines, and asyncio and uvloop drop
alerts queued during a failed handshake), so the listener peeks at the
ClientHello with MSG_PEEK, sends the alert record itself when ``h2`` is not
offered, and otherwise hands the untouched socket to the TLS layer.
"""
from __future__ import annotations

import struct
from typing import List, Union

#: A plaintext TLS alert record: fatal (2), no_application_protocol (120).
NO_APPLICATION_PROTOCOL_ALERT = bytes([21, 3, 3, 0, 2, 2, 120])

#: The ClientHello has not fully arrived yet.
INCOMPLETE = "incomplete"
#: The bytes are not a TLS ClientHello.
NOT_TLS = "not-tls"

MAX_HELLO = 16384 + 5


def client_hello_alpn(data: bytes) -> Union[List[bytes], None, str]:
    """The ALPN protocol names a ClientHello offers.

    Returns a list (possibly empty when the extension is absent), None when the
    offer cannot be read here (a ClientHello split over several TLS records),
    ``INCOMPLETE`` when more bytes are needed, or ``NOT_TLS``.
    """
    if len(data) < 5:
        return INCOMPLETE
    if data[0] != 22 or data[1] != 3:
        return NOT_TLS
    record_len = struct.unpack_from(">H", data, 3)[0]
    if len(data) < 5 + record_len:
        return INCOMPLETE if 5 + record_len <= MAX_HELLO else NOT_TLS
    body = data[5:5 + record_len]
    try:
        if body[0] != 1:
            return NOT_TLS
        hello_len = int.from_bytes(body[1:4], "big")
        if hello_len + 4 > len(body):
            # A ClientHello spread over several records: not known here, let the TLS layer decide.
            return None
        p = 4 + 2 + 32                      # header, legacy version, random
        p += 1 + body[p]                     # session id
        p += 2 + struct.unpack_from(">H", body, p)[0]   # cipher suites
        p += 1 + body[p]                     # compression methods
        if p >= 4 + hello_len:
            return []
        ext_end = p + 2 + struct.unpack_from(">H", body, p)[0]
        p += 2
        while p + 4 <= ext_end:
            ext_type, ext_len = struct.unpack_from(">HH", body, p)
            p += 4
            if ext_type == 16:               # application_layer_protocol_negotiation
                q = p + 2
                names = []
                while q < p + ext_len:
                    n = body[q]
                    names.append(bytes(body[q + 1:q + 1 + n]))
                    q += 1 + n
                return names
            p += ext_len
        return []
    except (IndexError, struct.error):
        return NOT_TLS
