"""Flow-control windows of each sender on each leg of a connection, over time, and the stalls in them.

A connection has four senders (docs/frame-log.md legs and directions): the client
(client leg, recv), the proxy towards the client (client leg, send), the proxy
towards the upstream (upstream leg, send) and the server (upstream leg, recv).
Each sender's send windows (RFC 9113 section 6.9) start at 65,535 for the
connection and at the receiver's SETTINGS_INITIAL_WINDOW_SIZE for each stream;
DATA it sends shrinks them, WINDOW_UPDATEs its receiver sends grow them, and a
new initial size shifts every stream window by the difference (section 6.9.2).

A *stall* is a sender holding a stream at a send window of zero or less
(the smaller of the stream's and the connection's) after a DATA frame that did
not end the stream, for at least ``threshold`` seconds. It ends when a
WINDOW_UPDATE (or a larger initial window) opens the window, or the stream is
reset or the connection closes; a stream that ends with an empty DATA frame
was not holding data and is not counted.

Fed frame-log records in order, as the relay saw them; cheap per record.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Mapping, Optional

__all__ = ["FlowTracker", "SENDERS", "SIDE_OF", "DEFAULT_WINDOW", "Record", "SenderKey", "side_of"]

#: A frame-log record (docs/frame-log.md), as decoded from its JSON line.
Record = Mapping[str, Any]
#: (leg, direction) of a sender: ("client" | "upstream", "recv" | "send").
SenderKey = tuple[str, str]
#: (time, window) at one point of a window's history; records without a time give None.
Sample = tuple[Optional[float], int]

DEFAULT_WINDOW = 65535
#: (leg, direction) of each sender, in the order the page draws them.
SENDERS: tuple[SenderKey, ...] = (("client", "recv"), ("client", "send"), ("upstream", "send"),
                                  ("upstream", "recv"))
#: Who sends on a (leg, direction).
SIDE_OF: dict[SenderKey, str] = {("client", "recv"): "client", ("client", "send"): "proxy to client",
                                 ("upstream", "send"): "proxy to upstream", ("upstream", "recv"): "server"}
_OTHER = {"recv": "send", "send": "recv"}
_INITIAL = "SETTINGS_INITIAL_WINDOW_SIZE"


def side_of(leg: object, d: object) -> Optional[str]:
    """Who sends on a record's ``leg`` and ``dir``; None when they are missing or name no sender."""
    if isinstance(leg, str) and isinstance(d, str):
        return SIDE_OF.get((leg, d))
    return None


class _StreamWindow:
    __slots__ = ("serial", "window", "ended", "stalled_since", "samples")

    def __init__(self, serial: int, window: int, t: Optional[float], max_samples: int) -> None:
        #: Order of creation among the sender's streams (stalls that end together are told in this order).
        self.serial = serial
        self.window = window
        self.ended = False
        self.stalled_since: Optional[float] = None
        self.samples: deque[Sample] = deque(maxlen=max_samples)
        if t is not None:
            self.samples.append((t, window))


class _Sender:
    __slots__ = ("key", "conn_window", "initial", "streams", "stalled", "created", "samples", "data_bytes")

    def __init__(self, key: SenderKey, max_samples: int) -> None:
        self.key = key
        self.conn_window = DEFAULT_WINDOW
        self.initial = DEFAULT_WINDOW
        self.streams: OrderedDict[int, _StreamWindow] = OrderedDict()
        #: The streams of ``streams`` stalled now (``stalled_since`` set): a window that grows looks at these
        #: only, not at every stream the sender has (up to ``max_streams``).
        self.stalled: dict[int, _StreamWindow] = {}
        #: Streams created so far (the next one's serial).
        self.created = 0
        self.samples: deque[Sample] = deque(maxlen=max_samples)
        self.data_bytes = 0


class FlowTracker:
    """The windows and stalls of one connection."""

    def __init__(self, threshold: float = 0.5, max_samples: int = 2000, max_stream_samples: int = 400,
                 max_streams: int = 1000, max_stalls: int = 200) -> None:
        self.threshold = threshold
        self.max_stream_samples = max_stream_samples
        self.max_streams = max_streams
        self.senders: dict[SenderKey, _Sender] = {k: _Sender(k, max_samples) for k in SENDERS}
        self.stalls: deque[dict[str, Any]] = deque(maxlen=max_stalls)
        #: FLOW_CONTROL_ERROR resets, GOAWAYs and violations: {t, side, stream, what}.
        self.errors: deque[dict[str, Any]] = deque(maxlen=max_stalls)
        self.last_t: Optional[float] = None
        #: When frames started going by unseen (see :meth:`stop`): windows are not followed after it.
        self.stopped: Optional[float] = None

    # ------------------------------------------------------------ feeding

    def _stream(self, s: _Sender, sid: int, t: Optional[float]) -> _StreamWindow:
        w = s.streams.get(sid)
        if w is None:
            s.created += 1
            w = s.streams[sid] = _StreamWindow(s.created, s.initial, t, self.max_stream_samples)
            if len(s.streams) > self.max_streams:
                s.stalled.pop(s.streams.popitem(last=False)[0], None)
        return w

    def _end_stall(self, s: _Sender, sid: int, w: _StreamWindow, t: Optional[float], by: str,
                   keep: bool = True) -> None:
        start = w.stalled_since
        w.stalled_since = None
        s.stalled.pop(sid, None)
        if start is None or not keep or t is None or t - start < self.threshold:
            return
        self.stalls.append({"side": SIDE_OF[s.key], "leg": s.key[0], "dir": s.key[1], "stream": sid,
                            "scope": "connection" if s.conn_window <= 0 else "stream", "start": start, "end": t,
                            "duration_ms": round((t - start) * 1000.0, 3), "ended_by": by})

    def _check_open(self, s: _Sender, t: Optional[float], by: str) -> None:
        """After a window grew: end the stalls whose window is open again."""
        if s.conn_window <= 0 or not s.stalled:
            return
        for sid, w in sorted(s.stalled.items(), key=lambda item: item[1].serial):
            if w.window > 0:
                self._end_stall(s, sid, w, t, by)

    def stop(self, t: Optional[float]) -> None:
        """Frames will be missing from now on: stop following the windows (stalls in progress are dropped)."""
        self.stopped = t
        for s in self.senders.values():
            for w in s.streams.values():
                w.stalled_since = None
            s.stalled.clear()

    def feed(self, rec: Record) -> None:
        """One frame record (others are ignored)."""
        if self.stopped is not None:
            return
        ftype = rec.get("type")
        # A record without a leg or direction names no sender: ("", "") is none of SENDERS.
        leg, d = rec.get("leg", ""), rec.get("dir", "")
        t = rec.get("ts")
        if t is not None:
            self.last_t = t
        sid = rec.get("stream") or 0
        if ftype == "DATA":          # the most frequent: handled here, without a further call
            s = self.senders.get((leg, d))
            if s is None:
                return
            n = rec.get("length") or 0
            s.conn_window -= n
            s.data_bytes += n
            s.samples.append((t, s.conn_window))
            w = self._stream(s, sid, t)
            w.window -= n
            w.samples.append((t, w.window))
            if rec.get("flags", 0) & 0x1:
                w.ended = True
                self._end_stall(s, sid, w, t, "END_STREAM", keep=n > 0)
            elif w.stalled_since is None and min(s.conn_window, w.window) <= 0 and t is not None:
                w.stalled_since = t
                s.stalled[sid] = w
        elif ftype == "WINDOW_UPDATE":
            # WINDOW_UPDATEs and SETTINGS are about the windows of the sender in the other direction.
            self._window_update(rec, self.senders.get((leg, _OTHER.get(d, ""))), sid, t)
        elif ftype == "SETTINGS":
            self._settings(rec, self.senders.get((leg, _OTHER.get(d, ""))), t)
        elif ftype == "HEADERS":
            s = self.senders.get((leg, d))
            if s is not None and rec.get("flags", 0) & 0x1:
                self._stream(s, sid, t).ended = True
        elif ftype == "RST_STREAM":
            self._rst_stream(rec, leg, d, sid, t)
        elif ftype == "GOAWAY":
            if (rec.get("fields") or {}).get("error") == "FLOW_CONTROL_ERROR":
                self.errors.append({"t": t, "side": SIDE_OF.get((leg, d)), "stream": 0,
                                    "what": "GOAWAY FLOW_CONTROL_ERROR"})

    def _window_update(self, rec: Record, s: Optional[_Sender], sid: int, t: Optional[float]) -> None:
        inc = (rec.get("fields") or {}).get("increment")
        if s is None or not isinstance(inc, int):
            return
        if sid == 0:
            s.conn_window += inc
            s.samples.append((t, s.conn_window))
            self._check_open(s, t, "WINDOW_UPDATE")
            return
        w = self._stream(s, sid, t)
        w.window += inc
        w.samples.append((t, w.window))
        if w.stalled_since is not None and w.window > 0 and s.conn_window > 0:
            self._end_stall(s, sid, w, t, "WINDOW_UPDATE")

    def _settings(self, rec: Record, s: Optional[_Sender], t: Optional[float]) -> None:
        fields = rec.get("fields") or {}
        if fields.get("ack") or s is None:
            return
        for name, value in fields.get("settings") or ():
            if name == _INITIAL and isinstance(value, int):
                delta = value - s.initial
                s.initial = value
                if delta:
                    for w in s.streams.values():
                        if not w.ended:
                            w.window += delta
                            w.samples.append((t, w.window))
                    self._check_open(s, t, "SETTINGS")

    def _rst_stream(self, rec: Record, leg: str, d: str, sid: int, t: Optional[float]) -> None:
        code = (rec.get("fields") or {}).get("error")
        for key in ((leg, d), (leg, _OTHER.get(d, ""))):
            s = self.senders.get(key)
            w = s.streams.get(sid) if s is not None else None
            if s is not None and w is not None:
                w.ended = True
                self._end_stall(s, sid, w, t, f"RST_STREAM {code}")
        if code == "FLOW_CONTROL_ERROR":
            self.errors.append({"t": t, "side": SIDE_OF.get((leg, d)), "stream": sid,
                                "what": "RST_STREAM FLOW_CONTROL_ERROR"})

    def violation(self, rec: Record) -> None:
        """A violation record: flow-control ones are marked on the charts."""
        if rec.get("code") == "FLOW_CONTROL_ERROR" or str(rec.get("section", "")).startswith("6.9"):
            self.errors.append({"t": rec.get("ts"), "side": rec.get("side"), "stream": None,
                                "what": f"violation {rec.get('section')}: {rec.get('message')}"})

    def close(self, t: Optional[float]) -> None:
        """The connection ended: stalls still open end here."""
        for s in self.senders.values():
            for sid, w in s.streams.items():
                if w.stalled_since is not None:
                    self._end_stall(s, sid, w, t, "connection closed")

    # ------------------------------------------------------------ reading

    def all_stalls(self, now: Optional[float] = None) -> list[dict[str, Any]]:
        """Ended stalls, then the ones still going on for at least the threshold at ``now``."""
        out = list(self.stalls)
        now = self.last_t if now is None else now
        if now is None:
            return out
        for s in self.senders.values():
            for sid, w in s.streams.items():
                if w.stalled_since is not None and now - w.stalled_since >= self.threshold:
                    out.append({"side": SIDE_OF[s.key], "leg": s.key[0], "dir": s.key[1], "stream": sid,
                                "scope": "connection" if s.conn_window <= 0 else "stream",
                                "start": w.stalled_since, "end": None,
                                "duration_ms": round((now - w.stalled_since) * 1000.0, 3), "ended_by": None})
        return out

    def connection_series(self) -> dict[str, list[list[Optional[float]]]]:
        """Per sender, [[t, connection window], ...]."""
        return {SIDE_OF[k]: [list(p) for p in s.samples] for k, s in self.senders.items() if s.samples}

    def stream_series(self, sid: int) -> dict[str, list[list[Optional[float]]]]:
        """Per sender, [[t, stream window], ...] of one stream."""
        out: dict[str, list[list[Optional[float]]]] = {}
        for k, s in self.senders.items():
            w = s.streams.get(sid)
            if w is not None and w.samples:
                out[SIDE_OF[k]] = [list(p) for p in w.samples]
        return out

    def windows_now(self) -> dict[str, int]:
        """Per sender, its connection window now."""
        return {SIDE_OF[k]: s.conn_window for k, s in self.senders.items()}
