"""How fast the ``h2proxy log`` converters read a large frame log, and the memory they take.

Generates a log (``--size`` MB, default 300) with :mod:`proxy.recording.biglog`
(10 connections at a time, interleaved, 1 KiB responses with a 70 KB one every
50), then runs each converter on it as a separate process and reports MB/s of
log read (wall clock and CPU time: the machine may be shared) and the peak RSS.
Targets (issue 19): >= 50 MB/s for ``stats`` and ``text``, <= 200 MB RSS for all.

    python bench/log_read.py [--size MB] [--keep PATH]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# bench/ off the path (bench/hpack.py would hide the hpack library h2 imports), the repository on it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from proxy.recording.biglog import write_big_log  # noqa: E402

COMMANDS = [
    ("stats", ["stats"]),
    ("text", ["text"]),
    ("text --conn 3 --types GOAWAY", ["text", "--conn", "3", "--types", "GOAWAY"]),
    ("stats --json", ["stats", "--json"]),
    ("pcap", ["pcap", "-o", os.devnull]),
    ("har", ["har", "-o", os.devnull]),
]
TARGET_MBS = 50.0
TARGET_RSS = 200 << 20


def run(path: str, args) -> tuple:
    start = time.perf_counter()
    with open(os.devnull, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "log", args[0], path, *args[1:]], stdout=out,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"log {' '.join(args)} failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=300, help="log size in MB (default 300)")
    ap.add_argument("--keep", metavar="PATH", help="write the log here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "big.jsonl")
        write_big_log(path, args.size << 20)
        size = os.path.getsize(path)
        print(f"log: {size / 1e6:.0f} MB")
        ok = True
        for name, cmd in COMMANDS:
            wall, cpu, rss = run(path, cmd)
            mbs, mbs_cpu = size / 1e6 / wall, size / 1e6 / cpu
            verdict = ""
            if name in ("stats", "text"):
                good = mbs_cpu >= TARGET_MBS and rss <= TARGET_RSS
                ok &= good
                verdict = "ok" if good else "BELOW TARGET"
            elif rss > TARGET_RSS:
                ok = False
                verdict = "MEMORY OVER TARGET"
            print(f"  log {name:<30} {wall:6.1f} s  {mbs:6.1f} MB/s wall  {mbs_cpu:6.1f} MB/s cpu  "
                  f"{rss / 1e6:6.0f} MB RSS  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
