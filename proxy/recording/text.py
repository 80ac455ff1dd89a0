"""Frames as text, in the layout of ``nghttp -v``: the live printer (``-v``) and ``h2proxy log text``.

Both go through one :class:`Renderer`, which turns a log record (a dict as
written by :class:`~proxy.recording.recorder.JsonlRecorder`) into lines::

    c1 client   [  0.000] recv SETTINGS frame <length=12, flags=0x00, stream_id=0>
    c1 client             (niv=2)
    c1 client             [SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]
    c1 client             [SETTINGS_INITIAL_WINDOW_SIZE(0x04):65535]

Every line starts with the connection and the leg; the time is seconds since
the connection opened.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, TextIO

from ..printable import printable_record
from .decode import SETTINGS_IDS, unb64
from .recorder import ThreadedSink

__all__ = ["Renderer", "LivePrinter", "hexdump", "use_color"]

_INDENT = " " * 10
_RESET = "\033[0m"
_SEND = "\033[1;35m"
_RECV = "\033[1;36m"
_NAME = "\033[1;34m"
_BAD = "\033[1;31m"
_HOOK = "\033[1;33m"
_DIM = "\033[2m"


def use_color(stream) -> bool:
    """Colour when ``stream`` is a terminal (and NO_COLOR is not set, TERM is not dumb)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def hexdump(data: bytes, indent: str = _INDENT, limit: Optional[int] = 4096) -> List[str]:
    """``hexdump -C`` style lines of ``data`` (at most ``limit`` bytes, then a note)."""
    lines = []
    shown = data if limit is None else data[:limit]
    for off in range(0, len(shown), 16):
        chunk = shown[off:off + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        lines.append(f"{indent}{off:08x}  {left:<23}  {right:<23}  |{_printable(chunk)}|")
    if len(shown) < len(data):
        lines.append(f"{indent}... {len(data) - len(shown)} more bytes")
    return lines


def _settings_label(name) -> str:
    if isinstance(name, int):
        return f"UNKNOWN({name:#04x})"
    ident = SETTINGS_IDS.get(name)
    return f"{name}({ident:#04x})" if ident is not None else str(name)


def _ascii_dump(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F else "." for c in text)


class Renderer:
    """Renders log records as lines of text; keeps the little state that needs (connection start times).

    ``verbosity`` 1: frames, fields and headers; 2: also record numbers, origins and hex dumps.
    """

    def __init__(self, color: bool = False, verbosity: int = 1, hexdump_limit: Optional[int] = 4096) -> None:
        self.color = color
        self.verbosity = verbosity
        self.hexdump_limit = hexdump_limit
        self._starts: Dict = {}
        self._answered: set = set()

    # -------------------------------------------------------------- helpers

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text

    def _elapsed(self, conn, ts) -> str:
        try:
            ts = float(ts)
        except (TypeError, ValueError):
            return "[  ?.???]"
        start = self._starts.setdefault(conn, ts)
        dt = max(ts - start, 0.0)
        sec = int(dt)
        ms = int(round((dt - sec) * 1000))
        if ms == 1000:
            sec, ms = sec + 1, 0
        return f"[{sec:3d}.{ms:03d}]"

    @staticmethod
    def _prefix(rec) -> str:
        leg = rec.get("leg") or ""
        return f"c{rec.get('conn')} {leg:<8} "

    # -------------------------------------------------------------- entry point

    def render(self, rec: dict, escaped: bool = False) -> List[str]:
        """The lines for one record; never raises (a record it cannot render gets a line saying so).

        Every string of the record is made printable first (control characters escaped): header
        names and values, paths and messages come from the peers and must not reach a terminal raw.
        ``escaped``: the caller did it already (a :class:`~proxy.recording.reader.LogReader` with
        ``printable=True``, which skips the copy for the lines that have nothing to escape).
        """
        try:
            if not escaped:
                rec = printable_record(rec)
            return self._render(rec)
        except Exception as exc:
            try:
                head = self._prefix(rec) if isinstance(rec, dict) else ""
            except Exception:
                head = ""
            return [f"{head}(record not shown: {type(exc).__name__}: {exc})"]

    def _render(self, rec: dict) -> List[str]:
        kind = rec.get("record")
        if kind == "frame":
            return self._frame(rec)
        if kind == "connection_opened":
            return self._opened(rec)
        if kind == "connection_state":
            # The top of a file of a rotated log: a connection opened in an earlier file.
            line = self._opened({**rec, "ts": rec.get("opened_ts", rec.get("ts"))})[0]
            return [line.replace(" Connected: ", " Connected (in an earlier file): ", 1)]
        if kind == "preface":
            return self._bytes(rec, "connection preface")
        if kind == "raw":
            return self._bytes(rec, "raw bytes")
        if kind == "connection_closed":
            conn = rec.get("conn")
            line = f"{self._prefix(rec)}{self._elapsed(conn, rec.get('ts'))} Closed: {rec.get('reason')}"
            self._starts.pop(conn, None)
            self._answered = {k for k in self._answered if k[0] != conn}
            return [line]
        if kind == "violation":
            return [f"{self._prefix(rec)}{self._elapsed(rec.get('conn'), rec.get('ts'))} "
                    f"{self._c(_BAD, 'VIOLATION')} by the {rec.get('side')} (RFC 9113 {rec.get('section')}, "
                    f"{rec.get('code')}): {rec.get('message')}"]
        if kind == "error":
            return [f"{self._prefix(rec)}{self._elapsed(rec.get('conn'), rec.get('ts'))} "
                    f"{self._c(_BAD, 'ERROR')} {rec.get('message')}"]
        if kind == "hook_action":
            detail = rec.get("detail")
            extra = ""
            if isinstance(detail, dict) and detail:
                extra = " " + ", ".join(f"{k}={v}" for k, v in detail.items())
            elif detail:
                extra = f" {detail}"
            return [f"{self._prefix(rec)}{self._elapsed(rec.get('conn'), rec.get('ts'))} "
                    f"{self._c(_HOOK, 'hook')} {rec.get('hook')}: {rec.get('action')}{extra}"]
        if kind in ("grpc_message", "grpc_call"):
            from ..grpc import render
            ind = self._prefix(rec) + _INDENT
            return render.message_lines(rec, ind) if kind == "grpc_message" else render.call_lines(rec, ind)
        if kind == "truncated":
            return [f"*** log truncated: {rec.get('message', '')}"]
        if kind == "dump":
            return [f"*** flight recorder dump: {rec.get('reason', '')}"]
        if kind == "header":
            return []
        return [f"(record of unknown kind {kind!r})"]

    def _opened(self, rec) -> List[str]:
        conn = rec.get("conn")
        self._starts[conn] = rec.get("ts")
        info = rec.get("info") or {}
        parts = [f"client {info.get('client_addr')} -> {info.get('listen_addr')}"]
        if info.get("upstream_addr"):
            parts.append(f"upstream {info.get('upstream_addr')}")
        for key in ("client_tls", "upstream_tls"):
            tls = info.get(key)
            if isinstance(tls, dict):
                parts.append(f"{key.replace('_', ' ')} {tls.get('version')} alpn={tls.get('alpn')} "
                             f"sni={tls.get('sni')}")
        if info.get("mode"):
            parts.append(f"mode {info.get('mode')}")
        return [f"{self._prefix(rec)}{self._elapsed(conn, rec.get('ts'))} Connected: " + ", ".join(parts)]

    def _bytes(self, rec, what) -> List[str]:
        wire = unb64(rec.get("wire"))
        length = rec.get("length", len(wire))
        head = f"{self._prefix(rec)}{self._elapsed(rec.get('conn'), rec.get('ts'))} {rec.get('dir')} {what} " \
               f"<length={length}>"
        lines = [head]
        pre = self._prefix(rec) + _INDENT
        if rec.get("note"):
            lines.append(f"{pre}; {rec.get('note')}")
        if rec.get("record") == "raw" and self.verbosity < 2 and wire:
            excerpt = _printable(wire[:64])
            lines.append(f"{pre}[{excerpt}{'...' if len(wire) > 64 else ''}]")
        if self.verbosity >= 2:
            lines.append(f"{pre}(seq={rec.get('seq')})")
            lines.extend(hexdump(wire, pre, self.hexdump_limit))
        return lines

    def _frame(self, rec) -> List[str]:
        conn = rec.get("conn")
        direction = rec.get("dir")
        name = rec.get("type")
        if isinstance(name, str) and name.startswith("0x"):
            name = f"extension({name})"
        colour = _SEND if direction == "send" else _RECV
        flags = rec.get("flags") or 0
        pre = self._prefix(rec)
        ind = pre + _INDENT
        lines = [f"{pre}{self._elapsed(conn, rec.get('ts'))} {direction} {self._c(colour, f'{name} frame')} "
                 f"<length={rec.get('length')}, flags=0x{flags:02x}, stream_id={rec.get('stream')}>"]
        if flags:
            names = list(rec.get("flag_names") or [])
            defined = 0
            for n in names:
                defined |= {"END_STREAM": 0x01, "ACK": 0x01, "END_HEADERS": 0x04, "PADDED": 0x08,
                            "PRIORITY": 0x20}.get(n, 0)
            if flags & ~defined:
                names.append(f"0x{flags & ~defined & 0xFF:02x}")
            lines.append(f"{ind}; {' | '.join(names)}")
        fields = rec.get("fields") or {}
        if "parse_error" in fields:
            lines.append(f"{ind}{self._c(_BAD, '; parse error:')} {fields['parse_error']}")
        else:
            lines.extend(self._fields(rec, fields, ind))
        headers = rec.get("headers")
        if rec.get("headers_error"):
            lines.append(f"{ind}; headers not decoded: {rec['headers_error']}")
        if headers:
            for h in headers:
                lines.append(f"{ind}{self._c(_NAME, str(h[0]))}: {h[1]}")
                if str(h[0]).startswith("grpc-"):
                    from ..grpc.render import header_note
                    lines[-1] += header_note(str(h[0]), str(h[1]))
        for action in rec.get("actions") or ():
            if isinstance(action, dict):
                if action.get("action") == "passed":
                    continue        # (a hook saw the frame and left it alone: nothing to tell)
                rest = ", ".join(f"{k}={v}" for k, v in action.items() if k not in ("hook", "action"))
                lines.append(f"{ind}; {self._c(_HOOK, 'hook')} {action.get('hook')}: {action.get('action')}"
                             + (f" ({rest})" if rest else ""))
            else:
                lines.append(f"{ind}; hook {action}")
        if self.verbosity >= 2:
            seqline = f"{ind}(seq={rec.get('seq')}"
            if rec.get("origin") is not None:
                seqline += f", origin={rec.get('origin')}"
            lines.append(seqline + ")")
            wire = unb64(rec.get("wire"))
            lines.extend(hexdump(wire[9:], ind, self.hexdump_limit))
        return lines

    def _fields(self, rec, f, ind) -> List[str]:
        t = rec.get("type")
        out: List[str] = []
        if t == "DATA":
            if f.get("pad_length") is not None:
                out.append(f"{ind}(padlen={f['pad_length'] + 1})")
        elif t == "HEADERS":
            padlen = f["pad_length"] + 1 if f.get("pad_length") is not None else 0
            text = f"(padlen={padlen}"
            pri = f.get("priority")
            if pri:
                text += f", dep_stream_id={pri['depends_on']}, weight={pri['weight']}, " \
                        f"exclusive={int(bool(pri['exclusive']))}"
            out.append(f"{ind}{text})")
            cat = self._category(rec)
            if cat:
                out.append(f"{ind}; {cat}")
        elif t == "PRIORITY":
            out.append(f"{ind}(dep_stream_id={f.get('depends_on')}, weight={f.get('weight')}, "
                       f"exclusive={int(bool(f.get('exclusive')))})")
        elif t == "RST_STREAM":
            out.append(f"{ind}(error_code={f.get('error')}(0x{f.get('error_code', 0):02x}))")
        elif t == "SETTINGS":
            settings = f.get("settings") or []
            out.append(f"{ind}(niv={len(settings)})")
            for name, value in settings:
                out.append(f"{ind}[{_settings_label(name)}:{value}]")
        elif t == "PUSH_PROMISE":
            padlen = f["pad_length"] + 1 if f.get("pad_length") is not None else 0
            out.append(f"{ind}(padlen={padlen}, promised_stream_id={f.get('promised_stream_id')})")
        elif t == "PING":
            out.append(f"{ind}(opaque_data={f.get('opaque')})")
        elif t == "GOAWAY":
            debug = f.get("debug_data") or ""
            out.append(f"{ind}(last_stream_id={f.get('last_stream_id')}, error_code={f.get('error')}"
                       f"(0x{f.get('error_code', 0):02x}), opaque_data({len(bytes.fromhex(f.get('debug_hex') or ''))})"
                       f"=[{_ascii_dump(debug)}])")
        elif t == "WINDOW_UPDATE":
            out.append(f"{ind}(window_size_increment={f.get('increment')})")
        elif t == "ALTSVC":
            out.append(f"{ind}(origin=[{f.get('origin')}], altsvc_field_value=[{f.get('field')}])")
        return out

    def _category(self, rec) -> Optional[str]:
        headers = rec.get("headers")
        if not headers:
            return None
        names = {h[0] for h in headers}
        key = (rec.get("conn"), rec.get("leg"), rec.get("dir"), rec.get("stream"))
        if ":method" in names:
            return "Open new stream"
        if ":status" in names and key not in self._answered:
            status = next((h[1] for h in headers if h[0] == ":status"), "")
            if not str(status).startswith("1"):
                self._answered.add(key)
            sid = rec.get("stream") or 0
            return "First push response header" if sid % 2 == 0 else "First response header"
        return None


class LivePrinter(ThreadedSink):
    """Prints frames as they pass, nghttp -v style (``verbosity`` 2 adds hex dumps and record numbers).

    Rendering and writing happen on a background thread; ``color=None`` means
    colour when ``stream`` is a terminal.
    """

    def __init__(self, stream: Optional[TextIO] = None, verbosity: int = 1, color: Optional[bool] = None, *,
                 filter_conn=None, filter_stream=None, filter_types=None, hexdump_limit: Optional[int] = 4096,
                 max_header_list_size: Optional[int] = None,
                 grpc=None) -> None:
        self.grpc = grpc
        self.stream = stream if stream is not None else sys.stderr
        self.verbosity = verbosity
        self.renderer = Renderer(color=use_color(self.stream) if color is None else bool(color),
                                 verbosity=verbosity, hexdump_limit=hexdump_limit)
        self._broken = False
        self.record_wire = verbosity >= 2
        from ..web.facts import FactsCollector  # fingerprints and stalls, printed at the end
        self.facts = FactsCollector()
        super().__init__(filter_conn=filter_conn, filter_stream=filter_stream, filter_types=filter_types,
                         thread_name="h2proxy-printer", max_header_list_size=max_header_list_size)

    def emit(self, record: dict) -> None:
        if self._broken:
            return
        self.facts.feed(record)
        lines = self.renderer.render(record)
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
            except (BrokenPipeError, ValueError, OSError):
                self._broken = True

    def flush_output(self) -> None:
        if not self._broken:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._broken = True

    def finish(self) -> None:
        lines = self.facts.lines()
        if lines and not self._broken:
            try:
                self.stream.write("h2proxy: fingerprints (Akamai format) and window stalls:\n"
                                  + "\n".join(lines) + "\n")
            except (BrokenPipeError, ValueError, OSError):
                self._broken = True
        self.flush_output()
