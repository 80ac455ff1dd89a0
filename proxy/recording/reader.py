"""Reading frame logs as a stream of records: one line at a time, whatever the size of the log.

Every converter (``h2proxy log text|stats|pcap|har|replay``) reads through
:class:`LogReader`, so memory does not grow with the log: a record is parsed,
handed on and dropped. The reader also:

- opens compressed logs by their name (``.gz``: gzip, ``.zst``: Zstandard) and
  standard input (``-``; compressed input is recognised by its magic bytes);
- reads the numbered files of a rotated log (``--record-rotate``) in order as
  one log: pass them all (``frames-*.jsonl``) or the first one; the header and
  ``connection_state`` records that open each later file repeat what the
  earlier files said and are dropped;
- skips lines that are not JSON (a log cut short mid-line) with a warning;
- stops with a :class:`LogError` naming the line, the field and its value when a
  record's field the converters rely on has the wrong type (a ``leg`` that is a
  list, a ``ts`` that is text): every converter gets records it can use as they
  are, and bad input gets one clear line, not a traceback from deep inside one;
- checks the header (format name, version);
- gives every byte record its ``wire``: a sent frame that carries ``wire_of``
  (format version 2: forwarded unchanged, its bytes are those of the record it
  names, the last one before it with ``wire``) gets that record's ``wire``
  string (the same object: nothing is copied or decoded);
- skips lines a caller's ``line_filter`` rejects before parsing them (cheap
  byte tests that let ``log text --conn 3`` pass over most of a log);
- shows a progress bar (tqdm) on standard error when that is a terminal;
- with ``printable=True``, yields records whose every string is safe to print
  (:func:`proxy.printable.printable_record`), copying only the records of lines
  that have something to escape (most lines have nothing: a cheap byte test).

JSON is parsed with msgspec: measured on a 170 MB log of 1 KiB responses it
parses 284 MB/s, orjson 189 MB/s, the standard library's json 82 MB/s (the
latter is the fallback when msgspec is missing).
"""
from __future__ import annotations

import gzip
import io
import os
import re
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

from ..printable import plain_json_line, printable, printable_record
from .recorder import FORMAT_NAME
from .recorder import FORMAT_VERSION as READER_VERSION

if TYPE_CHECKING:
    import zstandard

_loads: Callable[[bytes], Any]
_DecodeError: Tuple[Type[Exception], ...]
try:  # the fastest parser measured (see the module docstring)
    import msgspec as _msgspec
    _loads = _msgspec.json.Decoder().decode
    _DecodeError = (_msgspec.DecodeError, ValueError)
except ImportError:  # pragma: no cover - msgspec is a dependency; keep working without it
    import json as _json
    _loads = _json.loads
    _DecodeError = (ValueError,)

__all__ = ["LogError", "LogReader", "WireLinks", "field_problem", "read_log", "open_log_file", "rotated_files",
           "conn_filter", "frame_type_filter", "all_of"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: ``name-000001.jsonl[.gz|.zst]``: the numbered files of a rotated log.
_NUMBERED = re.compile(r"^(?P<stem>.*)-(?P<n>\d{6})(?P<ext>\.[^/]*)?$")
#: Records that only restate, at the top of a rotated file, what earlier files said.
_RESTATED = ("header", "connection_state")


class LogError(Exception):
    """The file is not a frame log this version can read."""


#: The fields of a record the converters use as keys, in arithmetic or as containers: the types each may
#: have (docs/frame-log.md) when present and not null, and how to say it.
_FIELD_TYPES: Tuple[Tuple[str, Tuple[type, ...], str], ...] = (
    ("record", (str,), "a string"), ("conn", (int,), "an integer"), ("leg", (str,), "a string"),
    ("dir", (str,), "a string"), ("type", (str,), "a string"), ("stream", (int,), "an integer"),
    ("seq", (int,), "an integer"), ("ts", (float, int), "a number"), ("length", (int,), "an integer"),
    ("flags", (int,), "an integer"), ("type_byte", (int,), "an integer"), ("wire", (str,), "a string"),
    ("wire_of", (int,), "an integer"), ("fields", (dict,), "an object"), ("headers", (list,), "a list"),
)
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
               dict: "an object"}


def field_problem(rec: dict) -> Optional[str]:
    """What is wrong with a record's fields (the first field of :data:`_FIELD_TYPES` with the wrong type),
    or None. (``type(value) in types``: a boolean is no integer here, whatever Python says.)"""
    get = rec.get
    for name, types, what in _FIELD_TYPES:
        value = get(name)
        if value is not None and type(value) not in types:
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            return f"field {name!r} is {shown} ({_JSON_NAMES.get(type(value), type(value).__name__)}), " \
                   f"not {what}"
    return None


class WireLinks:
    """Gives records with ``wire_of`` (format version 2) the ``wire`` of the record they name, in its place
    (readers then see the records a version 1 log has).

    The recorder writes ``wire_of: N`` instead of ``wire`` on a sent frame whose
    bytes are those of record N, the last record with ``wire`` before it in the
    same file (the received frame it forwarded unchanged). So only that last
    record's ``wire`` is kept: memory stays the size of one frame.
    """

    __slots__ = ("seq", "wire")

    def __init__(self) -> None:
        self.seq: Optional[int] = None
        self.wire: Optional[str] = None

    def fill(self, rec: dict) -> Optional[str]:
        """Remember ``rec``'s wire, or set it from the record it names; what is wrong, or None."""
        got = rec.get("wire")
        if got is not None:
            self.seq, self.wire = rec.get("seq"), got
        elif "wire_of" in rec:
            of = rec["wire_of"]
            if of is None or of != self.seq:
                return (f"field 'wire_of' is {of!r}, but the last record with bytes before it is {self.seq!r}: "
                        f"the bytes it names are not in this log")
            del rec["wire_of"]
            rec["wire"] = self.wire
        return None


def _zstd_reader(raw: BinaryIO) -> "zstandard.ZstdDecompressionReader":
    try:
        import zstandard
    except ImportError:
        raise LogError("this log is Zstandard-compressed: install the 'zstandard' package to read it") from None
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


def open_log_file(path: str) -> "tuple[BinaryIO, BinaryIO]":
    """(decompressed byte stream, raw file) of one log file; ``-``: standard input.

    The raw file's position tells how far the reading has got (for the progress bar).
    """
    if path == "-":
        raw = sys.stdin.buffer
        peek = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    else:
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise LogError(f"{path}: {exc.strerror or exc}") from None
        peek = raw.read(4)
        raw.seek(0)
    if peek.startswith(_GZIP_MAGIC):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20), raw
    if peek.startswith(_ZSTD_MAGIC):
        return io.BufferedReader(_zstd_reader(raw), 1 << 20), raw
    return raw, raw


def rotated_files(path: str) -> List[str]:
    """The files of the log ``path`` starts: itself, and when it is ``name-000001.ext`` (the first file
    of a rotated log) the numbered files after it that exist."""
    m = _NUMBERED.match(path)
    if m is None or path == "-":
        return [path]
    stem, n, ext = m.group("stem"), int(m.group("n")), m.group("ext") or ""
    if n != 1:
        return [path]
    files = [path]
    while True:
        n += 1
        nxt = f"{stem}-{n:06d}{ext}"
        if not os.path.exists(nxt):
            return files
        files.append(nxt)


def _file_size(path: str) -> Optional[int]:
    try:
        return os.path.getsize(path) if path != "-" else None
    except OSError:
        return None


class _Progress:
    """A tqdm bar of bytes read on standard error, only when that is a terminal."""

    def __init__(self, total: Optional[int], label: str, enabled: Optional[bool]) -> None:
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        # A terminal that does not say its width (a bare pty) gets 80 columns, not an invisible bar.
        width = {"dynamic_ncols": True} if columns > 0 else {"ncols": 80, "nrows": 24}
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                        file=sys.stderr, leave=False, mininterval=0.25, **width)

    def update(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogReader:
    """The records of a log (one file, a rotated series, or several files read as one), streamed.

    Iterating yields each record (a dict) once. ``line_filter(line: bytes) -> bool``,
    when given, sees each raw line first; lines it rejects are not parsed (it
    must accept every line whose record the caller could want: header,
    truncated and connection records included).
    """

    #: Lines between two updates of the progress bar.
    progress_every = 2048

    def __init__(self, paths, *, warn: Optional[Callable[[str], None]] = None,
                 line_filter: Optional[Callable[[bytes], bool]] = None, progress: Optional[bool] = None,
                 label: str = "reading", printable: bool = False) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files: List[str] = []
        for p in paths:
            p = os.fspath(p)
            for f in (rotated_files(p) if len(paths) == 1 else [p]):
                if f not in files or f == "-":
                    files.append(f)
        self.files = files
        self.warn = warn or (lambda msg: print(f"h2proxy log: {msg}", file=sys.stderr))
        self.line_filter = line_filter
        self.progress = progress
        self.label = label
        #: Whether every string of the records yielded is made printable (control characters escaped).
        self.printable = printable
        #: Records yielded so far.
        self.records = 0
        #: Whether the log (its last file) ended with a ``truncated`` record.
        self.truncated = False

    def __iter__(self) -> Iterator[dict]:
        sizes = [_file_size(f) for f in self.files]
        known = [s for s in sizes if s is not None]
        total = sum(known) if len(known) == len(sizes) else None
        bar = _Progress(total, self.label, self.progress)
        try:
            for index, path in enumerate(self.files):
                yield from self._read_file(path, index, bar)
        finally:
            bar.close()
        if not self.records:
            raise LogError(f"{self.files[0] if len(self.files) == 1 else ', '.join(self.files)}: no records")

    def _read_file(self, path: str, index: int, bar: _Progress) -> Iterator[dict]:
        stream, raw = open_log_file(path)
        loads = _loads
        line_filter = self.line_filter
        escape = self.printable
        bad = 0
        first = True
        seen_pos = 0
        # What a ``wire_of`` points to (never across files).
        links = WireLinks()
        every = self.progress_every
        count = 0
        try:
            for n, line in enumerate(stream, 1):
                count += 1
                if count >= every and bar.bar is not None:
                    count = 0
                    try:
                        pos = raw.tell()
                        bar.update(pos - seen_pos)
                        seen_pos = pos
                    except (OSError, ValueError):
                        pass
                if first:
                    if not line.strip():
                        continue
                    first = False
                    rec = self._parse(loads, line)
                    if rec is None:
                        self.warn(f"{path}: no header record; reading anyway")
                    elif rec.get("record") == "header":
                        self._check_header(path, rec)
                        if index:
                            continue
                    else:
                        self.warn(f"{path}: no header record; reading anyway")
                    if rec is None:
                        bad += 1
                        continue
                elif line_filter is not None and not line_filter(line):
                    continue
                else:
                    rec = self._parse(loads, line)
                    if rec is None:
                        if line.strip():
                            bad += 1
                            if bad <= 3:
                                self.warn(f"{path}:{n}: not a JSON record, skipped")
                        continue
                problem = field_problem(rec)
                if problem is not None:
                    kind = rec.get("record")
                    what = f"the {kind} record" if type(kind) is str else "the record"
                    raise LogError(printable(f"{path}:{n}: {what}: {problem}"))
                kind = rec.get("record")
                if index and kind in _RESTATED:
                    continue
                problem = links.fill(rec)
                if problem is not None:
                    raise LogError(printable(f"{path}:{n}: the {kind} record {rec.get('seq')}: {problem}"))
                self.records += 1
                if kind == "truncated":
                    self.truncated = True
                if escape and not plain_json_line(line):
                    rec = printable_record(rec)
                yield rec
            if bad > 3:
                self.warn(f"{path}: {bad} lines in all were skipped")
        except (OSError, EOFError) as exc:
            # A compressed file cut short: what was read stands, the rest is reported.
            self.warn(f"{path}: {exc}; the rest of the file is not read")
        finally:
            try:
                pos = raw.tell()
                bar.update(pos - seen_pos)
            except (OSError, ValueError):
                pass
            if raw is not sys.stdin.buffer:
                raw.close()

    @staticmethod
    def _parse(loads, line: bytes) -> Optional[dict]:
        try:
            rec = loads(line)
        except _DecodeError:
            return None
        return rec if isinstance(rec, dict) else None

    def _check_header(self, path: str, head: dict) -> None:
        if head.get("format") != FORMAT_NAME:
            raise LogError(f"{path}: not an h2proxy frame log (format {head.get('format')!r})")
        version = head.get("version")
        if isinstance(version, int) and version > READER_VERSION:
            self.warn(f"{path}: format version {version} is newer than this reader ({READER_VERSION}); "
                      f"reading anyway")


def read_log(paths, **kwargs) -> LogReader:
    """A :class:`LogReader` over ``paths`` (see there)."""
    return LogReader(paths, **kwargs)


def conn_filter(conns: Iterable[int]) -> Callable[[bytes], bool]:
    """A line filter passing records of the given connections and records with no connection.

    A JSON writer escapes every quote inside a string, so ``"conn":3`` can only
    be a key and its value: a line without it (for each connection asked) is
    not a record of those connections. Lines that pass are checked again after
    parsing by the caller.
    """
    ids = "|".join(str(int(c)) for c in conns)
    pattern = re.compile(rb'"conn"\s*:\s*(?:' + ids.encode() + rb'|null)\s*[,}]')
    has_conn = re.compile(rb'"conn"\s*:').search
    search = pattern.search

    def keep(line: bytes) -> bool:
        return search(line) is not None or has_conn(line) is None
    return keep


def frame_type_filter(names: Sequence[str]) -> Callable[[bytes], bool]:
    """A line filter passing every record that is not a frame and frames of the given type names."""
    alts = "|".join(re.escape(n) for n in names)
    wanted = re.compile(rb'"type"\s*:\s*"(?:' + alts.encode() + rb')"').search
    is_frame = re.compile(rb'"record"\s*:\s*"frame"').search

    def keep(line: bytes) -> bool:
        return is_frame(line) is None or wanted(line) is not None
    return keep


def all_of(*filters) -> Optional[Callable[[bytes], bool]]:
    """One line filter that passes what every given filter (None: no filter) passes."""
    fs = [f for f in filters if f is not None]
    if not fs:
        return None
    if len(fs) == 1:
        return fs[0]
    return lambda line: all(f(line) for f in fs)
