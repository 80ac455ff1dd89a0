"""Replaying one side of a recorded connection against a live peer.

``--as client``: connect to a server and send what the recorded client sent
(the client leg's received records); report per stream where the server's
answers differ from the recording. ``--as server``: listen, and to each client
that connects play what the recorded server sent (the upstream leg's received
records).

Frames go out in the recorded order, with the recorded bytes, except:

* header blocks are re-encoded from the recorded header lists with a fresh
  HPACK encoder (split into CONTINUATION frames to fit the live peer's
  SETTINGS_MAX_FRAME_SIZE), so the replay does not depend on the recorded
  HPACK context; blocks without a recorded header list go out as recorded;
* what answers the live peer is generated live and the recorded versions are
  skipped: SETTINGS ACKs, PING ACKs and WINDOW_UPDATEs (each DATA frame
  received is credited back at once, so transfers never stall);
* DATA waits for the live peer's flow-control window, and is split when it is
  larger than the live peer's maximum frame size;
* pacing: a recorded frame is sent once the live peer has sent what the
  recorded peer had sent before it (its SETTINGS, header blocks and stream
  ends, matched per stream), or after ``--wait`` seconds without it;
* ``--as server`` maps streams: the n-th stream the live client opens stands
  for the n-th one the recorded client opened.

The replay does not run an HTTP/2 state machine, so deliberate oddities in the
recording are replayed as they are.
"""
from __future__ import annotations

import asyncio
import os
import ssl
import struct
import sys
import tempfile
import time
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

from framecodec.reader import PREFACE, FrameReader

from ..core.blocks import block_frames
from ..core.limits import Limits
from ..printable import printable
from .decode import error_name, frame_name, unb64
from .logfile import Connection, connections

__all__ = ["replay_client", "replay_server", "ReplayError", "DATE_LIKE_HEADERS"]

#: Response headers whose values change from run to run: not compared.
DATE_LIKE_HEADERS = frozenset({"date", "last-modified", "expires", "age", "etag", "set-cookie", "x-request-id",
                               "x-amzn-requestid", "server-timing", "report-to", "nel", "cf-ray",
                               "alt-svc", "server"})

_HEADER = struct.Struct(">LBL")
_U32 = struct.Struct(">L")


class ReplayError(Exception):
    """The replay cannot start (bad arguments, nothing to replay, cannot connect)."""


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack((len(payload) << 8) | ftype, flags, sid & 0x7FFFFFFF) + payload


def _with_sid(wire: bytes, sid: int) -> bytes:
    if len(wire) < 9:
        return wire
    buf = bytearray(wire)
    reserved = buf[5] & 0x80
    _U32.pack_into(buf, 5, (reserved << 24) | (sid & 0x7FFFFFFF))
    return bytes(buf)


def _hb(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


# --------------------------------------------------------------------------- the live peer


class _Peer:
    """One live HTTP/2 connection: frames in, flow control, HPACK, automatic answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_side: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.server_side = server_side
        self.frames = FrameReader(max_frame_size=(1 << 24) - 1, expect_preface=server_side)
        from framecodec.hpack import Decoder, Encoder
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 1 << 32
        # A live peer may send an HPACK bomb: decode no more than the proxy would (max_header_list_size).
        self.decoder.max_header_list_size = Limits.max_header_list_size
        self.encoder = Encoder()
        self.peer_max_frame = 16384
        self.peer_initial_window = 65535
        self.conn_window = 65535
        self.stream_credit: Dict[int, int] = {}    # WINDOW_UPDATEs minus DATA sent, per stream
        self.own_initial_window = 65535             # from the SETTINGS we sent
        self._topped_up: set = set()
        self.preface_received = not server_side
        self.incoming: List[dict] = []             # every frame received, summarised
        self.changed = asyncio.Event()
        self.eof = False
        self.error: Optional[str] = None
        self.goaway: Optional[dict] = None
        self._block: Optional[Tuple[dict, List[bytes]]] = None
        self.on_frame: Optional[Callable[[dict], None]] = None   # callback(summary) after each frame
        #: Automatic answers wait until our own first SETTINGS is out (it must be our first frame).
        self.hold_answers = True
        self._held: List[bytes] = []

    # ---------------------------------------------------------------- sending

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def answer(self, data: bytes) -> None:
        """Send a generated answer (SETTINGS ACK, PING ACK, WINDOW_UPDATE), after our first SETTINGS."""
        if self.hold_answers:
            self._held.append(data)
        else:
            self.send(data)

    def top_up(self, sid: int) -> None:
        """Open a stream's receive window to at least 64 KiB when our SETTINGS made it smaller
        (the recorded WINDOW_UPDATEs are not replayed, so a small window could stall the transfer)."""
        if sid in self._topped_up:
            return
        self._topped_up.add(sid)
        if 0 <= self.own_initial_window < 65535:
            self.answer(_frame(0x8, 0, sid, _U32.pack(65535 - self.own_initial_window)))

    def release_answers(self) -> None:
        self.hold_answers = False
        held, self._held = self._held, []
        for data in held:
            self.send(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.eof = True

    def window(self, sid: int) -> int:
        return min(self.conn_window, self.peer_initial_window + self.stream_credit.get(sid, 0))

    def consumed(self, sid: int, n: int) -> None:
        self.conn_window -= n
        self.stream_credit[sid] = self.stream_credit.get(sid, 0) - n

    def header_frames(self, ftype: int, sid: int, flags: int, headers, priority: Optional[dict] = None,
                      promised: Optional[int] = None) -> bytes:
        """A header block encoded with this connection's encoder, as HEADERS/PUSH_PROMISE + CONTINUATIONs."""
        block = self.encoder.encode([(_hb(n), _hb(v)) for n, v in headers])
        prio = None
        if ftype == 0x1 and priority:
            dep = (priority.get("depends_on") or 0) | (0x80000000 if priority.get("exclusive") else 0)
            prio = struct.pack(">LB", dep & 0xFFFFFFFF, max(1, min(256, priority.get("weight") or 16)) - 1)
        return b"".join(block_frames(sid, block, self.peer_max_frame, ftype == 0x1 and bool(flags & 0x01),
                                     (promised or 0) if ftype == 0x5 else None, prio))

    # ---------------------------------------------------------------- receiving

    async def read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                had_preface = self.frames.preface_pending
                frames = self.frames.feed(data)
                if had_preface and not self.frames.preface_pending:
                    self.preface_received = True
                for raw in frames:
                    self._handle(raw)
                self.changed.set()
                await self.drain()
        except Exception as exc:  # the peer broke the protocol or the socket failed
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.eof = True
            self.changed.set()

    def _handle(self, raw) -> None:
        ftype, flags, sid, length = raw.type, raw.flags, raw.stream_id, raw.length
        wire = bytes(raw.wire)
        summary = {"type": frame_name(ftype), "stream": sid, "flags": flags, "length": length, "t": time.time()}
        payload = wire[9:]
        if ftype == 0x4:
            if flags & 0x01:
                summary["ack"] = True
            else:
                pairs = [struct.unpack_from(">HL", payload, i) for i in range(0, len(payload) - len(payload) % 6, 6)]
                summary["settings"] = pairs
                for ident, value in pairs:
                    if ident == 0x4:
                        self.peer_initial_window = value
                    elif ident == 0x5:
                        self.peer_max_frame = max(16384, min(value, (1 << 24) - 1))
                    elif ident == 0x1:
                        self.encoder.header_table_size = min(value, 4096)
                self.answer(_frame(0x4, 0x01, 0))
        elif ftype == 0x6:
            if not flags & 0x01:
                self.answer(_frame(0x6, 0x01, 0, payload[:8].ljust(8, b"\0")))
        elif ftype == 0x8:
            if len(payload) >= 4:
                inc = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
                if sid == 0:
                    self.conn_window += inc
                else:
                    self.stream_credit[sid] = self.stream_credit.get(sid, 0) + inc
        elif ftype == 0x0:
            summary["data"] = _plain_data(wire)
            if length:
                self.answer(_frame(0x8, 0, 0, _U32.pack(length)))
                if not flags & 0x01:
                    self.answer(_frame(0x8, 0, sid, _U32.pack(length)))
        elif ftype == 0x3:
            code = _U32.unpack_from(payload)[0] if len(payload) >= 4 else None
            summary["error"] = error_name(code) if code is not None else None
        elif ftype == 0x7:
            if len(payload) >= 8:
                last, code = struct.unpack_from(">LL", payload)
                summary["last_stream_id"] = last & 0x7FFFFFFF
                summary["error"] = error_name(code)
                summary["debug"] = payload[8:].decode("utf-8", "backslashreplace")
                self.goaway = summary
        if ftype in (0x1, 0x5, 0x9):
            self._header_fragment(raw, summary)
        self.incoming.append(summary)
        if self.on_frame is not None:
            self.on_frame(summary)

    def _header_fragment(self, raw, summary) -> None:
        try:
            frame = raw.parse()
        except Exception as exc:
            summary["headers_error"] = f"{type(exc).__name__}: {exc}"
            return
        if raw.type == 0x5:
            summary["promised_stream_id"] = frame.promised_stream_id
        if raw.type in (0x1, 0x5):
            self._block = (summary, [bytes(frame.data)])
        elif self._block is not None:
            self._block[1].append(bytes(frame.data))
        else:
            summary["headers_error"] = "CONTINUATION without a header block"
            return
        if raw.flags & 0x04 and self._block is not None:
            first, parts = self._block
            self._block = None
            try:
                headers = [[n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")]
                           for n, v in self.decoder.decode(b"".join(parts), raw=True)]
            except Exception as exc:
                summary["headers_error"] = f"{type(exc).__name__}: {exc}"
                return
            summary["headers"] = headers
            summary["block_type"] = first["type"]

    async def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.eof:
                return predicate()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return predicate()
        return True

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1)
        except Exception:
            # e.g. a TLS peer that never answers close_notify: give up on the orderly shutdown
            try:
                self.writer.transport.abort()
            except Exception:
                pass


def _plain_data(wire: bytes) -> bytes:
    """The data of a DATA frame without its padding (empty when malformed)."""
    flags = wire[4] if len(wire) > 4 else 0
    body = wire[9:]
    if flags & 0x08:
        if not body:
            return b""
        pad = body[0]
        return body[1:len(body) - pad] if pad < len(body) else b""
    return body


# --------------------------------------------------------------------------- the plan


class _Unit:
    """What goes out in one step: one record, or a header block's records (HEADERS + CONTINUATIONs)."""

    def __init__(self, records: List[dict]) -> None:
        self.records = records

    @property
    def first(self) -> dict:
        return self.records[0]

    @property
    def last(self) -> dict:
        return self.records[-1]

    @property
    def seq(self) -> int:
        return self.first.get("seq") or 0


def _units(records: List[dict]) -> List[_Unit]:
    units: List[_Unit] = []
    block: Optional[List[dict]] = None
    for rec in records:
        if rec.get("record") == "frame" and rec.get("type") in ("HEADERS", "PUSH_PROMISE"):
            if block:
                units.append(_Unit(block))
            block = [rec]
            if (rec.get("flags") or 0) & 0x04:
                units.append(_Unit(block))
                block = None
            continue
        if block is not None and rec.get("record") == "frame" and rec.get("type") == "CONTINUATION" \
                and rec.get("stream") == block[0].get("stream"):
            block.append(rec)
            if (rec.get("flags") or 0) & 0x04:
                units.append(_Unit(block))
                block = None
            continue
        if block:
            units.append(_Unit(block))
            block = None
        units.append(_Unit([rec]))
    if block:
        units.append(_Unit(block))
    return units


def _answered_live(unit: "_Unit") -> bool:
    """Recorded frames that the replay does not send: it answers the live peer itself."""
    rec = unit.first
    if rec.get("record") != "frame":
        return False
    t, flags = rec.get("type"), rec.get("flags") or 0
    return t == "WINDOW_UPDATE" or (t in ("SETTINGS", "PING") and bool(flags & 0x01))


def _milestones(rec: dict) -> List[tuple]:
    """The events of a frame the other side waits for: SETTINGS, header blocks and stream ends."""
    if rec.get("record") != "frame":
        return []
    t, flags, sid = rec.get("type"), rec.get("flags") or 0, rec.get("stream") or 0
    out = []
    if t == "SETTINGS" and not flags & 0x01:
        out.append(("settings", 0))
    if t in ("HEADERS", "CONTINUATION") and flags & 0x04:
        out.append(("headers", sid))
    if t in ("HEADERS", "DATA") and flags & 0x01:
        out.append(("end", sid))
    if t == "RST_STREAM":
        out.append(("end", sid))
    return out


def _live_milestones(summary: dict) -> List[tuple]:
    return _milestones({"record": "frame", "type": summary["type"], "flags": summary["flags"],
                        "stream": summary["stream"]})


def _expectations(units: List[_Unit], incoming: List[dict]) -> List[Counter]:
    """For each unit: the milestone counts the recorded peer had reached before it was sent."""
    events = sorted(((r.get("seq") or 0, m) for r in incoming for m in _milestones(r)), key=lambda e: e[0])
    out = []
    i = 0
    seen: Counter = Counter()
    for u in units:
        while i < len(events) and events[i][0] < u.seq:
            seen[events[i][1]] += 1
            i += 1
        out.append(Counter(seen))
    return out


def _pick_connection(records: List[dict], conn: Optional[int], leg: str) -> Connection:
    conns = connections(records)
    if conn is not None:
        if conn not in conns:
            raise ReplayError(f"connection {conn} is not in the log (there are: "
                              f"{', '.join(str(c) for c in conns) or 'none'})")
        return conns[conn]
    for c in conns.values():
        if c.frames(leg, "recv"):
            return c
    raise ReplayError(f"no connection in the log has frames received on the {leg} leg")


def _type_sequence(frames: List[dict]) -> List[str]:
    """Frame types of a stream for comparison: CONTINUATION folded into its block, DATA runs as one,
    WINDOW_UPDATE and PRIORITY left out."""
    out: List[str] = []
    for f in frames:
        t = f.get("type") or "?"
        if t in ("CONTINUATION", "WINDOW_UPDATE", "PRIORITY"):
            continue
        if t == "DATA" and out and out[-1] == "DATA":
            continue
        out.append(t)
    return out


class _Answer:
    """What one side sent on one stream: header blocks, body size, frame types."""

    def __init__(self) -> None:
        self.frames: List[dict] = []
        self.blocks: List[list] = []
        self.body = 0
        self.ended = False
        # A PUSH_PROMISE's block continues in CONTINUATION frames: those headers are not this stream's.
        self._promise_open = False

    def add(self, type_: Optional[str], flags: int, headers: Optional[list], data_len: int, frame: dict) -> None:
        self.frames.append(frame)
        if type_ == "PUSH_PROMISE" or (type_ == "CONTINUATION" and self._promise_open):
            # The request of the promised stream, not a response block of this one (RFC 9113 8.4).
            self._promise_open = not flags & 0x04
        elif headers is not None:
            self.blocks.append(headers)
        if type_ == "DATA":
            self.body += data_len
        if (type_ in ("HEADERS", "DATA") and flags & 0x01) or type_ == "RST_STREAM":
            self.ended = True

    @property
    def final_headers(self) -> Optional[list]:
        for block in self.blocks:
            status = next((v for n, v in block if n == ":status"), None)
            if status is None or not status.startswith("1"):
                return block
        return None

    @property
    def status(self) -> Optional[str]:
        h = self.final_headers
        return next((v for n, v in h if n == ":status"), None) if h else None


def _compare(recorded: _Answer, live: _Answer, ignore: frozenset) -> List[str]:
    diffs = []
    if recorded.status != live.status:
        diffs.append(f"status {live.status}, recorded {recorded.status}")
    rh = recorded.final_headers or []
    lh = live.final_headers or []

    def values(headers) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        for n, v in headers:
            if n.startswith(":") or n in ignore:
                continue
            out.setdefault(n, []).append(v)
        return out

    def show(v) -> str:
        return "(absent)" if v is None else repr(", ".join(v))

    rv, lv = values(rh), values(lh)
    for name in sorted(set(rv) | set(lv)):
        if rv.get(name) != lv.get(name):
            diffs.append(f"header {name}: {show(lv.get(name))}, recorded {show(rv.get(name))}")
    if recorded.body != live.body:
        diffs.append(f"body {live.body} bytes, recorded {recorded.body}")
    rt, lt = _type_sequence(recorded.frames), _type_sequence(live.frames)
    if rt != lt:
        diffs.append(f"frames {' '.join(lt) or '(none)'}, recorded {' '.join(rt) or '(none)'}")
    return diffs


# --------------------------------------------------------------------------- sending a unit


async def _await_expected(peer, unit, needed, live, wait: float, notes: List[str], who: str) -> None:
    """Wait until the peer has sent what the recording shows before ``unit``; note it if it does not."""
    if await peer.wait_for(lambda: all(live[k] >= v for k, v in needed.items()), wait):
        return
    missing = [f"{k[0]} on stream {k[1]}" for k, v in needed.items() if live[k] < v]
    notes.append(f"before record {unit.seq}: waited {wait:g} s for the {who}'s "
                 f"{', '.join(missing[:3])}; went on")


async def _send_unit(peer: _Peer, unit: _Unit, sid_map, wait: float, notes: List[str]) -> Optional[int]:
    """Send one unit; returns the live stream id of a HEADERS that opens a stream (else None)."""
    rec = unit.first
    kind = rec.get("record")
    if kind == "preface":
        peer.send(PREFACE)
        return None
    if kind == "raw":
        peer.send(unb64(rec.get("wire")))
        return None
    if kind != "frame":
        return None
    t = rec.get("type")
    flags = rec.get("flags") or 0
    f = rec.get("fields") or {}
    sid = rec.get("stream") or 0
    live_sid = sid_map(sid)
    if t == "SETTINGS" and flags & 0x01:
        return None                                   # answered live
    if t == "PING" and flags & 0x01:
        return None                                   # answered live
    if t == "WINDOW_UPDATE":
        return None                                   # generated live
    if t in ("HEADERS", "PUSH_PROMISE") and unit.last.get("headers") is not None and "parse_error" not in f:
        promised = f.get("promised_stream_id")
        peer.send(peer.header_frames(0x1 if t == "HEADERS" else 0x5, live_sid, flags, unit.last["headers"],
                                     f.get("priority"), promised))
        return live_sid if t == "HEADERS" else None
    if t == "DATA" and "parse_error" not in f:
        wire = unb64(rec.get("wire"))
        length = rec.get("length") or 0
        if length > peer.peer_max_frame:
            data = _plain_data(wire)
            pieces = [data[i:i + peer.peer_max_frame] for i in range(0, len(data), peer.peer_max_frame)] or [b""]
            frames = [_frame(0x0, (flags & 0x01) if i == len(pieces) - 1 else 0, live_sid, p)
                      for i, p in enumerate(pieces)]
        else:
            frames = [_with_sid(wire, live_sid) if live_sid != sid else wire]
        for fr in frames:
            n = len(fr) - 9
            if n and not await peer.wait_for(lambda n=n: peer.window(live_sid) >= n, wait):
                notes.append(f"DATA on stream {live_sid}: the peer's flow-control window stayed below {n} bytes "
                             f"for {wait:g} s; sent anyway")
            peer.consumed(live_sid, n)
            peer.send(fr)
        return None
    if t == "GOAWAY" and "last_stream_id" in f:
        wire = unb64(rec.get("wire"))
        last = sid_map.last(f["last_stream_id"]) if hasattr(sid_map, "last") else f["last_stream_id"]
        buf = bytearray(wire)
        if len(buf) >= 17:
            reserved = buf[9] & 0x80
            _U32.pack_into(buf, 9, (reserved << 24) | last)
        peer.send(bytes(buf))
        return None
    if t == "SETTINGS":
        for name, value in f.get("settings") or ():
            if name in ("SETTINGS_INITIAL_WINDOW_SIZE", 4) and isinstance(value, int):
                peer.own_initial_window = value
    # Everything else (and header blocks without decoded headers): the recorded bytes.
    for r in unit.records:
        wire = unb64(r.get("wire"))
        peer.send(_with_sid(wire, sid_map(r.get("stream") or 0)) if (r.get("stream") or 0) else wire)
    if t == "SETTINGS" and peer.hold_answers:
        peer.release_answers()
    if t == "HEADERS":
        return live_sid
    return None


class _Identity:
    def __call__(self, sid: int) -> int:
        return sid

    def last(self, sid: int) -> int:
        return sid


# --------------------------------------------------------------------------- --as client


def _connect_args(url: str, insecure: bool, cacert: Optional[str]):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("h2c", "http", "https", "h2"):
        raise ReplayError(f"{url}: use h2c://HOST:PORT (cleartext) or https://HOST:PORT")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if scheme in ("https", "h2") else 80)
    ctx = None
    if scheme in ("https", "h2"):
        ctx = ssl.create_default_context(cafile=cacert) if cacert else ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    return host, port, ctx


async def _open_client(url: str, insecure: bool, cacert: Optional[str], timeout: float,
                       out: TextIO) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the server at ``url`` (warning on ``out`` when TLS did not choose h2)."""
    host, port, ctx = _connect_args(url, insecure, cacert)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise ReplayError(f"cannot connect to {url}: {exc}") from None
    if ctx is not None:
        sslobj = writer.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj else None
        if alpn != "h2":
            print(f"warning: the server chose ALPN {alpn!r}, not h2", file=out)
    return reader, writer


async def _stop_peer(peer: _Peer, reading: asyncio.Future) -> None:
    """Close the live connection and end its read loop."""
    await peer.close()
    reading.cancel()
    try:
        await reading
    except BaseException:
        pass


async def _play_to_server(peer: _Peer, units: List[_Unit], expect: List[Counter], live: Counter, timeout: float,
                          wait: float, notes: List[str]) -> List[int]:
    """Send the recorded client's units to the live server, each once the server has sent what the recorded
    one had before it; then wait for the streams to end. Returns the stream ids opened, in order."""
    reading = asyncio.ensure_future(peer.read_loop())
    opened: List[int] = []
    sid_map = _Identity()
    started = time.monotonic()
    try:
        for unit, needed in zip(units, expect, strict=True):
            if peer.eof:
                notes.append("the server closed the connection before the replay ended")
                break
            if _answered_live(unit):
                continue
            if needed:
                await _await_expected(peer, unit, needed, live, wait, notes, "server")
            sid = await _send_unit(peer, unit, sid_map, wait, notes)
            if sid and sid not in opened:
                opened.append(sid)
                peer.top_up(sid)
            await peer.drain()
        peer.release_answers()
        left = max(timeout - (time.monotonic() - started), 0.1)

        def all_done() -> bool:
            ended = {sid for (kind, sid), n in live.items() if kind == "end" and n}
            if peer.goaway is not None:
                ended |= {s for s in opened if s > peer.goaway.get("last_stream_id", 0)}
            return all(s in ended for s in opened)

        if not await peer.wait_for(all_done, left):
            notes.append(f"timed out after {timeout:g} s waiting for streams to end")
        if not any(u.first.get("type") == "GOAWAY" for u in units):
            peer.send(_frame(0x7, 0, 0, struct.pack(">LL", 0, 0)))
            await peer.drain()
    finally:
        await _stop_peer(peer, reading)
    if peer.error:
        notes.append(f"connection error: {peer.error}")
    return opened


def _recorded_answers(incoming: List[dict]) -> Dict[int, _Answer]:
    """What the recorded server sent, per stream."""
    recorded: Dict[int, _Answer] = {}
    for r in incoming:
        sid = r.get("stream") or 0
        if sid:
            recorded.setdefault(sid, _Answer()).add(r.get("type"), r.get("flags") or 0, r.get("headers"),
                                                    (r.get("fields") or {}).get("data_length") or 0, r)
    return recorded


def _live_answers(summaries: List[dict], push_map: Dict[int, int]) -> Dict[int, _Answer]:
    """What the live server sent, per stream (pushed streams under their recorded ids)."""
    actual: Dict[int, _Answer] = {}
    for s in summaries:
        sid = s["stream"]
        if sid:
            sid = push_map.get(sid, sid)
            actual.setdefault(sid, _Answer()).add(s["type"], s["flags"], s.get("headers"),
                                                  len(s.get("data", b"")), s)
    return actual


def _recorded_requests(units: List[_Unit], incoming: List[dict]) -> Tuple[Dict[int, list], Dict[int, list]]:
    """The request headers per stream: those the client sent, and those of the streams the server promised."""
    requests: Dict[int, list] = {}
    for u in units:
        if u.first.get("type") == "HEADERS" and u.last.get("headers"):
            requests.setdefault(u.first.get("stream") or 0, u.last["headers"])
    promised: Dict[int, list] = {}
    for u in _units(incoming):
        promised_id = (u.first.get("fields") or {}).get("promised_stream_id")
        if u.first.get("type") == "PUSH_PROMISE" and promised_id and u.last.get("headers"):
            promised.setdefault(promised_id, u.last["headers"])
    return requests, promised


def _report_streams(streams: List[int], recorded: Dict[int, _Answer], actual: Dict[int, _Answer],
                    requests: Dict[int, list], promised: Dict[int, list], ignore: frozenset, out: TextIO) -> int:
    """One line per stream, same or DIFFERENT from the recording; returns how many differ."""
    differ = 0
    for sid in streams:
        req = requests.get(sid) or promised.get(sid) or []
        what = " ".join(v for n, v in req if n in (":method", ":path")) or ("?" if sid % 2 else "")
        if sid % 2 == 0:
            what = f"{what} (pushed)".lstrip()
        rec_a = recorded.get(sid, _Answer())
        live_a = actual.get(sid, _Answer())
        diffs = _compare(rec_a, live_a, ignore)
        if not live_a.frames:
            diffs.insert(0, "no answer")
        if diffs:
            differ += 1
            print(printable(f"stream {sid}: {what}: DIFFERENT: " + "; ".join(diffs)), file=out)
        else:
            print(printable(f"stream {sid}: {what}: same ({live_a.status}, {live_a.body} body bytes, "
                            f"{' '.join(_type_sequence(live_a.frames))})"), file=out)
    return differ


async def replay_client(records: List[dict], url: str, *, conn: Optional[int] = None, insecure: bool = False,
                        cacert: Optional[str] = None, timeout: float = 10.0, wait: float = 2.0,
                        compare_leg: str = "client", ignore_headers: Iterable[str] = (),
                        out: Optional[TextIO] = None) -> int:
    """Replay the recorded client of one connection against ``url``; 0 when every stream answered as
    recorded, 1 when some differ."""
    out = out or sys.stdout
    c = _pick_connection(records, conn, "client")
    plan = c.byte_records("client", "recv")
    if compare_leg == "upstream":
        incoming = c.frames("upstream", "recv")
    else:
        incoming = c.frames("client", "send")
    units = _units(plan)
    if not units or units[0].first.get("record") != "preface":
        units.insert(0, _Unit([{"record": "preface", "seq": 0}]))
    expect = _expectations(units, incoming)
    reader, writer = await _open_client(url, insecure, cacert, timeout, out)
    print(f"replaying connection {c.conn} (the client leg: {len(plan)} records) to {url}", file=out)
    peer = _Peer(reader, writer, server_side=False)
    live: Counter = Counter()
    push_map: Dict[int, int] = {}
    recorded_pushes = [(r.get("fields") or {}).get("promised_stream_id") for r in incoming
                       if r.get("type") == "PUSH_PROMISE"]

    def on_frame(s: dict) -> None:
        if s["type"] == "PUSH_PROMISE" and s.get("promised_stream_id"):
            n = len(push_map)
            recorded_id = recorded_pushes[n] if n < len(recorded_pushes) else None
            if recorded_id:
                push_map[s["promised_stream_id"]] = recorded_id
        for kind, sid in _live_milestones(s):
            live[(kind, push_map.get(sid, sid))] += 1

    peer.on_frame = on_frame
    notes: List[str] = []
    opened = await _play_to_server(peer, units, expect, live, timeout, wait, notes)
    recorded = _recorded_answers(incoming)
    actual = _live_answers(peer.incoming, push_map)
    requests, promised = _recorded_requests(units, incoming)
    ignore = DATE_LIKE_HEADERS | frozenset(h.lower() for h in ignore_headers)
    streams = sorted(set(opened) | {s for s in recorded if s % 2 == 0} | {s for s in actual if s % 2 == 0})
    differ = _report_streams(streams, recorded, actual, requests, promised, ignore, out)
    for note in notes:
        print(printable(f"note: {note}"), file=out)
    print(f"result: {differ} of {len(streams)} streams differ from the recording", file=out)
    return 1 if differ else 0


# --------------------------------------------------------------------------- --as server


class _StreamMap:
    """Recorded client stream ids <-> the live client's, in the order streams were opened."""

    def __init__(self, recorded_order: List[int]) -> None:
        self.recorded_order = recorded_order
        self.to_live: Dict[int, int] = {}
        self.to_recorded: Dict[int, int] = {}

    def opened_live(self, live_sid: int) -> None:
        if live_sid in self.to_recorded:
            return
        n = len(self.to_recorded)
        rec = self.recorded_order[n] if n < len(self.recorded_order) else live_sid
        self.to_recorded[live_sid] = rec
        self.to_live.setdefault(rec, live_sid)

    def __call__(self, sid: int) -> int:
        return self.to_live.get(sid, sid)

    def recorded(self, live_sid: int) -> int:
        return self.to_recorded.get(live_sid, live_sid)

    def last(self, recorded_last: int) -> int:
        mapped = [live for rec, live in self.to_live.items() if rec <= recorded_last]
        return max(mapped) if mapped else (0 if recorded_last in self.recorded_order else recorded_last)


def _self_signed(directory: str) -> Tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 / localhost (for --as server on https:// without --cert)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h2proxy replay")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "replay-cert.pem")
    key_path = os.path.join(directory, "replay-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


async def _serve_one(reader, writer, c: Connection, units: List[_Unit], expect: List[Counter],
                     recorded_opened: List[int], incoming_recorded: List[dict], timeout: float, wait: float,
                     out, number: int) -> int:
    peer = _Peer(reader, writer, server_side=True)
    smap = _StreamMap(recorded_opened)
    live: Counter = Counter()
    requests: Dict[int, list] = {}

    def on_frame(s: dict) -> None:
        sid = s["stream"]
        if s["type"] == "HEADERS" and sid and sid % 2 == 1 and sid not in smap.to_recorded:
            smap.opened_live(sid)
            peer.top_up(sid)
        if s.get("headers") is not None and s.get("block_type") == "HEADERS" and sid not in requests:
            requests[sid] = s["headers"]
        for kind, msid in _live_milestones(s):
            live[(kind, smap.recorded(msid))] += 1

    peer.on_frame = on_frame
    reading = asyncio.ensure_future(peer.read_loop())
    notes: List[str] = []
    started = time.monotonic()
    peername = writer.get_extra_info("peername")
    print(f"connection {number} from {peername[0]}:{peername[1]}" if peername else f"connection {number}",
          file=out, flush=True)
    try:
        if not await peer.wait_for(lambda: peer.preface_received, timeout):
            notes.append("no client preface")
            return 1
        for unit, needed in zip(units, expect, strict=True):
            if peer.eof:
                notes.append("the client closed the connection before the replay ended")
                break
            if _answered_live(unit):
                continue
            if needed:
                await _await_expected(peer, unit, needed, live, wait, notes, "client")
            await _send_unit(peer, unit, smap, wait, notes)
            await peer.drain()
        peer.release_answers()
        left = max(timeout - (time.monotonic() - started), 0.1)
        await peer.wait_for(lambda: peer.eof, left)
    finally:
        await _stop_peer(peer, reading)
    if peer.error and "PrefaceError" in peer.error:
        notes.append(f"connection error: {peer.error}")
    recorded_requests: Dict[int, list] = {}
    for r in incoming_recorded:
        if r.get("type") in ("HEADERS", "CONTINUATION") and r.get("headers") is not None:
            recorded_requests.setdefault(r.get("stream") or 0, r["headers"])
    differ = 0
    for live_sid, headers in sorted(requests.items()):
        rec_sid = smap.recorded(live_sid)
        got = {n: v for n, v in headers if n in (":method", ":path")}
        want = {n: v for n, v in recorded_requests.get(rec_sid) or [] if n in (":method", ":path")}
        line = f"stream {live_sid} (recorded stream {rec_sid}): {got.get(':method')} {got.get(':path')}"
        if want and got != want:
            differ += 1
            line += f": DIFFERENT from the recorded {want.get(':method')} {want.get(':path')}"
        print(printable(line), file=out)
    for note in notes:
        print(printable(f"note: {note}"), file=out)
    print(f"connection {number}: sent {len(units)} recorded steps", file=out, flush=True)
    return 1 if differ else 0


async def replay_server(records: List[dict], listen: str, *, conn: Optional[int] = None, count: int = 1,
                        cert: Optional[str] = None, key: Optional[str] = None, timeout: float = 10.0,
                        wait: float = 2.0, out=None, ready=None) -> int:
    """Listen on ``listen`` and play the recorded server to ``count`` clients, one after another.

    ``ready``: called with the URL once listening (the URL is also printed).
    """
    out = out or sys.stdout
    c = _pick_connection(records, conn, "upstream")
    plan = [r for r in c.byte_records("upstream", "recv") if r.get("record") != "preface"]
    incoming = c.frames("upstream", "send")
    units = _units(plan)
    expect = _expectations(units, incoming)
    recorded_opened: List[int] = []
    for r in incoming:
        sid = r.get("stream") or 0
        if r.get("type") == "HEADERS" and sid % 2 == 1 and sid not in recorded_opened:
            recorded_opened.append(sid)
    parts = urlsplit(listen)
    scheme = parts.scheme.lower()
    if scheme not in ("h2c", "http", "https", "h2"):
        raise ReplayError(f"{listen}: use h2c://HOST:PORT or https://HOST:PORT (port 0: any free port)")
    host = parts.hostname or "127.0.0.1"
    port = parts.port if parts.port is not None else 0
    ctx = None
    tmp = None
    if scheme in ("https", "h2"):
        if not cert:
            tmp = tempfile.TemporaryDirectory(prefix="h2proxy-replay-")
            cert, key = _self_signed(tmp.name)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
    queue: asyncio.Queue = asyncio.Queue()

    async def accept(reader, writer):
        await queue.put((reader, writer))

    try:
        server = await asyncio.start_server(accept, host, port, ssl=ctx)
    except OSError as exc:
        raise ReplayError(f"cannot listen on {listen}: {exc}") from None
    sock = server.sockets[0].getsockname()
    shown_host = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
    url = f"{'https' if ctx else 'h2c'}://{shown_host}:{sock[1]}"
    print(f"replaying the server of connection {c.conn} ({len(plan)} records); listening on {url}", file=out,
          flush=True)
    if ready is not None:
        ready(url)
    result = 0
    try:
        for number in range(1, count + 1):
            reader, writer = await queue.get()
            result |= await _serve_one(reader, writer, c, units, expect, recorded_opened, incoming, timeout, wait,
                                       out, number)
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 2)
        except Exception:
            pass
        if tmp is not None:
            tmp.cleanup()
    return result

