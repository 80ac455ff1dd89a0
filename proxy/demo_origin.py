"""The embedded demo origin: a small HTTP/2 server built on the ``h2`` library.

It gives ``make run`` something to proxy, and because ``h2`` is an HTTP/2
implementation independent of the proxy's own frame codec it is also a peer
the tests check the proxy against.

Routes (GET and HEAD; other methods get 405, unknown paths 404):

============  ================================================================
``/``         a small HTML page listing the routes
``/big``      10 MiB (``BIG`` bytes) of the deterministic pattern
``/size/N``   exactly N bytes of the pattern (0 <= N <= 1 GiB)
``/altsvc``   200, and an ALTSVC frame on the stream (``h2="127.0.0.1:PORT"; ma=60``)
``/push``     an HTML page; pushes ``/pushed.css`` first when the client allows push
``/echo``     the request headers and body as JSON (POST and PUT allowed too)
``/headers``  the request headers as JSON
============  ================================================================

Byte ``i`` of every pattern body is ``i % 256`` (see :func:`body_bytes`).
Bodies are sent as flow control allows: each batch of events received is
followed by a pass over the streams with data left (oldest response first,
each as far as its window and the connection's allow), so window updates
(``WindowUpdated``, a new ``INITIAL_WINDOW_SIZE``) resume them and many
concurrent large responses share the connection. The sender stops while the
transport's write buffer is above its high-water mark and resumes from
``resume_writing``.

Standalone::

    python -m proxy.demo_origin --port 9000 [--tls]

prints ``demo origin listening on h2c://127.0.0.1:9000`` (or ``https://...``)
on stdout once it accepts connections; with ``--tls`` it makes a throwaway CA
and server certificate and names the CA file on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
from typing import Callable, Dict, List, Optional, Tuple, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from .signals import stop_event

log = logging.getLogger("h2proxy.origin")

SERVER = "h2proxy-demo-origin"
BIG = 10 * 1024 * 1024
MAX_SIZE = 1 << 30
MAX_ECHO = 16 << 20              # request bodies beyond this get 413 on /echo

#: The largest piece of a pattern body handed to h2 at once (frames are usually 16 KiB).
_CHUNK = 256 * 1024
#: Pattern bytes, long enough to slice any chunk at any offset modulo 256.
_CYCLE = memoryview(bytes(range(256)) * (_CHUNK // 256 + 1))
#: Write to the socket once this much is queued in h2 during one pass.
_FLUSH_AT = 256 * 1024
_HIGH_WATER = 1 << 20

INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>h2proxy demo origin</title>
<link rel="stylesheet" href="/pushed.css"></head>
<body><h1>h2proxy demo origin</h1><ul>
<li><a href="/big">/big</a>: 10 MiB</li>
<li><a href="/size/1024">/size/N</a>: N bytes</li>
<li><a href="/altsvc">/altsvc</a>: also sends an ALTSVC frame</li>
<li><a href="/push">/push</a>: pushes /pushed.css</li>
<li>/echo: echoes the request headers and body (POST allowed)</li>
<li><a href="/headers">/headers</a>: the request headers</li>
</ul></body></html>
"""
CSS = b"body { font-family: sans-serif; margin: 2em; }\n"

_SERVER_HEADER = (b"server", SERVER.encode())
_TYPES = {name: (b"content-type", value.encode()) for name, value in (
    ("html", "text/html; charset=utf-8"), ("css", "text/css"), ("text", "text/plain; charset=utf-8"),
    ("bin", "application/octet-stream"), ("json", "application/json"))}
_STATUS = {code: (b":status", str(code).encode()) for code in (200, 400, 404, 405, 413)}


def body_bytes(size: int) -> bytes:
    """The first ``size`` bytes of the pattern every pattern body carries (byte ``i`` is ``i % 256``)."""
    whole, rest = divmod(size, 256)
    return bytes(range(256)) * whole + bytes(range(rest))


def _json(obj) -> bytes:
    """Compact JSON on one line, then a newline."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _Out:
    """The rest of one response body: ``data`` (bytes), or the pattern when ``data`` is None."""

    __slots__ = ("data", "pos", "size")

    def __init__(self, data: Optional[bytes], size: int) -> None:
        self.data = memoryview(data) if data is not None else None
        self.pos = 0
        self.size = size

    def take(self, n: int) -> memoryview:
        pos = self.pos
        self.pos = pos + n
        if self.data is None:
            off = pos & 255
            return _CYCLE[off:off + n]
        return self.data[pos:pos + n]


class _Request:
    __slots__ = ("headers", "body", "too_big")

    def __init__(self, headers: List[Tuple[str, str]]) -> None:
        self.headers = headers
        self.body = bytearray()
        self.too_big = False


class OriginProtocol(asyncio.Protocol):
    """One client connection of the demo origin."""

    def __init__(self, origin: "DemoOrigin") -> None:
        self.origin = origin
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8",
            # our own response headers are valid already: skip h2's per-header checks on the way out
            validate_outbound_headers=False, normalize_outbound_headers=False))
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16})
        self.transport: asyncio.Transport     # set by connection_made, before any other callback
        self.requests: Dict[int, _Request] = {}
        self.pending: Dict[int, _Out] = {}
        self.paused = False
        self.closed = False

    # -- transport callbacks --------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.origin.connections.add(self)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            from .tlsutil import alpn_refused
            if alpn_refused(sslobj):
                log.info("demo origin: TLS client did not negotiate h2 (ALPN %r); closing",
                         sslobj.selected_alpn_protocol())
                self.closed = True
                transport.close()
                return
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 24)
        self._flush()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.origin.connections.discard(self)
        self.pending.clear()
        self.requests.clear()
        self.origin._lost(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if not self.closed:
            self._pump()

    def eof_received(self):
        return False             # close our side too

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("demo origin: protocol error from client: %s", exc)
            if conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                # h2 queues a GOAWAY for errors in frames, not for a bad connection preface
                try:
                    conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                except h2.exceptions.ProtocolError:
                    pass
            self._close()
            return
        try:
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    # header_encoding="utf-8" (see __init__): h2 hands out str pairs.
                    self.requests[event.stream_id] = _Request(cast(List[Tuple[str, str]], event.headers))
                    if event.stream_ended is not None:
                        self._respond(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    req = self.requests.get(event.stream_id)
                    if req is not None:
                        if len(req.body) + len(event.data) <= MAX_ECHO:
                            req.body += event.data
                        else:
                            req.too_big = True
                    if event.flow_controlled_length:
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id in self.requests:
                        self._respond(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.pending.pop(event.stream_id, None)
                    self.requests.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    # h2 will not send on a connection the peer has sent GOAWAY on: we are done
                    self._close()
                    return
        except h2.exceptions.ProtocolError as exc:
            log.info("demo origin: closing the connection: %s", exc)
            self._close()
            return
        if self.pending:
            self._pump()
        else:
            self._flush()

    # -- sending ----------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        if not self.closed:
            self._flush()
            self.closed = True
            self.pending.clear()
            self.transport.close()

    def goaway(self) -> None:
        """Send GOAWAY (no error) and close once it is written."""
        if not self.closed:
            try:
                self.conn.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self._close()

    def _pump(self) -> None:
        """Send response bodies, oldest response first, as far as flow control and the socket allow.

        Each stream sends what its own window (and the connection's) allows,
        then the next one gets the rest of the connection window; a stream
        waiting for a WINDOW_UPDATE never holds up the others.
        """
        conn = self.conn
        pending = self.pending
        queued = 0
        try:
            max_frame = min(conn.max_outbound_frame_size, _CHUNK)
            for sid in list(pending):
                out = pending[sid]
                while True:
                    if self.paused or self.closed:
                        self._flush()
                        return
                    try:
                        window = conn.local_flow_control_window(sid)
                    except h2.exceptions.ProtocolError:          # closed or reset meanwhile
                        del pending[sid]
                        break
                    n = min(window, max_frame, out.size - out.pos)
                    if n <= 0:
                        break
                    chunk = out.take(n)
                    done = out.pos >= out.size
                    try:
                        conn.send_data(sid, chunk, end_stream=done)
                    except h2.exceptions.StreamClosedError:
                        done = True
                    queued += n
                    if queued >= _FLUSH_AT:
                        queued = 0
                        self._flush()                            # may call pause_writing()
                    if done:
                        del pending[sid]
                        break
                if conn.outbound_flow_control_window <= 0:
                    break
        except h2.exceptions.ProtocolError as exc:
            log.info("demo origin: closing the connection: %s", exc)
            self._close()
            return
        self._flush()

    def _send(self, sid: int, status: int, body: Optional[bytes], ctype: str, *, size: Optional[int] = None,
              head: bool = False, extra: Tuple = ()) -> None:
        """Response headers, then ``body`` (or ``size`` pattern bytes when ``body`` is None)."""
        if size is None:
            if body is None:
                raise ValueError("a response needs a body or a size")
            size = len(body)
        headers = [_STATUS.get(status) or (b":status", str(status).encode()), _TYPES[ctype],
                   (b"content-length", str(size).encode()), _SERVER_HEADER, *extra]
        empty = head or size == 0
        conn = self.conn
        try:
            conn.send_headers(sid, headers, end_stream=empty)
            if empty:
                return
            if body is not None and size <= conn.max_outbound_frame_size \
                    and size <= conn.local_flow_control_window(sid):
                conn.send_data(sid, body, end_stream=True)          # small bodies: no bookkeeping
                return
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            return
        self.pending[sid] = _Out(body, size)

    # -- routes -------------------------------------------------------------------

    def _respond(self, sid: int) -> None:
        req = self.requests.pop(sid)
        method = path = authority = scheme = None
        for name, value in req.headers:
            if name[0] != ":":
                break
            if name == ":method":
                method = value
            elif name == ":path":
                path = value
            elif name == ":authority":
                authority = value
            elif name == ":scheme":
                scheme = value
        path = (path or "/").split("?", 1)[0]
        head = method == "HEAD"
        if path == "/echo":
            if method not in ("GET", "HEAD", "POST", "PUT"):
                return self._send(sid, 405, b"method not allowed\n", "text",
                                  extra=((b"allow", b"GET, HEAD, POST, PUT"),))
            if req.too_big:
                return self._send(sid, 413, b"request body too large\n", "text", head=head)
            out = _json({"method": method, "path": path, "headers": req.headers,
                         "body": req.body.decode("utf-8", "replace"), "body_length": len(req.body)})
            return self._send(sid, 200, out, "json", head=head)
        if method != "GET" and not head:
            return self._send(sid, 405, b"method not allowed\n", "text", extra=((b"allow", b"GET, HEAD"),))
        if path.startswith("/size/"):
            digits = path[6:]
            size = int(digits) if digits.isdigit() and len(digits) < 12 else -1
            if not 0 <= size <= MAX_SIZE:
                return self._send(sid, 400, f"N must be 0..{MAX_SIZE} in /size/N\n".encode(), "text", head=head)
            return self._send(sid, 200, None, "bin", size=size, head=head)
        if path == "/big":
            return self._send(sid, 200, None, "bin", size=BIG, head=head)
        if path == "/":
            return self._send(sid, 200, INDEX, "html", head=head)
        if path == "/headers":
            return self._send(sid, 200, _json({"headers": req.headers}), "json", head=head)
        if path == "/altsvc":
            if not head:
                field = f'h2="127.0.0.1:{self.origin.port}"; ma=60'.encode()
                try:
                    self.conn.advertise_alternative_service(field, stream_id=sid)
                except h2.exceptions.ProtocolError as exc:
                    log.info("demo origin: cannot send ALTSVC: %s", exc)
            return self._send(sid, 200, b"an ALTSVC frame was sent on this stream\n", "text", head=head)
        if path == "/push":
            if not head:
                self._push_css(sid, authority, scheme)
            return self._send(sid, 200, INDEX, "html", head=head)
        if path == "/pushed.css":
            return self._send(sid, 200, CSS, "css", head=head)
        return self._send(sid, 404, b"not found\n", "text", head=head)

    def _push_css(self, sid: int, authority: Optional[str], scheme: Optional[str]) -> None:
        conn = self.conn
        if not conn.remote_settings.enable_push:
            return
        try:
            pushed = conn.get_next_available_stream_id()
            conn.push_stream(sid, pushed, [
                (":method", "GET"), (":scheme", scheme or ("https" if self.origin.ssl_context else "http")),
                (":authority", authority or f"127.0.0.1:{self.origin.port}"), (":path", "/pushed.css")])
        except (h2.exceptions.ProtocolError, h2.exceptions.NoAvailableStreamIDError) as exc:
            # push disabled meanwhile, too many streams, or no stream IDs left: just don't push
            log.debug("demo origin: not pushing: %s", exc)
            return
        self._send(pushed, 200, CSS, "css")


class DemoOrigin:
    """The demo origin server: ``await start()``, then ``url`` and ``port``; ``await stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server: Optional[asyncio.AbstractServer] = None
        self.connections: set = set()
        self._all_gone: Optional[asyncio.Event] = None
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'h2c'}://{host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._all_gone = asyncio.Event()
        self.server = await loop.create_server(lambda: OriginProtocol(self), self.host, self.port,
                                               ssl=self.ssl_context, reuse_address=True, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        log.debug("demo origin listening on %s", self.url)

    def _lost(self, proto: OriginProtocol) -> None:
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop listening, send GOAWAY on every connection and close it."""
        if self.server is not None:
            self.server.close()
        conns = list(self.connections)
        for c in conns:
            c.goaway()
        if self.connections and self._all_gone is not None:
            self._all_gone.clear()
            try:
                await asyncio.wait_for(self._all_gone.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        for c in list(self.connections):          # a peer that never finished the TLS close
            if c.transport is not None:
                c.transport.abort()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), timeout)
            except asyncio.TimeoutError:
                pass
            self.server = None

    async def __aenter__(self) -> "DemoOrigin":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def serve_forever(host: str = "127.0.0.1", port: int = 0, ssl_context: Optional[ssl.SSLContext] = None,
                        ready: Optional[Callable[[DemoOrigin], None]] = None,
                        stop: Optional[asyncio.Event] = None) -> None:
    """Run a demo origin until ``stop`` is set (or the task is cancelled); ``ready(origin)`` once listening."""
    origin = DemoOrigin(host, port, ssl_context)
    await origin.start()
    try:
        if ready is not None:
            ready(origin)
        await (stop or asyncio.Event()).wait()
    finally:
        await origin.stop()


async def _main(args) -> None:
    ctx = None
    tmp = None
    if args.tls:
        import tempfile

        from .certs import make_test_pki
        from .tlsutil import server_context
        tmp = tempfile.TemporaryDirectory(prefix="h2proxy-origin-")
        pki = make_test_pki(tmp.name)
        ctx = server_context(pki["cert"], pki["key"], alpn=("h2",))
        print(f"demo origin: throwaway test CA in {pki['ca']} (e.g. curl --cacert {pki['ca']})",
              file=sys.stderr, flush=True)
    stop = stop_event()
    try:
        await serve_forever(args.host, args.port, ctx, stop=stop,
                            ready=lambda o: print(f"demo origin listening on {o.url}", flush=True))
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m proxy.demo_origin", description="h2proxy's demo HTTP/2 origin")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    p.add_argument("--tls", action="store_true", help="TLS (ALPN h2) with a throwaway certificate for 127.0.0.1")
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except OSError as exc:
        print(f"demo origin: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
