"""The sink that feeds the web view's model from the running proxy.

It is a :class:`~proxy.recording.recorder.ThreadedSink`: on the event loop a
frame costs one tuple appended to a queue; records are built on the sink's
thread. DATA frames, most of the traffic, get a record built from their 9-byte
header alone (no parsing of the payload, no copy beyond the first bytes kept
for the hex view), so the page costs little while the proxy is busy.
"""
from __future__ import annotations

from typing import Optional

from ..recording.decode import b64, frame_record
from ..recording.recorder import ThreadedSink
from .model import WebModel

__all__ = ["WebSink"]

#: Bytes of a frame kept for the hex view.
WIRE_KEEP = 258
_DATA_FLAGS = {0: [], 1: ["END_STREAM"], 8: ["PADDED"], 9: ["END_STREAM", "PADDED"]}


class WebSink(ThreadedSink):
    """Feeds :class:`WebModel` (``model``) with the proxy's records."""

    record_wire = False
    interval = 0.1

    def __init__(self, model: WebModel) -> None:
        self.model = model
        self._batch: list = []
        super().__init__(thread_name="h2proxy-web", max_queue=200_000, max_queue_bytes=64 << 20)

    def _build(self, item) -> Optional[dict]:
        if item[0] != "frame":
            return super()._build(item)
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
            rec = frame_record(seq, t, conn, leg, d, wire, headers, origin, actions, self._hpack, False)
            rec["wire"] = b64(wire[:WIRE_KEEP])
        if len(wire) > WIRE_KEEP:
            rec["wire_truncated"] = True
        if origin is not None:
            rec["origin"] = origin
        if actions:
            rec["actions"] = actions
        return rec

    def emit(self, record: dict) -> None:
        self._batch.append(record)
        if len(self._batch) >= 512:
            self.flush_output()

    def flush_output(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.model.ingest_many(batch)
