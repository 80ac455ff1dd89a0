"""What the web view costs: h2load through h2proxy without --web, with --web and no page, and with
--web and the page open (headless chromium) and idle, in one run.

    .venv/bin/python bench/web.py            # 5 rounds of 8 s per target and case
    .venv/bin/python bench/web.py --quick    # 3 rounds of 4 s

The proxy's CPU is its own process's; chromium's CPU is not counted in it, but is shown (its share
of a core during each target's runs): it runs on the same cores, so it weighs on req/s (and the
proxy's CPU per request, through the shared caches) only while it renders the page.

Every target runs at the same time against one nghttpd; in each round every target is measured
once, one after the other, in an order that rotates from round to round. Figures are medians of
the rounds; the ratios (req/s and proxy CPU per request) are taken within each round, against the plain
proxy of that round, and their median is shown. The issue's bar: a page open and idle, or
no page, costs <= 10% of throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Service, children, fmt, h2load, make_docroot, median, require, start_h2proxy, start_nghttpd  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
def browser_pids() -> list:
    """Chromium's processes (below this one, through Playwright's driver): their CPU is not the proxy's,
    but they share the machine's cores with it, h2load and nghttpd."""
    out, todo = [], children(os.getpid())
    while todo:
        pid = todo.pop()
        todo.extend(children(pid))
        try:
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue
        if "chrom" in comm:
            out.append(pid)
    return out


def quartiles(values: list) -> tuple:
    v = sorted(values)
    return v[len(v) // 4], v[(3 * len(v)) // 4]


CASES = {"1k": dict(path="/1k", clients=10, streams=10), "1m": dict(path="/1m", clients=4, streams=2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    duration = args.duration or (4.0 if args.quick else 8.0)
    require("h2load", "nghttpd")
    from playwright.sync_api import sync_playwright
    work = Path(tempfile.mkdtemp(prefix="h2proxy-bench-web-"))
    origin = start_nghttpd(make_docroot(work / "docroot"), work)
    services = {}
    try:
        services["plain"] = start_h2proxy(origin.url.replace("http://", "h2c://"), work, name="plain")
        services["web"] = start_h2proxy(origin.url.replace("http://", "h2c://"), work, name="web",
                                        extra=["--web", "127.0.0.1:0"])
        services["web+page"] = start_h2proxy(origin.url.replace("http://", "h2c://"), work, name="webpage",
                                             extra=["--web", "127.0.0.1:0"])
        err = services["web+page"].logs[1]
        deadline = time.monotonic() + 15
        while not (m := re.search(r"web view and admin API on (\S+)", err.read_text())):
            if time.monotonic() > deadline:
                raise RuntimeError("no web view URL in the proxy's output")
            time.sleep(0.05)
        page_url = m.group(1)
        results = {name: {case: [] for case in CASES} for name in services}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(page_url)
            page.wait_for_function("document.getElementById('live').textContent === 'live'")
            print(f"bench: page open on {page_url.split('#')[0]}; {rounds} rounds x {duration:.0f} s", flush=True)
            for r in range(rounds):
                names = list(services)
                names = names[r % len(names):] + names[:r % len(names)]     # each target goes first in turn
                for case, spec in CASES.items():
                    for name in names:
                        svc = services[name]
                        chromium = Service("chromium", None, 0, "", measured=browser_pids())  # type: ignore[arg-type]
                        res = h2load(svc.url + spec["path"], clients=spec["clients"], streams=spec["streams"],
                                     duration=duration, warmup=1.0, measure=[svc, chromium])
                        if res.failed or res.errored or not res.ok:
                            raise RuntimeError(f"{name} {case}: h2load failed:\n{res.output[-1500:]}")
                        results[name][case].append({"rps": res.rps, "mib_s": res.mib_s,
                                                    "cpu_per_req_us": res.cpu.get(svc.name, 0) / res.ok * 1e6,
                                                    "chromium_cpu": res.cpu.get("chromium", 0) / duration})
                        print(f"  round {r + 1} {case:>2} {name:<8} {res.rps:>9.0f} req/s {res.mib_s:>8.1f} MiB/s "
                              f"{res.cpu.get(svc.name, 0) / res.ok * 1e6:>6.1f} us/req, chromium "
                              f"{res.cpu.get('chromium', 0) / duration * 100:4.1f}% of a core", flush=True)
            assert page.locator("#conns tr.conn").count() > 0     # the page did follow the traffic
            browser.close()
    finally:
        for svc in services.values():
            svc.stop()
        origin.stop()
    summary = {}
    print(f"\n{'case':<4} {'target':<9} {'req/s':>9} {'MiB/s':>8} {'CPU us/req':>10} {'req/s vs plain':>15} "
          f"{'(quartiles)':>13} {'CPU/req vs plain':>17} {'(quartiles)':>13} {'chromium':>9}")
    for case in CASES:
        base = results["plain"][case]
        for name in services:
            rows = results[name][case]
            rps = median([x["rps"] for x in rows])
            mib = median([x["mib_s"] for x in rows])
            cpu = median([x["cpu_per_req_us"] for x in rows])
            # Ratios within each round (the targets of a round ran back to back), then their median.
            ratios = [x["rps"] / b["rps"] for x, b in zip(rows, base, strict=True) if b["rps"]]
            cpu_ratios = [x["cpu_per_req_us"] / b["cpu_per_req_us"]
                          for x, b in zip(rows, base, strict=True) if b["cpu_per_req_us"]]
            ratio, cpu_ratio = median(ratios), median(cpu_ratios)
            (r_lo, r_hi), (c_lo, c_hi) = quartiles(ratios), quartiles(cpu_ratios)
            browser = median([x["chromium_cpu"] for x in rows])
            summary.setdefault(case, {})[name] = {"rps": rps, "mib_s": mib, "cpu_per_req_us": cpu, "ratio": ratio,
                                                  "ratio_quartiles": [r_lo, r_hi], "cpu_ratio": cpu_ratio,
                                                  "cpu_ratio_quartiles": [c_lo, c_hi], "chromium_cores": browser}
            print(f"{case:<4} {name:<9} {fmt(rps, 0):>9} {fmt(mib):>8} {fmt(cpu):>10} {ratio:>14.3f}x "
                  f"{r_lo:>6.3f}-{r_hi:.3f} {cpu_ratio:>16.3f}x {c_lo:>6.3f}-{c_hi:.3f} {browser * 100:>8.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "duration": duration, "results": summary}, indent=2))
    worst = min(v["ratio"] for c in summary.values() for k, v in c.items() if k != "plain")
    worst_cpu = max(v["cpu_ratio"] for c in summary.values() for k, v in c.items() if k != "plain")
    print(f"\nworst with --web: req/s {worst:.3f}x (bar: >= 0.90), CPU per request {worst_cpu:.3f}x (bar: <= 1.10)")
    return 0 if worst >= 0.90 and worst_cpu <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
