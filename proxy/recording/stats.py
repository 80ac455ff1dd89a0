"""Numbers from a frame log: per connection, leg and stream."""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

from .decode import unb64
from .logfile import connections

__all__ = ["compute_stats", "format_stats", "SIDE_NAMES"]

#: Who wrote the frames of a (leg, direction).
SIDE_NAMES = {("client", "recv"): "client", ("client", "send"): "proxy to client",
              ("upstream", "send"): "proxy to upstream", ("upstream", "recv"): "server"}


def _ms(a, b) -> Optional[float]:
    if a is None or b is None:
        return None
    return round((b - a) * 1000.0, 3)


def _conn_stats(c) -> dict:
    legs: Dict[str, dict] = {}
    settings: Dict[str, dict] = {}
    resets: List[dict] = []
    goaways: List[dict] = []
    pings: List[dict] = []
    open_pings: Dict[tuple, dict] = {}
    streams: Dict[str, Dict[int, dict]] = {"client": {}, "upstream": {}}
    # Per leg and direction: the stream promised by a PUSH_PROMISE whose block is still open.
    promising: Dict[tuple, int] = {}
    for rec in c.records:
        kind = rec.get("record")
        if kind not in ("preface", "frame", "raw"):
            continue
        leg, d = rec.get("leg"), rec.get("dir")
        key = f"{leg} {d}"
        size = len(unb64(rec.get("wire"))) if rec.get("wire") else (rec.get("length") or 0) + (9 if kind == "frame" else 0)
        slot = legs.setdefault(key, {"frames": 0, "bytes": 0, "types": Counter(), "raw_records": 0})
        slot["bytes"] += size
        if kind != "frame":
            if kind == "raw":
                slot["raw_records"] += 1
            continue
        ftype = rec.get("type")
        slot["frames"] += 1
        slot["types"][ftype] += 1
        f = rec.get("fields") or {}
        sid = rec.get("stream") or 0
        ts = rec.get("ts")
        side = SIDE_NAMES.get((leg, d), key)
        if ftype == "SETTINGS" and not f.get("ack") and "settings" in f:
            merged = settings.setdefault(side, {})
            for name, value in f["settings"]:
                merged[str(name)] = value
        elif ftype == "RST_STREAM":
            resets.append({"leg": leg, "dir": d, "by": side, "stream": sid, "code": f.get("error"),
                           "error_code": f.get("error_code"), "ts": ts})
        elif ftype == "GOAWAY":
            goaways.append({"leg": leg, "dir": d, "by": side, "last_stream_id": f.get("last_stream_id"),
                            "code": f.get("error"), "error_code": f.get("error_code"),
                            "debug": f.get("debug_data"), "ts": ts})
        elif ftype == "PING" and "opaque" in f:
            if not f.get("ack"):
                open_pings[(leg, d, f["opaque"])] = rec
            else:
                other = "send" if d == "recv" else "recv"
                ping = open_pings.pop((leg, other, f["opaque"]), None)
                if ping is not None:
                    pings.append({"leg": leg, "sent_by": SIDE_NAMES.get((leg, other)), "opaque": f["opaque"],
                                  "rtt_ms": _ms(ping.get("ts"), ts), "seq": ping.get("seq"),
                                  "ack_seq": rec.get("seq")})
        if sid and leg in streams:
            st = _stream_slot(streams[leg], sid, ts)
            st["frames"][ftype] += 1
            st[f"frames_{d}"] = st.get(f"frames_{d}", 0) + 1
            st[f"bytes_{d}"] = st.get(f"bytes_{d}", 0) + size
            if ts is not None:
                st["end"] = ts
            if ftype == "DATA":
                st["data_bytes"] += f.get("data_length") or 0
                st[f"data_{d}"] = st.get(f"data_{d}", 0) + (f.get("data_length") or 0)
            if ftype == "RST_STREAM":
                st["reset"] = {"by": side, "code": f.get("error")}
            target = st
            if ftype == "PUSH_PROMISE" or (ftype == "CONTINUATION" and (leg, d) in promising):
                # The block is the request of the promised stream (RFC 9113 8.4), not this stream's headers.
                promised = f.get("promised_stream_id") if ftype == "PUSH_PROMISE" else promising[(leg, d)]
                promising.pop((leg, d), None)
                if not (rec.get("flags") or 0) & 0x04 and promised:
                    promising[(leg, d)] = promised
                target = _stream_slot(streams[leg], promised, ts) if promised else None
                if target is not None:
                    target["pushed_by"] = sid
            for name, value in (rec.get("headers") or ()) if target is not None else ():
                if name == ":method" and target["method"] is None:
                    target["method"] = value
                elif name == ":path" and target["path"] is None:
                    target["path"] = value
                elif name == ":status" and not str(value).startswith("1"):
                    target["status"] = value
    for (leg, d, opaque), rec in open_pings.items():
        pings.append({"leg": leg, "sent_by": SIDE_NAMES.get((leg, d)), "opaque": opaque, "rtt_ms": None,
                      "seq": rec.get("seq"), "ack_seq": None})
    for leg in streams:
        for st in streams[leg].values():
            st["duration_ms"] = _ms(st["start"], st["end"])
            st["frames"] = dict(st["frames"])
    for slot in legs.values():
        slot["types"] = dict(slot["types"])
    start, end = c.start, c.end
    from ..web.facts import connection_facts   # fingerprints and window stalls (docs/web.md)
    facts = connection_facts(c.records)
    return {"fingerprints": facts["fingerprints"], "stalls": facts["stalls"], "flow_errors": facts["flow_errors"],
            "conn": c.conn, "info": c.info, "start": start, "end": end, "duration_ms": _ms(start, end),
            "closed": (c.closed or {}).get("reason"), "legs": legs, "settings": settings, "resets": resets,
            "goaways": goaways, "pings": pings,
            "violations": sum(1 for r in c.records if r.get("record") == "violation"),
            "errors": sum(1 for r in c.records if r.get("record") == "error"),
            "streams": {leg: {str(sid): st for sid, st in sorted(v.items())} for leg, v in streams.items() if v}}


def _stream_slot(streams: Dict[int, dict], sid: int, ts) -> dict:
    """The numbers of stream ``sid`` of one leg (made on first sight)."""
    st = streams.get(sid)
    if st is None:
        st = streams[sid] = {"frames": Counter(), "frames_recv": 0, "frames_send": 0,
                             "bytes_recv": 0, "bytes_send": 0, "data_bytes": 0, "data_recv": 0,
                             "data_send": 0, "start": ts, "end": ts, "method": None, "path": None,
                             "status": None, "reset": None, "pushed_by": None}
    return st


def compute_stats(records: List[dict]) -> dict:
    conns = [_conn_stats(c) for c in connections(records).values()]
    totals = Counter()
    for c in conns:
        for slot in c["legs"].values():
            totals["frames"] += slot["frames"]
            totals["bytes"] += slot["bytes"]
    out = {"connections": conns, "total_frames": totals["frames"], "total_bytes": totals["bytes"],
           "truncated": any(r.get("record") == "truncated" for r in records)}
    from ..grpc.stats import method_stats
    grpc = method_stats(records)
    if grpc:
        out["grpc_methods"] = grpc
    return out


def _types(types: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))


def format_stats(stats: dict) -> str:
    lines = []
    for c in stats["connections"]:
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
        if "fingerprints" in c:
            from ..web.facts import format_facts
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
            idle = [sid for sid, st in streams.items() if set(st["frames"]) <= {"PRIORITY"}]
            if idle:
                lines.append(f"    streams {', '.join(idle)}: PRIORITY frames only")
            for sid, st in streams.items():
                if sid in idle:
                    continue
                what = f"{st['method'] or '?'} {st['path'] or ''}".rstrip()
                status = f" -> {st['status']}" if st["status"] else ""
                reset = f", reset by the {st['reset']['by']} ({st['reset']['code']})" if st["reset"] else ""
                dur = f"{st['duration_ms']:.3f} ms" if st["duration_ms"] is not None else "?"
                pushed = f" (pushed on stream {st['pushed_by']})" if st.get("pushed_by") else ""
                lines.append(f"    stream {sid}{pushed}: {what}{status}, {sum(st['frames'].values())} frames "
                             f"({_types(st['frames'])}), {st['data_bytes']} data bytes, {dur}{reset}")
    if stats.get("grpc_methods"):
        from ..grpc.stats import format_methods
        lines.extend(format_methods(stats["grpc_methods"]))
    lines.append(f"total: {len(stats['connections'])} connections, {stats['total_frames']} frames, "
                 f"{stats['total_bytes']} bytes" + (" (log truncated)" if stats["truncated"] else ""))
    return "\n".join(lines)
