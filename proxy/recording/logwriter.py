"""Where the recorder's lines go: a plain or compressed file, or a numbered series of them (rotation).

The compression follows the file name: ``.gz`` writes gzip (level 1: the
recorder must keep up with the proxy), ``.zst`` Zstandard (level 3), anything
else plain JSON Lines. Each :meth:`LogFileWriter.flush` ends a compressed block
(gzip ``Z_SYNC_FLUSH``, a Zstandard block), so a log cut short by a crash is
readable up to its last flush.

With ``rotate`` (bytes), the lines go to ``NAME-000001.EXT``, ``NAME-000002.EXT``,
... (``frames.jsonl.gz`` -> ``frames-000001.jsonl.gz``): a new file starts at
the first record boundary after ``rotate`` bytes of JSON (counted before
compression). The caller gives the lines that open each file (the header and
the state of the connections still open), so every file is a valid log by
itself.
"""
from __future__ import annotations

import gzip
import os
import re
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Protocol, Union

if TYPE_CHECKING:
    import zstandard

__all__ = ["LogFileWriter", "numbered_path", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text) -> int:
    """Bytes from ``"1048576"``, ``"512k"``, ``"100M"``, ``"1G"``, ``"2GiB"`` (powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a size (examples: 1048576, 512k, 100M, 1G)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0 bytes")
    return value


def numbered_path(path: str, n: int) -> str:
    """The path of file ``n`` (from 1) of a rotated log: ``dir/frames.jsonl.gz`` -> ``dir/frames-00000n.jsonl.gz``."""
    head, base = os.path.split(path)
    name, dot, ext = base.partition(".")
    return os.path.join(head, f"{name}-{n:06d}{dot}{ext}")


class _Sink(Protocol):
    """What a log file is written through: whole lines in, a flush that leaves them readable."""

    def write(self, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class _Compressed:
    """A compressing writer over a raw file, with a flush that ends a block."""

    def __init__(self, path: str) -> None:
        self.raw = open(path, "wb")
        self._out: "gzip.GzipFile | zstandard.ZstdCompressionWriter"
        if path.endswith(".zst"):
            try:
                import zstandard
            except ImportError:
                self.raw.close()
                raise ValueError("a .zst log needs the 'zstandard' package") from None
            z = zstandard.ZstdCompressor(level=3).stream_writer(self.raw, closefd=False)
            block = zstandard.FLUSH_BLOCK
            self._out = z
            self._end_block: Callable[[], object] = lambda: z.flush(block)
        else:
            gz = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=1, filename=os.path.basename(path)[:-3])
            self._out = gz
            self._end_block = gz.flush      # Z_SYNC_FLUSH

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def flush(self) -> None:
        self._end_block()
        self.raw.flush()

    def close(self) -> None:
        try:
            self._out.close()
        finally:
            self.raw.close()


class _LineFile:
    """A plain log file written in whole lines: lines are gathered and each flush is one write() of whole
    lines, so a recorder killed at any moment leaves no half line (a buffered file could split one)."""

    #: Bytes gathered before they are written without waiting for a flush.
    limit = 1 << 20

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._parts: List[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        view = memoryview(b"".join(self._parts))
        self._parts.clear()
        self._size = 0
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self._fd)


def _open(path: str) -> _Sink:
    if path.endswith(".gz") or path.endswith(".zst"):
        return _Compressed(path)
    return _LineFile(path)


class LogFileWriter:
    """Writes whole lines to the log's file(s); never half a line, whatever the rotation."""

    def __init__(self, path: str, *, rotate: Optional[int] = None,
                 opening_lines: Optional[Callable[[int], Iterable[str]]] = None) -> None:
        self.path = path
        self.rotate = rotate
        self._opening = opening_lines
        #: Number of the current file (1 without rotation too).
        self.part = 0
        #: The files written, in order.
        self.files: List[str] = []
        #: JSON bytes written, all files together, and in the current file.
        self.written = 0
        self.file_written = 0
        self._fh: Optional[_Sink] = None
        #: The opening lines of the next file, taken when the current one filled up.
        self._pending: Optional[List[str]] = None
        self._next_file()

    @property
    def pending_rotation(self) -> bool:
        """True when the current file is full: the next line opens the next file."""
        return self._fh is None and self._pending is not None

    @property
    def current(self) -> str:
        return self.files[-1]

    def _next_file(self) -> _Sink:
        self.part += 1
        path = numbered_path(self.path, self.part) if self.rotate else self.path
        fh = self._fh = _open(path)
        self.files.append(path)
        self.file_written = 0
        opening = self._pending if self._pending is not None else \
            (self._opening(self.part) if self._opening is not None else ())
        self._pending = None
        for line in opening:
            self._put(fh, line)
        return fh

    def _put(self, fh: _Sink, line: Union[str, bytes]) -> None:
        data = (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
        fh.write(data)
        self.written += len(data)
        self.file_written += len(data)

    def write(self, line: Union[str, bytes]) -> None:
        """One record's line (str or UTF-8 bytes, without its newline).

        When the line fills the file, the file is closed and the opening lines
        of the next one are taken at once (the connection state right after
        this record); the next file is opened by the next line, so a log never
        ends with a file holding no record.
        """
        fh = self._fh if self._fh is not None else self._next_file()
        self._put(fh, line)
        if self.rotate and self.file_written >= self.rotate:
            fh.close()
            self._fh = None
            self._pending = list(self._opening(self.part + 1)) if self._opening is not None else []

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            finally:
                self._fh.close()
                self._fh = None
