"""Per-method gRPC numbers from a frame log, for ``h2proxy log stats``.

From the log's ``grpc_call`` records when it has them (recorded with gRPC
decoding on); otherwise the calls are worked out from the frame records
themselves (HEADERS, DATA and RST_STREAM with their bytes), so an older log
gets the table too.
"""
from __future__ import annotations

import base64
from collections import Counter
from typing import Dict, List, Optional

from .calls import GrpcOptions
from .status import status_name
from .tracker import GrpcTracker


def _calls(records: List[dict]) -> List[dict]:
    calls = [r for r in records if r.get("record") == "grpc_call"]
    if calls:
        return calls
    tracker = GrpcTracker(GrpcOptions(max_message=0))    # (counting only: nothing is kept)
    out: List[dict] = []
    for r in records:
        kind = r.get("record")
        if kind == "frame":
            wire = base64.b64decode(r["wire"]) if r.get("wire") else None
            out.extend(x for x in tracker.feed(r, wire) if x.get("record") == "grpc_call")
        elif kind == "connection_closed":
            out.extend(tracker.forget(r.get("conn")))
    for conn in {k[0] for k in tracker.calls}:
        out.extend(tracker.forget(conn))
    return out


def _percentile(sorted_values: List[float], p: float) -> Optional[float]:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def method_stats(records: List[dict]) -> Dict[str, dict]:
    """Method path -> calls, status counts (by name), messages each way, latency percentiles in ms."""
    table: Dict[str, dict] = {}
    for c in _calls(records):
        path = c.get("path") or "?"
        row = table.setdefault(path, {"calls": 0, "statuses": Counter(), "requests": 0, "responses": 0,
                                      "latencies": []})
        row["calls"] += 1
        status = c.get("status")
        row["statuses"][status_name(status) if status is not None else "no status"] += 1
        msgs = c.get("messages") or {}
        row["requests"] += msgs.get("client->server", 0)
        row["responses"] += msgs.get("server->client", 0)
        if c.get("duration_ms") is not None and status is not None:
            row["latencies"].append(float(c["duration_ms"]))
    for row in table.values():
        lat = sorted(row.pop("latencies"))
        row["statuses"] = dict(row["statuses"])
        row["latency_ms"] = {"p50": _percentile(lat, 50), "p90": _percentile(lat, 90),
                             "p99": _percentile(lat, 99), "max": lat[-1] if lat else None}
    return dict(sorted(table.items()))


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
