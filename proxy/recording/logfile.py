"""Reading frame logs back: records, connections, streams."""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

from .decode import unb64
from .reader import LogError, LogReader, WireLinks

__all__ = ["LogError", "read_records", "Connection", "connections", "BYTE_RECORDS"]

#: Records that carry bytes that went over a socket.
BYTE_RECORDS = ("preface", "frame", "raw")


def read_records(path: str, warn=None) -> List[dict]:
    """All records of a log file (``-``: standard input), in memory: for small logs and tests.

    The converters stream instead (:class:`proxy.recording.reader.LogReader`),
    which this reads through: a line that is not JSON (a log cut short by a
    crash) is skipped with a warning.
    """
    return list(LogReader(path, warn=warn, progress=False))


class Connection:
    """The records of one proxied connection."""

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.opened: Optional[dict] = None
        self.closed: Optional[dict] = None
        self.records: List[dict] = []

    @property
    def info(self) -> dict:
        info = dict((self.opened or {}).get("info") or {})
        if self.closed and isinstance(self.closed.get("info"), dict):
            info.update(self.closed["info"])
        return info

    @property
    def start(self) -> Optional[float]:
        if self.opened is not None:
            return self.opened.get("ts")
        for r in self.records:
            if r.get("ts") is not None:
                return r["ts"]
        return None

    @property
    def end(self) -> Optional[float]:
        if self.closed is not None:
            return self.closed.get("ts")
        ts = [r["ts"] for r in self.records if r.get("ts") is not None]
        return max(ts) if ts else None

    def byte_records(self, leg: Optional[str] = None, direction: Optional[str] = None) -> List[dict]:
        return [r for r in self.records if r.get("record") in BYTE_RECORDS
                and (leg is None or r.get("leg") == leg) and (direction is None or r.get("dir") == direction)]

    def frames(self, leg: Optional[str] = None, direction: Optional[str] = None) -> List[dict]:
        return [r for r in self.records if r.get("record") == "frame"
                and (leg is None or r.get("leg") == leg) and (direction is None or r.get("dir") == direction)]

    def wire_bytes(self, leg: str, direction: str) -> bytes:
        """What went over the leg's socket in that direction (as far as the log holds it)."""
        return b"".join(unb64(r.get("wire")) for r in self.byte_records(leg, direction))


def connections(records: List[dict]) -> Dict[int, Connection]:
    """Records grouped by connection id, in order of first appearance.

    Records parsed without :class:`~proxy.recording.reader.LogReader` get their ``wire`` here too
    (``wire_of``, format version 2).
    """
    conns: Dict[int, Connection] = {}
    links = WireLinks()
    for rec in records:
        problem = links.fill(rec)
        if problem is not None:
            raise LogError(f"record {rec.get('seq')}: {problem}")
        conn = rec.get("conn")
        if conn is None or rec.get("record") in ("header", "truncated"):
            continue
        c = conns.get(conn)
        if c is None:
            c = conns[conn] = Connection(conn)
        kind = rec.get("record")
        if kind == "connection_opened":
            c.opened = rec
        elif kind == "connection_closed":
            c.closed = rec
        c.records.append(rec)
    return conns


def iter_frames(records) -> Iterator[dict]:
    for rec in records:
        if rec.get("record") == "frame":
            yield rec
