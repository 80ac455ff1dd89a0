"""The JSON Lines frame recorder, and the threaded sink base it shares with the live printer.

The proxy core calls the sink on the event loop thread. Those calls only copy
the frame bytes and append a tuple to a queue; a background thread turns the
tuples into records (frame fields, HPACK-decoded header lists, base64 of the
wire bytes) and writes them. ``close()`` drains the queue and joins the thread.
"""
from __future__ import annotations

import atexit
import collections
import datetime
import itertools
import json
import os
import sys
import threading
import time
import weakref
from typing import Iterable, Optional

from .. import __version__
from ..core.limits import Limits
from .decode import HpackState, b64, frame_record, frame_type_byte
from .logwriter import LogFileWriter
from .sink import FrameSink

__all__ = ["ThreadedSink", "JsonlRecorder", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "h2proxy-frame-log"
#: 2: a frame sent with the bytes of the frame it came from (forwarded unchanged) may carry ``wire_of``
#: (that frame's seq) instead of ``wire``, so the log holds the bytes once. Version 1 logs read as before.
FORMAT_VERSION = 2

#: Frame types whose payload carries HPACK: their bytes must reach the decoder even when filtered out.
_HPACK_TYPES = (0x1, 0x5, 0x9)
#: Filter names that select the non-frame byte records.
_PREFACE = "PREFACE"
_RAW = "RAW"


def _copy_info(info) -> dict:
    if not isinstance(info, dict):
        return {}
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in info.items()}


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def dumps(record: dict) -> str:
    """One record as one line of JSON (never raises for odd values in actions or details)."""
    return json.dumps(record, separators=(",", ":"), default=_json_default)


try:  # 8x faster than json.dumps on frame records (measured in the converter's profile)
    import orjson as _orjson

    def dumps_bytes(record: dict) -> bytes:
        """One record as one line of UTF-8 JSON: orjson, or json.dumps for what orjson refuses (lone
        surrogates from undecodable header bytes, integers past 64 bits)."""
        try:
            return _orjson.dumps(record, default=_json_default)
        except TypeError:
            return dumps(record).encode("utf-8")
except ImportError:  # pragma: no cover - orjson is a dependency
    def dumps_bytes(record: dict) -> bytes:
        return dumps(record).encode("utf-8")


_live_sinks: "weakref.WeakSet[ThreadedSink]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - runs at interpreter exit
    for sink in list(_live_sinks):
        try:
            sink.close()
        except Exception:
            pass


def expand_forwarded(item):
    """The frame events a ``forwarded`` event stands for: each frame received, then sent."""
    _, seq, conn, recv_leg, send_leg, t, blob = item
    view = memoryview(blob)
    pos, end = 0, len(blob)
    while pos + 9 <= end:
        stop = pos + 9 + int.from_bytes(view[pos:pos + 3], "big")
        wire = bytes(view[pos:stop])
        yield ("frame", seq, conn, recv_leg, "recv", t, wire, None, None, None, True)
        yield ("frame", seq + 1, conn, send_leg, "send", t, wire, None, seq, None, True)
        seq += 2
        pos = stop


class ThreadedSink(FrameSink):
    """A sink whose calls queue cheap tuples for a background thread that builds and emits records.

    Subclasses implement :meth:`emit` (one record dict, on the background
    thread) and may implement :meth:`finish` (on the thread that calls
    :meth:`close`, after the last record).

    Filters: ``filter_conn`` (connection ids), ``filter_stream`` (stream ids;
    stream 0 only when listed) and ``filter_types`` (frame type names such as
    ``"HEADERS"``, ``"0x0c"``, type bytes, and ``"PREFACE"`` / ``"RAW"`` for
    those records). With a stream or type filter, prefaces and raw bytes are
    left out unless their name is in ``filter_types``. Connection, violation,
    error and hook records are kept whenever their connection is.
    """

    #: Seconds between wake-ups of the writer thread when nothing pushes it.
    interval = 0.05
    #: Records queued before the writer thread is woken at once.
    wake_at = 2048
    #: Seconds close() waits for the writer to finish what is queued.
    close_timeout = 120.0
    #: Records handled between two flushes of the output.
    batch = 4096
    #: Whether frame records carry the base64 wire bytes (the printer only needs them for hex dumps).
    record_wire = True
    #: False in subclasses that hand events on without a background thread of this process.
    use_thread = True
    #: gRPC decoding (a proxy.grpc.calls.GrpcOptions) or None: adds grpc_message / grpc_call records.
    grpc = None
    _grpc_tracker = None
    #: Whether a sent frame with the same bytes as the received frame it came from (its ``origin``, the
    #: byte record just before it) is recorded with ``wire_of`` instead of a second copy of the bytes
    #: (format version 2). Subclasses that do not set it get ``wire`` on every record.
    share_wire = False
    #: (seq, bytes) of the last byte record built with its ``wire``: what a ``wire_of`` may point to.
    _wire_seq: Optional[int] = None
    _wire_bytes: Optional[bytes] = None

    def __init__(self, *, filter_conn: Optional[Iterable[int]] = None, filter_stream: Optional[Iterable[int]] = None,
                 filter_types: Optional[Iterable] = None, max_queue: int = 1_000_000,
                 max_queue_bytes: int = 256 << 20, thread_name: str = "h2proxy-sink",
                 max_header_list_size: Optional[int] = None) -> None:
        self._counter = itertools.count(1)
        self._fconn = frozenset(int(c) for c in filter_conn) if filter_conn else None
        self._fstream = frozenset(int(s) for s in filter_stream) if filter_stream else None
        self._ftypes = None
        self._keep_preface = self._keep_raw = True
        if filter_types:
            names = {str(n).strip().upper() for n in filter_types if not isinstance(n, int)}
            types = set()
            for name in filter_types:
                if isinstance(name, str) and name.strip().upper() in (_PREFACE, _RAW):
                    continue
                tb = frame_type_byte(name)
                if tb is None:
                    raise ValueError(f"unknown frame type {name!r} in the record type filter")
                types.add(tb)
            self._ftypes = frozenset(types)
            self._keep_preface = _PREFACE in names
            self._keep_raw = _RAW in names
        if self._fstream is not None:
            self._keep_preface = self._ftypes is not None and self._keep_preface
            self._keep_raw = self._ftypes is not None and self._keep_raw
        self._filtering = self._fstream is not None or self._ftypes is not None
        self._queue: collections.deque = collections.deque()
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        # Bytes of frames queued: counted in by the event loop thread, out by the writer thread.
        self._bytes_in = 0
        self._bytes_out = 0
        self._dropped = 0
        self._dropped_reported = 0
        self._enqueued = 0
        self._processed = 0
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._stop = False
        self._closed = False
        #: Set once nothing more will be written (a size cap was reached): calls return at once.
        self._halted = False
        self._hpack = HpackState(Limits.max_header_list_size if max_header_list_size is None
                                 else max_header_list_size)
        self._infos: dict = {}
        self._thread: Optional[threading.Thread] = None
        if self.use_thread:
            self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
            self._thread.start()
        _live_sinks.add(self)

    # ------------------------------------------------------------ hot path (event loop thread)

    def _put(self, item, size: int = 0) -> None:
        q = self._queue
        if len(q) >= self._max_queue or self._bytes_in - self._bytes_out > self._max_queue_bytes:
            self._dropped += 1
            return
        q.append(item)
        self._enqueued += 1
        if size:
            self._bytes_in += size
        if len(q) >= self.wake_at:
            self._wake.set()

    def _conn_ok(self, conn_id) -> bool:
        return not self._halted and (self._fconn is None or conn_id in self._fconn)

    def connection_opened(self, conn_id, t, info):
        if not self._conn_ok(conn_id):
            return
        self._infos[conn_id] = (info, _copy_info(info))
        self._put(("connection_opened", conn_id, t, _copy_info(info)))

    def preface(self, conn_id, leg, direction, t, wire, *, seq=None):
        if seq is None:
            seq = next(self._counter)
        if self._keep_preface and self._conn_ok(conn_id):
            self._put(("preface", seq, conn_id, leg, direction, t, bytes(wire)), len(wire))
        return seq

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, *, seq=None):
        if seq is None:
            seq = next(self._counter)
        if self._halted or (self._fconn is not None and conn_id not in self._fconn):
            return seq
        keep = True
        if self._filtering and len(wire) >= 9:
            ftype = wire[3]
            if self._ftypes is not None and ftype not in self._ftypes:
                keep = False
            elif self._fstream is not None and \
                    ((wire[5] & 0x7F) << 24 | wire[6] << 16 | wire[7] << 8 | wire[8]) not in self._fstream:
                keep = False
            if not keep and ftype not in _HPACK_TYPES:
                return seq
        if headers is not None:
            headers = list(headers)
        if actions:
            actions = [dict(a) if isinstance(a, dict) else a for a in actions]
        self._put(("frame", seq, conn_id, leg, direction, t, bytes(wire), headers, origin, actions, keep), len(wire))
        return seq

    def forwarded(self, conn_id, recv_leg, send_leg, t, wires, *, seq=None):
        n = len(wires)
        if seq is None:
            seq = self.next_seq(None, 2 * n)
        if self._halted or (self._fconn is not None and conn_id not in self._fconn) or not n:
            return seq
        if self._filtering:
            return FrameSink.forwarded(self, conn_id, recv_leg, send_leg, t, wires, seq=seq)
        blob = b"".join(wires)
        self._put(("forwarded", seq, conn_id, recv_leg, send_leg, t, blob), len(blob))
        return seq

    def raw(self, conn_id, leg, direction, t, data, note, *, seq=None):
        if seq is None:
            seq = next(self._counter)
        if self._keep_raw and self._conn_ok(conn_id):
            self._put(("raw", seq, conn_id, leg, direction, t, bytes(data), str(note)), len(data))
        return seq

    def violation(self, conn_id, t, side, section, code, message):
        if self._conn_ok(conn_id):
            self._put(("violation", conn_id, t, side, section, code, message))

    def error(self, conn_id, t, message):
        if self._conn_ok(conn_id):
            self._put(("error", conn_id, t, message))

    def hook_action(self, conn_id, t, hook, action, detail):
        if self._conn_ok(conn_id):
            self._put(("hook_action", conn_id, t, hook, action, dict(detail) if isinstance(detail, dict) else detail))

    def connection_closed(self, conn_id, t, reason):
        entry = self._infos.pop(conn_id, None)
        if not self._conn_ok(conn_id):
            return
        update = None
        if entry is not None:
            now = _copy_info(entry[0])
            changed = {k: v for k, v in now.items() if entry[1].get(k) != v}
            update = changed or None
        self._put(("connection_closed", conn_id, t, reason, update))

    # ------------------------------------------------------------ background thread

    def _run(self) -> None:
        q = self._queue
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stop = self._stop
            while True:
                n = 0
                size = 0
                while q and n < self.batch:
                    item = q.popleft()
                    n += 1
                    if item[0] in ("frame", "preface", "raw", "forwarded"):
                        size += len(item[6])
                    self._handle(item)
                self._bytes_out += size
                dropped = self._dropped
                if dropped > self._dropped_reported:
                    lost = dropped - self._dropped_reported
                    self._dropped_reported = dropped
                    try:
                        self.emit({"record": "error", "ts": time.time(), "conn": None,
                                   "message": f"{lost} events were not recorded: the writer could not keep up"})
                    except Exception as exc:
                        self._emit_failed(exc)
                if not n:
                    break
                try:
                    self.flush_output()
                except Exception as exc:
                    self._emit_failed(exc)
                with self._done:
                    self._processed += n
                    self._done.notify_all()
            if stop and not q:
                return

    def _handle(self, item) -> None:
        """Build and emit the record(s) of one queued event."""
        for one in (expand_forwarded(item) if item[0] == "forwarded" else (item,)):
            try:
                rec = self._build(one)
            except Exception as exc:  # a bug must not lose the bytes: write what is known
                rec = self._fallback(one, exc)
            if rec is not None:
                try:
                    self.emit(rec)
                except Exception as exc:
                    self._emit_failed(exc)
            if self.grpc is not None and one[0] in ("frame", "connection_closed"):
                self._grpc_records(one, rec)
            if self._hpack.over_limit:
                self._header_list_violation(one)

    def _header_list_violation(self, item) -> None:
        """A block went past max_header_list_size while decoding it for the log: say who sent it."""
        for event in header_list_violations(self._hpack, item):
            try:
                rec = self._build(event)
                if rec is not None:
                    self.emit(rec)
            except Exception as exc:
                self._emit_failed(exc)

    def _build(self, item) -> Optional[dict]:
        kind = item[0]
        if kind == "frame":
            _, seq, conn, leg, d, t, wire, headers, origin, actions, keep = item
            if not keep:
                frame_record(seq, t, conn, leg, d, wire, headers, origin, actions, self._hpack, False)
                return None
            if self.share_wire and origin is not None and origin == self._wire_seq and wire == self._wire_bytes:
                # Forwarded unchanged: the bytes are in the record just before (seq ``origin``).
                rec = frame_record(seq, t, conn, leg, d, wire, headers, origin, actions, self._hpack, False)
                rec["wire_of"] = origin
                return rec
            rec = frame_record(seq, t, conn, leg, d, wire, headers, origin, actions, self._hpack, self.record_wire)
            if self.share_wire:
                self._wire_seq, self._wire_bytes = seq, wire
            return rec
        if kind == "preface":
            _, seq, conn, leg, d, t, wire = item
            self._wire_seq = None
            return {"record": "preface", "seq": seq, "ts": t, "conn": conn, "leg": leg, "dir": d,
                    "length": len(wire), "wire": b64(wire)}
        if kind == "raw":
            _, seq, conn, leg, d, t, data, note = item
            self._wire_seq = None
            return {"record": "raw", "seq": seq, "ts": t, "conn": conn, "leg": leg, "dir": d,
                    "length": len(data), "note": note, "wire": b64(data)}
        if kind == "connection_opened":
            _, conn, t, info = item
            return {"record": "connection_opened", "ts": t, "conn": conn, "info": info}
        if kind == "connection_closed":
            _, conn, t, reason, update = item
            self._hpack.forget(conn)
            rec = {"record": "connection_closed", "ts": t, "conn": conn, "reason": reason}
            if update:
                rec["info"] = update
            return rec
        if kind == "violation":
            _, conn, t, side, section, code, message = item
            return {"record": "violation", "ts": t, "conn": conn, "side": side, "section": section,
                    "code": code, "message": message}
        if kind == "error":
            _, conn, t, message = item
            return {"record": "error", "ts": t, "conn": conn, "message": message}
        if kind == "hook_action":
            _, conn, t, hook, action, detail = item
            return {"record": "hook_action", "ts": t, "conn": conn, "hook": hook, "action": action,
                    "detail": detail}
        return None

    def _grpc_records(self, item, rec: Optional[dict]) -> None:
        """The gRPC messages and call ends that this frame completed (see proxy/grpc/tracker.py)."""
        try:
            tracker = self._grpc_tracker
            if tracker is None:
                from ..grpc.tracker import GrpcTracker
                tracker = self._grpc_tracker = GrpcTracker(self.grpc)
            if item[0] == "connection_closed":
                extra = tracker.forget(item[1])
            elif rec is None or rec.get("record") != "frame":
                return
            else:
                extra = tracker.feed(rec, item[6])
            for r in extra:
                self.emit(r)
        except Exception as exc:
            self._emit_failed(exc)

    def _fallback(self, item, exc) -> Optional[dict]:
        if item[0] in ("frame", "preface", "raw") and len(item) > 6:
            _, seq, conn, leg, d, t, wire = item[:7]
            if item[0] == "frame" and not item[10]:
                return None
            self._wire_seq = None
            return {"record": item[0], "seq": seq, "ts": t, "conn": conn, "leg": leg, "dir": d,
                    "length": max(len(wire) - 9, 0) if item[0] == "frame" else len(wire),
                    "fields": {"parse_error": f"recorder: {type(exc).__name__}: {exc}"}, "wire": b64(wire)}
        return {"record": "error", "ts": time.time(), "conn": item[1] if len(item) > 1 else None,
                "message": f"recorder could not log a {item[0]} event: {type(exc).__name__}: {exc}"}

    def _emit_failed(self, exc: Exception) -> None:
        print(f"h2proxy: {type(self).__name__}: {type(exc).__name__}: {exc}", file=sys.stderr)

    # ------------------------------------------------------------ subclass API

    def emit(self, record: dict) -> None:
        """Write one record (background thread)."""

    def flush_output(self) -> None:
        """Called on the background thread after each batch of records."""

    def finish(self) -> None:
        """Called once by :meth:`close` after the thread has written the last record."""

    # ------------------------------------------------------------ control

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been written; False on timeout."""
        target = self._enqueued
        deadline = time.monotonic() + timeout
        thread = self._thread           # (None: a subclass without a thread writes and flushes itself)
        self._wake.set()
        with self._done:
            while self._processed < target and thread is not None and thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._halted = True          # events after close() are ignored
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(self.close_timeout)
        _live_sinks.discard(self)
        self.finish()

    @property
    def dropped(self) -> int:
        """Events lost because the queue was full (the writer could not keep up)."""
        return self._dropped


def header_list_violations(hpack: HpackState, item) -> list:
    """The ``violation`` events for the blocks that went past max_header_list_size in ``hpack`` while it
    decoded the frame event ``item`` (its ``over_limit`` is emptied).

    Only the received copy of a frame makes a violation (its forwarded copy on the
    other leg trips the limit too: its record only carries ``headers_error``).
    """
    keys, hpack.over_limit = hpack.over_limit, []
    out = []
    for conn, leg, direction in keys:
        if direction != "recv":
            continue
        sid = item[6][5:9] if len(item) > 6 and isinstance(item[6], bytes) else b"\0\0\0\0"
        limit = hpack.max_header_list_size
        message = (f"limit max_header_list_size = {limit} exceeded: a header block on stream "
                   f"{int.from_bytes(sid, 'big') & 0x7FFFFFFF} decodes to a larger header list (HPACK bomb?); "
                   f"the log shows it undecoded, and no later block from the {leg} on this connection")
        out.append(("violation", conn, item[5], "client" if leg == "client" else "server", "6.5.2",
                    "ENHANCE_YOUR_CALM", message))
    return out


class JsonlRecorder(ThreadedSink):
    """Writes the frame log as JSON Lines (format: docs/frame-log.md).

    ``max_bytes`` caps the log: the first record that would cross it is not
    written; a final ``{"record": "truncated", ...}`` is, and nothing after it.
    ``path`` ending in ``.gz`` or ``.zst`` writes it compressed. ``rotate``
    (bytes) writes numbered files (:mod:`proxy.recording.logwriter`), each
    opening with a header and a ``connection_state`` record per open connection
    (its addresses and the HPACK tables of its four directions), so each file
    can be read by itself.
    """

    share_wire = True

    def __init__(self, path, *, filter_conn=None, filter_stream=None, filter_types=None,
                 max_bytes: Optional[int] = None, max_queue: int = 1_000_000,
                 max_queue_bytes: int = 256 << 20, rotate: Optional[int] = None,
                 header_extra: Optional[dict] = None, max_header_list_size: Optional[int] = None,
                 grpc=None) -> None:
        self.path = os.fspath(path)
        #: The file (part) the last record carrying ``wire`` went to: a ``wire_of`` only points within a file.
        self._wire_part = 0
        self.max_bytes = max_bytes
        self.rotate = rotate
        if isinstance(grpc, dict):       # as the journal's header carries it (JSON)
            from ..grpc.calls import GrpcOptions
            grpc = GrpcOptions(**grpc)
        self.grpc = grpc
        self._truncated = False
        #: Connections opened and not closed: conn -> (opened ts, info), for the state that opens each file.
        self._open_conns: dict = {}
        started = time.time()
        self._header = {"record": "header", "format": FORMAT_NAME, "version": FORMAT_VERSION, "tool": "h2proxy",
                        "tool_version": __version__,
                        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
                        .isoformat().replace("+00:00", "Z"),
                        "started_ts": started, "pid": os.getpid(),
                        "filters": {"conn": sorted(filter_conn) if filter_conn else None,
                                    "stream": sorted(filter_stream) if filter_stream else None,
                                    "types": list(filter_types) if filter_types else None},
                        "max_bytes": max_bytes}
        if rotate:
            self._header["rotate"] = rotate
        if header_extra:
            self._header.update(header_extra)
        self._out = LogFileWriter(self.path, rotate=rotate, opening_lines=self._opening_lines)
        try:
            self._out.flush()
            super().__init__(filter_conn=filter_conn, filter_stream=filter_stream, filter_types=filter_types,
                             max_queue=max_queue, max_queue_bytes=max_queue_bytes, thread_name="h2proxy-recorder",
                             max_header_list_size=max_header_list_size)
        except BaseException:
            self._out.close()
            raise

    def _opening_lines(self, part: int):
        """The lines that open file ``part``: the header, then (from the second file on) the open connections."""
        head = dict(self._header)
        if self.rotate:
            head["part"] = part
        lines = [dumps(head)]
        if part > 1:
            now = time.time()
            for conn, (opened_ts, info) in self._open_conns.items():
                lines.append(dumps({"record": "connection_state", "ts": now, "conn": conn, "opened_ts": opened_ts,
                                    "info": info, "hpack": self._hpack.tables(conn)}))
        return lines

    @property
    def files(self):
        """The files written so far (one without rotation)."""
        return list(self._out.files)

    def emit(self, record: dict) -> None:
        if self._truncated:
            return
        out = self._out
        if "wire_of" in record:
            if out.rotate and (out.pending_rotation or out.part != self._wire_part):
                # The bytes it points to are in the previous file: each file must read by itself.
                del record["wire_of"]
                record["wire"] = b64(self._wire_bytes or b"")
        elif "wire" in record:
            self._wire_part = out.part + 1 if out.pending_rotation else out.part
        line = dumps_bytes(record)
        if self.max_bytes is not None and out.written + len(line) + 1 > self.max_bytes:
            self._truncated = True
            self._halted = True
            out.write(dumps({"record": "truncated", "ts": time.time(), "max_bytes": self.max_bytes,
                             "at_seq": record.get("seq"), "at_record": record.get("record"),
                             "message": f"the log reached its size cap of {self.max_bytes} bytes; "
                                        f"nothing after this was written"}))
            return
        kind = record.get("record")
        if kind == "connection_opened":
            self._open_conns[record.get("conn")] = (record.get("ts"), record.get("info"))
        elif kind == "connection_closed":
            self._open_conns.pop(record.get("conn"), None)
        out.write(line)

    def flush_output(self) -> None:
        self._out.flush()

    def finish(self) -> None:
        self._out.close()

    @property
    def truncated(self) -> bool:
        return self._truncated
