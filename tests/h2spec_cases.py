"""Conformance cases in the layout of h2spec's list (http2/3.5 .. 8.2 and hpack/), as data.

Each :class:`Case` names the RFC rule it exercises (ids follow h2spec's numbering, which
follows RFC 7540's sections; the rules themselves are those of RFC 9113 and RFC 7541),
builds the bytes a misbehaving peer sends once the connection is up, and says how a
conformant endpoint must react. ``tests/test_conformance.py`` plays every case against
a ``--strict`` proxy from both of its sides:

* ``client``: the test is the HTTP/2 client, the proxy's upstream a real server;
* ``upstream``: the test is the server behind the proxy; a well-behaved client has sent
  a request through the proxy first (``Case.request``), and the test answers it badly.

Builders take a :class:`Ctx` and return a list of items: ``bytes`` (sent as they are) or
:class:`WaitFor` markers (pause until the peer under test sends a matching frame).
``Ctx.msg`` is the role's natural header block: a request when the test is the client,
the response to the open request (stream 1) when the test is the server; builders that
use only it and the frame helpers run unchanged from both sides.

The descriptions are written from RFC 9113 / RFC 7541, not copied from h2spec.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import hpack

# ----------------------------------------------------------------- constants

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = range(10)
CODE_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
              4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
              8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
              12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Bytes put in frames that must never reach the other side (the harness looks for them there).
LEAK = b"leak!"
#: A header that only appears in header blocks that must never reach the other side.
LEAK_HEADER = ("x-leak", "yes")

# ------------------------------------------------------------ frame helpers


def frame(t: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One frame, byte for byte: no check of any kind (that is the point)."""
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, t, flags, sid) + payload


def data(sid: int, payload: bytes = b"", end: bool = False, pad: Optional[int] = None,
         pad_length: Optional[int] = None) -> bytes:
    """DATA; ``pad`` bytes of padding, ``pad_length`` a Pad Length field that may lie."""
    flags = END_STREAM if end else 0
    if pad is None and pad_length is None:
        return frame(DATA, flags, sid, payload)
    pad = pad or 0
    return frame(DATA, flags | PADDED, sid,
                 bytes([pad if pad_length is None else pad_length]) + payload + b"\0" * pad)


def ping(payload: bytes = b"h2spec!!", ack: bool = False, sid: int = 0, flags: int = 0) -> bytes:
    return frame(PING, flags | (ACK if ack else 0), sid, payload)


def settings(*pairs: Tuple[int, int], ack: bool = False, sid: int = 0) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, sid, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


def window_update(sid: int, inc: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">L", inc))


def rst_stream(sid: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">L", code))


def priority(sid: int, depends_on: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, sid, struct.pack(">LB", depends_on | (0x80000000 if exclusive else 0), weight))


def goaway(last: int = 0, code: int = NO_ERROR, debug: bytes = b"", sid: int = 0) -> bytes:
    return frame(GOAWAY, 0, sid, struct.pack(">LL", last, code) + debug)


def continuation(sid: int, block: bytes = b"", end_headers: bool = True) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, block)


def headers_frame(sid: int, block: bytes, end: bool = True, end_headers: bool = True,
                  pad: Optional[int] = None, pad_length: Optional[int] = None,
                  depends_on: Optional[int] = None, weight: int = 15) -> bytes:
    flags = (END_STREAM if end else 0) | (END_HEADERS if end_headers else 0)
    body = block
    if depends_on is not None:
        flags |= PRIORITY_FLAG
        body = struct.pack(">LB", depends_on, weight) + body
    if pad is not None or pad_length is not None:
        flags |= PADDED
        pad = pad or 0
        body = bytes([pad if pad_length is None else pad_length]) + body + b"\0" * pad
    return frame(HEADERS, flags, sid, body)


def push_promise(sid: int, promised: int, block: bytes, end_headers: bool = True) -> bytes:
    return frame(PUSH_PROMISE, END_HEADERS if end_headers else 0, sid, struct.pack(">L", promised) + block)


def unknown_frame(t: int = 0xBE, flags: int = 0, sid: int = 0, payload: bytes = b"unknown") -> bytes:
    return frame(t, flags, sid, payload)


@dataclass(frozen=True)
class WaitFor:
    """Pause the sending until the peer under test sends a frame matching ``match``.

    ``match(type, flags, stream_id, payload) -> bool``.
    """
    match: Callable[[int, int, int, bytes], bool]
    what: str


def stream_ended(sid: int) -> WaitFor:
    return WaitFor(lambda t, f, s, p: s == sid and t in (DATA, HEADERS) and bool(f & END_STREAM),
                   f"END_STREAM on stream {sid}")


def data_on(sid: int) -> WaitFor:
    return WaitFor(lambda t, f, s, p: s == sid and t == DATA and len(p) > 0, f"DATA on stream {sid}")


# ------------------------------------------------------------------ context


class Ctx:
    """What a builder may use: the role, its HPACK encoder, what the peer announced."""

    def __init__(self, role: str, peer_settings: Optional[Dict[int, int]] = None,
                 authority: str = "127.0.0.1") -> None:
        assert role in ("client", "server")
        self.role = role
        self.enc = hpack.Encoder()
        self.peer_settings = dict(peer_settings or {})
        self.authority = authority

    @property
    def client(self) -> bool:
        return self.role == "client"

    @property
    def idle(self) -> int:
        """A stream id the peer must see as idle: the client's next id (stream 1 is open upstream)."""
        return 1 if self.client else 3

    def block(self, headers: Sequence[Tuple[str, str]]) -> bytes:
        return self.enc.encode(list(headers))

    def request(self, method: str = "GET", path: str = "/", extra=(), drop=(), replace=None) -> list:
        hdrs = [(":method", method), (":scheme", "http"), (":authority", self.authority), (":path", path)]
        return _edit(hdrs, extra, drop, replace)

    def response(self, status: str = "200", extra=(), drop=(), replace=None) -> list:
        return _edit([(":status", status)], extra, drop, replace)

    def fields(self, extra=(), drop=(), replace=None, end_body=None) -> list:
        """The role's first header list: a GET request (client) or a 200 response (server)."""
        return (self.request(extra=extra, drop=drop, replace=replace) if self.client
                else self.response(extra=extra, drop=drop, replace=replace))

    def msg(self, sid: int = 1, end: bool = True, extra=(), drop=(), replace=None, **kw) -> bytes:
        """HEADERS carrying the role's header list (see :meth:`fields`)."""
        return headers_frame(sid, self.block(self.fields(extra, drop, replace)), end=end, **kw)

    def post(self, sid: int = 1, extra=()) -> bytes:
        """Client role: open a stream with a request whose body is still to come."""
        return headers_frame(sid, self.block(self.request("POST", extra=extra)), end=False)

    def with_length(self, n: int, sid: int = 1) -> bytes:
        """HEADERS without END_STREAM declaring content-length ``n``: a POST, or a 200 response."""
        extra = [("content-length", str(n))]
        hdrs = self.request("POST", extra=extra) if self.client else self.response(extra=extra)
        return headers_frame(sid, self.block(hdrs), end=False)

    def headers(self, sid: int, hdrs, end: bool = True, **kw) -> bytes:
        return headers_frame(sid, self.block(hdrs), end=end, **kw)


def _edit(hdrs: list, extra, drop, replace) -> list:
    hdrs = [h for h in hdrs if h[0] not in drop]
    if replace:
        hdrs = [(k, replace.get(k, v)) for k, v in hdrs]
    return hdrs + list(extra)


# ------------------------------------------------------------- expectations


@dataclass(frozen=True)
class ConnError:
    """A connection error: GOAWAY with one of ``codes`` (and ``last`` as its last stream id when
    given), then the connection closes."""
    codes: Tuple[int, ...]
    last: Optional[int] = None

    def __str__(self) -> str:
        return "connection error " + "/".join(CODE_NAMES[c] for c in self.codes)


@dataclass(frozen=True)
class StreamError:
    """A stream error: RST_STREAM on ``sid`` with one of ``codes``; with ``conn_ok`` the RFC
    also allows a connection error with those codes. The connection stays usable after it."""
    codes: Tuple[int, ...]
    sid: int = 1
    conn_ok: bool = False

    def __str__(self) -> str:
        what = "stream error" + (" (or connection error)" if self.conn_ok else "")
        return f"{what} " + "/".join(CODE_NAMES[c] for c in self.codes) + f" on stream {self.sid}"


@dataclass(frozen=True)
class Alive:
    """No error: the connection stays open and a PING sent afterwards is answered.

    ``forbid``: a frame the peer must not send meanwhile (``match(type, flags, sid, payload)``).
    ``end_ok``: the peer may instead end the connection cleanly (GOAWAY NO_ERROR, or a close).
    """
    forbid: Optional[Callable[[int, int, int, bytes], bool]] = None
    end_ok: bool = False

    def __str__(self) -> str:
        return "stays open, PING answered"


@dataclass(frozen=True)
class Reply:
    """The peer sends a frame matching ``match`` (and no error before it), then stays open."""
    match: Callable[[int, int, int, bytes], bool]
    what: str

    def __str__(self) -> str:
        return f"replies with {self.what}"


@dataclass(frozen=True)
class Relayed:
    """Upstream side: the proxy passes the frame on as it is: the client sees an event matching
    ``match`` (an ``h2.events`` object) and the proxy records no violation. For frames after which
    the client cannot answer a PING probe (the ``h2`` library refuses frames after GOAWAY)."""
    match: Callable[[object], bool]
    what: str

    def __str__(self) -> str:
        return f"relayed: the client sees {self.what}"


@dataclass(frozen=True)
class Closed:
    """The connection is closed (a GOAWAY PROTOCOL_ERROR before the close is allowed)."""

    def __str__(self) -> str:
        return "connection closed"


def conn(*codes: int, last: Optional[int] = None) -> ConnError:
    return ConnError(tuple(codes), last)


def stream(*codes: int, sid: int = 1, conn_ok: bool = False) -> StreamError:
    return StreamError(tuple(codes), sid, conn_ok)


Expectation = Union[ConnError, StreamError, Alive, Reply, Relayed, Closed]
Builder = Callable[[Ctx], List[Union[bytes, WaitFor]]]

CLIENT_SIDE, UPSTREAM_SIDE = "client", "upstream"
BOTH = (CLIENT_SIDE, UPSTREAM_SIDE)


@dataclass
class Case:
    id: str
    description: str
    build: Builder
    expect: Expectation
    sides: Tuple[str, ...] = BOTH
    #: Upstream side: a different builder / expectation for the test in the server's role.
    build_up: Optional[Builder] = None
    expect_up: Optional[Expectation] = None
    #: Upstream side: the request the well-behaved client sends first: "get" (ends the
    #: stream), "post" (body still to come) or None (nothing).
    request: Optional[str] = "get"
    #: Upstream side: SETTINGS the well-behaved client announces (e.g. {ENABLE_PUSH: 0}).
    client_settings: Dict[int, int] = field(default_factory=dict)
    #: SETTINGS the test announces in its own handshake.
    settings: Tuple[Tuple[int, int], ...] = ()
    #: False: no handshake, the builder sends everything (preface included for the client role).
    handshake: bool = True
    #: side -> reason, for cases the proxy is known to get wrong.
    xfail: Dict[str, str] = field(default_factory=dict)

    def builder(self, side: str) -> Builder:
        return self.build_up if side == UPSTREAM_SIDE and self.build_up is not None else self.build

    def expectation(self, side: str) -> Expectation:
        return self.expect_up if side == UPSTREAM_SIDE and self.expect_up is not None else self.expect


def _is(t: int, flags: Optional[int] = None, sid: Optional[int] = None, length: Optional[int] = None,
        payload: Optional[bytes] = None):
    def match(ft, ff, fs, fp):
        return (ft == t and (flags is None or ff & flags == flags) and (sid is None or fs == sid)
                and (length is None or len(fp) == length) and (payload is None or fp == payload))
    return match


def _data_len(sid: int, n: int):
    return lambda t, f, s, p: t == DATA and s == sid and len(p) == n


def _raw_block(*parts: bytes) -> bytes:
    return b"".join(parts)


# HPACK building blocks (RFC 7541): ':method: GET' is static index 2, ':path: /' 4, ':scheme: http' 6.
_STATIC_GET = b"\x82\x86\x84"


def _authority_literal(authority: str = "127.0.0.1") -> bytes:
    """':authority' (static name index 1) as a literal without indexing, raw string."""
    value = authority.encode()
    return b"\x01" + bytes([len(value)]) + value


def _status_200() -> bytes:
    return b"\x88"                      # ':status: 200', static index 8


def _base_block(c: Ctx) -> bytes:
    """The role's minimal header list encoded by hand, without touching the dynamic table."""
    return _STATIC_GET + _authority_literal(c.authority) if c.client else _status_200()


def _hpack_case(tail: bytes, head: bytes = b""):
    """A header block of ``head`` + the role's minimal list + ``tail`` on a fresh stream/response."""
    return lambda c: [headers_frame(1, head + _base_block(c) + tail)]


# ------------------------------------------------------------------- the cases

CASES: List[Case] = []


def case(id: str, description: str, build: Builder, expect: Expectation, **kw) -> None:
    CASES.append(Case(id, description, build, expect, **kw))


# 3.5 Connection preface -------------------------------------------------------
case("3.5/1", "the connection preface followed by a SETTINGS frame is accepted",
     lambda c: [], Alive(), sides=(CLIENT_SIDE,))
case("3.5/2", "an invalid connection preface ends the connection (PROTOCOL_ERROR, GOAWAY optional)",
     lambda c: [b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings()], Closed(),
     sides=(CLIENT_SIDE,), handshake=False)
case("3.5/3", "the server's first frame is not SETTINGS: connection error PROTOCOL_ERROR",
     lambda c: [ping()], conn(PROTOCOL_ERROR), sides=(UPSTREAM_SIDE,), handshake=False)

# 4.1 Frame format ---------------------------------------------------------------
case("4.1/1", "a frame of an unknown type is ignored",
     lambda c: [unknown_frame()], Alive())
case("4.1/2", "undefined flags are ignored (PING with flags 0x16 is still answered)",
     lambda c: [ping(b"flags!!!", flags=0x16)],
     Reply(_is(PING, ACK, payload=b"flags!!!"), "PING ACK"))
case("4.1/3", "the reserved bit of the stream identifier is ignored",
     lambda c: [frame(PING, 0, 0x80000000, b"reserved")],
     Reply(_is(PING, ACK, payload=b"reserved"), "PING ACK"))

# 4.2 Frame size ----------------------------------------------------------------
case("4.2/1", "a DATA frame of exactly 2^14 octets is accepted",
     lambda c: ([c.post(1)] if c.client else [c.msg(1, end=False)]) + [data(1, b"a" * 16384, end=True)],
     Alive(), request="get")
case("4.2/2", "a DATA frame larger than SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR",
     lambda c: ([c.post(1)] if c.client else [c.msg(1, end=False)]) + [data(1, b"a" * 16385 + LEAK, end=True)],
     stream(FRAME_SIZE_ERROR, conn_ok=True))
case("4.2/3", "a HEADERS frame larger than SETTINGS_MAX_FRAME_SIZE: connection error FRAME_SIZE_ERROR",
     lambda c: [c.msg(1, extra=[("x-big", "a" * 30000)])], conn(FRAME_SIZE_ERROR))

# 4.3 Header compression ---------------------------------------------------------
case("4.3/1", "a header block that does not decode: connection error COMPRESSION_ERROR",
     lambda c: [headers_frame(1, b"\x00\x00\x00\x00")], conn(COMPRESSION_ERROR))
case("4.3/2", "a PRIORITY frame between HEADERS and its CONTINUATION: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), priority(1), continuation(1, b"")], conn(PROTOCOL_ERROR))
case("4.3/3", "HEADERS on another stream between HEADERS and its CONTINUATION: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), c.msg(3)] if c.client
     else [c.msg(1, end_headers=False), headers_frame(3, _status_200())],
     conn(PROTOCOL_ERROR))

# 5.1 Stream states ---------------------------------------------------------------
case("5.1/1", "idle: DATA: connection error PROTOCOL_ERROR",
     lambda c: [data(c.idle, LEAK)], conn(PROTOCOL_ERROR))
case("5.1/2", "idle: RST_STREAM: connection error PROTOCOL_ERROR",
     lambda c: [rst_stream(c.idle)], conn(PROTOCOL_ERROR))
case("5.1/3", "idle: WINDOW_UPDATE: connection error PROTOCOL_ERROR",
     lambda c: [window_update(c.idle, 100)], conn(PROTOCOL_ERROR))
case("5.1/4", "idle: CONTINUATION: connection error PROTOCOL_ERROR",
     lambda c: [continuation(c.idle, c.block(c.fields()))], conn(PROTOCOL_ERROR))
case("5.1/5", "half-closed (remote): DATA: stream error STREAM_CLOSED",
     lambda c: [c.msg(1, end=True), data(1, LEAK)], stream(STREAM_CLOSED, conn_ok=True), request="post")
case("5.1/6", "half-closed (remote): HEADERS: stream error STREAM_CLOSED",
     lambda c: [c.msg(1, end=True), c.headers(1, [LEAK_HEADER], end=True)],
     stream(STREAM_CLOSED, conn_ok=True), request="post")
case("5.1/7", "half-closed (remote): CONTINUATION: STREAM_CLOSED or (no open header block) PROTOCOL_ERROR",
     lambda c: [c.msg(1, end=True), continuation(1, c.block([LEAK_HEADER]))],
     stream(STREAM_CLOSED, PROTOCOL_ERROR, conn_ok=True), request="post")
case("5.1/8", "closed: DATA after the sender's RST_STREAM: stream error STREAM_CLOSED",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), rst_stream(1), data(1, LEAK)],
     stream(STREAM_CLOSED, conn_ok=True), request="post")
case("5.1/9", "closed: HEADERS after the sender's RST_STREAM: stream error STREAM_CLOSED",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), rst_stream(1),
                c.headers(1, [LEAK_HEADER], end=True)],
     stream(STREAM_CLOSED, conn_ok=True), request="post")
case("5.1/10", "closed: CONTINUATION after the sender's RST_STREAM: STREAM_CLOSED or PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), rst_stream(1), continuation(1, b"")],
     stream(STREAM_CLOSED, PROTOCOL_ERROR, conn_ok=True), request="post")
case("5.1/11", "closed: DATA after both sides ended the stream: stream error STREAM_CLOSED",
     lambda c: [c.msg(1, end=True), stream_ended(1), data(1, LEAK)] if c.client
     else [c.msg(1, end=True), data(1, LEAK)],
     stream(STREAM_CLOSED, conn_ok=True))
case("5.1/12", "closed: HEADERS after both sides ended the stream: stream error STREAM_CLOSED",
     lambda c: [c.msg(1, end=True), stream_ended(1), c.headers(1, [LEAK_HEADER], end=True)] if c.client
     else [c.msg(1, end=True), c.headers(1, [LEAK_HEADER], end=True)],
     stream(STREAM_CLOSED, conn_ok=True))
case("5.1/13", "closed: CONTINUATION after both sides ended the stream: STREAM_CLOSED or PROTOCOL_ERROR",
     lambda c: [c.msg(1, end=True), stream_ended(1), continuation(1, b"")] if c.client
     else [c.msg(1, end=True), continuation(1, b"")],
     stream(STREAM_CLOSED, PROTOCOL_ERROR, conn_ok=True))

# 5.1.1 Stream identifiers --------------------------------------------------------
case("5.1.1/1", "a client opens a stream with an even id: connection error PROTOCOL_ERROR "
     "(upstream: a server promises an odd id)",
     lambda c: [c.msg(2)], conn(PROTOCOL_ERROR),
     build_up=lambda c: [push_promise(1, 3, c.block(c.request()))])
case("5.1.1/2", "a new stream id lower than one already used: connection error PROTOCOL_ERROR "
     "(upstream: promised ids going down)",
     lambda c: [c.msg(5), c.msg(3)], conn(PROTOCOL_ERROR),
     build_up=lambda c: [push_promise(1, 4, c.block(c.request(path="/a"))),
                         push_promise(1, 2, c.block(c.request(path="/b")))],
     request="post")

# 5.1.2 Stream concurrency ---------------------------------------------------------
case("5.1.2/1", "one stream more than SETTINGS_MAX_CONCURRENT_STREAMS: stream error REFUSED_STREAM "
     "(or PROTOCOL_ERROR)",
     lambda c: [c.post(2 * i + 1) for i in range(c.peer_settings.get(MAX_CONCURRENT_STREAMS, 100) + 1)],
     lambda ctx: stream(REFUSED_STREAM, PROTOCOL_ERROR, conn_ok=True,
                        sid=2 * ctx.peer_settings.get(MAX_CONCURRENT_STREAMS, 100) + 1),
     sides=(CLIENT_SIDE,))


# 5.3.1 Stream dependencies --------------------------------------------------------
case("5.3.1/1", "HEADERS whose priority depends on its own stream: stream error PROTOCOL_ERROR",
     lambda c: [c.msg(1, depends_on=1, extra=[LEAK_HEADER])], stream(PROTOCOL_ERROR))
case("5.3.1/2", "PRIORITY that makes a stream depend on itself: stream error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), priority(1, depends_on=1)],
     stream(PROTOCOL_ERROR), request="post")

# 5.4.1 Connection error handling ---------------------------------------------------
case("5.4.1/1", "after a connection error the endpoint closes the TCP connection",
     lambda c: [ping(b"1234567")], conn(FRAME_SIZE_ERROR))
case("5.4.1/2", "the GOAWAY of a connection error names the last stream the endpoint processed",
     lambda c: [c.msg(1, end=True), stream_ended(1), ping(b"1234567")] if c.client else [ping(b"1234567")],
     conn(FRAME_SIZE_ERROR, last=1), expect_up=conn(FRAME_SIZE_ERROR, last=0))

# 5.5 Extensions -----------------------------------------------------------------------
case("5.5/1", "an unknown extension frame is ignored",
     lambda c: [unknown_frame(0x16, 0xFF, 0)], Alive())
case("5.5/2", "an unknown extension frame inside a header block: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), unknown_frame(0x16, 0, 1), continuation(1, b"")],
     conn(PROTOCOL_ERROR))

# 6.1 DATA --------------------------------------------------------------------------------
case("6.1/1", "DATA on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [data(0, LEAK)], conn(PROTOCOL_ERROR))
case("6.1/2", "DATA on a stream that is not open or half-closed (local): stream error STREAM_CLOSED",
     lambda c: [c.msg(1, end=True), data(1, LEAK)], stream(STREAM_CLOSED, conn_ok=True), request="post")
case("6.1/3", "DATA whose Pad Length is not less than the frame payload: connection error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), data(1, LEAK, pad_length=6)],
     conn(PROTOCOL_ERROR))

# 6.2 HEADERS ------------------------------------------------------------------------------
case("6.2/1", "HEADERS without END_HEADERS followed by PRIORITY: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), priority(1)], conn(PROTOCOL_ERROR))
case("6.2/2", "HEADERS without END_HEADERS followed by HEADERS on another stream: PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), c.msg(3)] if c.client
     else [c.msg(1, end_headers=False), headers_frame(3, _status_200())],
     conn(PROTOCOL_ERROR))
case("6.2/3", "HEADERS on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(0)], conn(PROTOCOL_ERROR))
case("6.2/4", "HEADERS whose Pad Length is not less than the frame payload: connection error PROTOCOL_ERROR",
     lambda c: [headers_frame(1, c.block(c.fields()), pad_length=200)], conn(PROTOCOL_ERROR))

# 6.3 PRIORITY ------------------------------------------------------------------------------
case("6.3/1", "PRIORITY on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [priority(0)], conn(PROTOCOL_ERROR))
case("6.3/2", "PRIORITY with a length other than 5: stream error FRAME_SIZE_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), frame(PRIORITY, 0, 1, b"\0\0\0\0")],
     stream(FRAME_SIZE_ERROR), request="post")

# 6.4 RST_STREAM ----------------------------------------------------------------------------
case("6.4/1", "RST_STREAM on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [rst_stream(0)], conn(PROTOCOL_ERROR))
case("6.4/2", "RST_STREAM on an idle stream: connection error PROTOCOL_ERROR",
     lambda c: [rst_stream(c.idle)], conn(PROTOCOL_ERROR))
case("6.4/3", "RST_STREAM with a length other than 4: connection error FRAME_SIZE_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), frame(RST_STREAM, 0, 1, b"\0\0\0\0\0")],
     conn(FRAME_SIZE_ERROR), request="post")

# 6.5 SETTINGS ------------------------------------------------------------------------------
case("6.5/1", "SETTINGS with ACK and a payload: connection error FRAME_SIZE_ERROR",
     lambda c: [frame(SETTINGS, ACK, 0, b"\0\x03\0\0\0\x10")], conn(FRAME_SIZE_ERROR))
case("6.5/2", "SETTINGS on a stream other than 0: connection error PROTOCOL_ERROR",
     lambda c: [settings(sid=1)], conn(PROTOCOL_ERROR))
case("6.5/3", "SETTINGS whose length is not a multiple of 6: connection error FRAME_SIZE_ERROR",
     lambda c: [frame(SETTINGS, 0, 0, b"\0\x03\0\0\0")], conn(FRAME_SIZE_ERROR))

# 6.5.2 Defined settings ------------------------------------------------------------------------
case("6.5.2/1", "SETTINGS_ENABLE_PUSH other than 0 or 1 (upstream: 1 from a server): PROTOCOL_ERROR",
     lambda c: [settings((ENABLE_PUSH, 2) if c.client else (ENABLE_PUSH, 1))], conn(PROTOCOL_ERROR))
case("6.5.2/2", "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1: connection error FLOW_CONTROL_ERROR",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 2 ** 31))], conn(FLOW_CONTROL_ERROR))
case("6.5.2/3", "SETTINGS_MAX_FRAME_SIZE below 16384: connection error PROTOCOL_ERROR",
     lambda c: [settings((MAX_FRAME_SIZE, 16383))], conn(PROTOCOL_ERROR))
case("6.5.2/4", "SETTINGS_MAX_FRAME_SIZE above 2^24-1: connection error PROTOCOL_ERROR",
     lambda c: [settings((MAX_FRAME_SIZE, 2 ** 24))], conn(PROTOCOL_ERROR))
case("6.5.2/5", "a SETTINGS parameter of unknown identifier is ignored (the frame is acknowledged)",
     lambda c: [settings((0xFF, 1))], Reply(_is(SETTINGS, ACK, length=0), "SETTINGS ACK"))

# 6.5.3 Settings synchronization -------------------------------------------------------------------
case("6.5.3/1", "values in one SETTINGS frame apply in order (INITIAL_WINDOW_SIZE 100 then 1)",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)),
                WaitFor(_is(SETTINGS, ACK), "SETTINGS ACK"), c.msg(1)],
     Reply(_data_len(1, 1), "DATA of 1 octet"), sides=(CLIENT_SIDE,))
case("6.5.3/2", "SETTINGS without ACK is acknowledged",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 65535))], Reply(_is(SETTINGS, ACK, length=0), "SETTINGS ACK"))

# 6.7 PING ----------------------------------------------------------------------------------------
case("6.7/1", "PING is answered with a PING ACK carrying the same data",
     lambda c: [ping(b"pingpong")], Reply(_is(PING, ACK, payload=b"pingpong"), "PING ACK"))
case("6.7/2", "PING with ACK set is not answered",
     lambda c: [ping(b"unasked!", ack=True)], Alive(forbid=_is(PING, payload=b"unasked!")))
case("6.7/3", "PING on a stream other than 0: connection error PROTOCOL_ERROR",
     lambda c: [ping(sid=1)], conn(PROTOCOL_ERROR))
case("6.7/4", "PING with a length other than 8: connection error FRAME_SIZE_ERROR",
     lambda c: [frame(PING, 0, 0, b"123456")], conn(FRAME_SIZE_ERROR))

# 6.8 GOAWAY ----------------------------------------------------------------------------------------
case("6.8/1", "GOAWAY on a stream other than 0: connection error PROTOCOL_ERROR",
     lambda c: [goaway(sid=1)], conn(PROTOCOL_ERROR))

# 6.9 WINDOW_UPDATE --------------------------------------------------------------------------------
case("6.9/1", "WINDOW_UPDATE with an increment of 0 on the connection: connection error PROTOCOL_ERROR",
     lambda c: [window_update(0, 0)], conn(PROTOCOL_ERROR))
case("6.9/2", "WINDOW_UPDATE with an increment of 0 on a stream: stream error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), window_update(1, 0)],
     stream(PROTOCOL_ERROR, conn_ok=True), request="post")
case("6.9/3", "WINDOW_UPDATE with a length other than 4: connection error FRAME_SIZE_ERROR",
     lambda c: [frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\x01\0")], conn(FRAME_SIZE_ERROR))

# 6.9.1 The flow-control window -----------------------------------------------------------------
case("6.9.1/1", "after SETTINGS_INITIAL_WINDOW_SIZE = 1 the response comes in 1-octet DATA",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 1)), WaitFor(_is(SETTINGS, ACK), "SETTINGS ACK"), c.msg(1)],
     Reply(_data_len(1, 1), "DATA of 1 octet"), sides=(CLIENT_SIDE,))
case("6.9.1/2", "WINDOW_UPDATEs raising the connection window above 2^31-1: connection error "
     "FLOW_CONTROL_ERROR",
     lambda c: [window_update(0, 2 ** 31 - 1), window_update(0, 2 ** 31 - 1)], conn(FLOW_CONTROL_ERROR))
case("6.9.1/3", "WINDOW_UPDATEs raising a stream window above 2^31-1: stream error FLOW_CONTROL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False),
                window_update(1, 2 ** 31 - 1), window_update(1, 2 ** 31 - 1)],
     stream(FLOW_CONTROL_ERROR), request="post")

# 6.9.2 Initial flow-control window size -----------------------------------------------------------
case("6.9.2/1", "SETTINGS_INITIAL_WINDOW_SIZE changed after HEADERS applies to the open stream",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 0)), WaitFor(_is(SETTINGS, ACK), "SETTINGS ACK"), c.msg(1),
                WaitFor(_is(HEADERS, sid=1), "response HEADERS"), settings((INITIAL_WINDOW_SIZE, 1))],
     Reply(_data_len(1, 1), "DATA of 1 octet"), sides=(CLIENT_SIDE,))
case("6.9.2/2", "a SETTINGS frame may make a stream window negative; WINDOW_UPDATE then reopens it",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 3)), WaitFor(_is(SETTINGS, ACK), "SETTINGS ACK"), c.msg(1),
                WaitFor(_data_len(1, 3), "DATA of 3 octets"), settings((INITIAL_WINDOW_SIZE, 2)),
                WaitFor(_is(SETTINGS, ACK), "SETTINGS ACK"), window_update(1, 2)],
     Reply(_data_len(1, 1), "DATA of 1 octet"), sides=(CLIENT_SIDE,))
case("6.9.2/3", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31: connection error FLOW_CONTROL_ERROR",
     lambda c: [settings((INITIAL_WINDOW_SIZE, 2 ** 31))], conn(FLOW_CONTROL_ERROR))

# 6.10 CONTINUATION ---------------------------------------------------------------------------------
case("6.10/1", "a header block split over HEADERS and several CONTINUATION frames is accepted",
     lambda c: _split(c, c.fields(extra=[("x-a", "a" * 40), ("x-b", "b" * 40)]), 3),
     Reply(_is(HEADERS, sid=1), "response HEADERS"), expect_up=Alive())
case("6.10/2", "CONTINUATION followed by a frame other than CONTINUATION: connection error PROTOCOL_ERROR",
     lambda c: _split(c, c.fields(), 2, last_ends=False) + [data(1, LEAK)], conn(PROTOCOL_ERROR))
case("6.10/3", "CONTINUATION on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end_headers=False), continuation(0, b"")], conn(PROTOCOL_ERROR))
case("6.10/4", "CONTINUATION after HEADERS with END_HEADERS: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end=True), continuation(1, c.block([LEAK_HEADER]))], conn(PROTOCOL_ERROR))
case("6.10/5", "CONTINUATION after a CONTINUATION with END_HEADERS: connection error PROTOCOL_ERROR",
     lambda c: _split(c, c.fields(), 2) + [continuation(1, c.block([LEAK_HEADER]))], conn(PROTOCOL_ERROR))
case("6.10/6", "CONTINUATION after DATA: connection error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), data(1, b"x"), continuation(1, b"")],
     conn(PROTOCOL_ERROR), request="post")


def _split(c: Ctx, hdrs, parts: int, last_ends: bool = True, end: bool = True) -> List[bytes]:
    block = c.block(hdrs)
    step = max(1, -(-len(block) // parts))
    chunks = [block[i:i + step] for i in range(0, len(block), step)]
    while len(chunks) < parts:
        chunks.append(b"")
    out = [headers_frame(1, chunks[0], end=end, end_headers=False)]
    for i, chunk in enumerate(chunks[1:], 1):
        out.append(continuation(1, chunk, end_headers=last_ends and i == len(chunks) - 1))
    return out


# 7 Error codes ---------------------------------------------------------------------------------------
case("7/1", "GOAWAY with an unknown error code is not an error (no special behaviour: the peer may only "
     "end the connection as after any GOAWAY)",
     lambda c: [goaway(0, 0xFF)], Alive(end_ok=True),
     expect_up=Relayed(lambda e: type(e).__name__ == "ConnectionTerminated" and e.error_code == 0xFF,
                       "the GOAWAY with its unknown code"))
case("7/2", "RST_STREAM with an unknown error code is not an error",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), rst_stream(1, 0xFF)], Alive(), request="post")

# 8.1 HTTP message exchange ------------------------------------------------------------------------------
case("8.1/1", "a second header block (trailers) without END_STREAM: stream error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), data(1, b"body"),
                c.headers(1, [("x-trailer", "1"), LEAK_HEADER], end=False)],
     stream(PROTOCOL_ERROR), request="post")
case("8.1.2/1", "a field name with uppercase letters: stream error PROTOCOL_ERROR (malformed)",
     lambda c: [c.msg(1, extra=[("X-Upper", "1"), LEAK_HEADER])], stream(PROTOCOL_ERROR))

# 8.1.2.1 Pseudo-header fields
case("8.1.2.1/1", "an unknown pseudo-header: stream error PROTOCOL_ERROR",
     lambda c: [c.headers(1, _insert_pseudo(c.fields(extra=[LEAK_HEADER]), (":custom", "x")))],
     stream(PROTOCOL_ERROR))
case("8.1.2.1/2", "a pseudo-header of the other kind of message (:status in a request, :path in a "
     "response): stream error PROTOCOL_ERROR",
     lambda c: [c.headers(1, _insert_pseudo(c.fields(extra=[LEAK_HEADER]),
                                             (":status", "200") if c.client else (":path", "/")))],
     stream(PROTOCOL_ERROR))
case("8.1.2.1/3", "a pseudo-header in trailers: stream error PROTOCOL_ERROR",
     lambda c: [c.post(1) if c.client else c.msg(1, end=False), data(1, b"body"),
                c.headers(1, [(":method" if c.client else ":status", "GET" if c.client else "200"),
                              ("x-trailer", "1"), LEAK_HEADER], end=True)],
     stream(PROTOCOL_ERROR), request="post")
case("8.1.2.1/4", "a pseudo-header after a regular field: stream error PROTOCOL_ERROR",
     lambda c: [c.headers(1, [("x-first", "1")] + c.fields(extra=[LEAK_HEADER]))], stream(PROTOCOL_ERROR))


def _insert_pseudo(hdrs: list, pseudo: Tuple[str, str]) -> list:
    n = sum(1 for k, _ in hdrs if k.startswith(":"))
    return hdrs[:n] + [pseudo] + hdrs[n:]


# 8.1.2.2 Connection-specific header fields
case("8.1.2.2/1", "a connection-specific field (Connection): stream error PROTOCOL_ERROR",
     lambda c: [c.msg(1, extra=[("connection", "keep-alive"), LEAK_HEADER])], stream(PROTOCOL_ERROR))
case("8.1.2.2/2", "TE with a value other than \"trailers\": stream error PROTOCOL_ERROR",
     lambda c: [c.msg(1, extra=[("te", "trailers, deflate"), LEAK_HEADER])], stream(PROTOCOL_ERROR))

# 8.1.2.3 Request pseudo-header fields (client side) / 8.1.2.4 response pseudo-header fields (upstream side)
_REQ_PSEUDO = [
    ("8.1.2.3/1", "a request with an empty :path", dict(replace={":path": ""})),
    ("8.1.2.3/2", "a request without :method", dict(drop=(":method",))),
    ("8.1.2.3/3", "a request without :scheme", dict(drop=(":scheme",))),
    ("8.1.2.3/4", "a request without :path", dict(drop=(":path",))),
]
for _id, _desc, _kw in _REQ_PSEUDO:
    case(_id, f"{_desc}: stream error PROTOCOL_ERROR (malformed)",
         (lambda kw: lambda c: [c.headers(1, c.request(extra=[LEAK_HEADER], **kw))])(_kw),
         stream(PROTOCOL_ERROR), sides=(CLIENT_SIDE,))
for _n, _name, _value in ((5, ":method", "GET"), (6, ":scheme", "http"), (7, ":path", "/")):
    case(f"8.1.2.3/{_n}", f"a request with {_name} twice: stream error PROTOCOL_ERROR (malformed)",
         (lambda nv: lambda c: [c.headers(1, _insert_pseudo(c.request(extra=[LEAK_HEADER]), nv))])(
             (_name, _value)),
         stream(PROTOCOL_ERROR), sides=(CLIENT_SIDE,))
case("8.1.2.4/1", "a response without :status: stream error PROTOCOL_ERROR (malformed)",
     lambda c: [c.headers(1, [("x-no-status", "1"), LEAK_HEADER])], stream(PROTOCOL_ERROR),
     sides=(UPSTREAM_SIDE,))
case("8.1.2.4/2", "a response with :status twice: stream error PROTOCOL_ERROR (malformed)",
     lambda c: [c.headers(1, [(":status", "200"), (":status", "204"), LEAK_HEADER])], stream(PROTOCOL_ERROR),
     sides=(UPSTREAM_SIDE,))
case("8.1.2.4/3", "a :status that is not a three-digit code: stream error PROTOCOL_ERROR (malformed)",
     lambda c: [c.headers(1, [(":status", "20x"), LEAK_HEADER])], stream(PROTOCOL_ERROR),
     sides=(UPSTREAM_SIDE,))
case("8.1.2.4/4", "an informational (1xx) response with END_STREAM: stream error PROTOCOL_ERROR",
     lambda c: [c.headers(1, [(":status", "103"), LEAK_HEADER], end=True)], stream(PROTOCOL_ERROR),
     sides=(UPSTREAM_SIDE,))

# 8.1.2.6 Malformed messages: content-length
case("8.1.2.6/1", "content-length that does not match the DATA payload: stream error PROTOCOL_ERROR",
     lambda c: [c.with_length(1), data(1, b"ab" + LEAK, end=True)],
     stream(PROTOCOL_ERROR), request="post")
case("8.1.2.6/2", "content-length that does not match the sum of several DATA payloads: stream error "
     "PROTOCOL_ERROR",
     lambda c: [c.with_length(8), data(1, b"1234"), data(1, b"56789" + LEAK, end=True)],
     stream(PROTOCOL_ERROR), request="post")
case("8.1.2.6/3", "a stream ended before its content-length is reached: stream error PROTOCOL_ERROR",
     lambda c: [c.with_length(10), data(1, b"123" + LEAK, end=True)],
     stream(PROTOCOL_ERROR), request="post")

# 8.2 Server push -----------------------------------------------------------------------------------------
case("8.2/1", "a client sends PUSH_PROMISE: connection error PROTOCOL_ERROR",
     lambda c: [c.post(1), push_promise(1, 2, c.block(c.request()))], conn(PROTOCOL_ERROR),
     sides=(CLIENT_SIDE,))
case("8.2/2", "PUSH_PROMISE although the client set SETTINGS_ENABLE_PUSH to 0: connection error "
     "PROTOCOL_ERROR",
     lambda c: [push_promise(1, 2, c.block(c.request(path="/pushed", extra=[LEAK_HEADER])))],
     conn(PROTOCOL_ERROR), sides=(UPSTREAM_SIDE,), client_settings={ENABLE_PUSH: 0})
case("8.2/3", "PUSH_PROMISE on stream 0: connection error PROTOCOL_ERROR",
     lambda c: [push_promise(0, 2, c.block(c.request(path="/pushed", extra=[LEAK_HEADER])))],
     conn(PROTOCOL_ERROR), sides=(UPSTREAM_SIDE,))
case("8.2/4", "PUSH_PROMISE on a stream the client never opened: connection error PROTOCOL_ERROR",
     lambda c: [push_promise(3, 2, c.block(c.request(path="/pushed", extra=[LEAK_HEADER])))],
     conn(PROTOCOL_ERROR), sides=(UPSTREAM_SIDE,))
case("8.2/5", "PUSH_PROMISE on a stream already closed: connection error PROTOCOL_ERROR",
     lambda c: [c.msg(1, end=True), push_promise(1, 2, c.block(c.request(path="/pushed", extra=[LEAK_HEADER])))],
     conn(PROTOCOL_ERROR, STREAM_CLOSED), sides=(UPSTREAM_SIDE,))
case("8.2/6", "a pushed request with an unsafe method (POST): stream error PROTOCOL_ERROR on the promised "
     "stream",
     lambda c: [push_promise(1, 2, c.block(c.request("POST", path="/pushed", extra=[LEAK_HEADER])))],
     stream(PROTOCOL_ERROR, sid=2), sides=(UPSTREAM_SIDE,))
case("8.2/7", "a pushed request without :path: stream error PROTOCOL_ERROR on the promised stream",
     lambda c: [push_promise(1, 2, c.block(c.request(drop=(":path",), extra=[LEAK_HEADER])))],
     stream(PROTOCOL_ERROR, sid=2), sides=(UPSTREAM_SIDE,))
case("8.2/8", "DATA on a reserved (remote) stream before its HEADERS: connection error PROTOCOL_ERROR",
     lambda c: [push_promise(1, 2, c.block(c.request(path="/pushed"))), data(2, LEAK)],
     conn(PROTOCOL_ERROR), sides=(UPSTREAM_SIDE,))
case("8.2/9", "a well-formed push (PUSH_PROMISE, then the pushed response) is accepted",
     lambda c: [push_promise(1, 2, c.block(c.request(path="/pushed"))), c.msg(1, end=True),
                headers_frame(2, c.block(c.response(extra=[("content-length", "2")])), end=False),
                data(2, b"ok", end=True)],
     Alive(), sides=(UPSTREAM_SIDE,))

# hpack/ ---------------------------------------------------------------------------------------------------
case("hpack/2.3.3/1", "an indexed field with an index past the static and dynamic tables: connection error "
     "COMPRESSION_ERROR", _hpack_case(b"\xff\x80\x01"), conn(COMPRESSION_ERROR))   # index 255
case("hpack/2.3.3/2", "a literal field whose name index is past both tables: connection error COMPRESSION_ERROR",
     _hpack_case(b"\x0f\x80\x01\x01x"), conn(COMPRESSION_ERROR))                    # name index 143
case("hpack/4.2/1", "a dynamic table size update after the first field: connection error COMPRESSION_ERROR",
     _hpack_case(b"\x20"), conn(COMPRESSION_ERROR))
case("hpack/5.2/1", "a Huffman string padded with more than 7 bits: connection error COMPRESSION_ERROR",
     # literal, new name 'x-a' (raw), value Huffman: 'a' (00011) + 11 bits of padding (0x1f 0xff)
     _hpack_case(b"\x00\x03x-a\x82\x1f\xff"), conn(COMPRESSION_ERROR))
case("hpack/5.2/2", "a Huffman string padded with zeros instead of the EOS prefix: connection error "
     "COMPRESSION_ERROR", _hpack_case(b"\x00\x03x-a\x81\x18"), conn(COMPRESSION_ERROR))
case("hpack/5.2/3", "a Huffman string that contains the EOS symbol: connection error COMPRESSION_ERROR",
     _hpack_case(b"\x00\x03x-a\x84\xff\xff\xff\xff"), conn(COMPRESSION_ERROR))
case("hpack/6.1/1", "an indexed field with index 0: connection error COMPRESSION_ERROR",
     _hpack_case(b"\x80"), conn(COMPRESSION_ERROR))
case("hpack/6.3/1", "a dynamic table size update above SETTINGS_HEADER_TABLE_SIZE: connection error "
     "COMPRESSION_ERROR", _hpack_case(b"", head=b"\x3f\xe1\x3f"), conn(COMPRESSION_ERROR))   # 8192


def by_side(side: str) -> List[Case]:
    return [c for c in CASES if side in c.sides]


def expectation_for(c: Case, side: str, ctx: Ctx) -> Expectation:
    """The case's expectation for this side (some depend on what the peer announced)."""
    expect = c.expectation(side)
    return expect(ctx) if callable(expect) and not isinstance(expect, (ConnError, StreamError, Alive, Reply,
                                                                          Relayed, Closed)) else expect
