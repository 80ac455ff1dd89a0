"""The embedded demo origin: a small HTTP/2 server built on the ``h2`` library.

It gives ``make run`` something to proxy, and because ``h2`` is an independent
HTTP/2 implementation it is also a peer the tests check the proxy against.

Routes: ``/`` (a small page), ``/big`` (10 MiB), ``/size/N`` (N bytes),
``/altsvc`` (also sends an ALTSVC frame), ``/push`` (pushes ``/pushed.css``
when the client allows push), ``/echo`` (echoes the request body and headers
as JSON, POST allowed) and ``/headers`` (the request headers as JSON).

    python -m proxy.demo_origin --port 9000 [--tls]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
from typing import Dict, Optional

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger("h2proxy.origin")

SERVER = "h2proxy-demo-origin"
BIG = 10 * 1024 * 1024
MAX_SIZE = 1 << 30
_PATTERN = bytes(range(256)) * 256          # 64 KiB of deterministic content

INDEX = b"""<!doctype html>
<html><head><title>h2proxy demo origin</title><link rel="stylesheet" href="/pushed.css"></head>
<body><h1>h2proxy demo origin</h1><ul>
<li><a href="/big">/big</a>: 10 MiB</li><li><a href="/size/1024">/size/N</a>: N bytes</li>
<li><a href="/altsvc">/altsvc</a>: sends an ALTSVC frame</li><li><a href="/push">/push</a>: pushes /pushed.css</li>
<li>/echo: echoes the request (POST allowed)</li><li><a href="/headers">/headers</a>: the request headers</li>
</ul></body></html>
"""
CSS = b"body { font-family: sans-serif; }\n"


def body_bytes(size: int) -> memoryview:
    """``size`` bytes of the repeating pattern, as a view (no 10 MiB copies per request)."""
    reps = size // len(_PATTERN) + 1
    return memoryview(_PATTERN * reps)[:size] if size > len(_PATTERN) else memoryview(_PATTERN[:size])


class _Body:
    __slots__ = ("data", "pos")

    def __init__(self, data) -> None:
        self.data = memoryview(data)
        self.pos = 0


class OriginProtocol(asyncio.Protocol):
    """One client connection of the demo origin."""

    def __init__(self, origin: "DemoOrigin") -> None:
        self.origin = origin
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                         header_encoding="utf-8"))
        self.transport: Optional[asyncio.Transport] = None
        self.pending: Dict[int, _Body] = {}
        self.requests: Dict[int, dict] = {}
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.origin.connections.add(self)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 24)
        self._flush()

    def connection_lost(self, exc) -> None:
        self.origin.connections.discard(self)
        self.pending.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send_pending()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("demo origin: protocol error from client: %s", exc)
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = {"headers": event.headers, "body": bytearray()}
                if event.stream_ended:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                req = self.requests.get(event.stream_id)
                if req is not None and len(req["body"]) < (1 << 20):
                    req["body"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.requests:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.pending.pop(event.stream_id, None)
                self.requests.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.pending.clear()
        self._send_pending()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _respond(self, sid: int) -> None:
        req = self.requests.pop(sid, None)
        if req is None:
            return
        headers = dict(req["headers"])
        method = headers.get(":method", "GET")
        path = headers.get(":path", "/").split("?", 1)[0]
        if method not in ("GET", "HEAD") and path != "/echo":
            return self._send(sid, 405, b"method not allowed\n", "text/plain")
        if path == "/":
            return self._send(sid, 200, INDEX, "text/html", head=method == "HEAD")
        if path == "/pushed.css":
            return self._send(sid, 200, CSS, "text/css")
        if path == "/big":
            return self._send(sid, 200, body_bytes(BIG), "application/octet-stream", head=method == "HEAD")
        if path.startswith("/size/"):
            try:
                size = int(path[6:])
            except ValueError:
                size = -1
            if not 0 <= size <= MAX_SIZE:
                return self._send(sid, 400, f"size must be 0..{MAX_SIZE}\n".encode(), "text/plain")
            return self._send(sid, 200, body_bytes(size), "application/octet-stream", head=method == "HEAD")
        if path == "/altsvc":
            port = self.origin.port
            try:
                self.conn.advertise_alternative_service(f'h2="127.0.0.1:{port}"; ma=60'.encode(), stream_id=sid)
            except h2.exceptions.ProtocolError as exc:
                log.info("demo origin: cannot send ALTSVC: %s", exc)
            return self._send(sid, 200, b"an ALTSVC frame was sent on this stream\n", "text/plain")
        if path == "/push":
            if self.conn.remote_settings.enable_push:
                try:
                    pushed = self.conn.get_next_available_stream_id()
                    authority = headers.get(":authority", "localhost")
                    self.conn.push_stream(sid, pushed, [(":method", "GET"), (":scheme", headers.get(":scheme", "http")),
                                                        (":authority", authority), (":path", "/pushed.css")])
                    self._send(pushed, 200, CSS, "text/css")
                except (h2.exceptions.ProtocolError, h2.exceptions.NoAvailableStreamIDError) as exc:
                    log.info("demo origin: push refused: %s", exc)
            return self._send(sid, 200, INDEX, "text/html")
        if path == "/echo":
            out = json.dumps({"headers": req["headers"], "body": req["body"].decode("utf-8", "replace")}).encode()
            return self._send(sid, 200, out, "application/json")
        if path == "/headers":
            return self._send(sid, 200, json.dumps(req["headers"]).encode(), "application/json")
        return self._send(sid, 404, b"not found\n", "text/plain")

    def _send(self, sid: int, status: int, body, ctype: str, head: bool = False) -> None:
        try:
            self.conn.send_headers(sid, [(":status", str(status)), ("content-type", ctype),
                                         ("content-length", str(len(body))), ("server", SERVER)],
                                   end_stream=head or not len(body))
        except h2.exceptions.ProtocolError:
            return
        if len(body) and not head:
            self.pending[sid] = _Body(body)

    def _send_pending(self) -> None:
        """Send response bodies as far as flow control and the socket allow."""
        if self.paused:
            return
        conn = self.conn
        for sid in list(self.pending):
            body = self.pending[sid]
            try:
                while body.pos < len(body.data):
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    chunk = body.data[body.pos:body.pos + window]
                    body.pos += len(chunk)
                    conn.send_data(sid, bytes(chunk), end_stream=body.pos >= len(body.data))
                    if self.transport is not None and self.transport.get_write_buffer_size() > (1 << 20):
                        self._flush()
                        if self.paused:
                            return
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                self.pending.pop(sid, None)
                continue
            if body.pos >= len(body.data):
                self.pending.pop(sid, None)


class DemoOrigin:
    """The demo origin server: ``await start()``, then ``url`` and ``port``; ``await stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server: Optional[asyncio.AbstractServer] = None
        self.connections: set = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'h2c'}://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: OriginProtocol(self), self.host, self.port,
                                               ssl=self.ssl_context, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass


async def _main(args) -> None:
    ctx = None
    if args.tls:
        import tempfile
        from .certs import make_test_pki
        from .tlsutil import server_context
        pki = make_test_pki(tempfile.mkdtemp(prefix="h2proxy-origin-"))
        ctx = server_context(pki["cert"], pki["key"])
        print(f"demo origin test CA: {pki['ca']}", flush=True)
    origin = DemoOrigin(port=args.port, ssl_context=ctx)
    await origin.start()
    print(f"demo origin listening on {origin.url}", flush=True)
    await asyncio.Event().wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="h2proxy's demo HTTP/2 origin")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", action="store_true", help="TLS with a throwaway certificate for 127.0.0.1")
    try:
        asyncio.run(_main(p.parse_args(argv)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
