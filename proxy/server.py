"""The asyncio shell around the sans-I/O relay: sockets, TLS, backpressure, shutdown.

Everything protocol-related happens in :class:`proxy.core.relay.Relay`; this
module only moves bytes between transports and the relay, carries out the
relay's commands (close a side, await a hook), and pauses reading a side
whenever the other side's socket, or the relay itself, holds more than the
high-water mark.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Union, cast

from .core.commands import AwaitHook, Close, Wake
from .core.limits import Limits
from .core.relay import CLIENT, SERVER, Relay, RelayOptions
from .endpoints import ConfigError, Endpoint, parse_endpoint

__all__ = ["ConfigError", "Endpoint", "parse_endpoint", "ProxyServer", "ProxySettings"]

log = logging.getLogger("h2proxy")


@dataclass
class ProxySettings:
    """What the shell needs to run (built from the config file and command line)."""

    listen: Endpoint = field(default_factory=lambda: Endpoint("h2c", "127.0.0.1", 8080))
    upstream: Optional[Endpoint] = None
    strict: bool = False
    limits: Limits = field(default_factory=Limits)
    cert: Optional[str] = None
    key: Optional[str] = None
    ca_dir: Optional[str] = None
    upstream_ca: Optional[str] = None
    insecure: bool = False
    decode_headers: bool = False
    reuse_port: bool = False

    @property
    def connect_timeout(self) -> float:
        """Seconds to reach the upstream or a CONNECT target: the limit ``connect_timeout``."""
        return self.limits.connect_timeout


class Bridge:
    """Joins one client transport, one upstream transport and their relay."""

    __slots__ = ("server", "relay", "transports", "paused_reading", "closing", "upstream_task", "client_info",
                 "tasks", "write_paused", "conn_id", "_closed_sides", "last_activity", "preface_timer",
                 "unread", "stall", "abort_timers", "fin_sent")

    def __init__(self, server: "ProxyServer", conn_id: int) -> None:
        self.server = server
        self.conn_id = conn_id
        self.relay: Optional[Relay] = None
        self.transports: List[Optional[asyncio.Transport]] = [None, None]
        self.paused_reading = [False, False]
        self.write_paused = [False, False]
        self.closing = False
        self.upstream_task: Optional[asyncio.Task] = None
        self.client_info: dict = {}
        self.tasks: Set[asyncio.Task] = set()
        self._closed_sides = [False, False]
        self.last_activity = time.monotonic()
        self.preface_timer: Optional[asyncio.TimerHandle] = None
        # Per side: frames the proxy made in answer to it, queued while its socket is backed up.
        self.unread = [0, 0]
        # Per side, while its socket is backed up: (since when, write buffer size then) for zero_window_timeout.
        self.stall: List[Optional[tuple]] = [None, None]
        # Per side: the timer that aborts a closing socket its peer neither reads nor closes.
        self.abort_timers: List[Optional[asyncio.TimerHandle]] = [None, None]
        # Per side: the proxy half-closed the socket (FIN sent): nothing more can be written to it.
        self.fin_sent = [False, False]

    # -- data path --------------------------------------------------------

    def data(self, side: int, data: bytes) -> None:
        relay = self.relay
        if relay is None:          # (a connection refused before its relay was made: nothing to relay)
            return
        other = self.transports[1 - side]
        if other is not None and not self._closed_sides[1 - side] and other.is_closing():
            self._notice_closing(1 - side)
        relay.receive(side, data, time.time())
        if self.write_paused[side] and relay.pending_output(1 - side):
            self._count_answers(side)
        self.flush()
        if not relay.inbox_empty(side) and relay.buffered > self.server.settings.limits.high_water:
            self._pause(side)
        elif self.server.recording_congested:
            self._pause(side)

    def _count_answers(self, side: int) -> None:
        """Frames the relay made in answer to ``side`` go towards it while it reads nothing: count them."""
        relay = self.relay
        if relay is None:
            return
        # (DATA, held for it until it opened a window, is not counted)
        self.unread[side] += relay.pending_control(1 - side)
        limit = self.server.settings.limits.max_queued_control_frames
        if self.unread[side] > limit and not relay.closed:
            relay.limit_exceeded(side, "max_queued_control_frames",
                                 f"{self.unread[side]} frames made by the proxy queued towards the "
                                 f"{_SIDE[side]}, which does not read them")

    def _notice_closing(self, side: int) -> None:
        """Asyncio has started closing ``side``'s socket (its peer's EOF or reset, seen in this loop
        iteration) but has not called connection_lost yet: tell the relay now, so that it makes no
        frames for a socket that writes nothing more (the frame log records only bytes written)."""
        relay = self.relay
        self._closed_sides[side] = True
        if relay is not None and not relay.closed:
            relay.eof(side)
            self.flush()

    def _send(self, side: int, t: asyncio.Transport, bufs: list) -> None:
        """Write the relay's output for ``side``; what the socket did not take is marked in the log."""
        if self._closed_sides[side]:
            if self.fin_sent[side]:
                self._unwritten(side, bufs, "had been closed by the proxy (FIN sent)")
                return
            _write(t, bufs)
            return
        if t.is_closing():
            self._unwritten(side, bufs, "was already closed")
            return
        _write(t, bufs)
        if t.is_closing():
            # The send failed at once (the peer had reset the connection): the transport dropped it all.
            self._unwritten(side, bufs, "failed (the peer reset the connection)")

    def _unwritten(self, side: int, bufs: list, why: str) -> None:
        """Output the socket did not take: say so in the frame log, right after the records of
        those frames (they were recorded when the relay made them)."""
        relay = self.relay
        what = _describe_frames(bufs)
        log.debug("c%d: not written to the %s, whose socket %s: %s", self.conn_id, _SIDE[side], why, what)
        if relay is not None and relay.sink is not None:
            relay.sink.error(self.conn_id, time.time(),
                             f"not written: the {_SIDE[side]}'s socket {why}; the "
                             f"{sum(map(len, bufs))} bytes last recorded as sent on the "
                             f"{'client' if side == CLIENT else 'upstream'} leg never reached it: {what}")

    def flush(self) -> None:
        relay = self.relay
        if relay is None:          # (not yet made, or a PipeBridge, which overrides this)
            return
        t_client, t_server = self.transports
        if t_server is not None and relay.pending_output(0):
            self._send(SERVER, t_server, relay.take_output(0))
        if t_client is not None and relay.pending_output(1):
            self._send(CLIENT, t_client, relay.take_output(1))
        if (self.write_paused[0] or self.write_paused[1]) and not relay.closed:
            self._check_queued()
        for cmd in relay.take_commands():
            match cmd:
                case AwaitHook():
                    task = asyncio.ensure_future(self._await_hook(cmd))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                case Close(side=side, abort=abort):
                    self._close_side(side, abort)
                case Wake(at=at):
                    asyncio.get_running_loop().call_later(max(0.0, at - time.time()), self._wake)

    def _wake(self) -> None:
        """The time a :class:`Wake` asked for: the relay's tick, then what it made."""
        relay = self.relay
        if relay is not None and not relay.closed:
            relay.tick(time.time(), self.paused_reading[SERVER])
            self.flush()

    def _check_queued(self) -> None:
        """A side's socket is backed up: past max_queued_bytes it gets ENHANCE_YOUR_CALM."""
        relay = self.relay
        if relay is None:
            return
        limit = self.server.settings.limits.max_queued_bytes
        for side in (CLIENT, SERVER):
            t = self.transports[side]
            if self.write_paused[side] and t is not None:
                size = t.get_write_buffer_size()
                if size > limit:
                    relay.limit_exceeded(side, "max_queued_bytes",
                                         f"{size} bytes queued towards the {_SIDE[side]}, which does not read them")
                    t_client, t_server = self.transports
                    if t_server is not None and relay.pending_output(0):
                        self._send(SERVER, t_server, relay.take_output(0))
                    if t_client is not None and relay.pending_output(1):
                        self._send(CLIENT, t_client, relay.take_output(1))
                    return

    async def _await_hook(self, cmd: AwaitHook) -> None:
        relay = self.relay
        if relay is None:          # (commands come only from a relay)
            return
        d = cmd.direction
        # Stop reading the side whose frames are held while the hook waits, once too much is queued.
        try:
            result = await cmd.awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            relay.resume(d, None, exc)
        else:
            relay.resume(d, result)
        self.flush()
        if self.paused_reading[d] and relay.inbox_empty(d):
            self._resume(d)

    # -- backpressure -----------------------------------------------------

    def _pause(self, side: int) -> None:
        t = self.transports[side]
        if t is not None and not self.paused_reading[side]:
            self.paused_reading[side] = True
            try:
                t.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def _resume(self, side: int) -> None:
        t = self.transports[side]
        if t is not None and self.paused_reading[side] and not self.write_paused[1 - side] \
                and not self.server.recording_congested:
            self.paused_reading[side] = False
            try:
                t.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def pause_writing(self, side: int) -> None:
        """The socket towards ``side`` is full: stop reading from the other side."""
        self.write_paused[side] = True
        self._pause(1 - side)

    def resume_writing(self, side: int) -> None:
        self.write_paused[side] = False
        self.unread[side] = 0
        self.stall[side] = None
        self._resume(1 - side)

    def check_stall(self, now: float, timeout: float) -> None:
        """Once a second: a side whose socket stays backed up without reading a byte for ``timeout``
        seconds gets ENHANCE_YOUR_CALM (limit zero_window_timeout, the TCP window's share)."""
        relay = self.relay
        if relay is None:
            return
        for side in (CLIENT, SERVER):
            t = self.transports[side]
            if not self.write_paused[side] or t is None:
                self.stall[side] = None
                continue
            size = t.get_write_buffer_size()
            seen = self.stall[side]
            if seen is None or size < seen[1]:
                self.stall[side] = (now, size)         # (it read something since: start again)
            elif now - seen[0] > timeout and not relay.closed:
                relay.limit_exceeded(side, "zero_window_timeout",
                                     f"the {_SIDE[side]} read nothing of the {size} bytes queued for it "
                                     f"for {now - seen[0]:.0f} s")
                self.flush()
                return

    # -- lifecycle --------------------------------------------------------

    def _close_side(self, side: int, abort: bool = False) -> None:
        t = self.transports[side]
        if t is None or self._closed_sides[side]:
            if t is None and side == SERVER and self.upstream_task is not None:
                self.upstream_task.cancel()
            return
        self._closed_sides[side] = True
        if abort:
            # A TCP reset: with SO_LINGER 0 the close sends RST (abort alone sends FIN).
            sock = t.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except (OSError, AttributeError):
                    pass
            t.abort()
        else:
            grace = self.server.settings.limits.grace_period
            loop = asyncio.get_running_loop()
            try:
                # (Whatever the relay makes for this side from now on is not written: see _send.)
                linger = self.relay is not None and t.can_write_eof()
            except (AttributeError, NotImplementedError, RuntimeError):
                linger = False
            if linger:
                try:
                    t.write_eof()
                    self.fin_sent[side] = True
                except (OSError, RuntimeError):
                    linger = False
            if linger:
                # A lingering close: FIN once what is queued (a GOAWAY) is written, and what the peer
                # still sends is read and dropped, so that closing with its bytes unread does not send
                # a TCP reset that would discard the GOAWAY before the peer reads it. The peer's own
                # close ends it (eof_received); one that neither reads nor closes has grace_period seconds.
                if self.paused_reading[side]:
                    self.paused_reading[side] = False
                    try:
                        t.resume_reading()
                    except (RuntimeError, AttributeError):
                        pass
                self.abort_timers[side] = loop.call_later(grace, t.abort)
            elif not t.is_closing():
                # (Not twice: asyncio's TLS transport drops its protocol on a second close(), and
                # then cannot tell its buffer size.)
                t.close()
                if t.get_write_buffer_size():
                    # What is left is written first; a peer that reads nothing would keep the socket, and
                    # its buffer, forever: it has grace_period seconds.
                    self.abort_timers[side] = loop.call_later(grace, t.abort)

    def eof(self, side: int) -> None:
        """The peer of ``side`` closed its end: the relay learns now, before any other event of this
        loop iteration can make frames for a socket that will write nothing more."""
        if not self._closed_sides[side] and self.transports[side] is not None:
            self._notice_closing(side)

    def lost(self, side: int, exc: Optional[BaseException]) -> None:
        other = self.transports[1 - side]
        if other is not None and not self._closed_sides[1 - side] and other.is_closing():
            self._notice_closing(1 - side)
        self._closed_sides[side] = True
        timer = self.abort_timers[side]
        if timer is not None:
            timer.cancel()        # (it would keep the whole connection alive until it fires)
            self.abort_timers[side] = None
        self.transports[side] = None
        relay = self.relay
        if relay is not None and not relay.closed:
            reason = str(exc) if exc else ""
            relay.eof(side, reason)
            self.flush()
        other = self.transports[1 - side]
        if other is not None:
            self._close_side(1 - side)
        if side == SERVER or self.transports[SERVER] is None:
            if self.transports[CLIENT] is None and self.transports[SERVER] is None:
                self.server.connection_done(self)
        if side == CLIENT and self.upstream_task is not None and not self.upstream_task.done():
            self.upstream_task.cancel()
            self.server.connection_done(self)
        for task in list(self.tasks):
            if self.transports[CLIENT] is None and self.transports[SERVER] is None:
                task.cancel()


class _SideProtocol(asyncio.Protocol):
    """The asyncio protocol of one socket; forwards everything to the bridge."""

    __slots__ = ("bridge", "side")

    def __init__(self, bridge: Bridge, side: int) -> None:
        self.bridge = bridge
        self.side = side

    def data_received(self, data: bytes) -> None:
        self.bridge.data(self.side, data)

    def eof_received(self):
        self.bridge.eof(self.side)
        return False

    def pause_writing(self) -> None:
        self.bridge.pause_writing(self.side)

    def resume_writing(self) -> None:
        self.bridge.resume_writing(self.side)

    def connection_lost(self, exc) -> None:
        self.bridge.lost(self.side, exc)


class ClientProtocol(_SideProtocol):
    """Accepted client connection: starts the upstream connection and the relay."""

    def __init__(self, server: "ProxyServer") -> None:
        self.server = server
        super().__init__(Bridge(server, server.next_id()), CLIENT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (A stream server's transports are read-write Transports.)
        self.server.accepted(self.bridge, cast(asyncio.Transport, transport))


class ProxyServer:
    """Listens for clients and relays each to the upstream through a :class:`Relay`."""

    def __init__(self, settings: ProxySettings, hooks=None, sink=None,
                 upstream_factory: Optional[Callable] = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.sink = sink
        self.server: Optional[Union[asyncio.Server, PeekingTLSListener]] = None
        self.bridges: Set[Bridge] = set()
        self._next = 0
        self.total_connections = 0
        self.ssl_listen: Optional[ssl.SSLContext] = None
        self.ssl_upstream: Optional[ssl.SSLContext] = None
        self._idle = asyncio.Event()
        self.port: Optional[int] = None
        #: True while the frame recorder's backlog is over its mark: no socket is read (so no frame is
        #: ever dropped from the log; proxy/recording/offload.py).
        self.recording_congested = False
        for s in (getattr(sink, "sinks", None) or [sink]):
            if hasattr(s, "on_congestion"):
                s.on_congestion = self.recorder_congestion

    def recorder_congestion(self, congested: bool) -> None:
        """The recorder's backlog crossed its high (True) or low (False) mark: stop or resume reading."""
        self.recording_congested = congested
        for b in list(self.bridges):
            for side in (CLIENT, SERVER):
                if congested:
                    b._pause(side)
                else:
                    b._resume(side)

    def next_id(self) -> int:
        self._next += 1
        return self._next

    # -- start / stop -----------------------------------------------------

    def _upstream(self) -> Endpoint:
        """The upstream every client is relayed to (reverse mode cannot start without one)."""
        up = self.settings.upstream
        if up is None:
            raise ConfigError("upstream: no upstream given")
        return up

    async def start(self) -> None:
        s = self.settings
        upstream = self._upstream()
        if s.listen.tls:
            self.ssl_listen = self._listen_context()
        if upstream.tls:
            from .tlsutil import client_context, keylog
            try:
                self.ssl_upstream = client_context(verify=not s.insecure, cafile=s.upstream_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--upstream-ca (tls.upstream_ca): cannot load {s.upstream_ca}: "
                                  f"{_tls_file_error(exc)}") from None
            keylog(self.ssl_upstream)
        loop = asyncio.get_running_loop()
        try:
            if self.ssl_listen is not None:
                listener = PeekingTLSListener(self, self.ssl_listen)
                self.server = listener
                listener.listen(s.listen.host, s.listen.port)
            else:
                self.server = await loop.create_server(
                    lambda: ClientProtocol(self), s.listen.host, s.listen.port,
                    reuse_address=True, reuse_port=s.reuse_port or None, backlog=1024)
        except OSError as exc:
            raise ConfigError(f"listen: cannot listen on {s.listen}: {exc.strerror or exc}") from None
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]
        self._ticker = loop.call_later(1.0, self._tick)
        self.settings.listen = Endpoint(s.listen.scheme, s.listen.host, self.port)

    def _tick(self) -> None:
        """Once a second: let every relay enforce its timeouts."""
        now = time.time()
        zero_window = self.settings.limits.zero_window_timeout
        for b in list(self.bridges):
            relay = b.relay
            if relay is not None and not relay.closed:
                relay.tick(now, b.paused_reading[SERVER])
                if relay.pending_commands() or relay.pending_output(0) or relay.pending_output(1):
                    b.flush()
                if (b.write_paused[0] or b.write_paused[1]) and zero_window and not relay.closed:
                    b.check_stall(now, zero_window)
        if self.server is not None and self.server.is_serving():
            self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _listen_context(self) -> ssl.SSLContext:
        from .tlsutil import keylog, server_context
        s = self.settings
        if bool(s.cert) != bool(s.key):
            raise ConfigError("--cert and --key (tls.cert, tls.key) go together: one of them is missing")
        if s.cert and s.key:
            try:
                ctx = server_context(s.cert, s.key)
            except (OSError, ssl.SSLError) as exc:
                hint = ""
                if isinstance(exc, ssl.SSLError):
                    hint = " (both must be PEM, the key the certificate's own: are --cert and --key swapped?)"
                raise ConfigError(f"--cert/--key (tls.cert, tls.key): cannot load the certificate {s.cert} with "
                                  f"the key {s.key}: {_tls_file_error(exc)}{hint}") from None
        else:
            from .certs import CertificateAuthority
            try:
                ca = CertificateAuthority(s.ca_dir)
                certfile, keyfile = ca.leaf(s.listen.host)
            except OSError as exc:
                raise ConfigError(f"--ca-dir (tls.ca_dir): cannot use {s.ca_dir or '~/.h2proxy'}: "
                                  f"{_tls_file_error(exc)}") from None
            ctx = server_context(str(certfile), str(keyfile))

            def sni(sslobj, name, _ctx):
                if name and name != s.listen.host:
                    try:
                        sslobj.context = ca.ssl_context_for(name)
                    except Exception as exc:  # a bad SNI must not kill the listener
                        log.warning("no certificate for SNI %r: %s", name, exc)
                return None
            ctx.sni_callback = sni
        keylog(ctx)
        return ctx

    @property
    def url(self) -> str:
        return str(self.settings.listen)

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stop accepting, send GOAWAY to every client, wait for streams in flight, close."""
        grace = self.settings.limits.grace_period if grace is None else grace
        if self.server is not None:
            self.server.close()
        if getattr(self, "_ticker", None) is not None:
            self._ticker.cancel()
        for b in list(self.bridges):
            if b.relay is not None:
                b.relay.shutdown()
                b.flush()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
                b.relay is not None and b.relay.active_streams for b in self.bridges):
            await asyncio.sleep(0.05)
        for b in list(self.bridges):
            for side in (CLIENT, SERVER):
                b._close_side(side)
            if b.upstream_task is not None:
                b.upstream_task.cancel()
        if self.bridges:
            try:
                await asyncio.wait_for(self._idle.wait(), 2.0)
            except asyncio.TimeoutError:
                for b in list(self.bridges):
                    for t in b.transports:
                        if t is not None:
                            t.abort()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass

    # -- connections ------------------------------------------------------

    def accepted(self, bridge: Bridge, transport: asyncio.Transport) -> None:
        s = self.settings
        up = self._upstream()
        peer = transport.get_extra_info("peername")
        sock_name = transport.get_extra_info("sockname")
        info: Dict[str, Any] = {"client_addr": _addr(peer), "listen_addr": _addr(sock_name),
                                "upstream_addr": f"{up.host}:{up.port}", "mode": "reverse",
                                "client_tls": None, "upstream_tls": None}
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            info["client_tls"] = _tls_info(sslobj)
            if sslobj.selected_alpn_protocol() != "h2":
                log.warning("c%d: TLS client %s did not offer ALPN h2 (offered protocols are not h2); refused",
                            bridge.conn_id, info["client_addr"])
                transport.abort()
                return
        if len(self.bridges) >= s.limits.max_connections:
            log.warning("limit max_connections = %d reached; refusing %s with GOAWAY ENHANCE_YOUR_CALM",
                        s.limits.max_connections, info["client_addr"])
            from framecodec import frame as fc

            from .core.protocol import ErrorCode
            # The server's preface (SETTINGS), then GOAWAY saying why, then close.
            transport.write(fc.SettingsFrame(0).serialize() + fc.GoAwayFrame(
                0, last_stream_id=0, error_code=int(ErrorCode.ENHANCE_YOUR_CALM),
                additional_data=f"h2proxy: limit max_connections = {s.limits.max_connections} "
                                f"reached".encode()).serialize())
            transport.close()
            return
        bridge.transports[CLIENT] = transport
        try:
            transport.set_write_buffer_limits(high=s.limits.high_water)
        except (AttributeError, NotImplementedError):
            pass
        _nodelay(transport)
        self.bridges.add(bridge)
        self._idle.clear()
        self.total_connections += 1
        bridge.client_info = info
        bridge.relay = Relay(bridge.conn_id, RelayOptions(strict=s.strict, decode_headers=s.decode_headers,
                                                          limits=s.limits),
                             hooks=self.hooks, sink=self.sink, now=time.time(), info=info)
        bridge.relay.wake = bridge.flush
        # Read nothing more from the client until the upstream is there.
        bridge._pause(CLIENT)
        bridge.upstream_task = asyncio.ensure_future(self._connect_upstream(bridge))
        loop = asyncio.get_running_loop()
        bridge.preface_timer = loop.call_later(s.limits.preface_timeout, self._preface_deadline, bridge)

    def _preface_deadline(self, bridge: Bridge) -> None:
        bridge.preface_timer = None
        relay = bridge.relay
        if relay is not None and not relay.closed and not relay.preface_forwarded \
                and bridge.transports[CLIENT] is not None:
            relay.preface_timeout(self.settings.limits.preface_timeout)
            bridge.flush()

    async def _connect_upstream(self, bridge: Bridge) -> None:
        s = self.settings
        up = self._upstream()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _SideProtocol(bridge, SERVER), up.host, up.port,
                                       ssl=self.ssl_upstream,
                                       server_hostname=up.host if self.ssl_upstream else None),
                s.connect_timeout)
        except asyncio.CancelledError:
            return
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            why = _describe_connect_error(exc, up, s.connect_timeout)
            self._upstream_failed(bridge, why)
            return
        if self.ssl_upstream is not None:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                transport.close()
                self._upstream_failed(bridge, f"upstream {up} did not negotiate HTTP/2 (ALPN h2)")
                return
            bridge.client_info["upstream_tls"] = _tls_info(sslobj)
        if bridge.transports[CLIENT] is None:
            transport.close()
            return
        bridge.transports[SERVER] = transport
        try:
            transport.set_write_buffer_limits(high=s.limits.high_water)
        except (AttributeError, NotImplementedError):
            pass
        _nodelay(transport)
        bridge.flush()
        bridge._resume(CLIENT)

    def _upstream_failed(self, bridge: Bridge, why: str) -> None:
        log.warning("c%d: %s", bridge.conn_id, why)
        relay = bridge.relay
        t = bridge.transports[CLIENT]
        if relay is None or t is None:
            return
        relay.upstream_failed(why, time.time())
        bridge._resume(CLIENT)
        bridge.flush()

    def connection_done(self, bridge: Bridge) -> None:
        if bridge.preface_timer is not None:
            # A pending timer would keep the whole closed connection alive until it fires.
            bridge.preface_timer.cancel()
            bridge.preface_timer = None
        if bridge in self.bridges:
            self.bridges.discard(bridge)
            if bridge.relay is not None and not bridge.relay.closed:
                bridge.relay.close("connection closed")
        if not self.bridges:
            self._idle.set()


class PeekingTLSListener:
    """A TLS listener that reads the ClientHello first (without consuming it).

    A client whose ALPN offer lacks ``h2`` gets a fatal ``no_application_protocol``
    alert (RFC 7301 3.2) and a log line; any other socket is handed, untouched,
    to the event loop's TLS layer. Quacks like ``asyncio.Server`` for the parts
    ProxyServer uses.
    """

    def __init__(self, server: "ProxyServer", ctx: ssl.SSLContext) -> None:
        self.proxy = server
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.sockets: List[socket.socket] = []
        self.pending: dict = {}
        self._serving = False
        self._tasks: Set[asyncio.Task] = set()

    def listen(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if getattr(self.proxy.settings, "reuse_port", False):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        self.sockets = [sock]
        self.loop.add_reader(sock.fileno(), self._accept, sock)
        self._serving = True

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        for conn in list(self.pending):
            self._drop(conn)

    async def wait_closed(self) -> None:
        return None

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            deadline = self.loop.call_later(self.proxy.settings.limits.handshake_timeout, self._timeout, conn)
            self.pending[conn] = deadline
            self.loop.add_reader(conn.fileno(), self._peek, conn)

    def _timeout(self, conn: socket.socket) -> None:
        if conn in self.pending:
            limit = self.proxy.settings.limits.handshake_timeout
            log.warning("TLS client %s sent no ClientHello within %.1f s (limit handshake_timeout = %s); closed",
                        _peer(conn), limit, limit)
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        handle = self.pending.pop(conn, None)
        if handle is not None:
            handle.cancel()
        try:
            self.loop.remove_reader(conn.fileno())
        except (ValueError, OSError):
            pass
        conn.close()

    def _peek(self, conn: socket.socket) -> None:
        from .tlspeek import INCOMPLETE, MAX_HELLO, NO_APPLICATION_PROTOCOL_ALERT, NOT_TLS, client_hello_alpn
        try:
            data = conn.recv(MAX_HELLO, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        offer = client_hello_alpn(data)
        if offer == INCOMPLETE:
            # Peeking leaves the socket readable: poll again shortly instead of spinning.
            self.loop.remove_reader(conn.fileno())
            self.loop.call_later(0.01, self._repeek, conn)
            return
        handle = self.pending.pop(conn)
        handle.cancel()
        self.loop.remove_reader(conn.fileno())
        peer = _peer(conn)
        if offer == NOT_TLS:
            log.warning("client %s did not start a TLS handshake on a TLS listener; closed", peer)
            conn.close()
            return
        if isinstance(offer, list) and b"h2" not in offer:       # (None: not known here, the TLS layer decides)
            log.warning("TLS client %s offered ALPN %s without h2; refused with the no_application_protocol "
                        "alert", peer, [p.decode("ascii", "replace") for p in offer] or "(none)")
            try:
                conn.recv(len(data))
                conn.send(NO_APPLICATION_PROTOCOL_ALERT)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()
            return
        task = asyncio.ensure_future(self._handshake(conn, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _repeek(self, conn: socket.socket) -> None:
        if conn in self.pending:
            self.loop.add_reader(conn.fileno(), self._peek, conn)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: ClientProtocol(self.proxy), conn, ssl=self.ctx,
                ssl_handshake_timeout=self.proxy.settings.limits.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            limit = self.proxy.settings.limits.handshake_timeout
            if isinstance(exc, asyncio.TimeoutError) or "longer than" in str(exc):
                log.warning("TLS handshake with %s not done within %.1f s (limit handshake_timeout = %s); closed",
                            peer, limit, limit)
            else:
                log.warning("TLS handshake with %s failed: %s", peer, exc)
            conn.close()


_SIDE = ("client", "server")


def _peer(conn: socket.socket) -> str:
    try:
        return _addr(conn.getpeername()) or "?"
    except OSError:
        return "?"


#: Up to this many bytes, a batch of frames is joined into one buffer before it is written; a buffer this
#: long or longer is written as it is.
_JOIN_LIMIT = 65536
#: The longest TLS record's payload (RFC 8446 section 5.1): OpenSSL cuts each buffer it is handed into
#: records this long, and a shorter last one.
_TLS_RECORD = 16384


def _write(transport, bufs: list) -> None:
    """Write one read batch's output: one buffer is cheapest for many small frames, while big DATA
    frames go to a plain socket as they are (one writev; a joined copy would only cost time).

    Over TLS, see :func:`_record_aligned`.
    """
    if len(bufs) == 1:
        transport.write(bufs[0])
        return
    if sum(map(len, bufs)) <= _JOIN_LIMIT:
        transport.write(b"".join(bufs))
    elif transport.get_extra_info("sslcontext") is not None:
        transport.writelines(_record_aligned(bufs))
    else:
        transport.writelines(bufs)


def _record_aligned(bufs: list) -> list:
    """The buffers of a large batch for a TLS transport, regrouped so that every one but the last is a
    whole number of full records long.

    The TLS layer encrypts each buffer it is handed on its own, so the frames as they are would end a
    record at every frame boundary: a 16 KiB DATA frame (16,393 bytes) would take two records, one of
    them 9 bytes. Joining the whole batch avoids that but copies it (a read's batch of large DATA is
    about 200 KiB). Here short buffers are joined together with the first bytes of the next long one,
    up to a record boundary, and the long one's middle goes as a view of it, uncopied: every record is
    full, as with one joined buffer, and the bulk of the batch is copied once less. (Given together to
    ``writelines``, they are one write to the socket.)
    """
    out: list = []
    short: list = []           # buffers waiting to be joined
    short_len = 0
    for buf in bufs:
        n = len(buf)
        if n < _JOIN_LIMIT:
            short.append(buf)
            short_len += n
            continue
        view = memoryview(buf)
        head = -short_len % _TLS_RECORD                     # fills the record the short ones began
        body_end = head + (n - head) // _TLS_RECORD * _TLS_RECORD
        if short:
            short.append(view[:head])
            out.append(b"".join(short))
        out.append(view[head:body_end])
        short = [view[body_end:]] if body_end < n else []
        short_len = n - body_end
    if short:
        out.append(b"".join(short) if len(short) > 1 else short[0])
    return out


def _tls_file_error(exc: BaseException) -> str:
    """The reason a certificate, key or CA file did not load, in one line."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}"
    return str(exc)


def _describe_frames(bufs: list) -> str:
    """``GOAWAY on stream 0, ...`` for buffers of whole frames (a log line about them)."""
    from .core.protocol import frame_name
    names = []
    for buf in bufs:
        pos, end = 0, len(buf)
        while pos + 9 <= end:
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            names.append(f"{frame_name(buf[pos + 3])} on stream {sid}")
            pos += 9 + int.from_bytes(buf[pos:pos + 3], "big")
        if pos != end:
            names.append(f"{end - pos} other bytes")
    return ", ".join(names) or "no frames"


def _nodelay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass


def _addr(name) -> Optional[str]:
    if not name:
        return None
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls_info(sslobj) -> dict:
    cipher = sslobj.cipher()
    sni = getattr(sslobj, "server_hostname", None)
    if sni and _is_ip_literal(sni):
        # RFC 6066 section 3 forbids IP literals in SNI and Python's ssl sends none for them: the name
        # is still what the certificate is checked against, but no SNI went over the wire.
        sni = None
    return {"alpn": sslobj.selected_alpn_protocol(), "version": sslobj.version(),
            "sni": sni, "cipher": cipher[0] if cipher else None}


def _is_ip_literal(name: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(name.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _describe_connect_error(exc: BaseException, up: Endpoint, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"upstream {up} did not answer within {timeout:g} s (limit connect_timeout = {timeout})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"upstream {up} TLS certificate rejected: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"upstream {up} TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"upstream {up} unreachable: {exc.strerror or exc}"
    return f"upstream {up} unreachable: {exc}"
