"""RFC 9113 / RFC 7541 conformance of a ``--strict`` proxy, from both of its sides, over raw sockets.

The cases are in :mod:`tests.h2spec_cases` (modelled on h2spec's list). Each runs

* on the **client side**: the test is the client of an in-process strict proxy whose
  upstream is nghttpd; it sends the case's bytes and reads what the proxy answers;
* on the **upstream side**: the test is the server behind the proxy (a raw listening
  socket); a well-behaved client (the ``h2`` library over a socket) sends a request
  through the proxy, the test answers it with the case's bytes, checks the proxy's
  answer to it, and checks that the client got a clean error and none of the bad data.

Every read has a deadline; nothing sleeps. At the end of the session a line gives the
counts ("N of M cases pass on the client side, ...").
"""
from __future__ import annotations

import asyncio
import struct
from typing import Dict, List, Optional, Tuple

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from tests import h2spec_cases as H
from tests.peers import LOOPBACK, Nghttpd

#: Seconds any single wait may take (a frame, a close, a connection).
TIMEOUT = 3.0
ALIVE_PING = b"alive?!!"

Frame = Tuple[int, int, int, bytes]      # (type, flags, stream id, payload)


# ---------------------------------------------------------------- counting and the summary line

class _Report:
    """Counts the outcome of every case per side and prints the totals at the end of the session."""

    def __init__(self) -> None:
        self.outcomes: Dict[str, Dict[str, str]] = {H.CLIENT_SIDE: {}, H.UPSTREAM_SIDE: {}}

    def pytest_runtest_logreport(self, report) -> None:
        if "test_conformance.py::test_case[" not in report.nodeid:
            return
        side, cid = _ids_from_nodeid(report.nodeid)
        if hasattr(report, "wasxfail"):
            self.outcomes[side][cid] = "xfailed"
        elif report.when == "call" or report.outcome != "passed":     # (a setup error or skip counts too)
            self.outcomes[side][cid] = report.outcome

    def line(self) -> str:
        parts = []
        for side in (H.CLIENT_SIDE, H.UPSTREAM_SIDE):
            got = self.outcomes[side]
            parts.append(f"{sum(1 for v in got.values() if v == 'passed')} of {len(got)} cases pass on the "
                         f"{side} side")
        return "Conformance (--strict): " + ", ".join(parts)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if any(self.outcomes.values()):
            terminalreporter.write_line(self.line())
            for side in (H.CLIENT_SIDE, H.UPSTREAM_SIDE):
                bad = sorted(k for k, v in self.outcomes[side].items() if v != "passed")
                if bad:
                    terminalreporter.write_line(f"  not passing on the {side} side: {', '.join(bad)}")


def _ids_from_nodeid(nodeid: str) -> Tuple[str, str]:
    param = nodeid.split("[", 1)[1].rstrip("]")
    side, cid = param.split("-", 1)
    return side, cid


@pytest.fixture(scope="module", autouse=True)
def _conformance_report(request):
    pm = request.config.pluginmanager
    report = pm.get_plugin("h2spec-conformance-report")
    if report is None:
        pm.register(_Report(), "h2spec-conformance-report")
    yield


# --------------------------------------------------------------------------- raw frame I/O

class FrameIO:
    """Frames over an asyncio stream pair; answers SETTINGS and PING like any endpoint would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer
        self.buf = bytearray()
        self.eof = False
        self.peer_settings: Dict[int, int] = {}
        self.got: List[Frame] = []
        #: Answer SETTINGS and PING as they come (off where a case wants to send the first frame itself).
        self.answer = True

    def send(self, data: bytes) -> None:
        if not self.w.is_closing():
            self.w.write(data)

    async def _fill(self, deadline: float) -> None:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise asyncio.TimeoutError
        try:
            chunk = await asyncio.wait_for(self.r.read(65536), left)
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    async def read_exactly(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if self.eof:
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
            await self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def next_frame(self, deadline: float) -> Optional[Frame]:
        """The next frame, or None once the peer closed; asyncio.TimeoutError past the deadline."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    t, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack_from(">L", self.buf, 5)[0] & 0x7FFFFFFF
                    payload = bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    f = (t, flags, sid, payload)
                    self.got.append(f)
                    self._answer(f)
                    return f
            if self.eof:
                return None
            await self._fill(deadline)

    def _answer(self, f: Frame) -> None:
        if not self.answer:
            return
        t, flags, sid, payload = f
        if t == H.SETTINGS and not flags & H.ACK and sid == 0 and len(payload) % 6 == 0:
            for k, v in struct.iter_unpack(">HL", payload):
                self.peer_settings[k] = v
            self.send(H.settings(ack=True))
        elif t == H.PING and not flags & H.ACK and len(payload) == 8 and sid == 0:
            self.send(H.ping(payload, ack=True))

    async def until(self, match, deadline: float, what: str, fail_on_errors: bool = True) -> Frame:
        while True:
            f = await _next(self, deadline, what)
            if f is None:
                pytest.fail(f"the connection closed while waiting for {what}")
            if match(*f):
                return f
            if fail_on_errors:
                _fail_on_error(f, what)

    async def until_all(self, wanted: dict, deadline: float) -> None:
        """Wait until each of ``wanted`` (what -> match) has been seen, in any order."""
        left = dict(wanted)
        while left:
            f = await _next(self, deadline, " and ".join(left))
            if f is None:
                pytest.fail(f"the connection closed while waiting for {' and '.join(left)}")
            for what, match in list(left.items()):
                if match(*f):
                    del left[what]
                    break
            else:
                _fail_on_error(f, " and ".join(left))

    async def closed(self, deadline: float) -> bool:
        try:
            while await self.next_frame(deadline) is not None:
                pass
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        if not self.w.is_closing():
            self.w.close()


async def _next(io: FrameIO, deadline: float, what: str) -> Optional[Frame]:
    try:
        return await io.next_frame(deadline)
    except asyncio.TimeoutError:
        pytest.fail(f"nothing within {TIMEOUT} s while waiting for {what}; got {_describe(io.got[-6:])}")


def _fail_on_error(f: Frame, what: str) -> None:
    t, flags, sid, payload = f
    if t == H.GOAWAY:
        pytest.fail(f"GOAWAY {_goaway_text(payload)} while waiting for {what}")
    if t == H.RST_STREAM:
        pytest.fail(f"RST_STREAM {_code(payload)} on stream {sid} while waiting for {what}")


def _code(payload: bytes) -> str:
    if len(payload) < 4:
        return f"<{len(payload)} bytes>"
    code = struct.unpack_from(">L", payload)[0]
    return H.CODE_NAMES.get(code, hex(code))


def _goaway_text(payload: bytes) -> str:
    if len(payload) < 8:
        return "<short>"
    last, code = struct.unpack_from(">LL", payload)
    return f"{H.CODE_NAMES.get(code, hex(code))} last={last & 0x7FFFFFFF} {payload[8:100]!r}"


_NAMES = {H.DATA: "DATA", H.HEADERS: "HEADERS", H.PRIORITY: "PRIORITY", H.RST_STREAM: "RST_STREAM",
          H.SETTINGS: "SETTINGS", H.PUSH_PROMISE: "PUSH_PROMISE", H.PING: "PING", H.GOAWAY: "GOAWAY",
          H.WINDOW_UPDATE: "WINDOW_UPDATE", H.CONTINUATION: "CONTINUATION"}


def _describe(frames: List[Frame]) -> str:
    return ", ".join(f"{_NAMES.get(t, hex(t))}(flags={fl:#x}, stream={s}, {len(p)} bytes)"
                     for t, fl, s, p in frames) or "no frames"


# ------------------------------------------------------------------- the well-behaved client

class H2Client:
    """An h2-library client over a socket: sends one request, answers what it must, records events."""

    def __init__(self, settings: Optional[Dict[int, int]] = None) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            values = {int(k): int(v) for k, v in self.conn.local_settings.items()}
            values.update(settings)
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=values)
        self.events: list = []
        self.error: Optional[BaseException] = None
        self.done = asyncio.Event()
        self.changed = asyncio.Event()
        self.task: Optional[asyncio.Task] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def connect(self, port: int, request: Optional[str]) -> None:
        reader, self.writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), TIMEOUT)
        self.conn.initiate_connection()
        if request is not None:
            method = "GET" if request == "get" else "POST"
            self.conn.send_headers(1, [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"),
                                       (":path", "/")], end_stream=request == "get")
        self.writer.write(self.conn.data_to_send())
        self.task = asyncio.ensure_future(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    chunk = await reader.read(65536)
                except (ConnectionError, OSError):
                    chunk = b""
                if not chunk:
                    self.events.append("eof")
                    break
                try:
                    events = self.conn.receive_data(chunk)
                except h2.exceptions.ProtocolError as exc:
                    self.error = exc
                    break
                for ev in events:
                    self.events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                out = self.conn.data_to_send()
                if out and not self.writer.is_closing():
                    self.writer.write(out)
                self.changed.set()
        finally:
            self.done.set()
            self.changed.set()

    async def wait(self, predicate, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not predicate():
            if self.done.is_set() and not predicate():
                break
            self.changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                break
        if not predicate():
            pytest.fail(f"the client did not see {what}; its events: {self.summary()}")

    def terminated(self) -> bool:
        return any(isinstance(e, h2.events.ConnectionTerminated) or e == "eof" for e in self.events)

    def reset(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in self.events)

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)

    def leaked(self) -> List[str]:
        found = []
        for e in self.events:
            for hdrs in (getattr(e, "headers", None), getattr(e, "pushed_request_headers", None)):
                if hdrs and any(bytes(k).lower() == H.LEAK_HEADER[0].encode() for k, _ in hdrs):
                    found.append(f"{type(e).__name__} with {H.LEAK_HEADER[0]}")
            if isinstance(e, h2.events.DataReceived) and H.LEAK in e.data:
                found.append(f"DATA with {H.LEAK!r} on stream {e.stream_id}")
        return found

    def summary(self) -> str:
        return ", ".join(type(e).__name__ if not isinstance(e, str) else e for e in self.events[-12:]) or "none"

    async def close(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()


# -------------------------------------------------------------------------- playing a case

async def play(io: FrameIO, items, deadline: float) -> None:
    for item in items:
        if isinstance(item, H.WaitFor):
            await io.until(item.match, deadline, item.what)
        else:
            io.send(item)


def _violations(proxy) -> List[dict]:
    return [v for b in list(proxy.bridges) if b.relay is not None for v in b.relay.violations]


async def check(io: FrameIO, expect, proxy, deadline: float) -> None:
    """The peer under test (the proxy) reacts as the case expects."""
    loop = asyncio.get_running_loop()
    if isinstance(expect, H.Closed):
        # An invalid preface: the proxy answers with a short HTTP/1.1 text or a GOAWAY, then closes.
        try:
            while not io.eof:
                await io._fill(deadline)
        except asyncio.TimeoutError:
            pytest.fail(f"the connection is still open {TIMEOUT} s after an invalid preface")
        return
    if isinstance(expect, H.ConnError):
        while True:
            f = await _next(io, deadline, str(expect))
            if f is None:
                pytest.fail(f"the connection closed without a GOAWAY; expected {expect}; got {_describe(io.got[-6:])}")
            t, flags, sid, payload = f
            if t == H.RST_STREAM:
                pytest.fail(f"stream error RST_STREAM {_code(payload)} on stream {sid}; expected {expect}")
            if t == H.GOAWAY:
                last, code = struct.unpack_from(">LL", payload)
                assert code in expect.codes, f"GOAWAY {_goaway_text(payload)}; expected {expect}"
                assert payload[8:].startswith(b"h2proxy"), \
                    f"the GOAWAY ({_goaway_text(payload)}) is not the proxy's: the offending frame was forwarded"
                if expect.last is not None:
                    assert last & 0x7FFFFFFF == expect.last, \
                        f"GOAWAY names last stream {last & 0x7FFFFFFF}, expected {expect.last}"
                break
        assert await io.closed(loop.time() + TIMEOUT), f"the connection stays open {TIMEOUT} s after the GOAWAY"
        return
    if isinstance(expect, H.StreamError):
        while True:
            f = await _next(io, deadline, str(expect))
            if f is None:
                pytest.fail(f"the connection closed; expected {expect}")
            t, flags, sid, payload = f
            if t == H.GOAWAY:
                code = struct.unpack_from(">L", payload, 4)[0] if len(payload) >= 8 else None
                if expect.conn_ok and code in expect.codes and payload[8:].startswith(b"h2proxy"):
                    return      # a connection error with the same code is allowed here
                pytest.fail(f"GOAWAY {_goaway_text(payload)}; expected {expect}")
            if t == H.RST_STREAM and sid == expect.sid:
                code = struct.unpack_from(">L", payload)[0]
                assert code in expect.codes, f"RST_STREAM {_code(payload)} on stream {sid}; expected {expect}"
                break
            if t == H.RST_STREAM:
                pytest.fail(f"RST_STREAM {_code(payload)} on stream {sid}; expected {expect}")
        names = {H.CODE_NAMES[c] for c in expect.codes}
        assert any(v["code"] in names for v in _violations(proxy)), \
            f"the proxy recorded no violation with code {names}: the reset is not its own"
        await alive(io, deadline)
        return
    if isinstance(expect, H.Reply):
        await io.until(expect.match, deadline, expect.what)
        await alive(io, deadline)
        return
    if isinstance(expect, H.Relayed):
        return          # checked on the client (see _upstream_side)
    assert isinstance(expect, H.Alive), expect
    await alive(io, deadline, expect.forbid, expect.end_ok)


async def alive(io: FrameIO, deadline: float, forbid=None, end_ok: bool = False) -> None:
    io.send(H.ping(ALIVE_PING))
    what = "the answer to a PING (the connection should be alive)"
    while True:
        f = await _next(io, deadline, what)
        if f is None:
            if end_ok:
                return
            pytest.fail(f"the connection closed while waiting for {what}")
        t, flags, sid, payload = f
        if forbid is not None and forbid(t, flags, sid, payload):
            pytest.fail(f"got {_describe([f])}, which must not be sent")
        if t == H.PING and flags & H.ACK and payload == ALIVE_PING:
            return
        if end_ok and t == H.GOAWAY and len(payload) >= 8 and struct.unpack_from(">L", payload, 4)[0] == 0:
            assert await io.closed(asyncio.get_running_loop().time() + TIMEOUT), "open after GOAWAY NO_ERROR"
            return
        _fail_on_error(f, what)


# --------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-docroot")
    (root / "index.html").write_bytes(b"<html><body>hello from nghttpd, a body long enough</body></html>\n")
    server = Nghttpd(root).start()
    yield server
    server.stop()


def _params():
    out = []
    for c in H.CASES:
        for side in c.sides:
            marks = []
            if side in c.xfail:
                marks.append(pytest.mark.xfail(reason=c.xfail[side], strict=True))
            out.append(pytest.param(side, c, id=f"{side}-{c.id}", marks=marks))
    return out


@pytest.mark.parametrize("side, case", _params())
async def test_case(side: str, case: H.Case, request, proxy_factory):
    if side == H.CLIENT_SIDE:
        await _client_side(case, request.getfixturevalue("origin"), proxy_factory)
    else:
        await _upstream_side(case, proxy_factory)


async def _client_side(case: H.Case, origin: Nghttpd, proxy_factory) -> None:
    """The test is the client; the proxy's upstream is nghttpd."""
    loop = asyncio.get_running_loop()
    proxy = await proxy_factory(origin.url, strict=True)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, proxy.port), TIMEOUT)
    io = FrameIO(reader, writer)
    try:
        deadline = loop.time() + TIMEOUT
        if case.handshake:
            io.send(H.PREFACE + H.settings(*case.settings))
            await io.until_all({"the server's SETTINGS": lambda t, f, s, p: t == H.SETTINGS and not f & H.ACK,
                                "the ACK of our SETTINGS": lambda t, f, s, p: t == H.SETTINGS and f & H.ACK},
                               deadline)
        ctx = H.Ctx("client", io.peer_settings)
        deadline = loop.time() + TIMEOUT
        await play(io, case.builder(H.CLIENT_SIDE)(ctx), deadline)
        await check(io, H.expectation_for(case, H.CLIENT_SIDE, ctx), proxy, loop.time() + TIMEOUT)
    finally:
        io.close()


async def _upstream_side(case: H.Case, proxy_factory) -> None:
    """The test is the server behind the proxy; an h2 client sends a request through it."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue = asyncio.Queue()

    async def on_connect(reader, writer):
        await accepted.put((reader, writer))

    listener = await asyncio.start_server(on_connect, LOOPBACK, 0)
    port = listener.sockets[0].getsockname()[1]
    client = H2Client(case.client_settings)
    io: Optional[FrameIO] = None
    try:
        proxy = await proxy_factory(f"h2c://{LOOPBACK}:{port}", strict=True)
        await client.connect(proxy.port, case.request)
        reader, writer = await asyncio.wait_for(accepted.get(), TIMEOUT)
        io = FrameIO(reader, writer)
        io.answer = case.handshake
        deadline = loop.time() + TIMEOUT
        preface = await io.read_exactly(len(H.PREFACE), deadline)
        assert preface == H.PREFACE, f"the proxy's preface is {preface!r}"
        wanted = {"the client's SETTINGS": lambda t, f, s, p: t == H.SETTINGS and not f & H.ACK}
        if case.handshake:
            io.send(H.settings(*case.settings))
            wanted["the ACK of our SETTINGS"] = lambda t, f, s, p: t == H.SETTINGS and f & H.ACK
        if case.request is not None:
            wanted["the client's request"] = lambda t, f, s, p: t == H.HEADERS and s == 1
        await io.until_all(wanted, deadline)
        ctx = H.Ctx("server", io.peer_settings)
        deadline = loop.time() + TIMEOUT
        await play(io, case.builder(H.UPSTREAM_SIDE)(ctx), deadline)
        expect = H.expectation_for(case, H.UPSTREAM_SIDE, ctx)
        await check(io, expect, proxy, loop.time() + TIMEOUT)
        # What the well-behaved client got: a clean error where the server broke a rule, none of its data.
        if isinstance(expect, H.ConnError):
            await client.wait(client.terminated, "the end of the connection (GOAWAY or close)")
            ends = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
            if ends and case.request is not None:
                assert ends[0].last_stream_id >= 1, \
                    f"the client's GOAWAY says stream 1 was never processed ({ends[0]}), but it was forwarded"
        elif isinstance(expect, H.StreamError) and expect.sid == 1:
            # The client's stream 1 ends: reset, or complete already when the server broke the rule.
            await client.wait(lambda: client.reset(1) or client.terminated() or client.ended(1),
                              "the end of stream 1 (RST_STREAM or END_STREAM)")
        elif isinstance(expect, H.Relayed):
            await client.wait(lambda: any(expect.match(e) for e in client.events), expect.what)
            assert not _violations(proxy), f"the proxy recorded violations: {_violations(proxy)}"
            assert all(not b.relay.closed for b in proxy.bridges), "the proxy closed the connection"
        assert client.error is None, f"the client rejected what the proxy forwarded: {client.error!r}"
        assert not client.leaked(), f"forwarded to the client: {client.leaked()}"
    finally:
        if io is not None:
            io.close()
        await client.close()
        listener.close()
