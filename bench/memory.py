"""h2proxy's memory: per idle connection, with 1,000 open connections, and after a request burst.

    .venv/bin/python bench/memory.py                  # 1,000 connections, bursts of 100k requests (~25 s)
    .venv/bin/python bench/memory.py --quick          # 300 connections, bursts of 20k (~20 s)
    .venv/bin/python bench/memory.py --json out.json

RSS is read from /proc/PID/statm of the proxy process. The idle connections are
raw sockets that send the preface and SETTINGS and acknowledge the server's
SETTINGS (so no timeout closes them), then stay silent; each one costs the
proxy a client socket, an upstream socket, a relay and its buffers. Memory
after a burst is compared with the baseline taken after a warm-up. CPython and
malloc keep freed memory for reuse, so RSS rarely falls back: "back near
baseline" is judged by a last burst, run after a pause longer than the preface
timeout (a closed connection's relay is only released when that timer fires),
which must not grow RSS past the earlier peak.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fd_count, h2load, make_docroot, open_h2, raise_nofile, require, start_h2proxy, start_nghttpd  # noqa: E402

MiB = 2 ** 20


def settle(svc, seconds: float = 1.5) -> int:
    """RSS once it stops moving (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    last = svc.rss()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = svc.rss()
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


async def open_many(port: int, count: int, batch: int = 100) -> List[tuple]:
    conns: List[tuple] = []
    while len(conns) < count:
        n = min(batch, count - len(conns))
        results = await asyncio.gather(*(open_h2(port) for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        conns.extend(r for r in results if not isinstance(r, BaseException))
        if errors:
            raise RuntimeError(f"{len(errors)} of {n} connections failed, e.g. {errors[0]!r} "
                               f"({len(conns)} open)")
    return conns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--connections", type=int, help="idle connections to open (default 1000, --quick 300)")
    ap.add_argument("--burst", type=int, help="requests per h2load burst (default 100000, --quick 20000)")
    ap.add_argument("--bursts", type=int, help="h2load bursts before the pause (default 3, --quick 2)")
    ap.add_argument("--quiet", type=float, default=12.0,
                    help="seconds to wait after the bursts, past preface_timeout (default 12)")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG")
    args = ap.parse_args(argv)
    conns_wanted = args.connections or (300 if args.quick else 1000)
    burst = args.burst or (20000 if args.quick else 100000)
    require("nghttpd", "h2load")
    limit = raise_nofile(4 * conns_wanted + 1024)
    if limit < 2 * conns_wanted + 256:
        sys.exit(f"memory: RLIMIT_NOFILE is {limit}; {conns_wanted} connections need about "
                 f"{2 * conns_wanted + 256} (raise the hard limit)")
    work = Path(tempfile.mkdtemp(prefix="h2proxy-mem-"))
    services = []
    out: dict = {"connections": conns_wanted, "burst": burst}
    try:
        docroot = make_docroot(work / "docroot")
        origin = start_nghttpd(docroot, work)
        services.append(origin)
        px = start_h2proxy(f"h2c://127.0.0.1:{origin.port}", work, extra=args.proxy_arg)
        services.append(px)
        out["start_rss"] = px.rss()
        # Warm-up: every code path a request takes is imported and its caches filled.
        h2load(px.url + "/1k", clients=4, streams=4, requests=2000, timeout=60)
        base = settle(px)
        base_fds = fd_count(px.proc.pid)
        out["baseline_rss"] = base
        print(f"h2proxy RSS at start {out['start_rss'] / MiB:.1f} MiB, after a 2,000-request warm-up "
              f"{base / MiB:.1f} MiB ({base_fds} fds)")

        async def idle_phase():
            steps = sorted({s for s in (10, 100, conns_wanted) if s <= conns_wanted})
            held: List[tuple] = []
            rows = []
            for step in steps:
                held.extend(await open_many(px.port, step - len(held)))
                await asyncio.sleep(0.3)
                rss = px.rss()
                rows.append({"open": len(held), "rss": rss, "fds": fd_count(px.proc.pid),
                             "per_conn": (rss - base) / len(held)})
                print(f"  {len(held):5d} idle connections: RSS {rss / MiB:7.1f} MiB, "
                      f"+{(rss - base) / 1024:8.0f} KiB, {(rss - base) / len(held) / 1024:6.1f} KiB per connection, "
                      f"{rows[-1]['fds']} fds")
            t0 = time.monotonic()
            for _, w in held:
                w.close()
            await asyncio.sleep(0)
            # Wait until the proxy has closed its side of every connection.
            while fd_count(px.proc.pid) > base_fds + 2 and time.monotonic() - t0 < 15:
                await asyncio.sleep(0.1)
            return rows

        rows = asyncio.run(idle_phase())
        after_idle = settle(px, 2.0)
        out["idle"] = rows
        out["after_idle_closed_rss"] = after_idle
        out["after_idle_closed_fds"] = fd_count(px.proc.pid)
        print(f"  all closed: RSS {after_idle / MiB:.1f} MiB, {out['after_idle_closed_fds']} fds "
              f"(baseline {base_fds})")

        def run_burst(label: str) -> dict:
            peak = [0]
            stop = threading.Event()

            def sampler():
                while not stop.is_set():
                    peak[0] = max(peak[0], px.rss())
                    stop.wait(0.1)
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
            t0 = time.monotonic()
            res = h2load(px.url + "/1k", clients=10, streams=10, requests=burst, timeout=300)
            stop.set()
            th.join()
            after = settle(px, 3.0)
            row = {"label": label, "requests": res.ok, "failed": res.failed + res.errored,
                   "seconds": time.monotonic() - t0, "peak_rss": max(peak[0], after), "after_rss": after,
                   "fds": fd_count(px.proc.pid)}
            print(f"  {label}: {res.ok:,} requests ({row['failed']} failed) in {row['seconds']:.1f} s, "
                  f"peak RSS {row['peak_rss'] / MiB:.1f} MiB, after {after / MiB:.1f} MiB "
                  f"({(after - base) / MiB:+.1f} MiB vs baseline), {row['fds']} fds")
            return row

        bursts = [run_burst(f"burst {i + 1}") for i in range(max(1, args.bursts or (2 if args.quick else 3)))]
        # A closed connection's relay is released when its preface deadline fires (limit preface_timeout,
        # 10 s by default), so wait past it, then check that one more burst reuses the freed memory.
        time.sleep(args.quiet)
        quiet = px.rss()
        print(f"  {args.quiet:g} s later: RSS {quiet / MiB:.1f} MiB ({(quiet - base) / MiB:+.1f} MiB vs baseline)")
        bursts.append(run_burst("burst after the pause"))
        out["bursts"] = bursts
        out["after_quiet_rss"] = quiet
    finally:
        for svc in reversed(services):
            svc.stop()
        shutil.rmtree(work, ignore_errors=True)

    per_conn = rows[-1]["per_conn"]
    before_last = max(r["peak_rss"] for r in bursts[:-1])
    growth = bursts[-1]["after_rss"] - before_last
    back = bursts[-1]["after_rss"] - base
    flat = growth <= 512 * 1024
    out["summary"] = {"per_idle_connection_bytes": per_conn, "rss_with_all_open": rows[-1]["rss"],
                      "last_burst_growth": growth, "after_bursts_vs_baseline": back, "flat": flat}
    print()
    print(f"memory per idle connection (at {rows[-1]['open']} open): {per_conn / 1024:.1f} KiB")
    print(f"RSS with {rows[-1]['open']} open connections: {rows[-1]['rss'] / MiB:.1f} MiB "
          f"(baseline {base / MiB:.1f} MiB)")
    print(f"after {len(bursts)} bursts of {burst:,} requests: {back / MiB:+.1f} MiB vs baseline "
          f"({back / base * 100:+.0f}%); the burst after the pause grew RSS by {growth / MiB:+.2f} MiB over the "
          f"earlier peak -> {'flat: freed memory is reused, no leak' if flat else 'GROWING: possible leak'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
