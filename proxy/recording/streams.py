"""Rebuilding request/response exchanges (one per stream) from the frame records of one leg."""
from __future__ import annotations

import collections
from typing import Dict, List, Optional

from framecodec.frame import DataFrame, Frame

from .decode import unb64
from .logfile import Connection

__all__ = ["Exchange", "ExchangeBuilder", "exchanges", "data_bytes", "request_direction"]


def request_direction(leg: str) -> str:
    """The direction requests travel on ``leg``: the client leg receives them, the upstream leg sends them."""
    return "recv" if leg == "client" else "send"


def data_bytes(rec: dict) -> Optional[bytes]:
    """The data of a DATA record without padding; None when the log does not hold the bytes."""
    wire = unb64(rec.get("wire"))
    if len(wire) < 9:
        return None
    try:
        frame, length = Frame.parse_frame_header(memoryview(wire)[:9])
        if not isinstance(frame, DataFrame):
            return None
        frame.parse_body(memoryview(wire)[9:9 + length])
        return bytes(frame.data)
    except Exception:
        return None


class Exchange:
    """One stream of one leg: the request and the response as the log shows them."""

    def __init__(self, conn: int, leg: str, stream: int) -> None:
        self.conn = conn
        self.leg = leg
        self.stream = stream
        self.request_headers: Optional[List[List[str]]] = None
        self.request_trailers: Optional[List[List[str]]] = None
        self.request_body = bytearray()
        self.request_body_size = 0
        self.request_body_complete = True
        self.informational: List[List[List[str]]] = []
        self.response_headers: Optional[List[List[str]]] = None
        self.response_trailers: Optional[List[List[str]]] = None
        self.response_body = bytearray()
        self.response_body_size = 0
        self.response_body_complete = True
        self.pushed = False
        self.promised_by: Optional[int] = None
        self.t_start: Optional[float] = None
        self.t_request_end: Optional[float] = None
        self.t_response_start: Optional[float] = None
        self.t_end: Optional[float] = None
        self.reset: Optional[dict] = None
        #: Frame types in each direction, in order ("request" / "response").
        self.types: Dict[str, List[str]] = {"request": [], "response": []}

    @staticmethod
    def _get(headers, name) -> Optional[str]:
        for h in headers or ():
            if h[0] == name:
                return h[1]
        return None

    @property
    def method(self) -> Optional[str]:
        return self._get(self.request_headers, ":method")

    @property
    def path(self) -> Optional[str]:
        return self._get(self.request_headers, ":path")

    @property
    def status(self) -> Optional[int]:
        value = self._get(self.response_headers, ":status")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def url(self, default_authority: str = "") -> str:
        h = self.request_headers or []
        scheme = self._get(h, ":scheme") or "http"
        authority = self._get(h, ":authority") or self._get(h, "host") or default_authority
        return f"{scheme}://{authority}{self._get(h, ':path') or ''}"


class ExchangeBuilder:
    """Builds the exchanges of one leg of one connection from its frame records, fed one at a time.

    An exchange is handed out by :meth:`pop_done` once both its request and its
    response have ended (or the stream was reset), so a converter keeps in
    memory only the streams still open in the log, and the last ``recent``
    ended ones: a frame that comes late for an ended stream (a RST_STREAM after
    END_STREAM) still lands on its exchange.
    """

    #: Ended exchanges kept for late frames before they are handed out.
    recent = 256

    def __init__(self, conn: int, leg: str = "client") -> None:
        self.conn = conn
        self.leg = leg
        self._req_dir = request_direction(leg)
        self.open: Dict[int, Exchange] = {}
        self._ended: "collections.OrderedDict[int, Exchange]" = collections.OrderedDict()
        self._done: List[Exchange] = []

    def _get(self, sid: int) -> Exchange:
        ex = self.open.get(sid)
        if ex is None:
            ex = self._ended.pop(sid, None)
            if ex is None:
                ex = Exchange(self.conn, self.leg, sid)
            self.open[sid] = ex
        return ex

    def add(self, rec: dict) -> None:
        """One record of the connection (records of other legs and kinds are ignored)."""
        if rec.get("record") != "frame" or rec.get("leg") != self.leg:
            return
        sid = rec.get("stream") or 0
        ftype = rec.get("type")
        ts = rec.get("ts")
        is_request = rec.get("dir") == self._req_dir
        flags = rec.get("flags") or 0
        if ftype == "PUSH_PROMISE" and not is_request:
            promised = (rec.get("fields") or {}).get("promised_stream_id")
            if promised:
                ex = self._get(promised)
                ex.pushed = True
                ex.promised_by = sid
                ex.t_start = ts
                ex.t_request_end = ts
                if rec.get("headers") is not None:
                    ex.request_headers = rec["headers"]
            return
        if sid == 0 or ftype not in ("HEADERS", "CONTINUATION", "DATA", "RST_STREAM"):
            return
        ex = self._get(sid)
        if ex.t_start is None:
            ex.t_start = ts
        ex.types["request" if is_request else "response"].append(ftype)
        if ftype in ("HEADERS", "CONTINUATION"):
            headers = rec.get("headers")
            if headers is not None:
                if is_request:
                    if ex.request_headers is None:
                        ex.request_headers = headers
                    else:
                        ex.request_trailers = headers
                else:
                    status = Exchange._get(headers, ":status")
                    if status is not None and status.startswith("1") and ex.response_headers is None:
                        ex.informational.append(headers)
                    elif ex.response_headers is None:
                        ex.response_headers = headers
                        ex.t_response_start = ts
                    else:
                        ex.response_trailers = headers
            if not is_request and ex.t_response_start is None and ftype == "HEADERS":
                ex.t_response_start = ts
        elif ftype == "DATA":
            size = (rec.get("fields") or {}).get("data_length")
            data = data_bytes(rec)
            if size is None:
                size = len(data) if data is not None else 0
            if is_request:
                ex.request_body_size += size
                if data is None:
                    ex.request_body_complete = False
                else:
                    ex.request_body += data
            else:
                ex.response_body_size += size
                if data is None:
                    ex.response_body_complete = False
                else:
                    ex.response_body += data
        elif ftype == "RST_STREAM":
            f = rec.get("fields") or {}
            ex.reset = {"by": "client" if is_request else "server", "code": f.get("error"), "ts": ts}
            ex.t_end = ts
        if flags & 0x01 and ftype in ("HEADERS", "DATA"):
            if is_request:
                ex.t_request_end = ts
            else:
                ex.t_end = ts
        if ex.reset is not None or (ex.t_end is not None and ex.t_request_end is not None):
            self._ended[sid] = self.open.pop(sid)
            if len(self._ended) > self.recent:
                self._done.append(self._ended.popitem(last=False)[1])

    def pop_done(self) -> List[Exchange]:
        """The ended exchanges that left the window of recent ones since the last call."""
        done, self._done = self._done, []
        return done

    def finish(self) -> List[Exchange]:
        """Every exchange not handed out yet (the log ended or the connection closed)."""
        rest = self.pop_done() + list(self._ended.values()) + list(self.open.values())
        self._ended.clear()
        self.open.clear()
        return rest


def exchanges(conn: Connection, leg: str = "client") -> List[Exchange]:
    """The exchanges of one leg of a connection, in the order their streams started."""
    builder = ExchangeBuilder(conn.conn, leg)
    for rec in conn.frames(leg):
        builder.add(rec)
    return sorted(builder.finish(), key=lambda e: (e.t_start if e.t_start is not None else 0.0, e.stream))
