"""The recording journal: frames land on disk at once, the JSON Lines log is made from them at its own pace.

Building JSON records costs far more CPU than relaying the frames, so at full
load no recorder that builds them as the frames pass can keep up on a machine
the proxy already saturates. The work is split in two processes:

- the **journal writer** (:func:`writer_main`, a child of the proxy, normal
  priority) reads the pickled batches of events the proxy writes to its pipe
  (:mod:`proxy.recording.offload`) and appends them, unchanged, to
  ``FILE.journal``: a read and a write per batch, so the pipe drains as fast as
  the disk takes it, the proxy never waits and never drops;
- the **converter** (:func:`convert`, run as ``python -m proxy.recording.journal``
  in its own session, lowest CPU priority) follows the journal and writes the
  log with the ordinary :class:`~proxy.recording.recorder.JsonlRecorder` code
  (so the log is byte-for-byte what that recorder writes). Under load it lags;
  when the load drops it catches up. When the proxy stops, the writer ends the
  journal and the proxy exits at once; the converter finishes the log on its
  own, then deletes the journal.

The journal (``H2PJ`` + version, then a JSON header with the recorder's
options, then batches: 4-byte big-endian length + either a pickled list of
events or one *forwarded block*, :data:`FORWARDED_HEAD` then the frames as they
went over the wire) is a private, transient format: it is read by the same
version of h2proxy that wrote it (this one also reads version 1 journals, which
have pickled batches only). Forwarded blocks are how the proxy hands over large
reads of frames it passed on unchanged: their bytes go from the relay's buffers
to the pipe in one ``writev``, never joined or pickled (:func:`decode_batch`).

End markers: length 0 (the proxy closed the log), ``0xFFFFFFFF`` (the proxy
vanished without closing it).

If the converter is stopped (SIGTERM, SIGINT) before it is done, it finishes the
line it is on, writes a ``truncated`` record naming the journal and how much of
it was not converted, and keeps the journal: ``h2proxy log convert
FILE.journal`` finishes the work later.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import struct
import sys
import time
from typing import Optional

__all__ = ["JOURNAL_MAGIC", "decode_batch", "forwarded_head", "journal_path", "write_journal_header", "writer_main",
           "convert", "main"]

JOURNAL_MAGIC = b"H2PJ\x02\n"
#: Journals of the previous version (pickled batches only): still converted.
JOURNAL_MAGICS = (JOURNAL_MAGIC, b"H2PJ\x01\n")
_LENGTH = struct.Struct(">I")
#: A forwarded block's head: ``F``, seq, conn, time, the index in LEGS of the leg received on and of the
#: leg sent on. A pickled batch starts with pickle's PROTO opcode (0x80), never with ``F``.
FORWARDED_HEAD = struct.Struct(">cqqdBB")
_LEGS = ("client", "upstream")


def forwarded_head(seq: int, conn: int, t: float, recv_leg: str, send_leg: str) -> bytes:
    """The head of a forwarded block (the frames follow it)."""
    return FORWARDED_HEAD.pack(b"F", seq, conn, t, _LEGS.index(recv_leg), _LEGS.index(send_leg))


def decode_batch(data: bytes) -> list:
    """The events of one batch read from the journal or the recorder pipe."""
    if data[:1] == b"F":
        _, seq, conn, t, recv_leg, send_leg = FORWARDED_HEAD.unpack_from(data)
        return [("forwarded", seq, conn, _LEGS[recv_leg], _LEGS[send_leg], t,
                 memoryview(data)[FORWARDED_HEAD.size:])]
    return pickle.loads(data)
#: End marker: the proxy closed the log.
END_CLEAN = 0
#: End marker: the pipe ended without the proxy closing the log (it was killed).
END_ABRUPT = 0xFFFFFFFF
#: Seconds the converter waits between looks at a journal that has not grown.
POLL = 0.05
#: Journal growth (bytes per second) past which the converter leaves the disk to the journal writer: at
#: full load with large bodies the disk is what limits recording (the log's writes would take its
#: bandwidth from the journal, and so from the proxy); the log is written once the load drops.
YIELD_RATE = 48 << 20
#: Seconds over which that growth is measured.
YIELD_WINDOW = 0.25


def journal_path(path: str) -> str:
    return f"{path}.journal"


def write_journal_header(fd: int, log_path: str, options: dict) -> None:
    """The journal's first bytes: the log to write, the recorder's options, when and by whom it started."""
    import datetime
    now = time.time()
    started = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    head = json.dumps({"log": log_path, "options": options,
                       "header": {"started": started, "started_ts": now, "pid": os.getpid()}}).encode()
    os.write(fd, JOURNAL_MAGIC + _LENGTH.pack(len(head)) + head)


def read_exact(fd: int, n: int) -> bytes:
    """Exactly ``n`` bytes from ``fd`` (EOFError when it ends first): the journal and the recorder pipe."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def writer_main(reader, journal: str) -> None:
    """The journal writer process: pipe -> journal file (its header already written by the proxy), batch by
    batch, until the end marker or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the proxy decides when recording ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = reader.fileno()
    os.set_blocking(fd, True)
    out = os.open(journal, os.O_WRONLY)      # (not O_APPEND: splice refuses it)
    os.lseek(out, 0, os.SEEK_END)
    splice = getattr(os, "splice", None)
    try:
        end = END_ABRUPT
        while True:
            try:
                head = read_exact(fd, 4)
            except (EOFError, OSError):
                break
            size = _LENGTH.unpack(head)[0]
            if size == END_CLEAN:
                end = END_CLEAN
                break
            _write_all(out, head)
            try:
                if splice is not None:
                    # Pipe to file inside the kernel: the batch is never copied through this process.
                    left = size
                    while left:
                        n = splice(fd, out, min(left, 1 << 20))
                        if not n:
                            raise EOFError
                        left -= n
                else:
                    _write_all(out, read_exact(fd, size))
            except (EOFError, OSError):
                # A batch cut short: the proxy is gone. The journal ends inside it; the converter reports that.
                return
        _write_all(out, _LENGTH.pack(end))
    finally:
        os.close(out)


def _normal_priority() -> None:
    """Back to the ordinary scheduler (at nice 10) once the proxy is gone: SCHED_IDLE would leave the log
    unfinished for as long as anything else runs on the machine."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, 10)
    except (AttributeError, OSError):
        pass


def _lowest_priority() -> None:
    """Leave the CPU to the proxy and its peers (SCHED_IDLE: run only on a CPU nothing else wants)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


class _Follower:
    """Reads a journal that may still be growing; gives up when its writer is gone and nothing more comes."""

    def __init__(self, path: str, writer_pid: Optional[int]) -> None:
        self.fh = open(path, "rb", buffering=0)
        self.writer_pid = writer_pid
        self.stop = False

    def _writer_alive(self) -> bool:
        if self.writer_pid is None:
            return False
        try:
            os.kill(self.writer_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie (exited, not yet reaped by the proxy) is gone too
            with open(f"/proc/{self.writer_pid}/stat", "rb") as st:
                return st.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except OSError:
            return True

    def read(self, n: int) -> Optional[bytes]:
        """Exactly ``n`` bytes, waiting for the writer; None when the journal ends short."""
        parts = []
        while n:
            chunk = self.fh.read(n)
            if chunk:
                parts.append(chunk)
                n -= len(chunk)
                continue
            if self.stop or not self._writer_alive():
                # One more look: the writer may have written its last bytes just before leaving.
                chunk = self.fh.read(n)
                if chunk:
                    parts.append(chunk)
                    n -= len(chunk)
                    continue
                return None
            time.sleep(POLL)
        return b"".join(parts)

    _mark: Optional[tuple] = None

    def _size(self) -> int:
        try:
            return os.fstat(self.fh.fileno()).st_size
        except OSError:
            return 0

    def yield_disk(self) -> None:
        """Wait while the journal grows faster than :data:`YIELD_RATE` (its writer alive, no stop asked)."""
        now = time.monotonic()
        mark = self._mark
        if mark is None:
            self._mark = (now, self._size())
            return
        if now - mark[0] < YIELD_WINDOW:
            return
        size = self._size()
        while (size - mark[1]) / (now - mark[0]) > YIELD_RATE and not self.stop and self._writer_alive():
            mark = (now, size)
            time.sleep(YIELD_WINDOW)
            now, size = time.monotonic(), self._size()
        self._mark = (now, size)

    def remaining(self) -> int:
        try:
            return os.fstat(self.fh.fileno()).st_size - self.fh.tell()
        except OSError:
            return 0


def convert(journal: str, log_path: Optional[str] = None, *, writer_pid: Optional[int] = None,
            keep: bool = False, quiet: bool = False) -> int:
    """Write the log of ``journal``; 0 when complete (the journal is then deleted unless ``keep``)."""
    from .recorder import JsonlRecorder

    def say(msg: str) -> None:
        if not quiet:
            print(f"h2proxy: {msg}", file=sys.stderr, flush=True)

    src = _Follower(journal, writer_pid)
    magic = src.fh.read(len(JOURNAL_MAGIC))
    if magic not in JOURNAL_MAGICS:
        say(f"{journal}: not an h2proxy recording journal")
        return 2
    size = src.read(4)
    head: object = {}
    if size:
        body = src.read(_LENGTH.unpack(size)[0])
        try:
            head = json.loads(body) if body is not None else None
        except ValueError:
            head = None
    if not isinstance(head, dict):
        say(f"{journal}: the journal's header is cut short or is not a JSON object")
        return 2
    path = log_path or head.get("log")
    options = head.get("options") or {}
    stopped = []

    def on_signal(signum, frame):
        stopped.append(signum)
        src.stop = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # The log's header tells when the proxy started recording, not when the conversion did.
    rec = JsonlRecorder(path, **options, header_extra=head.get("header"))
    status = 0
    batches = 0
    following = writer_pid is not None
    try:
        while True:
            batches += 1
            if following and batches % 64 == 0 and not src._writer_alive():
                following = False
                _normal_priority()
            if following:
                src.yield_disk()
            if stopped:
                left = src.remaining()
                rec.emit({"record": "truncated", "ts": time.time(), "journal": journal, "unconverted_bytes": left,
                          "message": f"the converter was stopped (signal {stopped[0]}); {left} bytes of recorded "
                                     f"events in {journal} were not converted: run h2proxy log convert {journal}"})
                say(f"{path}: stopped; {left} bytes of {journal} left (h2proxy log convert {journal})")
                keep, status = True, 1
                break
            size = src.read(4)
            if size is None:
                if stopped:
                    continue
                rec.emit(_cut_short(journal))
                status = 1
                break
            n = _LENGTH.unpack(size)[0]
            if n == END_CLEAN:
                break
            if n == END_ABRUPT:
                rec.emit({"record": "error", "ts": time.time(), "conn": None,
                          "message": "the proxy stopped without closing the log (killed?): events it had not "
                                     "handed to the recorder are missing"})
                break
            data = src.read(n)
            if data is None:
                if stopped:
                    continue
                rec.emit(_cut_short(journal))
                status = 1
                break
            for item in decode_batch(data):
                rec._handle(item)
            rec.flush_output()
    finally:
        rec.close()
        src.fh.close()
    if status == 0 and not keep:
        try:
            os.unlink(journal)
        except OSError:
            pass
    return status


def _cut_short(journal: str) -> dict:
    return {"record": "truncated", "ts": time.time(), "journal": journal,
            "message": "the journal ends in the middle of a batch of events (its writer was killed): "
                       "the events after this point were not recorded"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxy.recording.journal",
                                 description="Convert an h2proxy recording journal into its JSON Lines log.")
    ap.add_argument("journal")
    ap.add_argument("-o", "--output", help="the log to write (default: the one the proxy was recording)")
    ap.add_argument("--follow-pid", type=int, help="the journal writer's pid: follow the journal while it lives")
    ap.add_argument("--background", action="store_true", help="lowest CPU priority (the recorder's own converter)")
    ap.add_argument("--keep", action="store_true", help="keep the journal after converting it")
    args = ap.parse_args(argv)
    if args.background:
        _lowest_priority()
    return convert(args.journal, args.output, writer_pid=args.follow_pid, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
