"""A frame log as HAR 1.2: one entry per stream (request and response)."""
from __future__ import annotations

import base64
import datetime
import heapq
import json
import textwrap
from typing import Dict, Iterable, Iterator, List, Optional, TextIO
from urllib.parse import parse_qsl, urlsplit

from .. import __version__
from .streams import Exchange, ExchangeBuilder

__all__ = ["build_har", "har_entries", "write_har"]

_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml", "+json", "+xml",
               "application/x-www-form-urlencoded")


def _iso(ts: Optional[float]) -> str:
    ts = ts or 0.0
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(a: Optional[float], b: Optional[float]) -> float:
    if a is None or b is None:
        return 0.0
    return round(max(b - a, 0.0) * 1000.0, 3)


def _headers(headers) -> List[dict]:
    return [{"name": h[0], "value": h[1]} for h in headers or ()]


def _get(headers, name) -> Optional[str]:
    for h in headers or ():
        if h[0] == name:
            return h[1]
    return None


def _cookies(headers, response: bool) -> List[dict]:
    out = []
    for h in headers or ():
        if response and h[0] == "set-cookie":
            pair = h[1].split(";", 1)[0]
            name, _, value = pair.partition("=")
            out.append({"name": name.strip(), "value": value.strip()})
        elif not response and h[0] == "cookie":
            for pair in h[1].split(";"):
                if pair.strip():
                    name, _, value = pair.partition("=")
                    out.append({"name": name.strip(), "value": value.strip()})
    return out


def _content(body: bytes, mime: str) -> dict:
    """{"text"} when the body is text, else {"text", "encoding": "base64"}."""
    looks_text = any(t in mime for t in _TEXT_TYPES) or not mime
    if looks_text:
        try:
            return {"text": body.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"text": base64.b64encode(body).decode("ascii"), "encoding": "base64"}


def _entry(ex: Exchange, info: dict) -> dict:
    req_h = ex.request_headers or []
    resp_h = ex.response_headers or []
    url = ex.url(info.get("listen_addr") or "")
    query = [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    request = {"method": ex.method or "", "url": url, "httpVersion": "HTTP/2", "cookies": _cookies(req_h, False),
               "headers": _headers(req_h + (ex.request_trailers or [])), "queryString": query,
               "headersSize": -1, "bodySize": ex.request_body_size}
    if ex.request_body_size or ex.request_body:
        post = {"mimeType": _get(req_h, "content-type") or ""}
        if ex.request_body_complete:
            post.update(_content(bytes(ex.request_body), post["mimeType"]))
            if post.get("encoding"):
                post.pop("encoding")  # HAR postData has no encoding field: keep base64 in a comment
                post["comment"] = "text is base64 (binary body)"
        request["postData"] = post
    mime = _get(resp_h, "content-type") or ""
    content = {"size": ex.response_body_size, "mimeType": mime or "x-unknown"}
    if ex.response_body_complete and (ex.response_body or ex.response_body_size == 0):
        content.update(_content(bytes(ex.response_body), mime))
    response = {"status": ex.status or 0, "statusText": "", "httpVersion": "HTTP/2",
                "cookies": _cookies(resp_h, True), "headers": _headers(resp_h + (ex.response_trailers or [])),
                "content": content, "redirectURL": _get(resp_h, "location") or "", "headersSize": -1,
                "bodySize": ex.response_body_size}
    req_end = ex.t_request_end if ex.t_request_end is not None else ex.t_start
    resp_start = ex.t_response_start if ex.t_response_start is not None else ex.t_end
    send = _ms(ex.t_start, req_end)
    wait = _ms(req_end, resp_start)
    receive = _ms(resp_start, ex.t_end)
    entry = {"startedDateTime": _iso(ex.t_start), "time": round(send + wait + receive, 3),
             "request": request, "response": response, "cache": {},
             "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": send, "wait": wait,
                         "receive": receive},
             "connection": str(ex.conn), "_conn": ex.conn, "_stream": ex.stream, "_leg": ex.leg}
    server = info.get("upstream_addr") if ex.leg == "upstream" else info.get("listen_addr")
    if isinstance(server, str) and ":" in server:
        entry["serverIPAddress"] = server.rpartition(":")[0].strip("[]")
    notes = []
    if ex.pushed:
        notes.append(f"server push promised on stream {ex.promised_by}")
    if ex.reset:
        notes.append(f"stream reset by the {ex.reset['by']}: {ex.reset['code']}")
    if ex.informational:
        notes.append("informational responses: " + ", ".join(_get(h, ":status") or "?" for h in ex.informational))
    if not ex.response_body_complete:
        notes.append("the log does not hold every DATA frame of the response")
    if notes:
        entry["comment"] = "; ".join(notes)
    return entry


def har_entries(records: Iterable[dict], leg: str = "client", conn: Optional[int] = None) -> Iterator[dict]:
    """The HAR entries of a log's streams on ``leg``, by startedDateTime, reading the records once.

    Memory holds the streams open in the log and the ended entries that may
    still have an earlier one before them: an entry is given once no open
    stream, and no stream yet to come (the log runs forward in time), started
    before it.
    """
    builders: Dict[int, ExchangeBuilder] = {}
    infos: Dict[int, dict] = {}
    serials: Dict[int, int] = {}
    heap: list = []
    tick = 0

    def push(ex: Exchange) -> None:
        if ex.request_headers is None and ex.response_headers is None:
            return
        entry = _entry(ex, infos.get(ex.conn) or {})
        key = (entry["startedDateTime"], serials.get(ex.conn, 0), ex.t_start or 0.0, ex.stream, id(entry))
        heapq.heappush(heap, (key, entry))

    def bound(now) -> Optional[str]:
        starts = [ex.t_start for b in builders.values() for group in (b.open, b._ended)
                  for ex in group.values() if ex.t_start is not None]
        if now is not None:
            starts.append(now)
        return _iso(min(starts)) if starts else None

    last_ts = None
    for rec in records:
        c = rec.get("conn")
        if c is None or (conn is not None and c != conn):
            continue
        kind = rec.get("record")
        if kind in ("connection_opened", "connection_state", "connection_closed"):
            if isinstance(rec.get("info"), dict):
                infos.setdefault(c, {}).update(rec["info"])
        b = builders.get(c)
        if b is None:
            if kind == "connection_closed":
                continue
            b = builders[c] = ExchangeBuilder(c, leg)
            serials[c] = len(serials) + 1
        if kind == "frame":
            b.add(rec)
            if rec.get("ts") is not None:
                last_ts = rec["ts"]
            for ex in b.pop_done():
                push(ex)
        elif kind == "connection_closed":
            for ex in b.finish():
                push(ex)
            del builders[c]
            infos.pop(c, None)
        tick += 1
        if heap and tick >= 256:
            tick = 0
            limit = bound(last_ts)
            while heap and (limit is None or heap[0][0][0] < limit):
                yield heapq.heappop(heap)[1]
    for b in builders.values():
        for ex in b.finish():
            push(ex)
    while heap:
        yield heapq.heappop(heap)[1]


def _document(leg: str, entries: list) -> dict:
    return {"log": {"version": "1.2", "creator": {"name": "h2proxy", "version": __version__},
                    "pages": [], "entries": entries,
                    "comment": f"from an h2proxy frame log, {leg} leg"}}


def build_har(records: Iterable[dict], leg: str = "client", conn: Optional[int] = None) -> dict:
    """The HAR document: entries for every stream of ``leg`` (default: what the client saw)."""
    return _document(leg, list(har_entries(records, leg=leg, conn=conn)))


def write_har(records: Iterable[dict], out: TextIO, leg: str = "client", conn: Optional[int] = None) -> int:
    """Write the HAR document to ``out`` entry by entry (never the whole document in memory); returns
    the number of entries."""
    head, _, tail = json.dumps(_document(leg, ["@"]), indent=2).partition('"@"')
    out.write(head.rstrip(" "))
    n = 0
    for entry in har_entries(records, leg=leg, conn=conn):
        if n:
            out.write(",\n")
        out.write(textwrap.indent(json.dumps(entry, indent=2), "      "))
        n += 1
    out.write(("\n    " if n else "") + tail.lstrip())
    out.write("\n")
    return n
