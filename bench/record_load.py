"""Recording at full load: throughput with --record vs without, drops, completeness, stop time, log finish time.

For each response size (1 KiB, 1 MiB), in ``--rounds`` rounds sharing ``--duration``
seconds: h2load ``-c 10 -m 10`` through h2proxy without recording, then through
one with ``--record`` for the same number of requests (counted, so that h2load's
byte counts are exact); the ratio is the median of the rounds. Then SIGTERM
to the recording proxy, measuring how long until its port is free and it has
exited, and how long the converter takes to finish the log after that. The log
is then checked: no ``error`` record about events not recorded, and the bytes
of the client leg's ``send`` records equal the bytes h2load received
("traffic: N total"), i.e. every frame the client got is in the log.

    python bench/record_load.py [--duration 30] [--sizes 1k,1m] [--keep]

Targets (issue 19): recording on >= 0.85x the throughput of recording off, zero
drops, a complete log, the proxy stopped and its port free at once.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, h2load, make_docroot, require, start_h2proxy, start_nghttpd  # noqa: E402

sys.path.insert(0, str(ROOT))
from proxy.recording.reader import LogReader  # noqa: E402

TARGET_RATIO = 0.85


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR, as servers bind: connections the proxy closed may sit in TIME_WAIT on the port; what
        # matters is that nothing listens on it any more.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def check_log(path: str) -> dict:
    """Drops, and the bytes of each leg and direction, from the finished log."""
    dropped = 0
    errors = []
    per = {}
    records = 0
    truncated = False
    for rec in LogReader(path, progress=False):
        records += 1
        kind = rec.get("record")
        if kind == "error" and "not recorded" in (rec.get("message") or ""):
            dropped += int(re.match(r"\d+", rec["message"]).group(0))
            errors.append(rec["message"])
        elif kind == "truncated":
            truncated = True
        elif kind in ("preface", "frame", "raw"):
            key = f"{rec['leg']} {rec['dir']}"
            w = rec.get("wire") or ""
            per[key] = per.get(key, 0) + len(w) * 3 // 4 - (w.endswith("==") + w.endswith("="))
    return {"records": records, "dropped": dropped, "truncated": truncated, "bytes": per}


def h2load_total(output: str) -> int:
    m = re.search(r"traffic: .*?\((\d+)\) total", output)
    return int(m.group(1)) if m else -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of h2load per run (default 30)")
    ap.add_argument("--sizes", default="1k,1m", help="responses to fetch: 1k, 1m (default both)")
    ap.add_argument("--rounds", type=int, default=3, help="off/on rounds sharing the duration (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = ap.parse_args()
    require("h2load", "nghttpd")
    work = Path(tempfile.mkdtemp(prefix="h2proxy-record-load-"))
    docroot = make_docroot(work / "www")
    origin = start_nghttpd(docroot, work)
    results = {}
    ok = True
    try:
        for size in args.sizes.split(","):
            path = f"/{size}"
            plain = start_h2proxy(origin.url.replace("http://", "h2c://"), work, name=f"plain-{size}")
            log = str(work / f"rec-{size}.jsonl")
            rec = start_h2proxy(origin.url.replace("http://", "h2c://"), work, name=f"record-{size}",
                                extra=["--record", log])
            try:
                # Rounds of: recording off for the duration, then recording on for as many requests as that
                # served (counted, not timed: h2load's byte counts then cover every byte the log holds for the
                # client leg). The machine's noise falls on both alike; the ratio is the median of the rounds.
                ratios, offs, ons, total, ran = [], [], [], 0, 0.0
                # The proxy's CPU per MiB relayed, on and off: steadier than throughput on a shared machine.
                cpu_on = cpu_off = mib_on = mib_off = 0.0
                for _ in range(args.rounds):
                    off = h2load(plain.url + path, duration=args.duration / args.rounds, measure=[plain])
                    count = max(1000, int(off.rps * args.duration / args.rounds))
                    started = time.monotonic()
                    on = h2load(rec.url + path, requests=count, measure=[rec], timeout=20 * args.duration + 120)
                    took = time.monotonic() - started
                    ran += took
                    total += max(h2load_total(on.output), 0)
                    cpu_off += off.cpu.get(plain.name, 0.0)
                    mib_off += off.mib_s * args.duration / args.rounds
                    cpu_on += on.cpu.get(rec.name, 0.0)
                    mib_on += max(h2load_total(on.output), 0) / 2 ** 20
                    offs.append(off)
                    ons.append(on)
                    ratios.append(on.rps / off.rps if off.rps else 0.0)
                plain.stop()
                t0 = time.monotonic()
                rec.proc.send_signal(signal.SIGTERM)
                port_at = None
                while rec.proc.poll() is None:
                    if port_at is None and port_free(rec.port):
                        port_at = time.monotonic() - t0
                    time.sleep(0.01)
                exited = time.monotonic() - t0
                if port_at is None:
                    port_at = exited
            finally:
                rec.stop()
                plain.stop()
            journal = log + ".journal"
            jsize = os.path.getsize(journal) if os.path.exists(journal) else 0
            t1 = time.monotonic()
            while os.path.exists(journal):
                time.sleep(0.1)
            finish = time.monotonic() - t1
            log_size = os.path.getsize(log)
            checked = check_log(log)
            client_got = checked["bytes"].get("client send", 0)
            ratio = sorted(ratios)[len(ratios) // 2]
            off = sorted(offs, key=lambda r: r.rps)[len(offs) // 2]
            on = sorted(ons, key=lambda r: r.rps)[len(ons) // 2]
            row = {"rps_off": off.rps, "rps_on": on.rps, "ratio": ratio, "mib_s_off": off.mib_s,
                   "mib_s_on": on.mib_s, "ratios": ratios, "dropped": checked["dropped"],
                   "truncated": checked["truncated"], "client_send_bytes": client_got, "h2load_bytes": total,
                   "complete": client_got == total and not checked["dropped"] and not checked["truncated"],
                   "port_free_s": port_at, "exit_s": exited, "journal_mb": jsize / 1e6,
                   "log_mb": log_size / 1e6, "finish_after_exit_s": finish,
                   "journal_mb_s": jsize / 1e6 / ran,
                   "proxy_cpu_ms_per_mib_on": 1000 * cpu_on / max(mib_on, 1e-9),
                   "proxy_cpu_ms_per_mib_off": 1000 * cpu_off / max(mib_off, 1e-9),
                   "converter_mb_s": log_size / 1e6 / max(finish, 1e-9)}
            results[size] = row
            good = ratio >= TARGET_RATIO and row["complete"] and port_at < 5
            ok &= good
            print(f"{size}: off {off.rps:.0f} req/s ({off.mib_s:.1f} MiB/s), record on {on.rps:.0f} req/s "
                  f"({on.mib_s:.1f} MiB/s): {ratio:.2f}x (median of {', '.join(f'{r:.2f}' for r in ratios)}); "
                  f"proxy CPU {row['proxy_cpu_ms_per_mib_on']:.2f} ms/MiB recording, "
                  f"{row['proxy_cpu_ms_per_mib_off']:.2f} off; "
                  f"dropped {checked['dropped']}; client-leg bytes in log "
                  f"{client_got} vs h2load {total} ({'complete' if row['complete'] else 'INCOMPLETE'}); "
                  f"stop: port free {port_at:.2f} s, exit {exited:.2f} s; journal {jsize / 1e6:.0f} MB "
                  f"({jsize / 1e6 / ran:.1f} MB/s written during the {ran:.0f} s run); log {log_size / 1e6:.0f} MB "
                  f"finished {finish:.1f} s after exit ({row['converter_mb_s']:.1f} MB/s) "
                  f"{'ok' if good else 'BELOW TARGET'}", flush=True)
            for f in (log,):
                if not args.keep and os.path.exists(f):
                    os.unlink(f)
    finally:
        origin.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory: {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
