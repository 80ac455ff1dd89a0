"""Frame logs without a network: an in-memory h2 client and server, with a pretend proxy between them.

The pretend proxy does what the real one reports to its sink: every frame the
client sends is recorded as received on the client leg and as sent on the
upstream leg (with ``origin`` = the received record's seq), and the other way
round for the server's frames. It is used by the tests and is handy for
producing example logs::

    from proxy.recording.recorder import JsonlRecorder
    from proxy.recording.simulate import simulate
    rec = JsonlRecorder("example.jsonl")
    simulate(rec, [("GET", "/index.html", [], b"")])
    rec.close()
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from framecodec.reader import PREFACE, FrameReader

from .sink import FrameSink

__all__ = ["simulate", "default_handler", "RecordingRelay"]

Request = Tuple[str, str, Sequence[Tuple[str, str]], bytes]
Response = Tuple[int, List[Tuple[str, str]], bytes]


def default_handler(method: str, path: str, headers, body: bytes) -> Response:
    """200 with a small text body for /index.html and /echo (the request body), 404 otherwise."""
    if path == "/index.html":
        text = b"hello world\n"
        return 200, [("content-type", "text/html"), ("content-length", str(len(text)))], text
    if path == "/echo":
        return 200, [("content-type", "application/octet-stream"), ("content-length", str(len(body)))], body
    if path.startswith("/size/"):
        n = int(path.rsplit("/", 1)[1])
        return 200, [("content-type", "application/octet-stream"), ("content-length", str(n))], b"x" * n
    text = b"not found\n"
    return 404, [("content-type", "text/plain"), ("content-length", str(len(text)))], text


class _Clock:
    def __init__(self, t0: float, step: float) -> None:
        self.t = t0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def simulate(sink: FrameSink, requests: Sequence[Request], handler: Callable[..., Response] = default_handler,
             *, conn_id: int = 1, t0: Optional[float] = None, step: float = 0.001,
             info: Optional[dict] = None, ping: bool = False, authority: str = "127.0.0.1:8080",
             scheme: str = "http", close: bool = True, transcript: Optional[dict] = None) -> Dict[int, dict]:
    """Run ``requests`` through an in-memory client, pretend proxy and server, reporting to ``sink``.

    Returns what the client got, per stream: ``{"status", "headers", "body", "request"}``.
    ``transcript``, when given, is filled with the bytes of each socket: ``{(leg, direction): bytes}``.
    """
    import h2.config
    import h2.connection
    import h2.events
    from framecodec.hpack import Decoder

    clock = _Clock(time.time() if t0 is None else t0, step)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    c_reader = FrameReader(expect_preface=True)
    u_reader = FrameReader()
    decoders = {"c2s": Decoder(), "s2c": Decoder()}
    blocks: Dict[str, List[bytes]] = {"c2s": [], "s2c": []}
    if info is None:
        info = {"client_addr": "127.0.0.1:50001", "listen_addr": "127.0.0.1:8080",
                "upstream_addr": "127.0.0.1:9090", "client_tls": None, "upstream_tls": None, "mode": "reverse"}
    sink.connection_opened(conn_id, clock(), info)

    requests_seen: Dict[int, dict] = {}
    pending_bodies: Dict[int, bytes] = {}
    results: Dict[int, dict] = {}

    def decode(way: str, raw) -> Optional[list]:
        if raw.type in (0x1, 0x5, 0x9):
            frame = raw.parse()
            blocks[way].append(bytes(frame.data))
            if raw.flags & 0x04:
                block = b"".join(blocks[way])
                blocks[way] = []
                return [(n, v) for n, v in decoders[way].decode(block)]
        return None

    def relay(way: str, data: bytes) -> bytes:
        reader = c_reader if way == "c2s" else u_reader
        recv_leg, send_leg = ("client", "upstream") if way == "c2s" else ("upstream", "client")
        had_preface = reader.preface_pending
        frames = reader.feed(data)
        out = []
        if transcript is not None:
            transcript[(recv_leg, "recv")] = transcript.get((recv_leg, "recv"), b"") + bytes(data)
        if had_preface and not reader.preface_pending:
            t = clock()
            sink.preface(conn_id, recv_leg, "recv", t, PREFACE)
            sink.preface(conn_id, send_leg, "send", t, PREFACE)
            out.append(PREFACE)
        for raw in frames:
            t = clock()
            headers = decode(way, raw)
            seq = sink.frame(conn_id, recv_leg, "recv", t, raw.wire, headers)
            wire = bytes(raw.wire)
            sink.frame(conn_id, send_leg, "send", t, wire, None, seq, [])
            out.append(wire)
        sent = b"".join(out)
        if transcript is not None:
            transcript[(send_leg, "send")] = transcript.get((send_leg, "send"), b"") + sent
        return sent

    def server_events(events) -> None:
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                requests_seen[ev.stream_id] = {"headers": list(ev.headers), "body": b""}
            elif isinstance(ev, h2.events.DataReceived):
                requests_seen[ev.stream_id]["body"] += ev.data
                if ev.flow_controlled_length:
                    server.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                req = requests_seen[ev.stream_id]
                hd = dict(req["headers"])
                status, headers, body = handler(hd.get(":method"), hd.get(":path"), req["headers"], req["body"])
                server.send_headers(ev.stream_id, [(":status", str(status))] + list(headers), end_stream=not body)
                if body:
                    pending_bodies[ev.stream_id] = body

    def send_bodies() -> None:
        for sid in list(pending_bodies):
            body = pending_bodies[sid]
            while body:
                room = min(server.local_flow_control_window(sid), server.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk, body = body[:room], body[room:]
                server.send_data(sid, chunk, end_stream=not body)
            if body:
                pending_bodies[sid] = body
            else:
                del pending_bodies[sid]

    def client_events(events) -> None:
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                r = results.setdefault(ev.stream_id, {"body": b""})
                r["headers"] = list(ev.headers)
                r["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                results.setdefault(ev.stream_id, {"body": b""})["body"] += ev.data
                if ev.flow_controlled_length:
                    client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    def pump() -> None:
        for _ in range(100000):
            send_bodies()
            c = client.data_to_send()
            if c:
                server_events(server.receive_data(relay("c2s", c)))
            s = server.data_to_send()
            if s:
                client_events(client.receive_data(relay("s2c", s)))
            if not c and not s:
                return

    client.initiate_connection()
    server.initiate_connection()
    for method, path, headers, body in requests:
        sid = client.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
        hdrs += list(headers)
        client.send_headers(sid, hdrs, end_stream=not body)
        if body:
            client.send_data(sid, body, end_stream=True)
        results.setdefault(sid, {"body": b""})["request"] = (method, path)
        pump()
    if ping:
        client.ping(b"pingpong")
        pump()
    if close:
        client.close_connection()
        pump()
        sink.connection_closed(conn_id, clock(), "client closed the connection")
    return results


class RecordingRelay:
    """A TCP relay between real peers that reports to a sink the way the proxy does (no HTTP/2 logic).

    For tests and for recording example logs without the proxy: every chunk
    read from one side is split into frames, each recorded as received on its
    leg and sent on the other (``origin`` linking the two), then forwarded.
    Listens on ``host`` (loopback) on a free port; ``upstream`` is (host, port).
    """

    def __init__(self, sink: FrameSink, upstream: Tuple[str, int], host: str = "127.0.0.1") -> None:
        import asyncio
        self.sink = sink
        self.upstream = upstream
        self.host = host
        self.port = 0
        self._next_id = 0
        self.closed = 0
        self._changed = asyncio.Event()
        self.server = None

    async def start(self) -> int:
        import asyncio
        self.server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def wait_closed_connections(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` relayed connections have been closed and reported."""
        import asyncio
        deadline = asyncio.get_running_loop().time() + timeout
        while self.closed < n:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(deadline - asyncio.get_running_loop().time(), 0.01))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, c_reader, c_writer) -> None:
        import asyncio
        self._next_id += 1
        conn = self._next_id
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        peer = c_writer.get_extra_info("peername")
        self.sink.connection_opened(conn, time.time(), {
            "client_addr": f"{peer[0]}:{peer[1]}", "listen_addr": f"{self.host}:{self.port}",
            "upstream_addr": f"{self.upstream[0]}:{self.upstream[1]}", "client_tls": None, "upstream_tls": None,
            "mode": "reverse"})

        async def pump(reader, writer, frames: FrameReader, recv_leg: str, send_leg: str) -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    t = time.time()
                    had_preface = frames.preface_pending
                    parsed = frames.feed(data)
                    out = []
                    if had_preface and not frames.preface_pending:
                        self.sink.preface(conn, recv_leg, "recv", t, PREFACE)
                        self.sink.preface(conn, send_leg, "send", t, PREFACE)
                        out.append(PREFACE)
                    for raw in parsed:
                        seq = self.sink.frame(conn, recv_leg, "recv", t, raw.wire)
                        self.sink.frame(conn, send_leg, "send", t, raw.wire, None, seq)
                        out.append(bytes(raw.wire))
                    writer.write(b"".join(out))
                    await writer.drain()
            except Exception as exc:
                self.sink.error(conn, time.time(), f"{recv_leg}: {type(exc).__name__}: {exc}")
            finally:
                try:
                    writer.close()
                except Exception:
                    pass

        await asyncio.gather(pump(c_reader, u_writer, FrameReader(expect_preface=True), "client", "upstream"),
                             pump(u_reader, c_writer, FrameReader(), "upstream", "client"))
        self.sink.connection_closed(conn, time.time(), "both sides closed")
        self.closed += 1
        self._changed.set()
