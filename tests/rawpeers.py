"""Peers for limit and fault tests: a raw-socket HTTP/2 client and a recording h2-library origin.

* :class:`RawClient`: sends whatever bytes a test builds (floods, bad frames), reads
  frames with a timeout, and can stay silent or never read (small receive buffer).
* :class:`Origin`: an in-process HTTP/2 server on 127.0.0.1 built on the ``h2``
  library. It records every byte each connection received (to check what the proxy
  sent it: a clean GOAWAY, RST_STREAM CANCEL), answers ``/`` with 200, holds
  ``/hold`` open, sends N bytes for ``/size/N`` within flow control, and can run a
  ``misbehave(conn)`` coroutine per connection that writes raw frames.
* :func:`h2_get`: one GET over a connection kept open (the bystander that must keep
  working while another connection trips a limit).
"""
from __future__ import annotations

import asyncio
import socket
from typing import Awaitable, Callable, List, Optional, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader

REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/")]


def req(path: str = "/") -> list:
    return [(k, path if k == ":path" else v) for k, v in REQ]


def raw(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One frame as bytes, whatever its fields (no checks)."""
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


SETTINGS = raw(0x4, 0, 0)
SETTINGS_ACK = raw(0x4, 1, 0)


def parse_all(data: bytes) -> list:
    """Frames (parsed objects, or the raw frame when a frame does not parse)."""
    out = []
    for f in FrameReader().feed(bytes(data)):
        try:
            out.append(f.parse())
        except Exception:
            out.append(f)
    return out


def goaways(frames) -> list:
    return [f for f in frames if isinstance(f, fc.GoAwayFrame)]


class RawClient:
    """A client socket that sends raw bytes and reads frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.enc = hpack.Encoder()
        self.received = bytearray()
        self.frames: list = []
        self.data_bytes = 0          # DATA payload received (DATA frames are counted, not kept)
        self._rd = FrameReader()

    @classmethod
    async def connect(cls, port: int, preface: bool = True, ack: bool = True, rcvbuf: Optional[int] = None,
                      settings: bytes = SETTINGS) -> "RawClient":
        if rcvbuf is not None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 16)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        c = cls(reader, writer)
        if preface:
            c.send(PREFACE + settings)
            if ack:
                await c.until(lambda f: isinstance(f, fc.SettingsFrame) and "ACK" not in f.flags)
                c.send(SETTINGS_ACK)
        return c

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def headers(self, sid: int, headers=None, end: bool = True, end_headers: bool = True) -> bytes:
        flags = (0x1 if end else 0) | (0x4 if end_headers else 0)
        return raw(0x1, flags, sid, self.enc.encode(headers or REQ))

    async def read_some(self, timeout: float = 5.0) -> bool:
        """Read once; False at EOF."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        self.received += data
        for f in self._rd.feed(data):
            if f.type == 0x0:
                self.data_bytes += f.length
                continue
            try:
                self.frames.append(f.parse())
            except Exception:
                self.frames.append(f)
        return True

    async def until(self, pred: Callable, timeout: float = 5.0):
        """Read until a frame satisfies ``pred``; returns it (AssertionError on EOF or timeout)."""
        seen = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for f in self.frames[seen:]:
                if pred(f):
                    return f
            seen = len(self.frames)
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no such frame within {timeout} s; got {self.frames[-8:]}")
            try:
                more = await self.read_some(left)
            except asyncio.TimeoutError:
                continue
            if not more:
                for f in self.frames[seen:]:
                    if pred(f):
                        return f
                raise AssertionError(f"connection closed first; got {self.frames[-8:]}")

    async def goaway(self, timeout: float = 5.0) -> fc.GoAwayFrame:
        return await self.until(lambda f: isinstance(f, fc.GoAwayFrame), timeout)

    async def read_to_eof(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.read_some(max(0.01, deadline - loop.time())):
            if loop.time() > deadline:
                raise AssertionError("the connection did not close")

    def close(self) -> None:
        self.writer.close()


class OriginConn:
    """One connection the origin accepted."""

    def __init__(self, origin: "Origin", reader, writer) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.streams: dict = {}
        self.window_open = asyncio.Event()
        self.sent_bytes = 0

    def frames(self) -> list:
        return parse_all(bytes(self.received[len(PREFACE):]))

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out:
            self.writer.write(out)

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        tasks = []
        if self.origin.misbehave is not None:
            tasks.append(asyncio.ensure_future(self.origin.misbehave(self)))
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.received += data
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    events = []
                    self.origin.errors += 1
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers).get(":path", "/")
                        self.streams[ev.stream_id] = path
                        if path.startswith("/size/"):
                            tasks.append(asyncio.ensure_future(self.send_body(ev.stream_id, int(path[6:]))))
                        elif path != "/hold":
                            try:
                                self.h2.send_headers(ev.stream_id, [(":status", "200")])
                                self.h2.send_data(ev.stream_id, b"ok", end_stream=True)
                            except h2.exceptions.ProtocolError:
                                pass     # (reset in the same read: a client that cancels at once)
                    elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                        self.window_open.set()
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            self.closed.set()
            self.writer.close()

    async def send_body(self, sid: int, size: int) -> None:
        self.h2.send_headers(sid, [(":status", "200")])
        self.flush()
        left = size
        try:
            while left:
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size, left)
                if room <= 0:
                    self.window_open.clear()
                    await self.window_open.wait()
                    continue
                self.h2.send_data(sid, b"\0" * room, end_stream=room == left)
                left -= room
                self.sent_bytes += room
                self.flush()
                await self.writer.drain()
        except (h2.exceptions.StreamClosedError, ConnectionError, h2.exceptions.ProtocolError):
            pass


class _Listener:
    """A TCP server on 127.0.0.1 and a free port (``start``), an upstream for the proxy (``url``)."""

    server: Optional[asyncio.AbstractServer] = None
    port: int

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"h2c://127.0.0.1:{self.port}"

    async def _accept(self, reader, writer) -> None:
        raise NotImplementedError


class Origin(_Listener):
    """An h2-library origin on 127.0.0.1 that records what each connection received."""

    def __init__(self, misbehave: Optional[Callable[[OriginConn], Awaitable]] = None) -> None:
        self.misbehave = misbehave
        self.conns: List[OriginConn] = []
        self.errors = 0
        self.new_conn = asyncio.Event()

    async def _accept(self, reader, writer) -> None:
        conn = OriginConn(self, reader, writer)
        self.conns.append(conn)
        self.new_conn.set()
        await conn.run()

    async def stop(self) -> None:
        self.server.close()
        for c in self.conns:
            c.writer.close()


class SilentUpstream(_Listener):
    """A listener in front of an :class:`Origin`: connections go on to the origin until ``silent()`` is
    true, then they are accepted and never answered (an upstream that never speaks, not even SETTINGS)."""

    def __init__(self, origin: Origin, silent: Callable[[], bool]) -> None:
        self.origin = origin
        self.silent = silent
        self.held: List[asyncio.StreamWriter] = []

    async def _accept(self, reader, writer) -> None:
        if not self.silent():
            await self.origin._accept(reader, writer)
        else:
            self.held.append(writer)
            await reader.read()

    def stop(self) -> None:
        self.server.close()
        for w in self.held:
            w.close()


async def h2_get(port: int):
    """Open an h2 connection and return ``get(path)`` -> (status, body) that uses it, and a closer.

    Every ``get`` and the closer run the shared helpers' check (:func:`tests.peers.check_behaved`):
    the first frame this client received was SETTINGS, and the in-process proxy blamed this
    well-behaved client's connection for no violation.
    """
    from tests.peers import ProxyLog, check_behaved
    plog = ProxyLog().__enter__()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    host, local_port = writer.get_extra_info("sockname")[:2]
    me = f"{host}:{local_port}"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    await writer.drain()
    first: List[bytes] = []

    def check() -> None:
        head = b"".join(first)[:5]
        if len(head) == 5 and (head[3] != 0x4 or head[4] & 0x1):
            raise AssertionError(f"the h2 client's first frame received is type 0x{head[3]:02x} (flags "
                                 f"0x{head[4]:02x}), not SETTINGS (RFC 9113 3.4)")
        check_behaved(plog, me, "the h2 library client")

    async def get(path: str = "/", timeout: float = 5.0):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, req(path), end_stream=True)
        writer.write(conn.data_to_send())
        status, body = None, bytearray()

        async def loop():
            nonlocal status
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                if sum(map(len, first)) < 5:
                    first.append(data)
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                        status = dict(ev.headers)[":status"]
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        body.extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        writer.write(conn.data_to_send())
                        return
                    elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        raise ConnectionError(f"{ev}")
                writer.write(conn.data_to_send())
        try:
            await asyncio.wait_for(loop(), timeout)
        finally:
            check()
        return status, bytes(body)

    def close() -> None:
        plog.__exit__(None, None, None)
        writer.close()
        check()

    return get, close
