"""What the web view shows: connections, streams, frames, windows and fingerprints, kept bounded.

Built from frame-log records (docs/frame-log.md), so the live proxy (through
:class:`~proxy.web.sink.WebSink`) and a recorded log (``h2proxy log web``) go
through the same code. Everything is bounded: at most ``max_conns``
connections (the oldest closed ones go first), a ring of frames per
connection, per stream and overall, a bounded number of streams per
connection and of window samples.

:meth:`WebModel.ingest` runs on the sink's background thread; the readers
(:meth:`snapshot`, :meth:`delta`, :meth:`connection`, :meth:`stream`) on the
event loop. One lock keeps them apart; readers copy what they return.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional

from ..recording.decode import unb64
from .fingerprint import Fingerprint
from .flow import SENDERS, SIDE_OF, FlowTracker, side_of

__all__ = ["WebModel", "Limits"]

#: Base64 characters of a frame's bytes kept for the hex view (258 bytes).
WIRE_CHARS = 344


class Limits:
    """How much the model keeps (all counts of items, not bytes)."""

    def __init__(self, max_conns: int = 64, conn_frames: int = 1000, closed_conn_frames: int = 200,
                 stream_frames: int = 200, overall_frames: int = 5000, max_streams: int = 500,
                 max_events: int = 200) -> None:
        self.max_conns = max_conns
        self.conn_frames = conn_frames
        self.closed_conn_frames = closed_conn_frames
        self.stream_frames = stream_frames
        self.overall_frames = overall_frames
        self.max_streams = max_streams
        self.max_events = max_events


class GrpcReader:
    """gRPC's length-prefixed messages (1 byte compressed flag, 4 bytes length) in one sender's DATA.

    Works on the bytes the model keeps of each frame (the first few hundred): a message whose
    prefix lies beyond them cannot be read, and reading stops there (``lost``).
    """

    __slots__ = ("messages", "remaining", "count", "lost", "partial")

    def __init__(self) -> None:
        self.messages: Deque[dict] = deque(maxlen=50)
        self.remaining = 0
        self.count = 0
        self.lost = False
        self.partial = b""

    def feed(self, payload: bytes, length: int, ts: Optional[float]) -> None:
        """``payload``: the first bytes of a DATA frame's data, ``length`` its full data length."""
        if self.lost:
            return
        pos = 0
        while pos < length:
            if self.remaining:
                step = min(self.remaining, length - pos)
                self.remaining -= step
                pos += step
                continue
            stop = min(length, pos + 5 - len(self.partial))
            if stop > len(payload):          # the prefix lies beyond the bytes kept of this frame
                self.lost = True
                return
            head = self.partial + payload[pos:stop]
            pos = stop
            if len(head) < 5:                # the prefix goes on in the next DATA frame
                self.partial = head
                return
            self.partial = b""
            size = int.from_bytes(head[1:5], "big")
            self.count += 1
            self.messages.append({"ts": ts, "compressed": bool(head[0] & 1), "length": size,
                                  "preview": payload[pos:pos + min(size, 32)].hex()})
            self.remaining = size

    def to_dict(self) -> dict:
        return {"count": self.count, "messages": list(self.messages), "lost": self.lost}


class StreamView:
    __slots__ = ("sid", "method", "path", "authority", "status", "grpc_status", "req_bytes", "resp_bytes",
                 "start", "end", "end_stream", "reset", "goaway", "frames", "hooks", "updated", "idle", "grpc")

    def __init__(self, sid: int, t: Optional[float], limits: Limits) -> None:
        self.sid = sid
        self.method: Optional[str] = None
        self.path: Optional[str] = None
        self.authority: Optional[str] = None
        self.status: Optional[str] = None
        self.grpc_status: Optional[str] = None
        self.req_bytes = self.resp_bytes = 0
        self.start = self.end = t
        #: Which senders ended the stream: "client", "proxy to client", "proxy to upstream", "server".
        self.end_stream: set[str] = set()
        self.reset: Optional[str] = None
        self.goaway: Optional[str] = None
        self.frames: Deque[dict] = deque(maxlen=limits.stream_frames)
        self.hooks: List[dict] = []
        self.updated = 0
        #: True while only PRIORITY frames named the stream (nghttp's dependency anchors).
        self.idle = True
        #: For gRPC streams (content-type application/grpc...): the message reader per sender.
        self.grpc: Optional[Dict[str, "GrpcReader"]] = None

    def feed_data(self, rec: Dict[str, Any], leg: object, side: Optional[str], flags: int,
                  t: Optional[float]) -> None:
        """A DATA frame of this stream: byte counts, END_STREAM and gRPC messages (read on the client leg)."""
        n = (rec.get("fields") or {}).get("data_length") or 0
        if self.grpc is not None and leg == "client" and side is not None:
            reader = self.grpc.get(side)
            if reader is None:
                reader = self.grpc[side] = GrpcReader()
            wire = unb64(rec.get("wire"))
            start = 10 if flags & 0x8 else 9
            reader.feed(wire[start:start + n], n, t)
        if side == "client":
            self.req_bytes += n
        elif side == "proxy to client":
            self.resp_bytes += n
        if flags & 0x1 and side:
            self.end_stream.add(side)

    def feed_headers(self, headers: Iterable[Any]) -> None:
        """The decoded fields of a HEADERS or CONTINUATION frame: request line, status, gRPC."""
        for name, value in headers:
            if name == ":method" and self.method is None:
                self.method = value
            elif name == ":path" and self.path is None:
                self.path = value
            elif name == ":authority" and self.authority is None:
                self.authority = value
            elif name == ":status" and not str(value).startswith("1"):
                self.status = value
            elif name == "grpc-status":
                self.grpc_status = value
            elif name == "content-type" and str(value).startswith("application/grpc") and self.grpc is None:
                self.grpc = {}

    @property
    def ended(self) -> Optional[str]:
        if self.reset:
            return self.reset
        if {"client", "proxy to client"} <= self.end_stream or {"proxy to upstream", "server"} <= self.end_stream:
            return "END_STREAM"
        if self.sid % 2 == 0 and "proxy to client" in self.end_stream:
            return "END_STREAM"          # a push: only the pushing side sends on it
        if self.goaway:
            return self.goaway
        if self.idle:
            return "idle (PRIORITY only)"
        return None

    def to_dict(self) -> dict:
        return {"id": self.sid, "method": self.method, "path": self.path, "authority": self.authority,
                "status": self.status, "grpc_status": self.grpc_status, "req_bytes": self.req_bytes,
                "resp_bytes": self.resp_bytes, "start": self.start, "end": self.end,
                "duration_ms": round((self.end - self.start) * 1000.0, 3)
                if self.start is not None and self.end is not None else None,
                "ended": self.ended, "faults": len(self.hooks),
                "grpc_messages": {side: r.to_dict() for side, r in self.grpc.items()} if self.grpc else None}


class ConnView:
    def __init__(self, cid: int, limits: Limits, stall_threshold: float) -> None:
        self.id = cid
        self.limits = limits
        self.info: dict = {}
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        self.closed: Optional[str] = None
        self.counts: Dict[str, List[int]] = {f"{leg} {d}": [0, 0] for leg, d in SENDERS}
        self.fingerprints: Dict[str, Fingerprint] = {SIDE_OF[k]: Fingerprint() for k in SENDERS}
        self.streams: "OrderedDict[int, StreamView]" = OrderedDict()
        self.frames: Deque[dict] = deque(maxlen=limits.conn_frames)
        self.violations: Deque[dict] = deque(maxlen=limits.max_events)
        self.errors: Deque[dict] = deque(maxlen=limits.max_events)
        self.hooks: Deque[dict] = deque(maxlen=limits.max_events)
        self.goaways: List[dict] = []
        self.flow = FlowTracker(threshold=stall_threshold)
        self.n_violations = 0
        self.n_faults = 0
        self.updated = 0
        #: When the live sink started leaving frames out (over its budget), else None.
        self.sampled: Optional[float] = None
        #: When the proxy stopped reporting this connection to the web view (too busy), else None.
        self.detached: Optional[float] = None
        self.skipped_frames = 0
        self.skipped_bytes = 0
        #: Server-pushed streams the proxy renumbered towards the client (it does once it has pushed on
        #: the connection itself, docs/hooks.md): upstream-leg id -> client-leg id. Streams are shown
        #: under their client-leg id, so both legs of one stream are one row.
        self.client_ids: Dict[int, int] = {}
        #: The promised ids of the server's recent PUSH_PROMISEs, by the seq of their record: the
        #: forwarded copy names its origin, and a different promised id there is a renumbering.
        self.server_promises: "OrderedDict[int, int]" = OrderedDict()
        #: (leg, dir) -> the client-leg id of the stream a PUSH_PROMISE continued by CONTINUATIONs promises.
        self.promising: Dict[tuple, int] = {}

    def client_id(self, leg: object, sid: int) -> int:
        """The client-leg id of stream ``sid`` of ``leg``."""
        if leg == "upstream" and self.client_ids:
            return self.client_ids.get(sid, sid)
        return sid

    def promise(self, rec: Dict[str, Any], leg: object, d: object, t: Optional[float]) -> None:
        """A PUSH_PROMISE record: learns renumberings, and gives the pushed stream its request line."""
        promised = (rec.get("fields") or {}).get("promised_stream_id")
        if not isinstance(promised, int):
            return
        if leg == "upstream" and d == "recv":
            self.server_promises[rec.get("seq") or 0] = promised
            if len(self.server_promises) > 256:
                self.server_promises.popitem(last=False)
        elif leg == "client" and d == "send":
            origin = rec.get("origin")
            server_id = self.server_promises.pop(origin, None) if isinstance(origin, int) else None
            if server_id is not None and server_id != promised:
                self.client_ids[server_id] = promised
                if len(self.client_ids) > self.limits.max_streams:
                    self.client_ids.pop(next(iter(self.client_ids)))
            pushed = self.stream(promised, t)
            pushed.idle = False
            pushed.feed_headers(rec.get("headers") or ())
            if not (rec.get("flags") or 0) & 0x4:
                self.promising[(leg, d)] = promised

    def promise_continued(self, rec: Dict[str, Any], leg: object, d: object, flags: int,
                          t: Optional[float]) -> None:
        """A CONTINUATION of a PUSH_PROMISE: the block's fields are the pushed stream's request."""
        promised = self.promising[(leg, d)]
        if flags & 0x4:
            del self.promising[(leg, d)]
        self.stream(promised, t).feed_headers(rec.get("headers") or ())

    def stream(self, sid: int, t: Optional[float]) -> StreamView:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = StreamView(sid, t, self.limits)
            if len(self.streams) > self.limits.max_streams:
                self.streams.popitem(last=False)
        return s

    def goaway(self, rec: Dict[str, Any], side: Optional[str], t: Optional[float]) -> None:
        """A GOAWAY frame: kept, and the streams it refused are marked."""
        f = rec.get("fields") or {}
        self.goaways.append({"side": side, "last_stream_id": f.get("last_stream_id"), "code": f.get("error"),
                             "debug": f.get("debug_data"), "ts": t})
        last = f.get("last_stream_id")
        if isinstance(last, int):
            # last_stream_id counts the streams the GOAWAY's receiver opened (RFC 9113 section 6.8):
            # odd ones when a server side sends it, even (pushed) ones when a client side does.
            parity = 1 if side in ("server", "proxy to client") else 0
            for s in self.streams.values():
                if s.sid > last and s.sid % 2 == parity and s.ended is None and not s.idle:
                    s.goaway = f"GOAWAY {f.get('error')} from the {side}"

    @property
    def state(self) -> str:
        if self.closed is not None:
            return "closed"
        return "not followed" if self.detached is not None else "open"

    def summary(self) -> dict:
        client_tls = self.info.get("client_tls") or {}
        upstream_tls = self.info.get("upstream_tls") or {}
        frames = sum(c[0] for c in self.counts.values()) + self.skipped_frames
        nbytes = sum(c[1] for c in self.counts.values()) + self.skipped_bytes
        return {"id": self.id, "client": self.info.get("client_addr"), "listen": self.info.get("listen_addr"),
                "upstream": self.info.get("upstream_addr"), "mode": self.info.get("mode"),
                "client_alpn": client_tls.get("alpn"), "client_tls": client_tls.get("version"),
                "upstream_alpn": upstream_tls.get("alpn"), "upstream_tls": upstream_tls.get("version"),
                "sni": client_tls.get("sni"), "state": self.state, "closed": self.closed,
                "start": self.start, "end": self.end, "frames": frames, "bytes": nbytes,
                "streams": len(self.streams), "violations": self.n_violations, "faults": self.n_faults,
                "sampled": self.sampled, "detached": self.detached, "skipped_frames": self.skipped_frames,
                "skipped_bytes": self.skipped_bytes,
                "fingerprints": {side: fp.text for side, fp in self.fingerprints.items()},
                "stalls": len(self.flow.stalls)}


def _short_wire(rec: dict) -> dict:
    wire = rec.get("wire")
    if wire and len(wire) > WIRE_CHARS:
        rec = dict(rec)
        rec["wire"] = wire[:WIRE_CHARS]
        rec["wire_truncated"] = True
    return rec


class WebModel:
    """The bounded state behind the page. ``mode``: "live" (a proxy feeds it) or "log" (a file did)."""

    def __init__(self, mode: str = "live", title: str = "", limits: Optional[Limits] = None,
                 stall_threshold: float = 0.5) -> None:
        self.mode = mode
        self.title = title
        self.limits = limits or Limits()
        self.stall_threshold = stall_threshold
        self.lock = threading.Lock()
        self.conns: "OrderedDict[int, ConnView]" = OrderedDict()
        self.frames: Deque[tuple] = deque(maxlen=self.limits.overall_frames)
        self.frames_total = 0
        self.version = 0
        self.evicted = 0
        #: Records the live sink left out (over its budget), all connections.
        self.skipped = 0
        self._gone: "OrderedDict[int, None]" = OrderedDict()
        self.notes: Deque[dict] = deque(maxlen=self.limits.max_events)
        #: Pages following the model live (server-sent events); the live sink leaves its events
        #: unprocessed while there are none.
        self.readers = 0
        #: Set by the live sink: called before a read, so that what waits unprocessed is in it.
        self.catch_up: Optional[Callable[[], None]] = None

    # ------------------------------------------------------------ feeding (any thread)

    def _conn(self, cid: int) -> Optional[ConnView]:
        c = self.conns.get(cid)
        if c is None:
            if cid in self._gone:
                return None          # evicted: its later records are not kept either
            c = self.conns[cid] = ConnView(cid, self.limits, self.stall_threshold)
            if len(self.conns) > self.limits.max_conns:
                victim = next((k for k, v in self.conns.items() if v.closed is not None), None)
                if victim is None:
                    victim = next(iter(self.conns))
                del self.conns[victim]
                self._gone[victim] = None
                if len(self._gone) > 65536:
                    self._gone.popitem(last=False)
                self.evicted += 1
        return c

    def ingest_many(self, records, over_budget: Optional[Dict[int, List[int]]] = None) -> None:
        """Records in order; ``over_budget``: per connection, [frames, bytes] the sink did not keep."""
        with self.lock:
            for rec in records:
                self._ingest(rec)
            if over_budget:
                self.version += 1
            for cid, (frames, nbytes) in (over_budget or {}).items():
                c = self.conns.get(cid)
                if c is not None:
                    c.skipped_frames += frames
                    c.skipped_bytes += nbytes
                    c.updated = self.version
                self.skipped += frames

    def ingest(self, rec: dict) -> None:
        with self.lock:
            self._ingest(rec)

    def _ingest(self, rec: dict) -> None:
        kind = rec.get("record")
        cid = rec.get("conn")
        self.version += 1
        if cid is None:
            if kind == "error":
                self.notes.append(rec)
            return
        c = self._conn(cid)
        if c is None:
            return
        c.updated = self.version
        t = rec.get("ts")
        if c.start is None and t is not None:
            c.start = t
        if kind == "frame":
            self._frame(c, rec, t)
        elif kind in ("preface", "raw"):
            slot = c.counts.get(f"{rec.get('leg')} {rec.get('dir')}")
            if slot is not None:
                slot[1] += rec.get("length") or 0
        elif kind == "connection_opened":
            c.info = dict(rec.get("info") or {})
            c.start = t
        elif kind == "connection_closed":
            c.closed = rec.get("reason") or "closed"
            c.end = t
            if isinstance(rec.get("info"), dict):
                c.info.update(rec["info"])
            c.flow.close(t)
            for s in c.streams.values():
                if s.ended is None:
                    s.goaway = "connection closed"
            keep = self.limits.closed_conn_frames
            if len(c.frames) > keep:
                c.frames = deque(list(c.frames)[-keep:], maxlen=keep)
        elif kind == "web_gap":
            # The sink starts leaving this connection's frames out: windows stop here, and
            # header blocks after this point are not decoded.
            c.sampled = t
            c.flow.stop(t)
        elif kind == "web_detached":
            # Busy: the relay stopped reporting to the web view (its counts stop here too).
            c.detached = t
        elif kind == "violation":
            c.n_violations += 1
            c.violations.append(rec)
            c.flow.violation(rec)
            self._overall(rec)
        elif kind == "error":
            c.errors.append(rec)
        elif kind == "hook_action":
            c.hooks.append(rec)
            hook = str(rec.get("hook") or "")
            if hook.startswith("fault:"):
                c.n_faults += 1
            detail = rec.get("detail")
            sid = detail.get("stream") if isinstance(detail, dict) else None
            if isinstance(sid, int) and sid:
                s = c.stream(sid, t)
                s.hooks.append(rec)
                s.frames.append(rec)
                s.updated = self.version
            c.frames.append(rec)
            self._overall(rec)

    def _overall(self, rec: dict) -> None:
        self.frames_total += 1
        self.frames.append((self.frames_total, rec))

    def _frame(self, c: ConnView, rec: Dict[str, Any], t: Optional[float]) -> None:
        rec = _short_wire(rec)
        leg, d = rec.get("leg"), rec.get("dir")
        slot = c.counts.get(f"{leg} {d}")
        if slot is not None:
            slot[0] += 1
            slot[1] += (rec.get("length") or 0) + 9
        side = side_of(leg, d)
        if side is not None:
            fp = c.fingerprints[side]
            if not fp.done:
                fp.feed(rec)
        ftype = rec.get("type")
        sid = rec.get("stream") or 0
        client_sid = c.client_id(leg, sid)
        c.flow.feed(rec if client_sid == sid else dict(rec, stream=client_sid))
        c.frames.append(rec)
        self._overall(rec)
        if ftype == "GOAWAY":
            c.goaway(rec, side, t)
            return
        if not sid:
            return
        s = c.stream(client_sid, t)
        if ftype == "PUSH_PROMISE":
            c.promise(rec, leg, d, t)
        s.updated = self.version
        s.frames.append(rec)
        if t is not None:
            s.end = t
        flags = rec.get("flags") or 0
        if ftype != "PRIORITY":
            s.idle = False
        if ftype == "DATA":
            s.feed_data(rec, leg, side, flags, t)
        elif ftype == "CONTINUATION" and (leg, d) in c.promising:
            c.promise_continued(rec, leg, d, flags, t)
        elif ftype in ("HEADERS", "CONTINUATION"):
            s.feed_headers(rec.get("headers") or ())
            if ftype == "HEADERS" and flags & 0x1 and side:
                s.end_stream.add(side)
        elif ftype == "RST_STREAM" and s.reset is None:
            s.reset = f"RST_STREAM {(rec.get('fields') or {}).get('error')} from the {side}"

    # ------------------------------------------------------------ reading (event loop)

    def _catch_up(self) -> None:
        if self.catch_up is not None:
            self.catch_up()

    def now(self) -> Optional[float]:
        if self.mode == "live":
            return time.time()
        last = [c.flow.last_t for c in self.conns.values() if c.flow.last_t is not None]
        return max(last) if last else None

    def snapshot(self, max_frames: int = 500) -> dict:
        self._catch_up()
        with self.lock:
            frames = list(self.frames)[-max_frames:]
            return {"mode": self.mode, "title": self.title, "version": self.version,
                    "cursor": self.frames_total, "now": self.now(), "evicted": self.evicted,
                    "skipped": self.skipped,
                    "stall_threshold_ms": self.stall_threshold * 1000.0,
                    "conns": [c.summary() for c in self.conns.values()],
                    "frames": [dict(r, _i=i) for i, r in frames]}

    def delta(self, version: int, cursor: int, max_frames: int = 300) -> Optional[dict]:
        """What changed since ``version`` / frame ``cursor``; None when nothing did.

        (No catch-up here: while a page follows, the sink feeds the model in slices of its budget.)"""
        with self.lock:
            if self.version == version:
                return None
            new = self.frames_total - cursor
            frames = list(self.frames)[-min(max(new, 0), max_frames):] if new > 0 else []
            return {"version": self.version, "cursor": self.frames_total, "now": self.now(),
                    "not_sent": max(0, new - len(frames)), "skipped": self.skipped,
                    "conns": [c.summary() for c in self.conns.values() if c.updated > version],
                    "frames": [dict(r, _i=i) for i, r in frames]}

    def connection(self, cid: int) -> Optional[dict]:
        self._catch_up()
        with self.lock:
            c = self.conns.get(cid)
            if c is None:
                return None
            return {"summary": c.summary(), "info": c.info, "counts": {k: {"frames": v[0], "bytes": v[1]}
                                                                        for k, v in c.counts.items()},
                    "fingerprints": {side: fp.to_dict() for side, fp in c.fingerprints.items()},
                    "streams": [s.to_dict() for s in c.streams.values()],
                    "violations": list(c.violations), "errors": list(c.errors), "hooks": list(c.hooks),
                    "goaways": list(c.goaways), "stalls": c.flow.all_stalls(self.now()),
                    "flow_errors": list(c.flow.errors), "windows": c.flow.connection_series(),
                    "windows_stopped": c.flow.stopped,
                    "windows_now": c.flow.windows_now(), "frames": list(c.frames)[-300:]}

    def stream(self, cid: int, sid: int) -> Optional[dict]:
        self._catch_up()
        with self.lock:
            c = self.conns.get(cid)
            s = c.streams.get(sid) if c is not None else None
            if c is None or s is None:
                return None
            return {"conn": cid, "stream": s.to_dict(), "frames": list(s.frames), "hooks": list(s.hooks),
                    "windows": c.flow.stream_series(sid), "connection_windows": c.flow.connection_series(),
                    "windows_stopped": c.flow.stopped,
                    "stalls": [x for x in c.flow.all_stalls(self.now()) if x["stream"] == sid],
                    "flow_errors": [e for e in c.flow.errors if e.get("stream") in (sid, 0, None)]}

    def facts(self) -> List[dict]:
        """Per connection: fingerprints and stalls (for tests and the text outputs)."""
        self._catch_up()
        with self.lock:
            return [{"conn": c.id, "fingerprints": {side: fp.text for side, fp in c.fingerprints.items()},
                     "stalls": c.flow.all_stalls(self.now())} for c in self.conns.values()]
