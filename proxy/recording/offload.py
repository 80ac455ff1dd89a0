"""The JSONL recorder with its heavy work in a child process.

Building a record (HPACK decoding, field decoding, base64, JSON) costs tens of
microseconds per frame: far more than relaying the frame. Here the event loop
only gathers cheap tuples; once per loop iteration they are pickled in one
call (C code) and written to a non-blocking pipe, and a child process (niced,
so the proxy and its peers come first) runs the ordinary
:class:`JsonlRecorder` code on them. The file is byte-for-byte what
``JsonlRecorder`` would write. There is no thread in the proxy's process: a
feeder thread would take the GIL from the event loop at every hand-over, which
cost more than the pickling itself.

When the child falls behind, the pipe fills up; what does not fit waits in
memory and is written as the pipe drains (the loop watches the pipe). Past
``congestion_high`` bytes waiting, the proxy server (``on_congestion``) stops
reading its sockets until the backlog is under ``congestion_low``: the traffic
slows down to what the recorder takes instead of frames being lost. Past
``max_queue_bytes`` (only reached by what arrives after the sockets paused)
events are dropped, counted, and reported in the log as an ``error`` record, so
memory stays bounded whatever happens.

Without a ring, the child is the journal writer of :mod:`proxy.recording.journal`.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Optional

from .journal import decode_batch, forwarded_head, journal_path, read_exact, write_journal_header, writer_main
from .logwriter import numbered_path
from .recorder import JsonlRecorder, ThreadedSink, _live_sinks

if TYPE_CHECKING:
    from .ring import FlightRecorder

#: Each batch on the pipe: its length (4 bytes, big-endian), then the pickled list of events. 0 ends.
_LENGTH = struct.Struct(">I")
#: fcntl's F_SETPIPE_SZ (Linux): a larger pipe absorbs bursts while the child catches up.
_F_SETPIPE_SZ = 1031


def _plain(values):
    """Filter values as JSON can carry them (the journal's header)."""
    return sorted(values, key=str) if isinstance(values, (set, frozenset)) else \
        (list(values) if values is not None else None)


def _package_root() -> str:
    """The folder holding the ``proxy`` package (so the converter imports this very code)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _child_main(reader, path: str, options: dict) -> None:
    """The recorder process: read pickled batches until the end marker, write the JSONL file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the proxy decides when recording ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The log may lag behind; the proxy must not: leave the CPU to the proxy and its peers first
    # (SCHED_IDLE: run only on a CPU nothing else wants; else the lowest nice level).
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    fd = reader.fileno()
    os.set_blocking(fd, True)
    ring = options.pop("ring", None)
    after = options.pop("ring_after", 1.0)
    rec: "FlightRecorder | JsonlRecorder"
    if ring:
        from .ring import FlightRecorder
        rec = FlightRecorder(path, ring, after=after, max_header_list_size=options.get("max_header_list_size"),
                             grpc=options.get("grpc"))
        handle, flush = rec.handle, rec.flush
    else:
        rec = JsonlRecorder(path, **options)
        handle, flush = rec._handle, rec.flush_output
    try:
        while True:
            try:
                size = _LENGTH.unpack(read_exact(fd, 4))[0]
                if not size:
                    break
                data = read_exact(fd, size)
            except (EOFError, OSError):
                break
            for item in decode_batch(data):
                handle(item)
            flush()
    finally:
        rec.close()


class ProcessRecorder(ThreadedSink):
    """Writes the same frame log as :class:`JsonlRecorder`, building records in a child process."""

    use_thread = False
    #: Events gathered before they are shipped at once when no event loop runs (tests, tools).
    ship_at = 128
    #: Seconds events are gathered before they are shipped (with an event loop running).
    ship_delay = 0.01
    #: Frame bytes gathered that make a batch ship at once.
    ship_bytes = 256 << 10
    #: Bytes asked for the pipe's buffer.
    pipe_size = 1 << 20
    #: Frame bytes of one ``forwarded`` call from which they go to the pipe at once, as a forwarded block
    #: (proxy/recording/journal.py): one writev from the relay's buffers (or, when the pipe is full, one
    #: join into the backlog), where gathering and pickling them cost two copies of every byte (a quarter
    #: of the proxy's CPU recording 1 MiB responses). Smaller calls are gathered and pickled (fewer writes).
    direct_bytes = 32 << 10
    #: At most this many frames in one forwarded block (writev takes up to IOV_MAX = 1024 buffers).
    direct_frames = 512
    #: Backlog (bytes the pipe has not taken) past which the proxy stops reading its sockets, and under which
    #: it reads again: the recording slows the traffic down to what the disk takes rather than dropping frames.
    congestion_high = 64 << 20
    congestion_low = 16 << 20
    #: Set by the proxy server: called with True / False when the backlog crosses those marks.
    on_congestion = None

    def __init__(self, path, *, filter_conn=None, filter_stream=None, filter_types=None,
                 max_bytes: Optional[int] = None, max_queue: int = 1_000_000,
                 max_queue_bytes: int = 256 << 20, rotate: Optional[int] = None,
                 ring: Optional[int] = None, ring_after: float = 1.0, detach: bool = False,
                 max_header_list_size: Optional[int] = None, grpc=None) -> None:
        self.path = os.fspath(path)
        #: The flight recorder's size (``--record-ring``): frames are kept in memory, dumped on triggers
        #: with what follows for ``ring_after`` seconds (proxy/recording/ring.py).
        self.ring = ring
        #: False: close() returns once the log is complete. True (the proxy's command line): close() returns
        #: once the frames are in the journal, and the converter finishes the log on its own.
        self.detach = detach
        # Fail here, in the proxy, when the file cannot be written at all.
        if ring:
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.access(folder, os.W_OK):
                raise OSError(f"cannot write in {folder}")
        else:
            open(numbered_path(self.path, 1) if rotate else self.path, "a").close()
        options = {"filter_conn": _plain(filter_conn), "filter_stream": _plain(filter_stream),
                   "filter_types": _plain(filter_types), "max_bytes": max_bytes, "rotate": rotate,
                   "max_header_list_size": max_header_list_size}
        if grpc is not None:
            # Decoded where the records are built (the ring's process, or the converter), like everything
            # else; as a dict, which the journal's JSON header carries.
            options["grpc"] = (dataclasses.asdict(grpc) if dataclasses.is_dataclass(grpc) and not isinstance(grpc, type)
                               else dict(grpc))
        self._signal_loop: Optional[asyncio.AbstractEventLoop] = None
        #: The process that writes the log from the journal (None with a ring: that is written in the child).
        self._converter: Optional[subprocess.Popen] = None
        self.journal: Optional[str] = None
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        if ring:
            self._proc = ctx.Process(target=_child_main, args=(reader, self.path, {**options, "ring": ring,
                                                                                   "ring_after": ring_after}),
                                     daemon=True, name="h2proxy-recorder")
        else:
            # Frames go to the journal at once (normal priority: it only copies), the log is made from it by
            # a converter at the lowest priority that finishes on its own (proxy/recording/journal.py).
            self.journal = journal_path(self.path)
            fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_journal_header(fd, self.path, options)
            finally:
                os.close(fd)
            self._proc = ctx.Process(target=writer_main, args=(reader, self.journal),
                                     daemon=True, name="h2proxy-journal")
        self._proc.start()
        reader.close()
        if self.journal is not None:
            self._converter = subprocess.Popen(
                [sys.executable, "-m", "proxy.recording.journal", self.journal, "--follow-pid", str(self._proc.pid),
                 "--background"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
                cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": _package_root() + os.pathsep +
                                      os.environ.get("PYTHONPATH", "")})
        self._pipe = writer
        self._fd = writer.fileno()
        try:
            import fcntl
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, self.pipe_size)
        except (ImportError, OSError):
            pass
        os.set_blocking(self._fd, False)
        self._broken = False
        self._pending: list = []
        self._unsent: collections.deque = collections.deque()
        self._pending_bytes = 0      # frame bytes gathered for the next batch
        self._unsent_bytes = 0       # pickled bytes the pipe has not taken yet
        self._partial = False
        self._congested = False
        self._scheduled = False
        self._watching = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        super().__init__(filter_conn=filter_conn, filter_stream=filter_stream, filter_types=filter_types,
                         max_queue=max_queue, max_queue_bytes=max_queue_bytes, thread_name="h2proxy-recorder-feed",
                         max_header_list_size=max_header_list_size)

    # ------------------------------------------------------------ hot path (event loop thread)

    def _put(self, item, size: int = 0) -> None:
        pending = self._pending
        if len(pending) >= self._max_queue or self._pending_bytes + self._unsent_bytes + size > self._max_queue_bytes:
            self._dropped += 1
            return
        pending.append(item)
        self._enqueued += 1
        self._pending_bytes += size
        if not self._scheduled:
            loop = asyncio._get_running_loop()
            if loop is not None:
                # Gather for a few milliseconds, then one pickle and one write: fewer writes, and
                # fewer wake-ups of the recorder process, than one per loop iteration.
                self._scheduled = True
                self._loop = loop
                loop.call_later(self.ship_delay, self._ship)
                if self.ring and self._signal_loop is not loop:
                    self._listen_sigusr1(loop)
            elif len(pending) >= self.ship_at:
                self._ship()
        elif self._pending_bytes >= self.ship_bytes:
            self._ship()

    def forwarded(self, conn_id, recv_leg, send_leg, t, wires, *, seq=None):
        n = len(wires)
        # (Reads of small frames, the common case, leave at the first test: their first and last frames
        # are small. A large read of DATA has a full-sized frame at one end at least.)
        if not n or (len(wires[0]) < 8192 and len(wires[-1]) < 8192) or n > self.direct_frames or self.ring \
                or self._filtering or self._broken:
            return super().forwarded(conn_id, recv_leg, send_leg, t, wires, seq=seq)
        size = sum(map(len, wires))
        if size < self.direct_bytes:
            return super().forwarded(conn_id, recv_leg, send_leg, t, wires, seq=seq)
        if seq is None:
            seq = next(self._counter)
            self._counter = itertools.count(seq + 2 * n)
        if self._halted or (self._fconn is not None and conn_id not in self._fconn):
            return seq
        if self._pending:
            self._ship()          # what came before goes first
        if self._unsent_bytes + size > self._max_queue_bytes:
            self._dropped += 1
            return seq
        head = forwarded_head(seq, conn_id, t, recv_leg, send_leg)
        self._enqueued += 1
        self._processed += 1
        self._send(_LENGTH.pack(len(head) + size), head, *wires, owned=False)
        return seq

    def _ship(self) -> None:
        """Pickle what was gathered and write it to the pipe (what does not fit waits for the pipe)."""
        self._scheduled = False
        batch = self._pending
        if not batch and self._dropped == self._dropped_reported:
            return
        self._pending = []
        self._pending_bytes = 0
        if self._dropped > self._dropped_reported:
            lost = self._dropped - self._dropped_reported
            self._dropped_reported = self._dropped
            batch.append(("error", None, time.time(),
                          f"{lost} events were not recorded: the writer could not keep up"))
        self._processed += len(batch)
        if self._broken:
            return
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        self._send(_LENGTH.pack(len(data)), data)

    def _send(self, *parts, owned: bool = True) -> None:
        """Write ``parts`` to the pipe; what it does not take waits in memory (``owned``: the parts are the
        recorder's own bytes, kept as they are; else copied)."""
        unsent = self._unsent
        if not unsent:
            try:
                n = os.writev(self._fd, parts)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._gone(exc)
                return
        else:
            n = 0
        rest = []
        for part in parts:
            if n >= len(part):
                n -= len(part)
                continue
            rest.append(memoryview(part)[n:] if n else part)
            n = 0
        if rest and not owned:
            # The relay's buffers are only valid during the call: what the pipe did not take is copied.
            rest = [b"".join(rest)]
        for left in rest:
            unsent.append(left)
            self._unsent_bytes += len(left)
        if unsent:
            self._watch()
            if self._unsent_bytes > self.congestion_high and not self._congested and self.on_congestion is not None:
                self._congested = True
                self.on_congestion(True)

    def _decongest(self) -> None:
        if self._congested and self._unsent_bytes < self.congestion_low:
            self._congested = False
            if self.on_congestion is not None:
                self.on_congestion(False)

    def _watch(self) -> None:
        """Have the loop call :meth:`_drain` when the pipe takes more (or write now, with no loop)."""
        if self._watching:
            return
        loop = self._loop or asyncio._get_running_loop()
        if loop is None or loop.is_closed():
            self._write_all(self.close_timeout)
            return
        try:
            loop.add_writer(self._fd, self._drain)
        except (RuntimeError, ValueError, OSError):
            self._write_all(self.close_timeout)
            return
        self._loop = loop
        self._watching = True

    def _unwatch(self) -> None:
        loop = self._loop
        if self._watching:
            self._watching = False
            if loop is not None:            # (set by _watch, with _watching)
                try:
                    loop.remove_writer(self._fd)
                except Exception:
                    pass

    def _drain(self) -> None:
        unsent = self._unsent
        try:
            while unsent:
                self._drain_once()
                if self._partial:
                    self._decongest()
                    return       # the pipe is full again: wait for the next call
        except BlockingIOError:
            self._decongest()
            return
        except OSError as exc:
            self._gone(exc)
        self._unwatch()
        self._decongest()

    def _write_all(self, timeout: float) -> bool:
        """Write everything not written yet, waiting for the pipe up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        unsent = self._unsent
        while unsent and not self._broken:
            try:
                self._drain_once()
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not self._proc.is_alive():
                    return False
                select.select([], [self._fd], [], min(left, 0.5))
            except OSError as exc:
                self._gone(exc)
        self._unwatch()
        return not unsent

    def _drain_once(self) -> None:
        """Write the oldest unsent part (or what the pipe takes of it); BlockingIOError when full."""
        part = self._unsent[0]
        n = os.write(self._fd, part)
        self._unsent_bytes -= n
        self._partial = n < len(part)
        if self._partial:
            self._unsent[0] = memoryview(part)[n:]
        else:
            self._unsent.popleft()

    def _gone(self, exc: BaseException) -> None:
        self._broken = True
        self._halted = True
        self._unsent.clear()
        self._unsent_bytes = 0
        self._unwatch()
        self._decongest()
        print(f"h2proxy: the recorder process for {self.path} is gone ({exc}); recording stopped",
              file=sys.stderr)

    # ------------------------------------------------------------ flight recorder

    def request_dump(self, reason: str = "requested") -> bool:
        """Have the flight recorder write out what it holds (False: this recorder has no ring)."""
        if not self.ring or self._closed:
            return False
        self._put(("dump", reason, time.time()))
        self._ship()
        return True

    def _listen_sigusr1(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGUSR1 dumps the ring (installed on the proxy's loop, where the sink's calls run)."""
        self._signal_loop = loop
        try:
            loop.add_signal_handler(signal.SIGUSR1, self.request_dump, "SIGUSR1")
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass   # not the main thread, or no signals on this platform: the admin API still works

    # ------------------------------------------------------------ control

    def flush(self, timeout: float = 10.0) -> bool:
        """Hand everything gathered so far to the recorder process; False if the pipe stayed full."""
        self._ship()
        return self._write_all(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ship()
        self._halted = True          # events after close() are ignored
        if self._unsent_bytes > (4 << 20):
            print(f"h2proxy: finishing the frame log {self.path}: {self._unsent_bytes >> 20} MiB of frames "
                  f"still to write", file=sys.stderr, flush=True)
        if not self._broken:
            self._send(_LENGTH.pack(0))
            self._write_all(self.close_timeout)
        try:
            self._pipe.close()
        except OSError:
            pass
        _live_sinks.discard(self)
        self.finish()

    def finish(self) -> None:
        self._proc.join(self.close_timeout)
        if self._proc.is_alive():
            self._proc.terminate()
        conv = self._converter
        if conv is not None and not self.detach:
            conv.wait()
        elif conv is not None and conv.poll() is None:
            try:
                left = os.path.getsize(self.journal) if self.journal is not None else 0
            except OSError:
                left = 0
            if left > (16 << 20):
                print(f"h2proxy: the frame log {self.path} is being finished by process {conv.pid} from "
                      f"{self.journal} ({left >> 20} MiB recorded); it ends on its own (docs/frame-log.md)",
                      file=sys.stderr, flush=True)

    def wait_log(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait until the log is written (the converter is done); its exit status (0: complete)."""
        if self._converter is None:
            return 0
        try:
            return self._converter.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
