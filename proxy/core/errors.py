"""Rules broken and limits hit: what the relay reports, logs and (in strict mode) answers.

Every RFC 9113 violation a check finds goes through :meth:`Violations._violation`: counted, logged
(bounded, and with the fields saying which peer is to blame), kept for the recording, and only in
strict mode answered the way a conformant endpoint would: RST_STREAM towards the offender and
CANCEL towards the other side for a stream error (itself under the reset limit: MadeYouReset),
GOAWAY for a connection error. A resource limit hit (:meth:`Violations._limit`) always ends the
connection with ENHANCE_YOUR_CALM, whatever the mode.

A mixin of :class:`~proxy.core.relay.Relay`, like :mod:`.output`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from framecodec import frame as fc
from framecodec.exceptions import PrefaceError
from framecodec.reader import Wire

from . import messages
from . import streams as st
from .interfaces import Actions, Counters
from .limits import Limits
from .protocol import ErrorCode, error_name
from .side import Side
from .streams import ProxyReset

if TYPE_CHECKING:
    from ..recording.sink import FrameSink
    from .streams import Stream

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1
CLIENT, SERVER = 0, 1
SIDE_NAME = ("client", "server")


class Violations:
    """The relay's reports of broken rules and hit limits (a mixin of Relay)."""

    id: int
    now: float
    strict: bool
    limits: Limits
    info: Dict[str, Any]
    sides: Tuple[Side, Side]
    client: Side
    server: Side
    streams: Dict[int, Stream]
    sink: Optional[FrameSink]
    rec: Optional[List[List[Wire]]]
    counters: Counters
    violations: List[Dict[str, Any]]
    preface_forwarded: bool

    if TYPE_CHECKING:
        def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None: ...

        def _out_raw(self, d: int, data: bytes, note: str) -> None: ...

        def _rec_flush(self) -> None: ...

        def _send_goaway(self, d: int, last: int, code: int, debug: Union[str, bytes],
                         note: str = "h2proxy") -> None: ...

        def _drop_held(self, s: Stream) -> None: ...

        def _close_stream(self, s: Stream) -> None: ...

        def _finish(self, reason: str, close_sides: Tuple[int, ...] = (CLIENT, SERVER)) -> None: ...

    def _problems(self, d: int, problems: List[messages.Problem], sid: Optional[int]) -> bool:
        """Report each of a frame's problems (``sid`` for stream errors); True once the frame is dropped."""
        for bad in problems:
            if self._violation(d, *bad, sid=None if bad[2] else sid):
                return True
        return False

    def _violation(self, d: int, section: str, code: int, connection: bool, message: str,
                   sid: Optional[int] = None, forwarded: Optional[bool] = None) -> bool:
        """Record a rule broken by side d. Returns True when the offending frame must be dropped."""
        self.counters["violations"] += 1
        kind = "connection error" if connection else f"stream error on stream {sid}"
        fate = "not forwarded" if self.strict else "forwarded"
        if forwarded is not None:
            fate = "forwarded" if forwarded else "not forwarded"
        n = self.counters["violations"]
        if n <= 20 or n % 1000 == 0:
            # Bounded logging: a peer repeating a violation must not flood the log.
            text = (f"c{self.id}: violation by the {SIDE_NAME[d]}: {message} (RFC 9113 section {section}); "
                    f"a conformant endpoint answers {error_name(code)} ({kind}); {fate}")
            if n == 20:
                text += "; further violations on this connection are logged every 1000th"
            log.warning("%s", text, extra=self._blame(d))
        record = {"side": SIDE_NAME[d], "section": section, "code": error_name(code), "message": message,
                  "connection": connection, "stream": sid}
        if len(self.violations) < 100:
            self.violations.append(record)
        if self.sink is not None:
            if self.rec is not None:
                self._rec_flush()
            self.sink.violation(self.id, self.now, SIDE_NAME[d], section, error_name(code), message)
        if not self.strict or forwarded:
            return False
        if connection or not sid:     # (a "stream error" on stream 0 can only be a connection error)
            self._connection_error(d, section, code, message, forced=False, logged=True)
        else:
            self._stream_error(d, sid, code, message)
        return True

    def _blame(self, d: int) -> Dict[str, Any]:
        """Fields for a log record about side d's error: which connection and peer (for log filters
        and the tests' check that no peer that behaved is blamed)."""
        return {"h2proxy_conn": self.id, "h2proxy_side": SIDE_NAME[d],
                "h2proxy_client": self.info.get("client_addr"), "h2proxy_upstream": self.info.get("upstream_addr")}

    def _stream_error(self, d: int, sid: int, code: int, message: str) -> None:
        """Strict mode: reset the stream towards the offender, cancel it towards the other side."""
        s = self.streams.get(sid)
        offender = d
        rate = self.sides[offender].reset_rate
        if rate.hit(self.now):
            # A peer that makes the proxy reset streams for it resets them as surely as with RST_STREAM
            # (MadeYouReset, CVE-2025-8671): the same limit as rapid reset.
            self._limit(offender, "max_resets_per_second",
                        f"streams reset by the proxy for the {SIDE_NAME[offender]}'s stream errors "
                        f"(MadeYouReset, CVE-2025-8671)")
            return
        self._out(1 - offender, fc.RstStreamFrame(sid if offender == CLIENT or s is None else s.server_id,
                                                  error_code=int(code)).serialize(),
                  None, [{"hook": "h2proxy", "action": "strict"}])
        if s is not None:
            other_sid = s.server_id if offender == CLIENT else s.id
            told = {offender}
            if not (s.proxy_owned and offender == CLIENT):
                self._out(offender, fc.RstStreamFrame(other_sid, error_code=ErrorCode.CANCEL).serialize(),
                          None, [{"hook": "h2proxy", "action": "strict"}])
                told.add(1 - offender)
            s.state = st.CLOSED
            s.reset_by = ProxyReset(told)
            self._drop_held(s)
            self._close_stream(s)

    def _connection_error(self, d: int, section: str, code: int, message: str, forced: bool,
                          logged: bool = False) -> None:
        """Answer side d with GOAWAY(code), the other side with a clean GOAWAY, and close both."""
        if not logged:
            log.warning("c%d: %s: %s (RFC 9113 section %s) -> GOAWAY %s", self.id, SIDE_NAME[d], message,
                        section, error_name(code), extra=self._blame(d))
            if self.sink is not None:
                self.sink.violation(self.id, self.now, SIDE_NAME[d], section, error_name(code), message)
        towards_offender = 1 - d
        last_offender = self.client.last_stream if d == CLIENT else self.server.last_stream
        if d == CLIENT or self.preface_forwarded:
            # (Not towards a server that has not had the connection preface: it would read garbage.)
            self._send_goaway(towards_offender, last_offender, code, f"h2proxy: {message}")
        if self.preface_forwarded or d == CLIENT:
            if d == CLIENT and self.preface_forwarded:
                self._send_goaway(d, 0, ErrorCode.NO_ERROR,
                                  f"h2proxy: the client's connection failed ({error_name(code)})")
            elif d == SERVER:
                # Towards the client the last stream id counts its streams: they did reach the upstream.
                self._send_goaway(d, self.client.last_stream, ErrorCode.NO_ERROR,
                                  f"h2proxy: the upstream's connection failed ({error_name(code)})")
        self._finish(f"{SIDE_NAME[d]} {error_name(code)}: {message}", close_sides=(CLIENT, SERVER))

    def _limit(self, d: int, name: str, detail: str) -> None:
        """A resource limit was hit by side d: ENHANCE_YOUR_CALM to it, a clean GOAWAY to the other."""
        value = getattr(self.limits, name, None)
        message = f"limit {name} = {value} exceeded: {detail}"
        log.warning("c%d: the %s hit a limit: %s", self.id, SIDE_NAME[d], message)
        if self.sink is not None:
            self.sink.error(self.id, self.now, f"{SIDE_NAME[d]}: {message}")
        self._connection_error(d, "10.5", ErrorCode.ENHANCE_YOUR_CALM, message, forced=True, logged=True)

    def _bad_preface(self, exc: PrefaceError) -> None:
        text = (b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: 56\r\n\r\nh2proxy speaks HTTP/2 only (prior knowledge or TLS+ALPN)\n")
        log.warning("c%d: the client did not send the HTTP/2 connection preface: %s", self.id, exc)
        if self.sink is not None:
            self.sink.error(self.id, self.now, str(exc))
        self._out_raw(S2C, text, "plain-text error for a client that does not speak HTTP/2")
        self._finish(str(exc), close_sides=(CLIENT, SERVER))

    def _log_error(self, message: str) -> None:
        log.error("c%d: %s", self.id, message)
        if self.sink is not None:
            self.sink.error(self.id, self.now, message)
