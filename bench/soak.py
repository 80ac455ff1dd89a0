"""A soak: connections open and close through h2proxy for minutes; is its memory flat?

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --minutes 2     # shorter
    .venv/bin/python bench/soak.py --json out.json

Not run in CI. Two loads run side by side until the time is up:

* raw asyncio clients (``--clients`` at once), each looping over four ways a
  connection can end: a full request and a clean close; a request and an abort
  (RST) without reading the answer; preface and SETTINGS then close; half a
  preface then close;
* h2load runs of 2,000 requests on 10 connections, back to back.

The proxy's RSS and open file descriptors are sampled every ``--sample``
seconds. The verdict is the least-squares slope of RSS over the run, after the
first fifth (warm-up) is dropped: flat when the growth it projects over the
measured window is under 2 MiB (or 5% of the mean RSS). After the load stops and
the preface timers have fired, the fd count must be back at its baseline.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PREFACE,
    fd_count,
    h2load,
    make_docroot,
    open_h2,
    raise_nofile,
    read_response,
    request_headers,
    require,
    slope_per_minute,
    start_h2proxy,
    start_nghttpd,
)

MiB = 2 ** 20
MAX_OPS_PER_CLIENT = 10_000_000  # a count bound besides the time bound


async def churn(port: int, deadline: float, index: int, stats: dict) -> None:
    headers = request_headers(port)
    ops = 0
    while time.monotonic() < deadline and ops < MAX_OPS_PER_CLIENT:
        kind = (index + ops) % 4
        ops += 1
        try:
            if kind in (0, 1):
                reader, writer = await open_h2(port)
                writer.write(headers)
                if kind == 0:
                    await read_response(reader)
                    writer.close()
                else:
                    writer.transport.abort()
            elif kind == 2:
                reader, writer = await open_h2(port)
                writer.close()
            else:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(PREFACE[:12])
                await writer.drain()
                writer.close()
            stats["ok"] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            stats["errors"] += 1
            stats["last_error"] = repr(exc)
            await asyncio.sleep(0.05)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    ap.add_argument("--clients", type=int, default=16, help="raw clients churning at once (default 16)")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG")
    args = ap.parse_args(argv)
    require("nghttpd", "h2load")
    raise_nofile(8192)
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="h2proxy-soak-"))
    services = []
    try:
        docroot = make_docroot(work / "docroot")
        origin = start_nghttpd(docroot, work)
        services.append(origin)
        px = start_h2proxy(f"h2c://127.0.0.1:{origin.port}", work, extra=args.proxy_arg)
        services.append(px)
        h2load(px.url + "/1k", clients=4, streams=4, requests=2000, timeout=60)
        time.sleep(1)
        base_rss, base_fds = px.rss(), fd_count(px.proc.pid)
        print(f"soak: {args.minutes:g} min; h2proxy pid {px.proc.pid}, baseline RSS {base_rss / MiB:.1f} MiB, "
              f"{base_fds} fds", flush=True)

        t0 = time.monotonic()
        deadline = t0 + seconds
        samples = []
        stop = threading.Event()
        h2 = {"runs": 0, "requests": 0, "failed": 0}

        def sampler():
            next_at = t0
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_at:
                    samples.append((now - t0, px.rss(), fd_count(px.proc.pid)))
                    t, rss, fds = samples[-1]
                    print(f"  {t:7.0f} s  RSS {rss / MiB:7.1f} MiB  fds {fds:5d}  "
                          f"raw ok {stats['ok']:,} err {stats['errors']:,}  h2load {h2['requests']:,} req "
                          f"({h2['failed']} failed)", flush=True)
                    next_at += args.sample
                stop.wait(min(0.5, max(0.0, next_at - now)))

        def h2load_loop():
            while time.monotonic() < deadline - 3 and h2["runs"] < 1_000_000:
                try:
                    res = h2load(px.url + "/1k", clients=10, streams=10, requests=2000, timeout=60)
                except RuntimeError:
                    h2["failed"] += 2000
                    continue
                h2["runs"] += 1
                h2["requests"] += res.ok
                h2["failed"] += res.failed + res.errored

        stats = {"ok": 0, "errors": 0, "last_error": None}
        threads = [threading.Thread(target=sampler, daemon=True), threading.Thread(target=h2load_loop, daemon=True)]
        for th in threads:
            th.start()

        async def load():
            await asyncio.gather(*(churn(px.port, deadline, i, stats) for i in range(args.clients)))
        asyncio.run(load())
        threads[1].join(90)
        stop.set()
        threads[0].join(5)
        if not px.alive():
            print(f"soak: h2proxy exited during the run (code {px.proc.returncode}):\n{px.log_tail()}")
            return 1
        # Let the preface timers (10 s) release the last connections, then check fds and RSS.
        t_end = time.monotonic()
        while fd_count(px.proc.pid) > base_fds and time.monotonic() - t_end < 15:
            time.sleep(0.5)
        time.sleep(max(0.0, 12 - (time.monotonic() - t_end)))
        end_rss, end_fds = px.rss(), fd_count(px.proc.pid)
    finally:
        for svc in reversed(services):
            svc.stop()
        shutil.rmtree(work, ignore_errors=True)

    measured = [(t, rss) for t, rss, _ in samples if t >= seconds * 0.2]
    slope = slope_per_minute([(t, rss / MiB) for t, rss in measured])
    window_min = (measured[-1][0] - measured[0][0]) / 60 if len(measured) > 1 else 0
    mean_rss = sum(r for _, r in measured) / len(measured) / MiB if measured else float("nan")
    projected = slope * window_min
    flat = abs(projected) < max(2.0, 0.05 * mean_rss) if measured else False
    peak = max(r for _, r, _ in samples) if samples else 0
    print()
    print(f"soak: {stats['ok']:,} raw connections ({stats['errors']} errors"
          f"{', last: ' + stats['last_error'] if stats['last_error'] else ''}), "
          f"{h2['requests']:,} h2load requests on {h2['runs'] * 10:,} connections ({h2['failed']} failed)")
    print(f"RSS: baseline {base_rss / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, after the load {end_rss / MiB:.1f} MiB; "
          f"slope {slope:+.3f} MiB/min over the last {window_min:.1f} min ({projected:+.2f} MiB) -> "
          f"{'FLAT' if flat else 'GROWING'}")
    print(f"fds: baseline {base_fds}, after the load {end_fds} -> "
          f"{'back to baseline' if end_fds <= base_fds else 'LEAKED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "minutes": args.minutes, "samples": samples, "raw": stats, "h2load": h2, "baseline_rss": base_rss,
            "end_rss": end_rss, "baseline_fds": base_fds, "end_fds": end_fds, "slope_mib_per_min": slope,
            "flat": flat}, indent=2))
        print(f"wrote {args.json}")
    return 0 if flat and end_fds <= base_fds else 1


if __name__ == "__main__":
    sys.exit(main())
