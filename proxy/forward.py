"""Forward-proxy mode: HTTP CONNECT, TLS interception with per-host certificates.

A client (``curl -x http://127.0.0.1:8080 https://example.com/``) sends
``CONNECT host:port HTTP/1.1``. For an intercepted host the proxy

1. connects to ``host:port`` with TLS first (ALPN ``h2``, ``http/1.1``; the
   certificate verified against the system store, ``--upstream-ca`` or not at
   all with ``--insecure``), so that a failure becomes a ``502`` on the CONNECT
   with the reason in the body;
2. answers ``200 Connection Established`` and terminates TLS on the client
   socket (``loop.start_tls``, server side) with a certificate for the client's
   SNI, or the CONNECT host when there is none, issued on the fly by the
   proxy's CA (:class:`proxy.certs.CertificateAuthority`), offering the client
   the protocol the origin chose;
3. relays HTTP/2 frame by frame through a :class:`proxy.core.relay.Relay` and
   the reverse mode's :class:`proxy.server.Bridge` (hooks, frame logs and
   faults all apply), or, when either side does not speak HTTP/2, relays the
   decrypted bytes unchanged (still intercepted TLS) and logs so.

Hosts matching ``--ignore-hosts`` (or not matching ``--allow-hosts``) are
tunnelled: a raw TCP pipe, TLS ends at the origin. Anything but CONNECT is
refused with ``501``; CONNECT to the proxy's own port is refused with ``403``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import time
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .core.relay import CLIENT, SERVER, Relay, RelayOptions
from .server import (Bridge, ConfigError, Endpoint, ProxyServer, ProxySettings, _SideProtocol, _addr,
                     _describe_connect_error, _nodelay, _tls_info)

log = logging.getLogger("h2proxy")

#: Largest CONNECT request head (request line and header fields) the proxy reads.
MAX_HEAD = 8192
#: Bytes a side may send while its connection is being set up before the proxy stops reading it.
SETUP_BUFFER = 262144
#: Seconds a relayed-bytes connection may take to close one side once the other side is gone.
CLOSE_GRACE = 5.0
REFUSE_PLAIN = ("h2proxy intercepts HTTP/2 over TLS only; use CONNECT "
                "(e.g. curl -x http://PROXY:PORT https://host/), not plain http:// requests\n")
ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Refused(Exception):
    """A CONNECT the proxy answers with an error status (the message is the response body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_authority(target: str) -> Tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (the authority form of a CONNECT target) -> (host, port)."""
    target = target.strip()
    if target.startswith("["):
        end = target.find("]")
        if end < 0 or target[end + 1:end + 2] != ":":
            raise ValueError(f"bad CONNECT target {target!r}")
        host, port_text = target[1:end], target[end + 2:]
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"CONNECT target {target!r} is not host:port")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"CONNECT target {target!r} is not host:port")
    if not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ValueError(f"CONNECT target {target!r} has an invalid host")
    return host.lower().rstrip("."), int(port_text)


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def compile_patterns(patterns: Iterable[str], key: str) -> List["re.Pattern[str]"]:
    out = []
    for p in patterns or ():
        try:
            out.append(re.compile(p, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(f"{key}: {p!r} is not a valid regular expression: {exc}") from None
    return out


def _normal_ip(address: str) -> str:
    """An IP address as text in one spelling (no zone, IPv4-mapped IPv6 as IPv4); other text unchanged."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped if mapped is not None else ip)


def _is_local_address(address: str) -> bool:
    """Whether ``address`` is one of this machine's (any interface): only those can be bound.

    (Binding port 0 sends nothing; it fails with EADDRNOTAVAIL for an address that is not local.)
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_warning(host: str) -> Optional[str]:
    """The warning for a listen address anyone on the network may reach (None for loopback)."""
    if is_loopback_host(host):
        return None
    return (f"forward mode listening on {host}, which is not a loopback address: anyone who can reach it can "
            f"make the proxy open connections and intercept TLS for them")


class _HandOver(asyncio.Protocol):
    """A protocol that owns a socket until the hand-over to ``successor``.

    asyncio and uvloop schedule ``eof_received``/``connection_lost`` with
    call_soon, so they may arrive after the hand-over: they go to the successor
    then. Before it, a lost connection is noted (``lost``, ``exc``) and
    :meth:`lost_before_hand_over` runs.
    """

    successor: Optional[asyncio.Protocol] = None
    lost = False
    exc: Optional[BaseException] = None

    def eof_received(self):
        if self.successor is not None:
            return self.successor.eof_received()
        return False

    def connection_lost(self, exc) -> None:
        if self.successor is not None:
            self.successor.connection_lost(exc)
            return
        self.lost = True
        self.exc = exc
        self.lost_before_hand_over()

    def lost_before_hand_over(self) -> None:
        """The socket closed while this protocol still owned it."""


class _ConnectProtocol(_HandOver):
    """A client socket until its CONNECT request head has been read and answered."""

    def __init__(self, server: "ForwardProxyServer") -> None:
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.head_done = False
        self.chunks: List[bytes] = []
        self.chunks_size = 0
        self.timer: Optional[asyncio.TimerHandle] = None
        self.task: Optional[asyncio.Task] = None
        self.lost = False
        self.exc: Optional[BaseException] = None
        self.peer: Optional[str] = None
        self.peername = None
        #: The protocol that owns the socket after the hand-over (events still in flight go there).
        self.successor: Optional[asyncio.Protocol] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = _addr(transport.get_extra_info("peername"))
        self.peername = transport.get_extra_info("peername")
        srv = self.server
        if len(srv.bridges) + len(srv.pending) >= srv.settings.limits.max_connections:
            log.warning("limit max_connections = %d reached; refusing %s", srv.settings.limits.max_connections,
                        self.peer)
            transport.abort()
            return
        srv.pending.add(self)
        _nodelay(transport)
        self.timer = asyncio.get_running_loop().call_later(srv.head_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self.timer = None
        if not self.head_done and not self.lost:
            log.warning("client %s sent no complete CONNECT request within %.1f s; closed", self.peer,
                        self.server.head_timeout)
            self.respond(408, "h2proxy: no complete request head within "
                              f"{self.server.head_timeout:.1f} s\n")

    def data_received(self, data: bytes) -> None:
        if self.successor is not None:
            self.successor.data_received(data)
            return
        if self.transport.is_closing():   # answered already
            return
        if self.head_done:
            # Bytes after the head (a client that does not wait for the 200): kept for the tunnel.
            self.chunks.append(data)
            self.chunks_size += len(data)
            if self.chunks_size > SETUP_BUFFER:
                self.transport.pause_reading()
            return
        self.buf += data
        if self.buf[:1] == b"\x16":
            log.warning("client %s started a TLS handshake on the forward proxy's plain HTTP port; closed "
                        "(use an http:// proxy URL: curl -x http://HOST:PORT)", self.peer)
            self.abort()
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEAD:
            if len(self.buf) > MAX_HEAD or end >= 0:
                log.warning("client %s sent a request head longer than %d bytes; refused", self.peer, MAX_HEAD)
                self.respond(431, f"h2proxy: request head longer than {MAX_HEAD} bytes\n")
            return
        self.head_done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        rest = bytes(self.buf[end + 4:])
        head = bytes(self.buf[:end])
        self.buf = bytearray()
        if rest:
            self.chunks.append(rest)
            self.chunks_size = len(rest)
        self.transport.pause_reading()
        self.server.request(self, head)

    def lost_before_hand_over(self) -> None:
        self.server.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def respond(self, status: int, body: str) -> None:
        """Answer with an error status and close."""
        t = self.transport
        self.server.pending.discard(self)
        if t is None or t.is_closing():
            return
        payload = body.encode("utf-8")
        t.write((f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                 f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
                 f"Proxy-Agent: h2proxy\r\nConnection: close\r\n\r\n").encode("latin-1") + payload)
        t.close()

    def abort(self) -> None:
        self.server.pending.discard(self)
        if self.transport is not None:
            self.transport.abort()


class _Holder(_HandOver):
    """Keeps what one socket sends while the connection is being set up, to hand it over later."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.BaseTransport] = None
        self.chunks: List[bytes] = []
        self.size = 0
        self.paused = False
        self.lost = False
        self.exc: Optional[BaseException] = None
        #: The protocol that owns the socket after the hand-over (events still in flight go there).
        self.successor: Optional[asyncio.Protocol] = None
        #: Set whenever bytes arrive (for a setup step that waits for the client's first request).
        self.arrived = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.successor is not None:
            self.successor.data_received(data)
            return
        self.arrived.set()
        self.chunks.append(data)
        self.size += len(data)
        if self.size > SETUP_BUFFER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def lost_before_hand_over(self) -> None:
        self.arrived.set()


class PipeBridge(Bridge):
    """A :class:`Bridge` without a relay: bytes go from one side to the other unchanged.

    Used for tunnelled hosts (raw TCP) and for intercepted connections where a
    side does not speak HTTP/2 (decrypted bytes between two TLS transports).
    Backpressure and closing are the base class's.
    """

    __slots__ = ()

    def data(self, side: int, data: bytes) -> None:
        other = self.transports[1 - side]
        if other is not None:
            other.write(data)

    def flush(self) -> None:
        return None

    def lost(self, side: int, exc: Optional[BaseException]) -> None:
        super().lost(side, exc)
        other = self.transports[1 - side]
        if other is not None:
            # A TLS close waits for the peer's close_notify; a peer that never sends it must not keep
            # the connection around for the whole ssl_shutdown_timeout.
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_side, 1 - side, other)

    def _abort_side(self, side: int, t) -> None:
        if self.transports[side] is t:
            t.abort()


class ForwardProxyServer(ProxyServer):
    """An HTTP CONNECT proxy that intercepts TLS and relays HTTP/2 through the frame pipeline."""

    def __init__(self, settings: ProxySettings, cfg=None, hooks=None, sink=None,
                 ignore_hosts: Optional[Sequence[str]] = None, allow_hosts: Optional[Sequence[str]] = None) -> None:
        super().__init__(settings, hooks=hooks, sink=sink)
        if ignore_hosts is None:
            ignore_hosts = getattr(cfg, "ignore_hosts", None) or []
        if allow_hosts is None:
            allow_hosts = getattr(cfg, "allow_hosts", None) or []
        self.ignore_hosts = compile_patterns(ignore_hosts, "ignore_hosts")
        self.allow_hosts = compile_patterns(allow_hosts, "allow_hosts")
        self.pending: Set[_ConnectProtocol] = set()
        self.setup_tasks: Set[asyncio.Task] = set()
        #: Seconds a client has to send its whole CONNECT request head.
        self.head_timeout = settings.limits.handshake_timeout
        self.own_ports: Set[int] = set()
        self.own_addresses: Set[str] = set()
        #: The listening sockets' (address, port), to recognise a connection to the proxy itself.
        self.listening: Set[Tuple[str, int]] = set()
        #: Local (address, port) of each upstream socket the proxy opened -> its transport: a client
        #: connection coming from one of them is the proxy talking to itself (a CONNECT loop).
        self.outgoing: Dict[Tuple[str, int], asyncio.BaseTransport] = {}
        self.ca = None
        self.ctx_upstream: Optional[ssl.SSLContext] = None
        self.ctx_upstream_h1: Optional[ssl.SSLContext] = None
        self._sni_callbacks: Dict[tuple, object] = {}

    # -- start / stop -----------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if s.listen.tls:
            raise ConfigError(f"listen: forward mode takes plain HTTP CONNECT requests; use --listen "
                              f"http://{s.listen.host}:{s.listen.port} (TLS is intercepted inside each tunnel)")
        if s.upstream is not None:
            log.warning("upstream %s is ignored in forward mode: clients name the origin with CONNECT", s.upstream)
        from .certs import CertificateAuthority
        from .tlsutil import client_context
        try:
            self.ca = CertificateAuthority(s.ca_dir)
        except OSError as exc:
            raise ConfigError(f"ca_dir: cannot use {s.ca_dir or '~/.h2proxy'}: {exc.strerror or exc}") from None
        try:
            self.ctx_upstream = client_context(verify=not s.insecure, cafile=s.upstream_ca, alpn=("h2", "http/1.1"))
            self.ctx_upstream_h1 = client_context(verify=not s.insecure, cafile=s.upstream_ca, alpn=("http/1.1",))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"upstream_ca: cannot load {s.upstream_ca}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        if s.insecure:
            log.warning("--insecure: upstream certificates are not verified; anyone on the path to an origin "
                        "can impersonate it")
        warning = listen_warning(s.listen.host)
        if warning:
            log.warning("%s", warning)
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(
                lambda: _ConnectProtocol(self), s.listen.host, s.listen.port,
                reuse_address=True, reuse_port=s.reuse_port or None, backlog=1024)
        except OSError as exc:
            raise ConfigError(f"listen: cannot listen on {s.listen}: {exc.strerror or exc}") from None
        for sock in self.server.sockets:
            name = sock.getsockname()
            self.port = name[1]
            self.own_ports.add(name[1])
            self.own_addresses.add(name[0])
            self.listening.add((_normal_ip(name[0]), name[1]))
        self.own_addresses.add(s.listen.host)
        try:
            for info in await asyncio.wait_for(
                    loop.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM), 2.0):
                self.own_addresses.add(info[4][0])
        except (OSError, asyncio.TimeoutError):
            pass
        self._ticker = loop.call_later(1.0, self._tick)
        self.settings.listen = Endpoint(s.listen.scheme, s.listen.host, self.port)
        log.info("forward proxy on %s; leaf certificates from the CA in %s", self.url, self.ca.directory)

    @property
    def url(self) -> str:
        host = self.settings.listen.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.settings.listen.port}"

    async def stop(self, grace: Optional[float] = None) -> None:
        if self.server is not None:
            self.server.close()
        for p in list(self.pending):
            if p.head_done:
                p.abort()
            else:
                p.respond(503, "h2proxy: the proxy is stopping\n")
        for task in list(self.setup_tasks):
            task.cancel()
        if self.setup_tasks:
            await asyncio.wait(list(self.setup_tasks), timeout=2.0)
        await super().stop(grace)

    # -- policy -----------------------------------------------------------

    def intercepts(self, host: str, port: int) -> bool:
        """Whether CONNECT host:port is intercepted (True) or tunnelled untouched (False)."""
        names = (authority(host, port), host)
        if self.allow_hosts and not any(p.search(n) for p in self.allow_hosts for n in names):
            return False
        return not any(p.search(n) for p in self.ignore_hosts for n in names)

    def _is_self(self, addresses: Iterable[str], port: int) -> bool:
        """Whether host:port, resolved to ``addresses``, is one of the proxy's own listening sockets.

        A loopback or unspecified address with the proxy's port always counts; so does any address of
        this machine when the proxy listens on the unspecified address (0.0.0.0 or ::, i.e. on every
        local address, including those of other interfaces that no host name resolves to).
        """
        if port not in self.own_ports:
            return False
        wildcard = any(ipaddress.ip_address(host).is_unspecified for host, p in self.listening if p == port)
        for a in addresses:
            try:
                ip = ipaddress.ip_address(_normal_ip(a))
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified or str(ip) in self.own_addresses:
                return True
            if (str(ip), port) in self.listening or (wildcard and _is_local_address(str(ip))):
                return True
        return False

    def _loops_back(self, transport: asyncio.BaseTransport) -> bool:
        """After connecting: the upstream socket's peer is one of the proxy's own listening sockets."""
        peer = transport.get_extra_info("peername")
        return bool(peer) and self._is_self([str(peer[0])], int(peer[1]))

    def _note_outgoing(self, transport: asyncio.BaseTransport) -> None:
        """Remember an upstream socket's local address, so that a connection it makes to the proxy's own
        listener is recognised there (forgotten once it closes; pruned as the table grows)."""
        local = transport.get_extra_info("sockname")
        if not local:
            return
        if len(self.outgoing) >= 1024:
            for key in [k for k, t in self.outgoing.items() if t.is_closing()]:
                del self.outgoing[key]
        self.outgoing[(_normal_ip(str(local[0])), int(local[1]))] = transport

    def comes_from_self(self, peer) -> bool:
        """Whether a client connection's peer address is one of the proxy's own upstream sockets."""
        if not peer or not self.outgoing:
            return False
        t = self.outgoing.get((_normal_ip(str(peer[0])), int(peer[1])))
        return t is not None and not t.is_closing()

    # -- requests ---------------------------------------------------------

    def request(self, proto: _ConnectProtocol, head: bytes) -> None:
        """A complete request head from a client: start the CONNECT, or refuse."""
        text = head.decode("latin-1")
        line = text.split("\n", 1)[0].strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            log.warning("client %s sent a malformed request line %r; refused", proto.peer, line[:100])
            proto.respond(400, "h2proxy: malformed request line\n")
            return
        method, target, _version = parts
        if self.comes_from_self(proto.peername):
            # The proxy's own upstream socket: a CONNECT that reached the proxy itself by a way the
            # address check did not see. Nesting stops here, at the first level.
            log.warning("client %s is the proxy's own upstream connection (a CONNECT loop); refused with 403",
                        proto.peer)
            proto.respond(403, "h2proxy: this connection comes from the proxy itself; refused (a CONNECT loop)\n")
            return
        if method != "CONNECT":
            log.warning("client %s sent %s %s: forward mode takes only CONNECT; refused with 501", proto.peer,
                        method, target[:200])
            proto.respond(501, REFUSE_PLAIN)
            return
        try:
            host, port = parse_authority(target)
        except ValueError as exc:
            log.warning("client %s: %s; refused", proto.peer, exc)
            proto.respond(400, f"h2proxy: {exc}\n")
            return
        task = asyncio.ensure_future(self._connect(proto, host, port))
        proto.task = task
        self.setup_tasks.add(task)
        task.add_done_callback(self.setup_tasks.discard)

    async def _connect(self, proto: _ConnectProtocol, host: str, port: int) -> None:
        cid = self.next_id()
        target = authority(host, port)
        upstream: List[Optional[asyncio.BaseTransport]] = [None]
        handed_over = False
        try:
            infos = await self._resolve(host, port)
            if self._is_self([i[4][0] for i in infos], port):
                raise Refused(403, f"h2proxy: CONNECT {target} points at the proxy itself; refused "
                                   f"(it would loop)")
            if not self.intercepts(host, port):
                handed_over = await self._tunnel(cid, proto, host, port, infos, upstream)
            else:
                handed_over = await self._intercept(cid, proto, host, port, infos, upstream)
        except Refused as exc:
            log.warning("c%d: CONNECT %s from %s refused with %d: %s", cid, target, proto.peer, exc.status,
                        exc.message.strip())
            proto.respond(exc.status, exc.message.rstrip("\n") + "\n")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("c%d: CONNECT %s from %s: setting up the connection failed", cid, target, proto.peer)
        finally:
            if not handed_over:
                if upstream[0] is not None:
                    upstream[0].close()
                self.pending.discard(proto)
                t = proto.transport
                if t is not None and not t.is_closing():
                    t.abort()

    async def _resolve(self, host: str, port: int) -> list:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                           self.settings.connect_timeout)
        except asyncio.TimeoutError:
            raise Refused(504, f"h2proxy: resolving {host} took longer than {self.settings.connect_timeout:g} s "
                               f"(limit connect_timeout = {self.settings.connect_timeout})") from None
        except (OSError, UnicodeError) as exc:
            raise Refused(502, f"h2proxy: cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        if not infos:
            raise Refused(502, f"h2proxy: cannot resolve {host}")
        return infos

    async def _open(self, cid: int, host: str, port: int, infos: list, ctx: Optional[ssl.SSLContext],
                    protocol: asyncio.Protocol) -> asyncio.Transport:
        """Connect to the first resolved address that answers; TLS with ``ctx`` when given."""
        loop = asyncio.get_running_loop()
        s = self.settings
        endpoint = Endpoint("https" if ctx is not None else "tcp", host, port)

        async def attempt():
            last: Optional[BaseException] = None
            for info in infos:
                try:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, info[4][0], port, ssl=ctx,
                        server_hostname=host if ctx is not None else None,
                        ssl_handshake_timeout=s.limits.handshake_timeout if ctx is not None else None)
                    return transport
                except ssl.SSLError:
                    raise
                except OSError as exc:
                    last = exc
            raise last  # type: ignore[misc]

        async def checked():
            transport = await attempt()
            if self._loops_back(transport):
                transport.abort()
                raise Refused(403, f"h2proxy: CONNECT {authority(host, port)} reached the proxy itself "
                                   f"({_addr(transport.get_extra_info('peername'))}); refused (it would loop)")
            self._note_outgoing(transport)
            return transport

        try:
            return await asyncio.wait_for(checked(), s.connect_timeout)
        except Refused:
            raise
        except asyncio.TimeoutError as exc:
            raise Refused(504, "h2proxy: " + _describe_connect_error(exc, endpoint, s.connect_timeout)) from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            raise Refused(502, "h2proxy: " + _describe_connect_error(exc, endpoint, s.connect_timeout)) from None

    async def _tunnel(self, cid: int, proto: _ConnectProtocol, host: str, port: int, infos: list,
                      upstream: list) -> bool:
        holder = _Holder()
        upstream[0] = up = await self._open(cid, host, port, infos, None, holder)
        client = proto.transport
        if proto.lost or client is None or client.is_closing():
            return False
        self.pending.discard(proto)
        client.write(ESTABLISHED)
        log.info("c%d: CONNECT %s from %s: tunnelled without interception (ignore_hosts/allow_hosts)", cid,
                 authority(host, port), proto.peer)
        bridge = PipeBridge(self, cid)
        self._join(bridge, client, proto, up, holder)
        return True

    async def _intercept(self, cid: int, proto: _ConnectProtocol, host: str, port: int, infos: list,
                         upstream: list) -> bool:
        loop = asyncio.get_running_loop()
        target = authority(host, port)
        up_holder = _Holder()
        upstream[0] = up = await self._open(cid, host, port, infos, self.ctx_upstream, up_holder)
        up_alpn = up.get_extra_info("ssl_object").selected_alpn_protocol()
        client = proto.transport
        if proto.lost or client is None or client.is_closing():
            return False
        if proto.chunks:
            raise Refused(400, "h2proxy: the client sent data before the 200 response to CONNECT")
        offer = ("h2", "http/1.1") if up_alpn == "h2" else ("http/1.1",)
        try:
            ctx = self._client_context(host, offer)
        except Exception as exc:
            raise Refused(502, f"h2proxy: cannot issue a certificate for {host}: {exc}") from None
        self.pending.discard(proto)
        client.write(ESTABLISHED)
        c_holder = _Holder()
        try:
            tls = await loop.start_tls(client, c_holder, ctx, server_side=True,
                                       ssl_handshake_timeout=self.settings.limits.handshake_timeout)
        except asyncio.CancelledError:
            client.abort()
            raise
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.warning("c%d: CONNECT %s: TLS handshake with the client %s failed: %s (does the client trust "
                        "the h2proxy CA? see 'h2proxy ca')", cid, target, proto.peer, exc or type(exc).__name__)
            client.abort()
            return False
        if tls is None:
            client.abort()
            return False
        c_holder.transport = tls
        if c_holder.size > SETUP_BUFFER:
            c_holder.paused = True
            tls.pause_reading()
        c_ssl = tls.get_extra_info("ssl_object")
        c_alpn = c_ssl.selected_alpn_protocol()
        sni = getattr(c_ssl, "_h2proxy_sni", None)
        c_info = _tls_info(c_ssl)
        c_info["sni"] = sni
        if up_alpn == "h2" and c_alpn == "h2":
            info = {"client_addr": proto.peer, "listen_addr": _addr(client.get_extra_info("sockname")),
                    "upstream_addr": _addr(up.get_extra_info("peername")), "mode": "forward",
                    "target": target, "client_tls": c_info,
                    "upstream_tls": _tls_info(up.get_extra_info("ssl_object"))}
            bridge = Bridge(self, cid)
            self._join(bridge, tls, c_holder, up, up_holder, info)
            log.info("c%d: CONNECT %s from %s: intercepted, HTTP/2 (certificate for %s)", cid, target,
                     proto.peer, sni or host)
            return True
        if up_alpn == "h2":
            # The origin agreed to h2 but the client did not offer it: ask the origin again for HTTP/1.1.
            up.close()
            up_holder = _Holder()
            try:
                upstream[0] = up = await self._open(cid, host, port, infos, self.ctx_upstream_h1, up_holder)
                again = up.get_extra_info("ssl_object").selected_alpn_protocol()
            except Refused as exc:
                again, why = None, exc.message.replace("h2proxy: ", "", 1).strip()
            else:
                why = f"asked for http/1.1 it chose ALPN {again or 'none'}"
            if again != "http/1.1":
                # An origin that chose h2 and, asked for http/1.1 alone, does not agree to it speaks only
                # HTTP/2; the proxy does not translate, so the client gets a 502 saying so, not a bare close.
                if up is not None:
                    up.close()
                message = (f"h2proxy: the origin {target} speaks only HTTP/2 ({why}) and the client only "
                           f"HTTP/1.1 (ALPN {c_alpn or 'none'}); h2proxy does not translate between them: "
                           f"use an HTTP/2 client (e.g. curl --http2)")
                log.warning("c%d: CONNECT %s from %s: %s; answered 502", cid, target, proto.peer,
                            message.replace("h2proxy: ", "", 1))
                await self._refuse_inside(tls, c_holder, 502, message)
                return True
        log.info("c%d: CONNECT %s from %s: not HTTP/2 (client ALPN %s, origin ALPN %s); relaying the decrypted "
                 "bytes unchanged, without frame inspection", cid, target, proto.peer, c_alpn or "none",
                 up.get_extra_info("ssl_object").selected_alpn_protocol() or "none")
        bridge = PipeBridge(self, cid)
        self._join(bridge, tls, c_holder, up, up_holder)
        return True

    async def _refuse_inside(self, tls: asyncio.Transport, holder: "_Holder", status: int, message: str) -> None:
        """Answer an HTTP/1.1 request inside intercepted TLS with an error status, then close.

        The request head is read first (within ``handshake_timeout``): closing with it unread would
        send a TCP reset, which can discard the answer before the client reads it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.limits.handshake_timeout
        while b"\r\n\r\n" not in b"".join(holder.chunks) and not holder.lost and loop.time() < deadline:
            holder.arrived.clear()
            try:
                await asyncio.wait_for(holder.arrived.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        if holder.lost or tls.is_closing():
            return
        payload = (message.rstrip("\n") + "\n").encode("utf-8")
        tls.write((f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                   f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
                   f"Proxy-Agent: h2proxy\r\nConnection: close\r\n\r\n").encode("latin-1") + payload)
        tls.close()
        # A client that never answers the TLS close must not keep the socket.
        loop.call_later(CLOSE_GRACE, tls.abort)

    def _client_context(self, host: str, offer: tuple) -> ssl.SSLContext:
        """A server-side context for the client leg: a leaf for ``host``, swapped for the SNI name if it differs."""
        cb = self._sni_callbacks.get(offer)
        if cb is None:
            ca = self.ca

            def cb(sslobj, name, _ctx, offer=offer):
                try:
                    sslobj._h2proxy_sni = name
                except AttributeError:
                    pass
                if name:
                    try:
                        sslobj.context = ca.ssl_context_for(name, alpn=offer)
                    except Exception as exc:  # a bad SNI must not kill the connection setup
                        log.warning("no certificate for SNI %r: %s", name, exc)
                return None
            self._sni_callbacks[offer] = cb
        ctx = self.ca.ssl_context_for(host, alpn=offer)
        ctx.sni_callback = cb
        return ctx

    def _join(self, bridge: Bridge, client, c_holder, up, up_holder: _Holder, info: Optional[dict] = None) -> None:
        """Hand both transports to ``bridge`` (with a relay when ``info`` is given) and replay what was held.

        ``c_holder`` and ``up_holder`` are the protocols that held each socket during the setup
        (``chunks``, ``lost``, ``exc``, ``successor``).
        """
        s = self.settings
        bridge.transports[CLIENT] = client
        bridge.transports[SERVER] = up
        for t in (client, up):
            try:
                t.set_write_buffer_limits(high=s.limits.high_water)
            except (AttributeError, NotImplementedError):
                pass
            _nodelay(t)
        self.bridges.add(bridge)
        self._idle.clear()
        self.total_connections += 1
        if info is not None:
            bridge.client_info = info
            bridge.relay = Relay(bridge.conn_id, RelayOptions(strict=s.strict, decode_headers=s.decode_headers,
                                                              limits=s.limits),
                                 hooks=self.hooks, sink=self.sink, now=time.time(), info=info)
            bridge.relay.wake = bridge.flush
            bridge.preface_timer = asyncio.get_running_loop().call_later(
                s.limits.preface_timeout, self._preface_deadline, bridge)
        held = ((SERVER, up, up_holder), (CLIENT, client, c_holder))
        for side, t, holder in held:
            proto = _SideProtocol(bridge, side)
            t.set_protocol(proto)
            holder.successor = proto
        for side, t, holder in held:
            chunks, holder.chunks = holder.chunks, []
            for chunk in chunks:
                if bridge.transports[1 - side] is not None:
                    bridge.data(side, chunk)
        for side, t, holder in held:
            if holder.lost:
                bridge.lost(side, holder.exc)
            elif bridge.transports[side] is t and t.is_closing():
                # The peer closed while the setup protocol held the socket; with uvloop the TLS
                # shutdown that started then may wait for a peer that says nothing more.
                t.abort()
        for side, t, holder in held:
            if bridge.transports[side] is not None and not bridge.paused_reading[side]:
                try:
                    t.resume_reading()
                except (RuntimeError, AttributeError):
                    pass


__all__ = ["ForwardProxyServer", "PipeBridge", "parse_authority", "listen_warning", "MAX_HEAD", "REFUSE_PLAIN"]
