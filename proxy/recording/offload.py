"""The JSONL recorder with its heavy work in a child process.

Building a record (HPACK decoding, field decoding, base64, JSON) costs tens of
microseconds per frame. On a writer thread that work competes with the event
loop for the GIL, so recording halved the proxy's throughput. Here the event
loop thread still only queues tuples; a feeder thread pickles them in batches
(C code, short) and writes them to a pipe (the GIL is released while it
blocks), and a child process runs the ordinary :class:`JsonlRecorder` code on
them. The file is byte-for-byte what ``JsonlRecorder`` would write.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time
from typing import Optional

from .recorder import JsonlRecorder, ThreadedSink

_SIZED = ("frame", "preface", "raw", "forwarded")


def _child_main(reader, path: str, options: dict) -> None:
    """The recorder process: read pickled batches until end of input, write the JSONL file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the proxy decides when recording ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        # The log may lag behind; the proxy must not: leave the CPU to the proxy and its peers first.
        os.nice(10)
    except OSError:
        pass
    rec = JsonlRecorder(path, **options)
    try:
        while True:
            try:
                data = reader.recv_bytes()
            except (EOFError, OSError):
                break
            if not data:
                break
            for item in pickle.loads(data):
                rec._handle(item)
            rec.flush_output()
    finally:
        rec.close()


class ProcessRecorder(ThreadedSink):
    """Writes the same frame log as :class:`JsonlRecorder`, building records in a child process."""

    def __init__(self, path, *, filter_conn=None, filter_stream=None, filter_types=None,
                 max_bytes: Optional[int] = None, max_queue: int = 1_000_000,
                 max_queue_bytes: int = 256 << 20) -> None:
        self.path = os.fspath(path)
        # Fail here, in the proxy, when the file cannot be written at all.
        open(self.path, "a").close()
        options = {"filter_conn": filter_conn, "filter_stream": filter_stream, "filter_types": filter_types,
                   "max_bytes": max_bytes}
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child_main, args=(reader, self.path, options), daemon=True,
                                 name="h2proxy-recorder")
        self._proc.start()
        reader.close()
        self._pipe = writer
        self._broken = False
        super().__init__(filter_conn=filter_conn, filter_stream=filter_stream, filter_types=filter_types,
                         max_queue=max_queue, max_queue_bytes=max_queue_bytes, thread_name="h2proxy-recorder-feed")

    def _run(self) -> None:
        q = self._queue
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stop = self._stop
            while q:
                batch = []
                size = 0
                while q and len(batch) < self.batch:
                    item = q.popleft()
                    batch.append(item)
                    if item[0] in _SIZED:
                        size += len(item[6])
                if self._dropped > self._dropped_reported:
                    lost = self._dropped - self._dropped_reported
                    self._dropped_reported = self._dropped
                    batch.append(("error", None, time.time(),
                                  f"{lost} events were not recorded: the writer could not keep up"))
                if not self._broken:
                    try:
                        self._pipe.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                    except (OSError, EOFError, ValueError) as exc:
                        self._broken = True
                        self._halted = True
                        print(f"h2proxy: the recorder process for {self.path} is gone ({exc}); "
                              f"recording stopped", file=sys.stderr)
                self._bytes_out += size
                with self._done:
                    self._processed += len(batch)
                    self._done.notify_all()
            if stop and not q:
                try:
                    self._pipe.send_bytes(b"")
                    self._pipe.close()
                except (OSError, EOFError, ValueError):
                    pass
                return

    def finish(self) -> None:
        self._proc.join(self.close_timeout)
        if self._proc.is_alive():
            self._proc.terminate()
