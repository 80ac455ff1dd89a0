"""The floor for any Python proxy: a bare uvloop TCP byte relay, no HTTP/2 at all.

    python bench/relay_floor.py --listen 9001 --upstream 127.0.0.1:9000

Accepts a client, connects to the upstream, copies bytes both ways with
asyncio Protocols (no streams, no parsing) and applies the same backpressure
h2proxy does: when one side's write buffer passes the high-water mark, reading
the other side pauses until it drains. Whatever h2proxy spends per request
beyond this is the price of parsing and re-serializing frames.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

HIGH_WATER = 256 * 1024


class Side(asyncio.Protocol):
    __slots__ = ("peer", "transport", "pending", "paused_by_peer", "closed")

    def __init__(self) -> None:
        self.peer: "Side" = None  # type: ignore[assignment]
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.pending: list = []   # bytes received before the peer connected
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self):
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        # Our outgoing buffer is full: stop reading whoever feeds it.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()


class Client(Side):
    def __init__(self, upstream) -> None:
        super().__init__()
        self.upstream = upstream

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.pause_reading()
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, server = await loop.create_connection(Side, *self.upstream)
        except OSError:
            self.transport.close()
            return
        if self.closed:
            server.transport.close()
            return
        server.peer, self.peer = self, server
        if self.pending:
            server.transport.writelines(self.pending)
            self.pending = []
        if server.pending:  # the upstream may speak first (an HTTP/2 server's SETTINGS) before peers are set
            self.transport.writelines(server.pending)
            server.pending = []
        self.transport.resume_reading()


async def main(listen_port: int, upstream: tuple) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream), "127.0.0.1", listen_port, reuse_address=True,
                                      backlog=1024)
    print(f"relay_floor: listening on 127.0.0.1:{listen_port}, forwarding to {upstream[0]}:{upstream[1]}",
          file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--upstream", required=True, help="HOST:PORT")
    a = ap.parse_args()
    host, _, port = a.upstream.rpartition(":")
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        print("relay_floor: uvloop not installed; using asyncio's loop", file=sys.stderr)
    asyncio.run(main(a.listen, (host, int(port))))
