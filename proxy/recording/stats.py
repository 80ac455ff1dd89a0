"""Numbers from a frame log: per connection, leg and stream; fingerprints and window stalls of each
connection (:mod:`proxy.web.facts`); a per-method gRPC table (:mod:`proxy.grpc.stats`)."""
from __future__ import annotations

import collections
import marshal
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Tuple

from ..grpc.stats import MethodStats, format_methods
from ..web.facts import ConnFacts, format_facts

if TYPE_CHECKING:
    import sqlite3

__all__ = ["compute_stats", "format_stats", "format_connection", "format_end", "format_total", "StatsBuilder",
           "SIDE_NAMES"]

#: Who wrote the frames of a (leg, direction).
SIDE_NAMES = {("client", "recv"): "client", ("client", "send"): "proxy to client",
              ("upstream", "send"): "proxy to upstream", ("upstream", "recv"): "server"}


def _ms(a, b) -> Optional[float]:
    if a is None or b is None:
        return None
    return round((b - a) * 1000.0, 3)


def _wire_size(text) -> int:
    """Bytes of a base64 text, without decoding it."""
    if not text:
        return 0
    return len(text) * 3 // 4 - (text.endswith("==") + text.endswith("="))


def _new_stream(ts) -> dict:
    return {"frames": {}, "frames_recv": 0, "frames_send": 0, "bytes_recv": 0, "bytes_send": 0,
            "data_bytes": 0, "data_recv": 0, "data_send": 0, "start": ts, "end": ts, "method": None,
            "path": None, "status": None, "reset": None, "pushed_by": None}


class _StreamSpool:
    """Finished streams of every connection, on disk (a temporary SQLite file), read back in stream order.

    A load test's log holds hundreds of thousands of streams: their rows wait
    here, not in memory, until their connection is written out. A stream that
    gets frames after it was spooled (a late WINDOW_UPDATE) gets a second row;
    :meth:`items` merges the rows of a stream.
    """

    def __init__(self) -> None:
        self._db: Optional[sqlite3.Connection] = None
        self._rows: list = []

    def put(self, conn, leg: str, sid: int, st: dict) -> None:
        self._rows.append((conn, leg, sid, marshal.dumps(st)))
        if len(self._rows) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        db = self._db
        if db is None:
            import sqlite3
            # "": a private temporary database on disk, deleted when closed.
            db = self._db = sqlite3.connect("")
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE s (n INTEGER PRIMARY KEY, conn, leg TEXT, sid INTEGER, data BLOB)")
            db.execute("CREATE INDEX s_key ON s (conn, leg, sid, n)")
        db.executemany("INSERT INTO s (conn, leg, sid, data) VALUES (?, ?, ?, ?)", self._rows)
        self._rows = []

    def legs(self, conn) -> List[str]:
        self._flush()
        if self._db is None:
            return []
        have = {row[0] for row in self._db.execute("SELECT DISTINCT leg FROM s WHERE conn = ?", (conn,))}
        return [leg for leg in ("client", "upstream") if leg in have] + sorted(have - {"client", "upstream"})

    def items(self, conn, leg: str) -> Iterator[Tuple[str, dict]]:
        """(str(stream id), stream) of one leg, by stream id, each stream's rows merged."""
        self._flush()
        if self._db is None:
            return
        cur = self._db.execute("SELECT sid, data FROM s WHERE conn = ? AND leg = ? ORDER BY sid, n", (conn, leg))
        last_sid: Optional[int] = None
        acc: Optional[dict] = None
        for sid, data in cur:
            st = marshal.loads(data)
            if acc is not None and sid == last_sid:
                _merge_stream(acc, st)
                continue
            if acc is not None:
                yield str(last_sid), _finish_stream(acc)
            last_sid, acc = sid, st
        if acc is not None:
            yield str(last_sid), _finish_stream(acc)

    def drop(self, conn) -> None:
        self._flush()
        if self._db is not None:
            self._db.execute("DELETE FROM s WHERE conn = ?", (conn,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _merge_stream(acc: dict, st: dict) -> None:
    """Add the frames a stream got after it was spooled (``st``) to its first row (``acc``)."""
    frames = acc["frames"]
    for name, n in st["frames"].items():
        frames[name] = frames.get(name, 0) + n
    for key, value in st.items():
        if key in ("frames", "start", "end", "method", "path", "status", "reset", "pushed_by"):
            continue
        if isinstance(value, int):
            acc[key] = acc.get(key, 0) + value
    if st["end"] is not None:
        acc["end"] = st["end"]
    for key in ("method", "path", "pushed_by"):
        if acc.get(key) is None:
            acc[key] = st[key]
    for key in ("status", "reset"):
        if st[key] is not None:
            acc[key] = st[key]


def _finish_stream(st: dict) -> dict:
    st["duration_ms"] = _ms(st["start"], st["end"])
    return st


def _note_request(st: dict, headers: list) -> None:
    """The method, path and final status a header block gives its stream (the first of each request
    field, the last non-informational status)."""
    for name, value in headers:
        if name == ":method" and st["method"] is None:
            st["method"] = value
        elif name == ":path" and st["path"] is None:
            st["path"] = value
        elif name == ":status" and not str(value).startswith("1"):
            st["status"] = value


class _LegStreams:
    """The streams of one leg of a written-out connection, read from the spool each time they are iterated."""

    def __init__(self, spool: _StreamSpool, conn, leg: str) -> None:
        self._spool, self._conn, self._leg = spool, conn, leg

    def items(self) -> Iterator[Tuple[str, dict]]:
        return self._spool.items(self._conn, self._leg)

    def __iter__(self) -> Iterator[str]:
        return (sid for sid, _ in self.items())

    def __bool__(self) -> bool:
        return True


class _Way:
    """One (leg, direction) of a connection: its counters in ``legs``, who writes on it, and the names of
    its per-stream counters (made once, not for every frame)."""

    __slots__ = ("slot", "side", "frames", "bytes", "data")

    def __init__(self, slot: dict, side: str, d: object) -> None:
        self.slot = slot
        self.side = side
        self.frames, self.bytes, self.data = f"frames_{d}", f"bytes_{d}", f"data_{d}"


class _ConnStats:
    """What one connection of the log has shown so far; fed record by record."""

    def __init__(self, conn: object, key: Tuple[int, object]) -> None:
        self.conn = conn
        #: (order of first appearance, conn): the connection's place in :class:`StatsBuilder`'s output.
        self.key = key
        self.opened: Optional[dict] = None
        self.closed: Optional[dict] = None
        self.info: dict = {}
        self.first_ts = None
        self.last_ts = None
        self.legs: Dict[str, dict] = {}
        self._ways: Dict[Tuple[object, object], _Way] = {}
        self.settings: Dict[str, dict] = {}
        self.resets: List[dict] = []
        self.goaways: List[dict] = []
        self.pings: List[dict] = []
        self.open_pings: Dict[tuple, dict] = {}
        #: Streams not finished yet, per leg; finished ones go to the spool.
        self.streams: Dict[str, Dict[int, dict]] = {"client": {}, "upstream": {}}
        #: END_STREAM seen per (leg, stream): the set of directions.
        self.ended: Dict[tuple, set] = {}
        #: Per (leg, direction): the stream promised by a PUSH_PROMISE whose header block goes on in
        #: CONTINUATION frames.
        self.promising: Dict[tuple, int] = {}
        #: Fingerprints of the four senders and window stalls (what ``log stats`` prints of docs/web.md).
        self.facts = ConnFacts(threshold=0.5)
        self.violations = 0
        self.errors = 0

    def add(self, rec: dict, spool: _StreamSpool) -> None:
        kind = rec.get("record")
        ts = rec.get("ts")
        if ts is not None:
            if self.first_ts is None:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        if kind == "frame" or kind == "violation" or kind == "connection_closed":
            self.facts.feed(rec)
        if kind in ("preface", "frame", "raw"):
            self._add_bytes(rec, kind, ts, spool)
        else:
            self._add_event(rec, kind)

    def _add_event(self, rec: dict, kind: Optional[str]) -> None:
        """A record about the connection, not bytes of it."""
        if kind == "connection_opened":
            self.opened = rec
        elif kind == "connection_state":
            if self.opened is None:
                self.opened = {"ts": rec.get("opened_ts"), "info": rec.get("info")}
        elif kind == "connection_closed":
            self.closed = rec
        elif kind == "violation":
            self.violations += 1
            return
        elif kind == "error":
            self.errors += 1
            return
        else:
            return
        if isinstance(rec.get("info"), dict):
            self.info.update(rec["info"])

    def _add_bytes(self, rec: dict, kind: str, ts: Optional[float], spool: _StreamSpool) -> None:
        """A record of bytes on the wire (a frame, the preface, raw bytes): counted on its (leg, direction)."""
        leg: Optional[str] = rec.get("leg")
        d: Optional[str] = rec.get("dir")
        way = self._ways.get((leg, d))
        if way is None:
            key = f"{leg} {d}"
            slot = self.legs.setdefault(key, {"frames": 0, "bytes": 0, "types": {}, "raw_records": 0})
            way = self._ways[(leg, d)] = _Way(slot, SIDE_NAMES.get((leg or "", d or ""), key), d)
        wire = rec.get("wire")
        size = _wire_size(wire) if wire else (rec.get("length") or 0) + (9 if kind == "frame" else 0)
        slot = way.slot
        slot["bytes"] += size
        if kind != "frame":
            if kind == "raw":
                slot["raw_records"] += 1
            return
        ftype: Optional[str] = rec.get("type")
        slot["frames"] += 1
        types = slot["types"]
        types[ftype] = types.get(ftype, 0) + 1
        f = rec.get("fields") or {}
        if ftype in ("SETTINGS", "RST_STREAM", "GOAWAY", "PING"):
            self._add_control(rec, ftype, f, leg, d, way.side, ts)
        sid = rec.get("stream") or 0
        if sid and leg is not None:
            streams = self.streams.get(leg)
            if streams is not None:
                self._add_stream_frame(rec, ftype, f, leg, d, way, sid, size, ts, streams, spool)

    def _add_control(self, rec: dict, ftype: str, f: dict, leg: Optional[str], d: Optional[str], side: str,
                     ts: Optional[float]) -> None:
        """What SETTINGS, RST_STREAM, GOAWAY and PING frames say about the connection."""
        if ftype == "SETTINGS":
            if not f.get("ack") and "settings" in f:
                merged = self.settings.setdefault(side, {})
                for name, value in f["settings"]:
                    merged[str(name)] = value
        elif ftype == "RST_STREAM":
            self.resets.append({"leg": leg, "dir": d, "by": side, "stream": rec.get("stream") or 0,
                                "code": f.get("error"), "error_code": f.get("error_code"), "ts": ts})
        elif ftype == "GOAWAY":
            self.goaways.append({"leg": leg, "dir": d, "by": side, "last_stream_id": f.get("last_stream_id"),
                                 "code": f.get("error"), "error_code": f.get("error_code"),
                                 "debug": f.get("debug_data"), "ts": ts})
        elif "opaque" in f:                 # PING
            if not f.get("ack"):
                self.open_pings[(leg, d, f["opaque"])] = {"ts": ts, "seq": rec.get("seq")}
                return
            other = "send" if d == "recv" else "recv"
            ping = self.open_pings.pop((leg, other, f["opaque"]), None)
            if ping is not None:
                self.pings.append({"leg": leg, "sent_by": SIDE_NAMES.get((leg or "", other)), "opaque": f["opaque"],
                                   "rtt_ms": _ms(ping.get("ts"), ts), "seq": ping.get("seq"),
                                   "ack_seq": rec.get("seq")})

    def _add_stream_frame(self, rec: dict, ftype: Optional[str], f: dict, leg: str, d: Optional[str], way: _Way,
                          sid: int, size: int, ts: Optional[float], streams: Dict[int, dict],
                          spool: _StreamSpool) -> None:
        """A frame of stream ``sid``: counted on the stream, its request and status noted; a stream both
        sides ended (or one reset) goes to the spool."""
        st = streams.get(sid)
        if st is None:
            st = streams[sid] = _new_stream(ts)
        frames = st["frames"]
        frames[ftype] = frames.get(ftype, 0) + 1
        st[way.frames] = st.get(way.frames, 0) + 1
        st[way.bytes] = st.get(way.bytes, 0) + size
        if ts is not None:
            st["end"] = ts
        if ftype == "DATA":
            n = f.get("data_length") or 0
            st["data_bytes"] += n
            st[way.data] = st.get(way.data, 0) + n
        elif ftype == "RST_STREAM":
            st["reset"] = {"by": way.side, "code": f.get("error")}
        target: Optional[dict] = st
        if ftype == "PUSH_PROMISE" or (ftype == "CONTINUATION" and (leg, d) in self.promising):
            target = self._promised(rec, leg, d, f, streams, ts)
        headers = rec.get("headers")
        if headers and target is not None:
            _note_request(target, headers)
        done = ftype == "RST_STREAM"
        if not done and (rec.get("flags") or 0) & 0x01 and ftype in ("DATA", "HEADERS"):
            ended = self.ended.setdefault((leg, sid), set())
            ended.add(d)
            done = len(ended) >= 2
        if done:
            self.ended.pop((leg, sid), None)
            spool.put(self.conn, leg, sid, streams.pop(sid))

    def _promised(self, rec: dict, leg: str, d: Optional[str], f: dict, streams: Dict[int, dict],
                  ts: Optional[float]) -> Optional[dict]:
        """The stream a PUSH_PROMISE (or the CONTINUATION of its block) promises: its header block is that
        stream's request (RFC 9113 section 8.4), not headers of the stream it came on."""
        if rec.get("type") == "PUSH_PROMISE":
            promised = f.get("promised_stream_id")
        else:
            promised = self.promising.get((leg, d))
        self.promising.pop((leg, d), None)
        if not promised:
            return None
        if not (rec.get("flags") or 0) & 0x04:          # no END_HEADERS: the block goes on
            self.promising[(leg, d)] = promised
        target = streams.get(promised)
        if target is None:
            target = streams[promised] = _new_stream(ts)
            # The promised stream's request half is closed from the start (RFC 9113 section 8.4): the
            # stream is done when the pushed response ends.
            self.ended.setdefault((leg, promised), set()).add("send" if d == "recv" else "recv")
        target["pushed_by"] = rec.get("stream") or 0
        return target

    def summary(self, spool: _StreamSpool) -> dict:
        """The connection's numbers; its streams stay in the spool, read when the result is."""
        for leg, streams in self.streams.items():
            for sid, st in streams.items():
                spool.put(self.conn, leg, sid, st)
            streams.clear()
        self.ended.clear()
        pings = list(self.pings)
        for (leg, d, opaque), ping in self.open_pings.items():
            pings.append({"leg": leg, "sent_by": SIDE_NAMES.get((leg, d)), "opaque": opaque, "rtt_ms": None,
                          "seq": ping.get("seq"), "ack_seq": None})
        start = self.opened.get("ts") if self.opened is not None else self.first_ts
        end = self.closed.get("ts") if self.closed is not None else self.last_ts
        facts = self.facts.to_dict()
        return {"fingerprints": facts["fingerprints"], "stalls": facts["stalls"], "flow_errors": facts["flow_errors"],
                "conn": self.conn, "info": self.info, "start": start, "end": end, "duration_ms": _ms(start, end),
                "closed": (self.closed or {}).get("reason"), "legs": self.legs, "settings": self.settings,
                "resets": self.resets, "goaways": self.goaways, "pings": pings,
                "violations": self.violations, "errors": self.errors,
                "streams": {leg: _LegStreams(spool, self.conn, leg) for leg in spool.legs(self.conn)}}


class StatsBuilder:
    """The numbers of a log, fed one record at a time, with memory bounded by what is open in the log.

    A connection's numbers are kept while it is open; its finished streams go
    to a spool on disk. :meth:`ready` gives the connections that are done, in
    the order they first appeared (a connection waits only while an earlier one
    is still open); :meth:`finish` ends the rest.
    """

    def __init__(self) -> None:
        self._spool = _StreamSpool()
        self._open: Dict[object, _ConnStats] = {}
        #: Connections in order of first appearance: their summary once done, else None.
        self._order: "collections.OrderedDict[object, Optional[dict]]" = collections.OrderedDict()
        self._serial = 0
        self.total_frames = 0
        self.total_bytes = 0
        self.connections = 0
        self.truncated = False
        self._grpc = MethodStats()

    def add(self, rec: dict) -> bool:
        """Take one record; True when it closed a connection (:meth:`ready` may have one to give)."""
        kind = rec.get("record")
        if kind == "truncated":
            self.truncated = True
            return False
        self._grpc.feed(rec)
        if kind == "grpc_call" or kind == "grpc_message":
            return False            # (a call's record may follow its connection's end: it is no connection)
        conn = rec.get("conn")
        if conn is None or kind == "header":
            return False
        c = self._open.get(conn)
        if c is None:
            self._serial += 1
            c = self._open[conn] = _ConnStats(conn, (self._serial, conn))
            self._order[c.key] = None
        c.add(rec, self._spool)
        if kind == "connection_closed":
            del self._open[conn]
            self._order[c.key] = c.summary(self._spool)
            return True
        return False

    def ready(self) -> Iterator[dict]:
        """The connections done and not given yet, in order of first appearance."""
        order = self._order
        while order:
            key, summary = next(iter(order.items()))
            if summary is None:
                return
            del order[key]
            self._count(summary)
            yield summary

    def finish(self) -> Iterator[dict]:
        """Every connection not given yet (open ones as the log left them)."""
        for c in list(self._open.values()):
            self._order[c.key] = c.summary(self._spool)
        self._open.clear()
        yield from self.ready()

    def _count(self, summary: dict) -> None:
        self.connections += 1
        for slot in summary["legs"].values():
            self.total_frames += slot["frames"]
            self.total_bytes += slot["bytes"]

    def release(self, summary: dict) -> None:
        """Forget the streams of a connection that was written out."""
        self._spool.drop(summary["conn"])

    def close(self) -> None:
        self._spool.close()

    def totals(self) -> dict:
        """Frames, bytes, truncation of the whole log, and ``grpc_methods`` when it has gRPC calls."""
        out: Dict[str, object] = {"total_frames": self.total_frames, "total_bytes": self.total_bytes,
                                  "truncated": self.truncated}
        grpc = self._grpc.table()
        if grpc:
            out["grpc_methods"] = grpc
        return out


def _materialize(summary: dict) -> dict:
    summary["streams"] = {leg: dict(v.items()) for leg, v in summary["streams"].items()}
    return summary


def compute_stats(records: Iterable[dict]) -> dict:
    """The numbers of a whole log as one dict (in memory: the CLI streams with :class:`StatsBuilder`)."""
    b = StatsBuilder()
    conns: List[dict] = []
    try:
        for rec in records:
            b.add(rec)
            conns.extend(_materialize(c) for c in b.ready())
        conns.extend(_materialize(c) for c in b.finish())
    finally:
        b.close()
    return {"connections": conns, **b.totals()}


def _types(types: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))


def format_stats(stats: dict) -> str:
    lines = []
    for c in stats["connections"]:
        lines.extend(format_connection(c))
    lines.extend(format_end(len(stats["connections"]), stats))
    return "\n".join(lines)


def format_connection(c: dict) -> List[str]:
    """The lines of one connection's numbers."""
    lines = []
    info = c["info"] or {}
    dur = f"{c['duration_ms'] / 1000:.3f} s" if c["duration_ms"] is not None else "?"
    lines.append(f"connection {c['conn']}: {info.get('client_addr')} -> {info.get('listen_addr')} -> "
                 f"{info.get('upstream_addr')}, {dur}" + (f", closed: {c['closed']}" if c["closed"] else ""))
    for key in ("client recv", "client send", "upstream send", "upstream recv"):
        slot = c["legs"].get(key)
        if slot:
            extra = f", {slot['raw_records']} raw" if slot["raw_records"] else ""
            lines.append(f"  {key:<13} {slot['frames']:>6} frames {slot['bytes']:>10} bytes  "
                         f"({_types(slot['types'])}{extra})")
    for side, values in c["settings"].items():
        lines.append(f"  SETTINGS of {side}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    lines.extend(format_facts(c))
    for p in c["pings"]:
        rtt = f"{p['rtt_ms']:.3f} ms" if p["rtt_ms"] is not None else "no ACK"
        lines.append(f"  PING on the {p['leg']} leg from the {p['sent_by']} ({p['opaque']}): {rtt}")
    for r in c["resets"]:
        lines.append(f"  RST_STREAM from the {r['by']} on stream {r['stream']}: {r['code']}")
    for g in c["goaways"]:
        debug = f" ({g['debug']})" if g.get("debug") else ""
        lines.append(f"  GOAWAY from the {g['by']}: last_stream_id={g['last_stream_id']} {g['code']}{debug}")
    if c["violations"] or c["errors"]:
        lines.append(f"  {c['violations']} violations, {c['errors']} errors")
    for leg, streams in c["streams"].items():
        lines.append(f"  streams on the {leg} leg:")
        idle: List[str] = []
        shown: List[str] = []
        for sid, st in streams.items():
            if set(st["frames"]) <= {"PRIORITY"}:
                idle.append(sid)
                continue
            what = f"{st['method'] or '?'} {st['path'] or ''}".rstrip()
            status = f" -> {st['status']}" if st["status"] else ""
            reset = f", reset by the {st['reset']['by']} ({st['reset']['code']})" if st["reset"] else ""
            dur = f"{st['duration_ms']:.3f} ms" if st["duration_ms"] is not None else "?"
            pushed = f" (pushed on stream {st['pushed_by']})" if st.get("pushed_by") else ""
            shown.append(f"    stream {sid}{pushed}: {what}{status}, {sum(st['frames'].values())} frames "
                         f"({_types(st['frames'])}), {st['data_bytes']} data bytes, {dur}{reset}")
        if idle:
            lines.append(f"    streams {', '.join(idle)}: PRIORITY frames only")
        lines.extend(shown)
    return lines


def format_end(connections: int, totals: dict) -> List[str]:
    """The lines after the connections: the gRPC table (when the log has calls) and the total."""
    return format_methods(totals.get("grpc_methods") or {}) + [format_total(connections, totals)]


def format_total(connections: int, totals: dict) -> str:
    """The last line: connections, frames and bytes of the whole log."""
    return (f"total: {connections} connections, {totals['total_frames']} frames, "
            f"{totals['total_bytes']} bytes" + (" (log truncated)" if totals["truncated"] else ""))
