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
from typing import BinaryIO, Callable, Iterable, List, Optional

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


class _Compressed:
    """A compressing writer over a raw file, with a flush that ends a block."""

    def __init__(self, path: str) -> None:
        self.raw = open(path, "wb")
        if path.endswith(".zst"):
            try:
                import zstandard
            except ImportError:
                self.raw.close()
                raise ValueError("a .zst log needs the 'zstandard' package") from None
            self._z = zstandard.ZstdCompressor(level=3).stream_writer(self.raw, closefd=False)
            self._flush_mode = zstandard.FLUSH_BLOCK
            self._gz = None
        else:
            self._gz = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=1,
                                     filename=os.path.basename(path)[:-3])
            self._z = None

    def write(self, data: bytes) -> None:
        (self._gz or self._z).write(data)

    def flush(self) -> None:
        if self._gz is not None:
            self._gz.flush()
        else:
            self._z.flush(self._flush_mode)
        self.raw.flush()

    def close(self) -> None:
        try:
            if self._gz is not None:
                self._gz.close()
            else:
                self._z.close()
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


def _open(path: str):
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
        self._fh: Optional[BinaryIO] = None
        #: The opening lines of the next file, taken when the current one filled up.
        self._pending: Optional[List[str]] = None
        self._next_file()

    @property
    def current(self) -> str:
        return self.files[-1]

    def _next_file(self) -> None:
        self.part += 1
        path = numbered_path(self.path, self.part) if self.rotate else self.path
        self._fh = _open(path)
        self.files.append(path)
        self.file_written = 0
        opening = self._pending if self._pending is not None else \
            (self._opening(self.part) if self._opening is not None else ())
        self._pending = None
        for line in opening:
            self._put(line)

    def _put(self, line) -> None:
        data = (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
        self._fh.write(data)
        self.written += len(data)
        self.file_written += len(data)

    def write(self, line) -> None:
        """One record's line (str or UTF-8 bytes, without its newline).

        When the line fills the file, the file is closed and the opening lines
        of the next one are taken at once (the connection state right after
        this record); the next file is opened by the next line, so a log never
        ends with a file holding no record.
        """
        if self._fh is None:
            self._next_file()
        self._put(line)
        if self.rotate and self.file_written >= self.rotate:
            self._fh.close()
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
