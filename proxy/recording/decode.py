"""Turning frame bytes into the fields of a frame log record, and the HPACK state to decode header blocks.

Nothing here raises on bad input: a frame that does not parse gets
``{"parse_error": "..."}`` as its fields, a header block that does not decode
gets ``None`` as its headers (and the decoder of that direction is marked
broken until the connection ends).
"""
from __future__ import annotations

import base64
import struct
from typing import Dict, List, Optional, Tuple

from framecodec.frame import Frame
from framecodec.hpack import Decoder, OversizedHeaderListError

#: Frame type byte -> name (RFC 9113 section 6, ALTSVC from RFC 7838).
FRAME_NAMES: Dict[int, str] = {
    0x0: "DATA", 0x1: "HEADERS", 0x2: "PRIORITY", 0x3: "RST_STREAM", 0x4: "SETTINGS",
    0x5: "PUSH_PROMISE", 0x6: "PING", 0x7: "GOAWAY", 0x8: "WINDOW_UPDATE", 0x9: "CONTINUATION",
    0xA: "ALTSVC",
}
FRAME_TYPES: Dict[str, int] = {v: k for k, v in FRAME_NAMES.items()}

#: Flags each frame type defines, in nghttp's order of printing.
FLAG_BITS: Dict[int, List[Tuple[str, int]]] = {
    0x0: [("END_STREAM", 0x01), ("PADDED", 0x08)],
    0x1: [("END_STREAM", 0x01), ("END_HEADERS", 0x04), ("PADDED", 0x08), ("PRIORITY", 0x20)],
    0x4: [("ACK", 0x01)],
    0x5: [("END_HEADERS", 0x04), ("PADDED", 0x08)],
    0x6: [("ACK", 0x01)],
    0x9: [("END_HEADERS", 0x04)],
}

#: Error codes, RFC 9113 section 7.
ERROR_NAMES: Dict[int, str] = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

#: SETTINGS parameters (RFC 9113 section 6.5.2, RFC 8441, RFC 9218).
SETTINGS_NAMES: Dict[int, str] = {
    0x1: "SETTINGS_HEADER_TABLE_SIZE", 0x2: "SETTINGS_ENABLE_PUSH", 0x3: "SETTINGS_MAX_CONCURRENT_STREAMS",
    0x4: "SETTINGS_INITIAL_WINDOW_SIZE", 0x5: "SETTINGS_MAX_FRAME_SIZE", 0x6: "SETTINGS_MAX_HEADER_LIST_SIZE",
    0x8: "SETTINGS_ENABLE_CONNECT_PROTOCOL", 0x9: "SETTINGS_NO_RFC7540_PRIORITIES",
}
SETTINGS_IDS: Dict[str, int] = {v: k for k, v in SETTINGS_NAMES.items()}

_HEADER = struct.Struct(">LBL")
_SETTING = struct.Struct(">HL")


def frame_name(type_byte: int) -> str:
    """``"HEADERS"``, or ``"0xNN"`` for a type this codec does not know."""
    name = FRAME_NAMES.get(type_byte)
    return name if name is not None else f"0x{type_byte:02x}"


def frame_type_byte(name) -> Optional[int]:
    """The type byte for a frame type name, ``"0x0c"``, ``"12"`` or an int; None when not a type."""
    if isinstance(name, int):
        return name if 0 <= name <= 0xFF else None
    text = str(name).strip().upper()
    if text in FRAME_TYPES:
        return FRAME_TYPES[text]
    try:
        value = int(text, 16) if text.startswith("0X") else int(text)
    except ValueError:
        return None
    return value if 0 <= value <= 0xFF else None


def error_name(code: int) -> str:
    name = ERROR_NAMES.get(code)
    return name if name is not None else f"UNKNOWN_0x{code:x}"


def settings_name(ident: int):
    """The RFC name of a SETTINGS parameter, or its id (an int) when unknown."""
    return SETTINGS_NAMES.get(ident, ident)


def flag_names(type_byte: int, flags: int) -> List[str]:
    return [name for name, bit in FLAG_BITS.get(type_byte, ()) if flags & bit]


def parse_header(wire) -> Tuple[int, int, int, int, bool]:
    """(type, flags, stream id, length, reserved bit) from the first 9 bytes (zeros when shorter)."""
    if len(wire) < 9:
        return 0, 0, 0, 0, False
    lt, flags, sid = _HEADER.unpack_from(wire)
    return lt & 0xFF, flags, sid & 0x7FFFFFFF, lt >> 8, bool(sid & 0x80000000)


def _text(data: bytes) -> str:
    """Bytes shown as text when they are UTF-8, with escapes for the rest."""
    return bytes(data).decode("utf-8", "backslashreplace")


def decode_fields(wire) -> Tuple[dict, Optional[bytes]]:
    """The decoded fields of one frame and, for HEADERS / PUSH_PROMISE / CONTINUATION, its header block fragment.

    Never raises: a frame that fails to parse gets ``{"parse_error": message}``.
    """
    try:
        if len(wire) < 9:
            return {"parse_error": f"frame of {len(wire)} bytes, shorter than the 9-byte header"}, None
        frame, length = Frame.parse_frame_header(memoryview(wire)[:9])
        body = memoryview(wire)[9:]
        if len(body) != length:
            return {"parse_error": f"header says length {length}, {len(body)} bytes of payload present"}, None
        frame.parse_body(body)
        return _fields(frame)
    except Exception as exc:  # any failure of any kind becomes a field, never an exception
        return {"parse_error": f"{type(exc).__name__}: {exc}"}, None


def _priority(frame) -> dict:
    return {"exclusive": bool(frame.exclusive), "depends_on": frame.depends_on, "weight": frame.stream_weight + 1}


def _fields(frame) -> Tuple[dict, Optional[bytes]]:
    t = frame.type
    if t == 0x0:
        padded = bool(frame._flag_byte() & 0x08)
        data_len = len(frame.data)
        return {"data_length": data_len, "pad_length": frame.pad_length if padded else None}, None
    if t == 0x1:
        fb = frame._flag_byte()
        out = {"pad_length": frame.pad_length if fb & 0x08 else None, "block_length": len(frame.data)}
        if fb & 0x20:
            out["priority"] = _priority(frame)
        return out, frame.data
    if t == 0x2:
        return _priority(frame), None
    if t == 0x3:
        return {"error_code": frame.error_code, "error": error_name(frame.error_code)}, None
    if t == 0x4:
        pairs = frame.settings_pairs
        return {"ack": bool(frame._flag_byte() & 0x01),
                "settings": [[settings_name(k), v] for k, v in pairs]}, None
    if t == 0x5:
        fb = frame._flag_byte()
        return {"promised_stream_id": frame.promised_stream_id,
                "pad_length": frame.pad_length if fb & 0x08 else None,
                "block_length": len(frame.data)}, frame.data
    if t == 0x6:
        return {"ack": bool(frame._flag_byte() & 0x01), "opaque": bytes(frame.opaque_data).hex()}, None
    if t == 0x7:
        debug = bytes(frame.additional_data or b"")
        return {"last_stream_id": frame.last_stream_id, "error_code": frame.error_code,
                "error": error_name(frame.error_code), "debug_data": _text(debug),
                "debug_hex": debug.hex()}, None
    if t == 0x8:
        return {"increment": frame.window_increment}, None
    if t == 0x9:
        return {"block_length": len(frame.data)}, frame.data
    if t == 0xA:
        return {"origin": _text(frame.origin), "field": _text(frame.field)}, None
    return {}, None


def b64(data) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text) -> bytes:
    if not text:
        return b""
    try:
        return base64.b64decode(text)
    except Exception:
        return b""


def _str(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def header_list(headers) -> Optional[List[List[str]]]:
    """``[[name, value], ...]`` of str from whatever the caller gave (tuples, bytes, HeaderTuple)."""
    if headers is None:
        return None
    try:
        return [[_str(h[0]), _str(h[1])] for h in headers]
    except Exception:
        return None


class HpackState:
    """The HPACK decoders of the connections in a log: one per (conn, leg, direction).

    Feed it every header block fragment of a direction in order; it returns the
    decoded list when a block ends. A block that fails to decode breaks that
    decoder: later blocks in that direction are not decoded (they could only be
    wrong), and ``None`` is returned for them.

    ``max_header_list_size`` (the proxy's limit of that name) bounds what one block may
    decode to: an HPACK bomb (a small block of references to a large dynamic-table entry)
    stops decoding there instead of inflating to hundreds of megabytes in the printer or
    the recorder. Such a block is reported in :attr:`over_limit` (its key, once) and
    breaks its decoder like any other failure.
    """

    def __init__(self, max_header_list_size: Optional[int] = None) -> None:
        self._decoders: Dict[tuple, Decoder] = {}
        self._pending: Dict[tuple, list] = {}
        self._broken: set = set()
        self.max_header_list_size = max_header_list_size
        #: Keys whose last block went past max_header_list_size (taken by the sink for its violation record).
        self.over_limit: List[tuple] = []
        #: Decoded field (bytes pair) -> its ``[name, value]`` of str: the same fields come back in every
        #: block of a connection, and turning them into str was most of what decoding a block cost. The
        #: lists are shared between records: readers never change them.
        self._strs: Dict[tuple, List[str]] = {}

    def _decoder(self, key: tuple) -> Decoder:
        dec = self._decoders.get(key)
        if dec is None:
            dec = Decoder()
            # A passive observer must accept whatever table size the peers agreed on.
            dec.max_allowed_table_size = 1 << 32
            dec.max_header_list_size = self.max_header_list_size or 1 << 32
            self._decoders[key] = dec
        return dec

    def feed(self, key, fragment: bytes, end_headers: bool) -> Tuple[Optional[List[List[str]]], Optional[str]]:
        """(headers, error) after this fragment; headers only when ``end_headers``."""
        parts = self._pending.setdefault(key, [])
        parts.append(bytes(fragment))
        if not end_headers:
            return None, None
        block = b"".join(parts)
        del self._pending[key]
        if key in self._broken:
            return None, "HPACK state lost earlier on this connection"
        try:
            return self._str_list(self._decoder(key).decode(block, raw=True)), None
        except OversizedHeaderListError:
            self._broken.add(key)
            self.over_limit.append(key)
            return None, (f"limit max_header_list_size = {self.max_header_list_size} exceeded: the block "
                          f"({len(block)} bytes) decodes to a larger header list (an HPACK bomb?); "
                          f"not decoded, nor any later block in this direction")
        except Exception as exc:
            self._broken.add(key)
            return None, f"{type(exc).__name__}: {exc}"

    def _str_list(self, headers) -> List[List[str]]:
        strs = self._strs
        out = []
        for field in headers:
            pair = strs.get(field)
            if pair is None:
                pair = [_str(field[0]), _str(field[1])]
                if len(strs) >= 4096:       # bounded: values that never repeat (dates, ids) must not pile up
                    strs.clear()
                strs[field] = pair
            out.append(pair)
        return out

    def tables(self, conn) -> Dict[str, dict]:
        """The HPACK dynamic tables of a connection, per ``"leg direction"``: ``{"max_size", "entries"}``,
        entries ``[name, value]`` in base64, newest first (HPACK index order from 62).

        A rotated log writes them at the top of each new file so that a reader
        of that file alone can decode its header blocks (:meth:`restore`).
        """
        out: Dict[str, dict] = {}
        for key, dec in self._decoders.items():
            if key[0] != conn or key in self._broken:
                continue
            out[f"{key[1]} {key[2]}"] = {"max_size": dec.header_table_size,
                                         "entries": [[b64(n), b64(v)] for n, v in dec.table_entries]}
        return out

    def restore(self, conn, tables: Dict[str, dict]) -> None:
        """Set a connection's decoders to the tables :meth:`tables` gave (a ``connection_state`` record)."""
        for name, state in (tables or {}).items():
            leg, _, direction = name.partition(" ")
            key = (conn, leg, direction)
            self._broken.discard(key)
            self._pending.pop(key, None)
            entries = [(unb64(n), unb64(v)) for n, v in state.get("entries") or []]
            self._decoder(key).restore_table(entries, int(state.get("max_size", 4096)))

    def lose(self, conn) -> None:
        """Frames of ``conn`` went by unseen: its header blocks can no longer be decoded."""
        self.forget(conn)
        for leg in ("client", "upstream"):
            for direction in ("recv", "send"):
                self._broken.add((conn, leg, direction))

    def forget(self, conn) -> None:
        for store in (self._decoders, self._pending):
            for key in [k for k in store if k[0] == conn]:
                del store[key]
        self._broken = {k for k in self._broken if k[0] != conn}




def frame_record(seq: int, t: float, conn: int, leg: str, direction: str, wire: bytes,
                 headers=None, origin=None, actions=None, hpack: Optional[HpackState] = None,
                 with_wire: bool = True, parsed: Optional[Tuple[dict, Optional[bytes]]] = None) -> dict:
    """The log record of one frame (see docs/frame-log.md); ``parsed``: what :func:`decode_fields` gave
    for ``wire``, when the caller has it already."""
    ftype, flags, sid, length, reserved = parse_header(wire)
    fields, fragment = decode_fields(wire) if parsed is None else parsed
    rec = {"record": "frame", "seq": seq, "ts": t, "conn": conn, "leg": leg, "dir": direction,
           "type": frame_name(ftype), "type_byte": ftype, "flags": flags,
           "flag_names": flag_names(ftype, flags), "stream": sid, "length": length, "fields": fields}
    if reserved:
        rec["reserved_bit"] = True
    given = header_list(headers)
    if hpack is not None and fragment is not None and "parse_error" not in fields:
        end = bool(flags & 0x04)
        decoded, err = hpack.feed((conn, leg, direction), fragment, end)
        if given is None and decoded is not None:
            given = decoded
        if err and given is None:
            rec["headers_error"] = err
    if given is not None:
        rec["headers"] = given
    if with_wire:
        rec["wire"] = b64(wire)
    if origin is not None:
        rec["origin"] = origin
    if actions:
        rec["actions"] = actions
    return rec
