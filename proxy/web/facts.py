"""Fingerprints and window stalls of connections, as text, for ``log stats`` and the end of ``-v``.

The same :class:`~proxy.web.fingerprint.Fingerprint` and
:class:`~proxy.web.flow.FlowTracker` as the web view, fed with frame-log
records; only what the text needs is kept (no window samples).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List

from .fingerprint import Fingerprint
from .flow import SENDERS, SIDE_OF, FlowTracker, side_of

__all__ = ["ConnFacts", "FactsCollector", "connection_facts", "format_facts"]


class ConnFacts:
    """One connection's four fingerprints and its flow tracker (without samples)."""

    __slots__ = ("fingerprints", "flow")

    def __init__(self, threshold: float) -> None:
        self.fingerprints: Dict[str, Fingerprint] = {SIDE_OF[k]: Fingerprint() for k in SENDERS}
        self.flow = FlowTracker(threshold=threshold, max_samples=1, max_stream_samples=1)

    def feed(self, rec: dict) -> None:
        kind = rec.get("record")
        if kind == "frame":
            side = side_of(rec.get("leg"), rec.get("dir"))
            if side is not None:
                fp = self.fingerprints[side]
                if not fp.done:
                    fp.feed(rec)
            self.flow.feed(rec)
        elif kind == "violation":
            self.flow.violation(rec)
        elif kind == "connection_closed":
            self.flow.close(rec.get("ts"))

    def to_dict(self) -> dict:
        return {"fingerprints": {side: fp.text for side, fp in self.fingerprints.items() if fp.text},
                "stalls": self.flow.all_stalls(), "flow_errors": list(self.flow.errors)}


class FactsCollector:
    """Facts of the most recent ``max_conns`` connections, fed record by record."""

    def __init__(self, threshold: float = 0.5, max_conns: int = 1000) -> None:
        self.threshold = threshold
        self.max_conns = max_conns
        self.conns: "OrderedDict[int, ConnFacts]" = OrderedDict()

    def feed(self, rec: dict) -> None:
        cid = rec.get("conn")
        if cid is None or rec.get("record") not in ("frame", "violation", "connection_closed"):
            return
        c = self.conns.get(cid)
        if c is None:
            c = self.conns[cid] = ConnFacts(self.threshold)
            if len(self.conns) > self.max_conns:
                self.conns.popitem(last=False)
        c.feed(rec)

    def lines(self) -> List[str]:
        out = []
        for cid, c in self.conns.items():
            body = format_facts(c.to_dict(), indent="  ")
            if body:
                out.append(f"connection {cid}:")
                out.extend(body)
        return out


def connection_facts(records: Iterable[dict], threshold: float = 0.5) -> dict:
    """``{"fingerprints": {side: text}, "stalls": [...], "flow_errors": [...]}`` of one connection's records."""
    c = ConnFacts(threshold)
    for rec in records:
        c.feed(rec)
    return c.to_dict()


def format_facts(facts: dict, indent: str = "  ") -> List[str]:
    lines = [f"{indent}fingerprint of the {side}: {text}" for side, text in facts.get("fingerprints", {}).items()]
    for s in facts.get("stalls", ()):
        end = f"ended by {s['ended_by']}" if s.get("ended_by") else "still stalled"
        lines.append(f"{indent}stall: the {s['side']} held stream {s['stream']} at a zero {s['scope']} window "
                     f"for {s['duration_ms']:.0f} ms ({end})")
    for e in facts.get("flow_errors", ()):
        lines.append(f"{indent}flow-control error: {e['what']} (from the {e['side']})")
    return lines
