"""Per-method gRPC numbers from a frame log, for ``h2proxy log stats``.

From the log's ``grpc_call`` records when it has them (recorded with gRPC
decoding on); otherwise the calls are worked out from the frame records
themselves (HEADERS, DATA and RST_STREAM with their bytes), so an older log
gets the table too.
"""
from __future__ import annotations

import base64
from collections import Counter
from typing import Dict, Iterable, List, Optional

from .calls import GrpcOptions
from .status import status_name
from .tracker import GrpcTracker


def _percentile(sorted_values: List[float], p: float) -> Optional[float]:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


class MethodStats:
    """The per-method table of a log, fed one record at a time (``log stats`` streams the log).

    The log's ``grpc_call`` records are used when it has them; until the first
    one is seen the calls are also worked out from the frame records, and that
    count is used only when the log has no ``grpc_call`` record at all. Memory:
    the calls still open, and one latency per finished call.
    """

    def __init__(self) -> None:
        self._recorded: Dict[str, dict] = {}
        self._derived: Dict[str, dict] = {}
        self._tracker: Optional[GrpcTracker] = GrpcTracker(GrpcOptions(max_message=0))   # counting only

    def feed(self, rec: dict) -> None:
        kind = rec.get("record")
        if kind == "grpc_call":
            _count(self._recorded, rec)
            if self._tracker is not None:              # the log says it itself: the frames are not needed
                self._tracker, self._derived = None, {}
            return
        tracker = self._tracker
        if tracker is None:
            return
        if kind == "frame":
            if rec.get("type_byte") == 0x0 and (rec.get("conn"), rec.get("stream") or 0) not in tracker.calls:
                return                                 # DATA of a stream that is no gRPC call: skip the decode
            wire = base64.b64decode(rec["wire"]) if rec.get("wire") else None
            for x in tracker.feed(rec, wire):
                if x.get("record") == "grpc_call":
                    _count(self._derived, x)
        elif kind == "connection_closed":
            for x in tracker.forget(rec.get("conn")):
                _count(self._derived, x)

    def table(self) -> Dict[str, dict]:
        """Method path -> calls, status counts (by name), messages each way, latency percentiles in ms."""
        if self._recorded or self._tracker is None:
            rows = self._recorded
        else:
            for conn in {k[0] for k in self._tracker.calls}:      # calls the log left open
                for x in self._tracker.forget(conn):
                    _count(self._derived, x)
            rows = self._derived
        out = {}
        for path, row in sorted(rows.items()):
            lat = sorted(row["latencies"])
            out[path] = {"calls": row["calls"], "statuses": dict(row["statuses"]), "requests": row["requests"],
                         "responses": row["responses"],
                         "latency_ms": {"p50": _percentile(lat, 50), "p90": _percentile(lat, 90),
                                        "p99": _percentile(lat, 99), "max": lat[-1] if lat else None}}
        return out


def _count(table: Dict[str, dict], c: dict) -> None:
    """Add one ``grpc_call`` record to its method's row."""
    path = c.get("path") or "?"
    row = table.get(path)
    if row is None:
        row = table[path] = {"calls": 0, "statuses": Counter(), "requests": 0, "responses": 0, "latencies": []}
    row["calls"] += 1
    status = c.get("status")
    row["statuses"][status_name(status) if status is not None else "no status"] += 1
    msgs = c.get("messages") or {}
    row["requests"] += msgs.get("client->server", 0)
    row["responses"] += msgs.get("server->client", 0)
    if c.get("duration_ms") is not None and status is not None:
        row["latencies"].append(float(c["duration_ms"]))


def method_stats(records: Iterable[dict]) -> Dict[str, dict]:
    """Method path -> calls, status counts (by name), messages each way, latency percentiles in ms."""
    acc = MethodStats()
    for rec in records:
        acc.feed(rec)
    return acc.table()


def format_methods(table: Dict[str, dict]) -> List[str]:
    """The table as text lines (none when the log has no gRPC calls)."""
    if not table:
        return []
    width = max(len("method"), *(len(p) for p in table))
    lines = ["gRPC methods:",
             f"  {'method':<{width}}  {'calls':>5}  {'req msgs':>8}  {'resp msgs':>9}  "
             f"{'p50 ms':>9}  {'p90 ms':>9}  {'p99 ms':>9}  {'max ms':>9}  statuses"]

    def ms(v):
        return f"{v:9.3f}" if v is not None else f"{'-':>9}"
    for path, row in table.items():
        lat = row["latency_ms"]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(row["statuses"].items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  {path:<{width}}  {row['calls']:>5}  {row['requests']:>8}  {row['responses']:>9}  "
                     f"{ms(lat['p50'])}  {ms(lat['p90'])}  {ms(lat['p99'])}  {ms(lat['max'])}  {statuses}")
    return lines
