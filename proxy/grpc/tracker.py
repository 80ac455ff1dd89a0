"""gRPC calls and messages from frame log records: the part the recorder and the live printer share.

A :class:`GrpcTracker` is given every frame record a sink builds (with the
frame's bytes) and returns the extra records to write after it:
``grpc_message`` when a DATA frame completed a message, ``grpc_call`` when a
call ended (trailers, a reset, or the connection going away). It follows
what each peer *sent* (the ``recv`` records): a message a hook changed is
recorded as it arrived, and the frame records after it show what went on.
It runs on the sink's background thread (or the recorder's process), never
on the event loop.
"""
from __future__ import annotations

import base64
from typing import Dict, List, Optional, Tuple

from .calls import REQUEST, RESPONSE, GrpcOptions, header, is_grpc_request, split_path
from .framing import DecompressError, Message, MessageReader, Oversized, decompress
from .status import percent_decode, status_name

_DATA, _HEADERS, _RST_STREAM = 0x0, 0x1, 0x3


class Call:
    """One gRPC call seen on a stream."""

    __slots__ = ("conn", "stream", "path", "start", "readers", "encodings", "messages", "response_seen",
                 "status", "message", "end", "problems")

    def __init__(self, conn, stream: int, path: str, start: float, encoding: Optional[str], max_size: int) -> None:
        self.conn = conn
        self.stream = stream
        self.path = path
        self.start = start
        self.readers = (MessageReader(max_size), MessageReader(max_size))
        self.encodings: List[Optional[str]] = [encoding, None]
        self.messages = [0, 0]
        self.response_seen = False
        self.status: Optional[int] = None
        self.message: Optional[str] = None
        self.end: Optional[float] = None
        self.problems: List[str] = []


def _payload(wire: bytes) -> bytes:
    """A DATA frame's payload without padding."""
    if wire[4] & 0x08 and len(wire) > 9:
        pad = wire[9]
        return wire[10:max(len(wire) - pad, 10)]
    return wire[9:]


class GrpcTracker:
    """Follows the gRPC calls of many connections through their frame records."""

    def __init__(self, options: Optional[GrpcOptions] = None) -> None:
        self.options = options or GrpcOptions()
        self.schema = None
        self.schema_error: Optional[str] = None
        if self.options.descriptor:
            from .schema import SchemaError, load_schema
            try:
                self.schema = load_schema(self.options.descriptor)
            except SchemaError as exc:
                self.schema_error = str(exc)
        self.calls: Dict[Tuple, Call] = {}
        #: END_STREAM of a HEADERS frame whose block goes on in CONTINUATION frames, by (conn, stream, side).
        self._block_end: Dict[Tuple, bool] = {}

    def feed(self, rec: dict, wire: Optional[bytes]) -> List[dict]:
        """The records that follow frame record ``rec`` (``wire``: its bytes)."""
        if rec.get("record") != "frame" or rec.get("dir") != "recv":
            return []
        leg = rec.get("leg")
        d = 0 if leg == "client" else 1
        conn, sid, t = rec.get("conn"), rec.get("stream") or 0, rec.get("type_byte")
        key = (conn, sid)
        call = self.calls.get(key)
        if t == _HEADERS or t == 0x9:
            headers = rec.get("headers")
            flags = rec.get("flags", 0)
            if t == _HEADERS and not flags & 0x04:
                self._block_end[(conn, sid, d)] = bool(flags & 0x01)    # the block ends in a CONTINUATION
            ends = bool(flags & 0x01) if t == _HEADERS else self._block_end.pop((conn, sid, d), False)
            if headers is None:
                return []
            if d == 0 and call is None:
                if is_grpc_request(headers):
                    self.calls[key] = Call(conn, sid, header(headers, ":path") or "", rec.get("ts"),
                                           header(headers, "grpc-encoding"), self.options.max_message)
                return []
            if call is None:
                return []
            if d == 1:
                if not call.response_seen and header(headers, ":status") is not None:
                    call.response_seen = True
                    call.encodings[1] = header(headers, "grpc-encoding")
                status = header(headers, "grpc-status")
                if status is not None:
                    try:
                        call.status = int(status)
                    except ValueError:
                        call.problems.append(f"grpc-status {status!r} is not a number")
                    call.message = percent_decode(header(headers, "grpc-message"))
            if ends:
                return self._ended(call, d, rec)
            return []
        if call is None:
            return []
        if t == _DATA and wire is not None:
            out = []
            for ev in call.readers[d].feed(_payload(wire)):
                call.messages[d] += 1
                out.append(self._message_record(call, d, ev, rec))
            if rec.get("flags", 0) & 0x01:
                out.extend(self._ended(call, d, rec))
            return out
        if t == _RST_STREAM:
            call.problems.append(f"reset by the {'client' if d == 0 else 'server'} "
                                 f"({(rec.get('fields') or {}).get('error')})")
            return self._finish(call, rec.get("ts"))
        return []

    def _ended(self, call: Call, d: int, rec: dict) -> List[dict]:
        why = call.readers[d].leftover()
        if why:
            call.problems.append(f"{REQUEST if d == 0 else RESPONSE}: {why}")
        if d == 1:
            return self._finish(call, rec.get("ts"))
        return []

    def _finish(self, call: Call, ts) -> List[dict]:
        self.calls.pop((call.conn, call.stream), None)
        call.end = ts
        return [call_record(call)]

    def forget(self, conn) -> List[dict]:
        """The connection closed: calls still open on it end here (as records)."""
        out = []
        for key in [k for k in self._block_end if k[0] == conn]:
            del self._block_end[key]
        for key in [k for k in self.calls if k[0] == conn]:
            call = self.calls.pop(key)
            call.problems.append("the connection closed before the call ended")
            out.append(call_record(call))
        return out

    def _message_record(self, call: Call, d: int, ev, rec: dict) -> dict:
        service, method = split_path(call.path)
        out = {"record": "grpc_message", "ts": rec.get("ts"), "conn": call.conn, "stream": call.stream,
               "leg": rec.get("leg"), "direction": REQUEST if d == 0 else RESPONSE, "path": call.path,
               "service": service, "method": method, "index": ev.index, "compressed": ev.compressed,
               "frame_seq": rec.get("seq")}
        if isinstance(ev, Oversized):
            out["length"] = ev.length
            out["oversized"] = True
            out["note"] = f"{ev.length} bytes, above the maximum message size {ev.max_size}: not decoded"
            return out
        assert isinstance(ev, Message)
        out["length"] = ev.length
        out["data"] = base64.b64encode(ev.data).decode("ascii")
        data = ev.data
        if ev.compressed:
            out["encoding"] = call.encodings[d]
            try:
                data = decompress(ev.data, call.encodings[d], self.options.max_message)
                out["decompressed_length"] = len(data)
            except DecompressError as exc:
                out["decode_error"] = str(exc)
                return out
        if self.schema is not None:
            from .schema import SchemaError
            try:
                decoded = self.schema.decode(call.path, d == 0, data)
            except SchemaError as exc:
                out["decode_error"] = str(exc)
            else:
                if decoded is not None:
                    out["decoded"] = decoded
        return out


def call_record(call: Call) -> dict:
    service, method = split_path(call.path)
    rec = {"record": "grpc_call", "ts": call.end, "conn": call.conn, "leg": "upstream", "stream": call.stream,
           "path": call.path,
           "service": service, "method": method, "start": call.start,
           "status": call.status, "status_name": status_name(call.status) if call.status is not None else None,
           "messages": {REQUEST: call.messages[0], RESPONSE: call.messages[1]}}
    if call.message:
        rec["message"] = call.message
    if call.start is not None and call.end is not None:
        rec["duration_ms"] = round((call.end - call.start) * 1000.0, 3)
    if call.problems:
        rec["problems"] = list(call.problems)
    return rec
