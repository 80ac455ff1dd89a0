"""The sink that feeds the web view's model from the running proxy, within a budget.

Turning a frame into a record (parsing, HPACK, window bookkeeping) costs
microseconds in Python; a proxy under load forwards hundreds of thousands of
frames a second. So the web view works on a budget: a token bucket of records
a second. Frames within it are queued as they are (a tuple on the event loop:
the same cost as the frame recorder's) and turned into records in slices of
the event loop, each at most ``cpu_share`` of an ``interval``; the bucket's rate
follows what records cost (``cpu_share`` of the loop's time, at most ``rate``
records a second). Frames over the budget are only counted; the connection is
marked *sampled* (its HPACK state and windows can no longer be followed, and
the page says so) and, when the sink is the relay's only sink (``relay_opened``),
the relay stops reporting to the sink at all: its fast paths come back. A debugging
session (curl, nghttp, a test) stays far below the budget and sees every frame.

Connection, violation, error and hook events are always kept.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from typing import Dict, List, Optional

from ..recording.decode import b64, decode_fields, frame_record
from ..recording.recorder import ThreadedSink, expand_forwarded
from .model import WebModel

__all__ = ["WebSink"]

#: Bytes of a frame kept for the hex view.
WIRE_KEEP = 258
_DATA_FLAGS = {0: [], 1: ["END_STREAM"], 8: ["PADDED"], 9: ["END_STREAM", "PADDED"]}
_BYTES_ITEMS = ("frame", "preface", "raw", "forwarded")


class WebSink(ThreadedSink):
    """Feeds :class:`WebModel` (``model``) with the proxy's records, ``rate`` records a second at most."""

    use_thread = False
    record_wire = False

    def __init__(self, model: WebModel, rate: float = 1000.0, burst: float = 2000.0, interval: float = 0.05,
                 slice_items: int = 400, cpu_share: float = 0.01, defer_items: int = 5000) -> None:
        self.model = model
        #: The most records a second, and at once, whatever they cost.
        self.max_rate = self.rate = rate
        self.max_burst = self.burst = burst
        self.interval = interval
        self.slice_items = slice_items
        #: The share of the event loop's time the records may take: the budget follows what they cost.
        self.cpu_share = cpu_share
        #: With no page following (``model.readers``), events wait unprocessed up to this many (and bytes).
        self.defer_items = defer_items
        self.defer_bytes = 16 << 20
        model.catch_up = self.catch_up
        self._cost = 0.0                 # seconds per record, a moving average of what pump() measured
        self._tokens = burst
        self._last_t = 0.0
        #: conn -> [frames, bytes] not kept because of the budget.
        self.over_budget: Dict[int, List[int]] = {}
        self._sampled: set = set()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._batch: list = []
        #: conn id -> weak reference to its relay (from :meth:`relay_opened`), to detach busy ones.
        self.relays: Dict[int, "weakref.ref"] = {}
        super().__init__(thread_name="h2proxy-web", max_queue=4 * int(burst) + 10000, max_queue_bytes=64 << 20)

    # ------------------------------------------------------------ event loop: admission

    def _allow(self, n: int, t: float) -> bool:
        """Take ``n`` tokens at time ``t`` (the time the core passes in); False when there are not enough."""
        last = self._last_t
        tokens = self._tokens
        if t > last:
            tokens += (t - last) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._last_t = t
        if tokens < n:
            self._tokens = tokens
            return False
        self._tokens = tokens - n
        return True

    def _over(self, conn_id: int, frames: int, nbytes: int, t: float) -> None:
        slot = self.over_budget.get(conn_id)
        if slot is not None:
            slot[0] += frames
            slot[1] += nbytes
            return
        self.over_budget[conn_id] = [frames, nbytes]
        if conn_id not in self._sampled:
            self._sampled.add(conn_id)
            self._queue.append(("gap", conn_id, t))
            if conn_id in self.relays and self._loop is not None:
                # Not from inside the relay's own call: detach it between two reads.
                self._loop.call_soon(self._detach, conn_id)
        self._schedule()

    def _detach(self, conn_id: int) -> None:
        """A connection over the budget stops reporting to this sink: the relay's fast paths return,
        and the page shows the connection as no longer followed."""
        ref = self.relays.pop(conn_id, None)
        relay = ref() if ref is not None else None
        if relay is None or relay.sink is not self or relay.closed:
            return
        relay.detach_sink()
        self._infos.pop(conn_id, None)      # connection_closed will not come for it
        self._queue.append(("detached", conn_id, time.time()))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None and not self._closed:
            loop = self._loop
            if loop is None:
                try:
                    loop = self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    return
            self._timer = loop.call_later(self.interval, self._tick)

    def connection_opened(self, conn_id, t, info):
        super().connection_opened(conn_id, t, info)
        self._schedule()

    def relay_opened(self, relay) -> None:
        self.relays[relay.id] = weakref.ref(relay)

    def connection_closed(self, conn_id, t, reason):
        self.relays.pop(conn_id, None)
        super().connection_closed(conn_id, t, reason)
        self._schedule()

    def violation(self, conn_id, t, side, section, code, message):
        super().violation(conn_id, t, side, section, code, message)
        self._schedule()

    def hook_action(self, conn_id, t, hook, action, detail):
        super().hook_action(conn_id, t, hook, action, detail)
        self._schedule()

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, *, seq=None):
        if seq is None:
            seq = self.next_seq()
        if self._halted:
            return seq
        if not self._allow(1, t):
            self._over(conn_id, 1, len(wire), t)
            return seq
        super().frame(conn_id, leg, direction, t, wire, headers, origin, actions, seq=seq)
        self._schedule()
        return seq

    def forwarded(self, conn_id, recv_leg, send_leg, t, wires, *, seq=None):
        # The hot path of a busy proxy: one call per read of forwarded frames. Kept to a handful of
        # operations when over budget (the token bucket of _allow, inlined).
        n = len(wires)
        if seq is None:
            seq = self.next_seq(None, 2 * n)
        if not n or self._halted:
            return seq
        tokens = self._tokens
        if t > self._last_t:
            tokens += (t - self._last_t) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._last_t = t
        if tokens < 2 * n:
            self._tokens = tokens
            slot = self.over_budget.get(conn_id)
            if slot is not None:
                slot[0] += 2 * n
                slot[1] += 2 * sum(map(len, wires))
            else:
                self._over(conn_id, 2 * n, 2 * sum(map(len, wires)), t)
            return seq
        self._tokens = tokens - 2 * n
        blob = b"".join(wires)
        self._put(("forwarded", seq, conn_id, recv_leg, send_leg, t, blob), len(blob))
        if self._timer is None:
            self._schedule()
        return seq

    # ------------------------------------------------------------ event loop: slices of work

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        if not self.model.readers and len(self._queue) <= self.defer_items \
                and self._bytes_in - self._bytes_out <= self.defer_bytes:
            # No page follows the model: the events wait as they are (bytes, the HPACK state not yet
            # decoded) until one asks (the model's catch_up) or there are too many; the next event
            # schedules the check again.
            return
        self.pump(self.slice_items, self.cpu_share * self.interval)
        if self._queue:
            self._schedule()

    def catch_up(self) -> None:
        """A reader of the model wants it now: turn what waits into records (at most ``defer_items``
        plus a few slices' worth, so a bounded pause once, when a page opens)."""
        if self._queue and not self._closed:
            self.pump()

    def pump(self, limit: Optional[int] = None, seconds: Optional[float] = None) -> int:
        """Turn up to ``limit`` queued events (all when None), for up to ``seconds``, into records for
        the model; what they cost sets the budget (``cpu_share`` of the loop's time)."""
        q = self._queue
        n = 0
        records = 0
        batch = self._batch = []
        clock = time.perf_counter
        start = clock()
        stop = None if seconds is None else start + seconds
        # The clock is read after every event: one event (a read's forwarded frames) can be dozens of records.
        while q and (limit is None or n < limit) and (stop is None or clock() < stop):
            item = q.popleft()
            n += 1
            kind = item[0]
            if kind == "gap":
                _, conn, t = item
                self._hpack.lose(conn)
                batch.append({"record": "web_gap", "conn": conn, "ts": t})
                continue
            if kind == "detached":
                _, conn, t = item
                self._hpack.forget(conn)
                batch.append({"record": "web_detached", "conn": conn, "ts": t})
                continue
            if kind in _BYTES_ITEMS:
                self._bytes_out += len(item[6])
            records += self._records(item)
        self._batch = []
        if batch or self.over_budget:
            over, self.over_budget = self.over_budget, {}
            self.model.ingest_many(batch, over_budget=over)
        self._processed += n
        if records >= 16:
            per = (clock() - start) / records
            self._cost = per if not self._cost else 0.8 * self._cost + 0.2 * per
            # Floors keep a debugging session whole on a slow machine: a few hundred records a second.
            self.rate = min(self.max_rate, max(200.0, self.cpu_share / self._cost))
            self.burst = min(self.max_burst, max(2000.0, self.rate * 2.0))
            if self._tokens > self.burst:
                self._tokens = self.burst
        return n

    def emit(self, record: dict) -> None:
        self._batch.append(record)

    def _handle(self, item) -> None:
        self._records(item)

    def _records(self, item) -> int:
        """Build and emit the records of one queued event; returns how many (what the budget counts)."""
        if item[0] != "forwarded":
            super()._handle(item)
            return 1
        # A forwarded frame went out as it came in: its sent copy is the received one's record on the other
        # leg (a copy of the dict), not a second parse; only its HPACK decoder is fed the same block.
        _, seq, conn, recv_leg, send_leg, t, blob = item
        hpack = self._hpack
        emit = self._batch.append
        send_key = (conn, send_leg, "send")
        view = memoryview(blob)
        pos, end = 0, len(blob)
        records = 0
        while pos + 9 <= end:
            stop = pos + 9 + int.from_bytes(view[pos:pos + 3], "big")
            wire = bytes(view[pos:stop])
            pos = stop
            records += 2
            one = ("frame", seq, conn, recv_leg, "recv", t, wire, None, None, None, True)
            try:
                parsed = None if wire[3] == 0 else decode_fields(wire)
                rec = self._frame_record(one, parsed)
                twin = dict(rec)
                twin["seq"] = seq + 1
                twin["leg"] = send_leg
                twin["dir"] = "send"
                twin["origin"] = seq
                fields, fragment = parsed if parsed is not None else ({}, None)
                if fragment is not None and "parse_error" not in fields:
                    twin.pop("headers", None)
                    twin.pop("headers_error", None)
                    decoded, err = hpack.feed(send_key, fragment, bool(wire[4] & 0x4))
                    if decoded is not None:
                        twin["headers"] = decoded
                    elif err:
                        twin["headers_error"] = err
            except Exception:     # a bug must not lose the frames: the generic path records what it can
                for event in expand_forwarded(("forwarded", seq, conn, recv_leg, send_leg, t, wire)):
                    super()._handle(event)
                seq += 2
                continue
            emit(rec)
            emit(twin)
            if hpack.over_limit:
                self._header_list_violation(one)
            seq += 2
        return records

    def _build(self, item) -> Optional[dict]:
        if item[0] != "frame":
            return super()._build(item)
        return self._frame_record(item, None)

    def _frame_record(self, item, parsed) -> dict:
        """The page's record of a frame event: the log's, with the first WIRE_KEEP bytes (DATA: parsed here,
        the common case, without the generic decoder)."""
        _, seq, conn, leg, d, t, wire, headers, origin, actions, keep = item
        if len(wire) >= 9 and wire[3] == 0 and headers is None:
            length = wire[0] << 16 | wire[1] << 8 | wire[2]
            flags = wire[4]
            pad = (wire[9] + 1) if flags & 0x8 and length else 0
            rec = {"record": "frame", "seq": seq, "ts": t, "conn": conn, "leg": leg, "dir": d, "type": "DATA",
                   "type_byte": 0, "flags": flags, "flag_names": _DATA_FLAGS.get(flags & 0x9, []),
                   "stream": (wire[5] & 0x7F) << 24 | wire[6] << 16 | wire[7] << 8 | wire[8], "length": length,
                   "fields": {"data_length": max(0, length - pad),
                              "pad_length": wire[9] if flags & 0x8 and length else None},
                   "wire": b64(wire[:WIRE_KEEP])}
        else:
            rec = frame_record(seq, t, conn, leg, d, wire, headers, origin, actions, self._hpack, False,
                               parsed=parsed)
            rec["wire"] = b64(wire[:WIRE_KEEP])
        if len(wire) > WIRE_KEEP:
            rec["wire_truncated"] = True
        if origin is not None:
            rec["origin"] = origin
        if actions:
            rec["actions"] = actions
        return rec

    # ------------------------------------------------------------ control

    def flush(self, timeout: float = 10.0) -> bool:
        """Process everything queued now (tests; the proxy's loop does it in slices)."""
        self.pump()
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._halted = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

