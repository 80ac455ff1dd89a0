"""The flight recorder (``--record-ring SIZE``): the last SIZE of frames in memory, written out when something
happens.

It runs in the recorder process (:mod:`proxy.recording.offload`), fed the same
events as the full recorder, so the proxy's side costs the same. Each event is
kept as the cheap tuple it came as; only header blocks are decoded on arrival
(the HPACK state must follow every block, kept or not), and the decoded list is
kept with the frame. The oldest events leave when the ring holds more than
``size`` bytes (frame bytes plus a fixed cost per event).

A dump starts when the ring sees a trigger among its events:

- a ``violation`` (a peer broke RFC 9113),
- an ``error`` saying a resource limit was exceeded,
- a ``hook_action`` of a fault rule (hook ``fault:NAME``),
- a ``dump`` request: SIGUSR1 to the proxy or ``POST /record/dump`` on the admin API
  (:func:`proxy.recording.dump_route.record_dump`).

It writes ``NAME-dump-0001.EXT`` (then ``-0002``, ...; ``.gz``/``.zst`` as for
``--record``): a header saying why (``dump``: reason, time, number), a
``connection_state`` for each connection whose opening left the ring, the ring's
records, a ``dump`` record marking the trigger, then what follows for ``after``
seconds (so the file holds the frames around the event). Triggers during that
time add a ``dump`` record to the same file. At most ``max_dumps`` files are
written.
"""
from __future__ import annotations

import collections
import os
import re
import sys
import time
from typing import Deque, Dict, List, Optional, Tuple

from ..core.limits import Limits
from .decode import HpackState, decode_fields, parse_header
from .recorder import JsonlRecorder, dumps, expand_forwarded, header_list_violations

__all__ = ["FlightRecorder", "dump_path", "EVENT_COST"]

#: Bytes counted for an event on top of its frame bytes (the tuple and its fields).
EVENT_COST = 200
#: Frame types that carry a header block fragment.
_HPACK_TYPES = (0x1, 0x5, 0x9)
#: The relay's message for a tripped resource limit (proxy/core/relay.py, _limit).
_LIMIT = re.compile(r"\blimit \S+ = .* exceeded")


def dump_path(path: str, n: int) -> str:
    """``dir/frames.jsonl.gz`` -> ``dir/frames-dump-000n.jsonl.gz``."""
    head, base = os.path.split(path)
    name, dot, ext = base.partition(".")
    return os.path.join(head, f"{name}-dump-{n:04d}{dot}{ext}")


class _DecodedOnly(HpackState):
    """The HPACK state of a dump's writer: decodes nothing, the ring already decoded every block, in order.

    (The ring itself reports a block over max_header_list_size, as a violation event: ``over_limit``
    stays empty here.)
    """

    def feed(self, key: tuple, fragment: bytes, end_headers: bool) -> Tuple[Optional[List[List[str]]], Optional[str]]:
        return None, None

    def tables(self, conn: object) -> Dict[str, dict]:
        return {}


class FlightRecorder:
    """Keeps the last ``size`` bytes of events; writes them, and what follows, when a trigger comes."""

    def __init__(self, path: str, size: int, *, after: float = 1.0, max_dumps: int = 100,
                 announce=None, max_header_list_size: Optional[int] = None, grpc=None) -> None:
        self.path = path
        self.size = size
        self.after = after
        self.max_dumps = max_dumps
        self.ring: Deque[tuple] = collections.deque()
        self.ring_bytes = 0
        # Bounded like the recorder's: an HPACK bomb stops decoding there (and is a violation, a trigger).
        self.hpack = HpackState(Limits.max_header_list_size if max_header_list_size is None
                                else max_header_list_size)
        #: gRPC decoding for the dumps (grpc_message / grpc_call records of the calls a dump sees begin).
        self.grpc = grpc
        #: conn -> (opened ts, info) of the connections open now.
        self.open_conns: dict = {}
        self.dumps = 0
        self._dump: Optional[JsonlRecorder] = None
        self._dump_until = 0.0
        self._announce = announce or (lambda msg: print(f"h2proxy: {msg}", file=sys.stderr, flush=True))

    # ------------------------------------------------------------ events

    def handle(self, item) -> None:
        """One event from the proxy (the tuples of :class:`proxy.recording.recorder.ThreadedSink`)."""
        for one in (expand_forwarded(item) if item[0] == "forwarded" else (item,)):
            self._one(one)

    def _one(self, item) -> None:
        kind = item[0]
        if kind == "dump":
            self.trigger(str(item[1]), item[2])
            return
        size = EVENT_COST
        if kind == "frame":
            wire = item[6]
            size += len(wire)
            if len(wire) >= 9 and wire[3] in _HPACK_TYPES and item[7] is None:
                item = self._decode(item)
                if self.hpack.over_limit:
                    self._keep(item, size)
                    for event in header_list_violations(self.hpack, item):
                        self._one(event)
                    return
        elif kind in ("preface", "raw"):
            size += len(item[6])
        elif kind == "connection_opened":
            self.open_conns[item[1]] = (item[2], item[3])
        elif kind == "connection_closed":
            self.open_conns.pop(item[1], None)
            self.hpack.forget(item[1])
        self._keep(item, size)
        reason = _trigger_reason(item)
        if reason is not None:
            self.trigger(reason, _event_time(item) or time.time())

    def _keep(self, item, size: int) -> None:
        """Into the dump being written, else into the ring (the oldest events leave past ``size``)."""
        if self._dump is not None:
            self._dump._handle(item)
            t = _event_time(item)
            if t is not None and t > self._dump_until:
                self._finish_dump()
        else:
            self.ring.append((item, size))
            self.ring_bytes += size
            while self.ring_bytes > self.size and len(self.ring) > 1:
                self.ring_bytes -= self.ring.popleft()[1]

    def _decode(self, item) -> tuple:
        """The frame event with the header list its block decodes to (on the frame that ends the block)."""
        _, seq, conn, leg, d, t, wire, headers, origin, actions, keep = item
        flags = parse_header(wire)[1]
        fields, fragment = decode_fields(wire)
        if fragment is None or "parse_error" in fields:
            return item
        decoded, _ = self.hpack.feed((conn, leg, d), fragment, bool(flags & 0x04))
        if decoded is None:
            return item
        return ("frame", seq, conn, leg, d, t, wire, decoded, origin, actions, keep)

    # ------------------------------------------------------------ dumps

    def trigger(self, reason: str, t: float) -> None:
        """Start a dump (or mark the trigger in the one being written)."""
        if self._dump is not None:
            self._dump.emit({"record": "dump", "ts": t, "reason": reason})
            self._dump_until = max(self._dump_until, t + self.after)
            return
        if self.dumps >= self.max_dumps:
            if self.dumps == self.max_dumps:
                self._announce(f"flight recorder: {self.max_dumps} dumps written, no more ({reason})")
                self.dumps += 1
            return
        self.dumps += 1
        path = dump_path(self.path, self.dumps)
        try:
            dump = JsonlRecorder(path, header_extra={"dump": {"reason": reason, "ts": t, "number": self.dumps},
                                                     "ring": self.size}, grpc=self.grpc)
        except (OSError, ValueError) as exc:
            self._announce(f"flight recorder: cannot write {path}: {exc}")
            return
        dump._hpack = _DecodedOnly()
        in_ring = {item[1] for item, _ in self.ring if item[0] == "connection_opened"}
        now = time.time()
        for conn, (opened_ts, info) in self.open_conns.items():
            if conn not in in_ring:
                dump._out.write(dumps({"record": "connection_state", "ts": now, "conn": conn,
                                       "opened_ts": opened_ts, "info": info, "hpack": None}))
        for item, _ in self.ring:
            dump._handle(item)
        self.ring.clear()
        self.ring_bytes = 0
        dump.emit({"record": "dump", "ts": t, "reason": reason})
        dump.flush_output()
        self._dump = dump
        # Event times are wall-clock times (as in the log), so the window is measured on them.
        self._dump_until = t + self.after
        self._announce(f"flight recorder: {reason}: writing {path}")

    def _finish_dump(self) -> None:
        dump, self._dump = self._dump, None
        if dump is None:
            return
        try:
            dump.close()
        except Exception as exc:
            self._announce(f"flight recorder: {dump.path}: {exc}")

    def flush(self) -> None:
        """After each batch: the dump being written reaches its file; a dump past its time ends."""
        if self._dump is not None:
            self._dump.flush_output()
            if time.time() > self._dump_until:
                self._finish_dump()

    def close(self) -> None:
        if self._dump is not None:
            self._finish_dump()


def _event_time(item) -> Optional[float]:
    kind = item[0]
    t = item[5] if kind in ("frame", "preface", "raw") else item[2] if len(item) > 2 else None
    return t if isinstance(t, (int, float)) else None


def _trigger_reason(item) -> Optional[str]:
    kind = item[0]
    if kind == "violation":
        _, conn, _, side, section, code, message = item
        return f"violation by the {side} on connection {conn} (RFC 9113 {section}, {code}): {message}"
    if kind == "error" and isinstance(item[3], str) and _LIMIT.search(item[3]):
        return f"connection {item[1]}: {item[3]}"
    if kind == "hook_action" and isinstance(item[3], str) and item[3].startswith("fault:"):
        return f"fault rule {item[3][6:]} ({item[4]}) on connection {item[1]}"
    return None
