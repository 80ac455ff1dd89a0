"""Helpers for testing HTTP/2 clients and servers through h2proxy (docs/testing.md).

``h2proxy_running`` starts an in-process proxy with fault rules in front of the
server under test::

    async with h2proxy_running(upstream="h2c://127.0.0.1:8443",
                               faults=["rst_stream code=REFUSED_STREAM every=3 type=headers "
                                       "direction=server->client towards=client"]) as proxy:
        ...   # point the client under test at proxy.url
        assert proxy.hits("rst_stream-1") == 3

The pytest plugin (:mod:`proxy.testing.plugin`, registered as ``h2proxy``)
has the same as a fixture. :class:`H2Client` is a small HTTP/2 client (on the
``h2`` library) that records what it got, frame by frame, for the recipes and
the project's own tests.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from h2.connection import H2Connection

    from framecodec.reader import FrameReader, RawFrame

    from ..faults.hook import FaultHook
    from ..faults.rules import Rule
    from ..server import ProxyServer

# The proxy itself is imported when first used: the pytest plugin imports this package in every
# pytest run of an environment where h2proxy is installed.

__all__ = ["h2proxy_running", "RunningProxy", "H2Client", "Response", "FaultError"]

RuleLike = Union[str, dict, "Rule"]


def __getattr__(name: str):
    if name == "FaultError":
        from ..faults.rules import FaultError
        return FaultError
    raise AttributeError(name)


class RunningProxy:
    """An in-process proxy started by :func:`h2proxy_running`."""

    def __init__(self, server: "ProxyServer", faults: "FaultHook", admin=None) -> None:
        self.server = server
        self.fault_hook = faults
        self.admin = admin

    # -- where it is

    @property
    def port(self) -> int:
        port = self.server.port
        if port is None:
            raise RuntimeError("the proxy is not listening (not started, or stopped)")
        return port

    @property
    def host(self) -> str:
        return self.server.settings.listen.host

    @property
    def url(self) -> str:
        """What a client connects to: ``http://127.0.0.1:PORT`` (h2c, prior knowledge) or ``https://...``."""
        scheme = "https" if self.server.settings.listen.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def h2c_url(self) -> str:
        """The proxy's own spelling of its address (``h2c://`` or ``https://``)."""
        return self.server.url

    # -- faults

    def add_fault(self, rule: RuleLike) -> str:
        """Add a rule (one line, a table or a Rule); it applies to the next frame. Returns its name."""
        return self.fault_hook.add(rule).name

    def change_fault(self, name: str, **changes: Any) -> dict:
        return self.fault_hook.change(name, changes).to_dict()

    def remove_fault(self, name: str) -> None:
        self.fault_hook.remove(name)

    @property
    def faults(self) -> List[dict]:
        """The rules with their counters, as the admin API lists them."""
        return [r.to_dict() for r in self.fault_hook.rules]

    def hits(self, name: str) -> int:
        """How many times rule ``name`` acted."""
        return self.fault_hook.hits(name)

    def matches(self, name: str) -> int:
        """How many frames rule ``name`` matched (acted on or not)."""
        return self.fault_hook.matches(name)

    @property
    def injected(self) -> List[dict]:
        """What the rules did, oldest first.

        Each entry: ``{"rule", "action", "conn", "stream", "direction", "frame", "detail"}``.
        """
        return self.fault_hook.injected

    def events(self, rule: Optional[str] = None) -> List[dict]:
        return [e for e in self.fault_hook.injected if rule is None or e["rule"] == rule]

    def reset_counters(self) -> None:
        self.fault_hook.reset_counters()

    @property
    def connections_total(self) -> int:
        """Client connections accepted so far (closed ones included)."""
        return self.server.total_connections

    @property
    def connections_open(self) -> int:
        """Client connections open now."""
        return len(self.server.bridges)


@contextlib.asynccontextmanager
async def h2proxy_running(upstream: str, faults: Iterable[RuleLike] = (), *, listen: str = "h2c://127.0.0.1:0",
                          hooks: Sequence[Any] = (), sink=None, admin: bool = False,
                          admin_token: Optional[str] = None, grace: float = 0.2,
                          **settings: Any) -> AsyncIterator[RunningProxy]:
    """Run a proxy to ``upstream`` with fault rules for the duration of the block.

    ``faults``: one-line rules, tables (dicts with the TOML keys) or Rules;
    ``hooks``: more hook objects, before the faults; ``admin=True`` also
    serves the admin API on a free loopback port (``proxy.admin.url``,
    ``proxy.admin.token``); other keywords go to :class:`ProxySettings`
    (``strict``, ``limits``, ``upstream_ca``, ...). On leaving, streams in
    flight get ``grace`` seconds.
    """
    from ..faults.hook import FaultHook
    from ..hooks.chain import HookChain
    from ..server import ProxyServer, ProxySettings, parse_endpoint
    fault_hook = FaultHook()
    for i, rule in enumerate(faults or ()):
        fault_hook.add(rule, source=f"faults[{i}]" if not isinstance(rule, str) else None)
    chain = HookChain(list(hooks) + [fault_hook])
    fault_hook.attach(chain)
    ps = ProxySettings(listen=parse_endpoint(listen), upstream=parse_endpoint(upstream, "upstream"), **settings)
    server = ProxyServer(ps, hooks=chain, sink=sink)
    await server.start()
    admin_server = None
    try:
        if admin:
            from ..faults.admin import AdminServer
            admin_server = AdminServer("127.0.0.1:0", admin_token, chain, announce=False)
            await admin_server.start()
        yield RunningProxy(server, fault_hook, admin_server)
    finally:
        if admin_server is not None:
            await admin_server.stop()
        await server.stop(grace=grace)


# ---------------------------------------------------------------- a small client

@dataclass
class Response:
    """What :class:`H2Client` got for one request."""

    stream_id: int
    status: Optional[int] = None
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: List[Tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset: Optional[str] = None          # error code name of an RST_STREAM the client received
    error: Optional[str] = None          # the connection failed (GOAWAY with an error, protocol error, EOF)
    timed_out: bool = False
    data_frames: List[int] = field(default_factory=list)   # sizes of the DATA frames, in order
    started: float = 0.0
    finished: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.ended and self.reset is None and self.error is None and self.status is not None

    @property
    def elapsed(self) -> Optional[float]:
        return None if self.finished is None else self.finished - self.started

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass
class GoAway:
    error_code: str
    last_stream_id: int
    debug: bytes


class H2Client:
    """A small asyncio HTTP/2 client (h2c or TLS) that records what arrives.

    ``window``: the stream window it announces (SETTINGS_INITIAL_WINDOW_SIZE);
    ``conn_window``: extra connection window granted at the start. Received
    DATA is acknowledged as it arrives (the h2 library sends WINDOW_UPDATEs).
    After ``close()`` or a failure, ``goaway``, ``resets``, ``unknown_frames``,
    ``pings``, ``settings`` and ``settings_at`` tell what the server side did.
    """

    def __init__(self, url: str, *, window: int = 65535, conn_window: int = 0, ssl=None,
                 authority: Optional[str] = None, max_frame_size: int = 16384) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.scheme = "https" if parts.scheme == "https" else "http"
        self.authority = authority or f"{self.host}:{self.port}"
        self.ssl = ssl
        self.window = window
        self.conn_window = conn_window
        self.max_frame_size = max_frame_size
        self.conn: Optional[H2Connection] = None
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.responses: Dict[int, Response] = {}
        self._done: Dict[int, asyncio.Event] = {}
        self._task: Optional[asyncio.Task] = None
        self.goaway: Optional[GoAway] = None
        self.closed = False
        self.error: Optional[str] = None
        self.settings: Dict[int, int] = {}
        self.settings_at: Optional[float] = None      # seconds after connect() when the server's SETTINGS came
        self.pings: List[bytes] = []
        self.unknown_frames: List[Tuple[int, int, int, bytes]] = []   # (type, stream, flags, payload)
        self.resets: Dict[int, str] = {}
        self.events: List[Any] = []
        #: Every frame as it arrived on the wire: (type, flags, stream id, length) -- CONTINUATIONs included.
        self.frames: List[Tuple[int, int, int, int]] = []
        self._frame_reader: Optional[FrameReader] = None
        self.started = 0.0
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "H2Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> "H2Client":
        import h2.config
        import h2.connection
        import h2.settings
        self.started = time.monotonic()
        reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None)
        self.reader = reader
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        conn = self.conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: self.max_frame_size})
        conn.initiate_connection()
        if self.conn_window:
            conn.increment_flow_control_window(self.conn_window)
        from framecodec.reader import FrameReader
        self._frame_reader = FrameReader(max_frame_size=(1 << 24) - 1)
        self._flush()
        self._task = asyncio.ensure_future(self._read(reader))
        return self

    @property
    def _h2(self) -> H2Connection:
        """The h2 connection; using the client before connect() is a programming error."""
        if self.conn is None:
            raise ConnectionError("H2Client is not connected: call connect() (or use it as a context manager)")
        return self.conn

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        import h2.exceptions
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    self._fail("the connection was closed (EOF)")
                    return
                # Frame by frame: h2 discards every event of a receive_data() call that raises, so a
                # GOAWAY followed in the same read by a frame h2 refuses (an RST_STREAM on a stream
                # the GOAWAY kept, which RFC 9113 section 6.8 allows) would otherwise vanish.
                for frame in self._whole_frames(data):
                    self.frames.append((frame.type, frame.flags, frame.stream_id, frame.length))
                    try:
                        events = self._h2.receive_data(bytes(frame.wire))
                    except h2.exceptions.ProtocolError as exc:
                        self._fail(f"protocol error: {type(exc).__name__}: {exc}")
                        self._flush()
                        return
                    for ev in events:
                        self._event(ev)
                self._flush()
                self._changed.set()
        except (ConnectionError, OSError) as exc:
            self._fail(f"connection failed: {exc}")
        except asyncio.CancelledError:
            raise

    def _whole_frames(self, data: bytes) -> List[RawFrame]:
        """The frames ``data`` completes (the start of a frame waits for the next read).

        The reader takes any length the 24-bit field can say: what a corrupting fault sends is
        still cut where its header says, and h2 is the one to refuse it.
        """
        if self._frame_reader is None:
            raise ConnectionError("H2Client is not connected: call connect() (or use it as a context manager)")
        return self._frame_reader.feed(data)

    def frames_of(self, frame_type: int, stream_id: Optional[int] = None) -> List[Tuple[int, int, int, int]]:
        """The frames of one type (a number: 0 DATA, 1 HEADERS, 9 CONTINUATION, ...) that arrived."""
        return [f for f in self.frames if f[0] == frame_type and (stream_id is None or f[2] == stream_id)]

    def _event(self, ev) -> None:
        import h2.events as e
        self.events.append(ev)
        now = time.monotonic()
        if isinstance(ev, e.RemoteSettingsChanged):
            if self.settings_at is None:
                self.settings_at = now - self.started
            for code, change in ev.changed_settings.items():
                self.settings[int(code)] = change.new_value
        elif isinstance(ev, e.ResponseReceived):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.headers = _text_headers(ev.headers)
                st = r.header(":status")
                r.status = int(st) if st and st.isdigit() else None
        elif isinstance(ev, e.InformationalResponseReceived):
            pass
        elif isinstance(ev, e.TrailersReceived):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.trailers = _text_headers(ev.headers)
        elif isinstance(ev, e.DataReceived):
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.body += ev.data
                r.data_frames.append(len(ev.data))
            if ev.flow_controlled_length:
                try:
                    self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except Exception:  # the stream may be closed already
                    pass
        elif isinstance(ev, e.StreamEnded):
            self._end(ev.stream_id, now)
        elif isinstance(ev, e.StreamReset):
            name = _code_name(ev.error_code)
            self.resets[ev.stream_id] = name
            r = self.responses.get(ev.stream_id)
            if r is not None:
                r.reset = name
            self._end(ev.stream_id, now)
        elif isinstance(ev, e.ConnectionTerminated):
            self.goaway = GoAway(_code_name(ev.error_code), ev.last_stream_id or 0, ev.additional_data or b"")
            for sid, r in self.responses.items():
                if not r.ended and (sid > (ev.last_stream_id or 0) or ev.error_code):
                    r.error = f"GOAWAY {self.goaway.error_code} (last stream {self.goaway.last_stream_id})"
                    self._end(sid, now)
        elif isinstance(ev, e.PingReceived):
            self.pings.append(bytes(ev.ping_data))
        elif isinstance(ev, e.UnknownFrameReceived):
            from hyperframe.frame import ExtensionFrame  # what h2 makes of a frame type it does not know
            f = ev.frame
            if isinstance(f, ExtensionFrame) and f.type is not None:
                self.unknown_frames.append((f.type, f.stream_id, f.flag_byte, bytes(f.body)))

    def _end(self, sid: int, now: float) -> None:
        r = self.responses.get(sid)
        if r is not None and r.finished is None:
            r.ended = r.reset is None and r.error is None
            r.finished = now
        ev = self._done.get(sid)
        if ev is not None:
            ev.set()

    def _fail(self, why: str) -> None:
        self.closed = True
        if self.error is None:
            self.error = why
        now = time.monotonic()
        for sid, r in self.responses.items():
            if r.finished is None:
                r.error = r.error or why
                self._end(sid, now)
        self._changed.set()

    # -- requests

    def start_request(self, path: str, method: str = "GET", headers: Iterable[Tuple[str, str]] = (),
                      body: bytes = b"", keep_open: bool = False) -> int:
        """Send a request; returns its stream id (wait with :meth:`response`).

        ``keep_open``: leave the request unfinished (no END_STREAM), so that the stream stays open."""
        if self.closed:
            raise ConnectionError(f"connection closed: {self.error}")
        if self.goaway is not None:
            raise ConnectionError(f"the server sent GOAWAY {self.goaway.error_code} (last stream "
                                  f"{self.goaway.last_stream_id}): no new streams on this connection")
        conn = self._h2
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", self.scheme), (":authority", self.authority),
                (":path", path)] + [(str(k).lower(), str(v)) for k, v in headers]
        self.responses[sid] = Response(sid, started=time.monotonic())
        self._done[sid] = asyncio.Event()
        conn.send_headers(sid, hdrs, end_stream=not body and not keep_open)
        if body:
            conn.send_data(sid, body, end_stream=not keep_open)
        self._flush()
        return sid

    async def response(self, sid: int, timeout: Optional[float] = 10.0) -> Response:
        """Wait for the response on ``sid``; on timeout it comes back with ``timed_out`` set (and what arrived)."""
        r = self.responses[sid]
        try:
            await asyncio.wait_for(self._done[sid].wait(), timeout)
        except asyncio.TimeoutError:
            r.timed_out = True
        return r

    async def get(self, path: str, timeout: Optional[float] = 10.0, **kw) -> Response:
        return await self.response(self.start_request(path, **kw), timeout)

    async def get_many(self, paths: Iterable[str], timeout: Optional[float] = 10.0) -> List[Response]:
        """Send all requests at once, then wait for all of them."""
        sids = [self.start_request(p) for p in paths]
        return list(await asyncio.gather(*(self.response(s, timeout) for s in sids)))

    async def ping(self, data: bytes = b"h2client") -> None:
        self._h2.ping(data)
        self._flush()

    async def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true (checked after each read); False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(predicate())
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return bool(predicate())
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.writer is not None:
            if not self.closed and self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close_connection()
                    self._flush()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.closed = True


def _text_headers(headers: Iterable[Tuple[Union[str, bytes], Union[str, bytes]]]) -> List[Tuple[str, str]]:
    """The header list of an h2 event: str pairs, as ``header_encoding="utf-8"`` makes h2 give them."""
    return cast(List[Tuple[str, str]], list(headers))


def _code_name(code) -> str:
    from ..core.protocol import error_name
    try:
        return error_name(int(code))
    except (TypeError, ValueError):
        return str(code)
