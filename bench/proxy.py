"""h2proxy against its references, in one run: nghttpd direct, nghttpx (h2c and TLS), a bare uvloop relay, mitmproxy.

    .venv/bin/python bench/proxy.py            # full run (~4 minutes)
    .venv/bin/python bench/proxy.py --quick    # short run (~1-2 minutes)
    .venv/bin/python bench/proxy.py --json out.json

Every figure is the median of several rounds; in each round every target is
measured once, one after the other, so the machine's noise falls on all of
them alike. The ratios compare targets measured in the same run, never against
numbers from another machine or another day. See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    Service,
    _spawn,
    fmt,
    free_port,
    h2load,
    make_cert,
    make_docroot,
    median,
    raise_nofile,
    require,
    start_h2proxy,
    start_nghttpd,
    start_nghttpx,
    start_relay_floor,
    wait_port,
)

MITM_VENV = ROOT / ".venv-bench-mitm"


@dataclass
class Target:
    key: str
    label: str
    service: Service
    cpu: bool = False                       # sample its CPU per request
    samples: Dict[str, List[dict]] = field(default_factory=dict)   # case -> per-round results

    def values(self, case: str, metric: str) -> List[float]:
        return [r[metric] for r in self.samples.get(case, []) if r.get(metric) is not None]

    def med(self, case: str, metric: str) -> Optional[float]:
        v = self.values(case, metric)
        return median(v) if v else None


# -- mitmproxy in its own venv -------------------------------------------------------

def ensure_mitm(log: Callable[[str], None]) -> Optional[str]:
    exe = MITM_VENV / "bin" / "mitmdump"
    if exe.exists():
        return str(exe)
    log(f"bench: installing mitmproxy into {MITM_VENV.relative_to(ROOT)} (once) ...")
    try:
        if not (MITM_VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(MITM_VENV)], check=True, timeout=120,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = subprocess.run([str(MITM_VENV / "bin" / "pip"), "install", "-q", "mitmproxy"], timeout=600,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0 or not exe.exists():
            tail = "\n".join(r.stdout.splitlines()[-3:])
            log(f"bench: note: pip install mitmproxy failed; mitmproxy is skipped\n{tail}")
            return None
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"bench: note: cannot set up {MITM_VENV.name}: {exc}; mitmproxy is skipped")
        return None
    return str(exe)


def start_mitm(exe: str, origin_port: int, workdir: Path) -> Service:
    port = free_port()
    cmd = [exe, "--mode", f"reverse:https://127.0.0.1:{origin_port}", "--ssl-insecure", "-q",
           "--listen-host", "127.0.0.1", "--listen-port", str(port),
           "--set", f"confdir={workdir / 'mitm-conf'}"]
    proc, logs = _spawn(cmd, workdir, "mitmdump")
    wait_port(port, timeout=60, proc=proc, what="mitmdump")
    return Service("mitmproxy", proc, port, f"https://127.0.0.1:{port}", logs)


# -- the run ---------------------------------------------------------------------------

CASES = {
    # name: (path, clients, streams, description)
    "small": ("/1k", 10, 10, "1 KiB responses, -c 10 -m 10"),
    "small_tls": ("/1k", 10, 10, "1 KiB responses over TLS, -c 10 -m 10"),
    "large": ("/1m", 4, 4, "1 MiB responses, -c 4 -m 4"),
    "large_tls": ("/1m", 4, 4, "1 MiB responses over TLS, -c 4 -m 4"),
    "latency": ("/1k", 1, 1, "1 KiB, one request at a time (-c 1 -m 1)"),
}


#: The response header both the headers hook and nghttpx --add-response-header set.
ADDED_HEADER = ("x-via-h2proxy", "1")
#: A fault rule that matches none of the requests, and one that acts on 1% of them (issue 16).
FAULT_NONE = "rst_stream path=/never/*"
FAULT_1PCT = "rst_stream type=headers direction=c2s every=100 towards=client code=REFUSED_STREAM"



def _add_baseline(add: Callable[..., None], only: Optional[Set[str]], base: Path, origin_port: int, work: Path,
                  pargs: List[str], headers_cfg: Path, push_cfg: Path) -> None:
    """The hookless proxy, the headers hook and the three issue 16 cases again, with the h2proxy of the
    source tree ``base``: before/after in one run (each whenever its counterpart is measured)."""
    if only is not None:
        only |= {k + "_base" for k in ("h2proxy", "headers", "fault_none", "push_never", "fault_1pct") if k in only}
    upstream = f"h2c://127.0.0.1:{origin_port}"
    cases = [("h2proxy_base", "h2proxy", []),
             ("headers_base", "headers hook", ["--config", str(headers_cfg)]),
             ("fault_none_base", "fault on /never/*", ["--fault", FAULT_NONE]),
             ("push_never_base", "push on /never/*", ["--config", str(push_cfg)]),
             ("fault_1pct_base", "reset every 100th", ["--fault", FAULT_1PCT])]
    for key, label, extra in cases:
        add(key, f"{label} ({base.name})", lambda key=key, extra=extra: start_h2proxy(
            upstream, work, name=key.replace("_", "-"), extra=[*extra, *pargs], tree=base), cpu=True)

def _add_baseline_tls(add: Callable[..., None], only: Optional[Set[str]], base: Optional[Path], origin_port: int,
                      work: Path, pargs: List[str]) -> None:
    """With ``--baseline-tree``, the hookless TLS proxy of that source tree too (whenever h2proxy_tls is
    measured): before/after over TLS in one run."""
    if base is None:
        return
    base = base.resolve()
    if only is not None:
        if "h2proxy_tls" not in only:
            return
        only.add("h2proxy_tls_base")
    add("h2proxy_tls_base", f"h2proxy TLS ({base.name})", lambda: start_h2proxy(
        f"https://127.0.0.1:{origin_port}", work, tls=True, name="h2proxy-tls-base",
        extra=["--insecure", "--ca-dir", str(work / "ca"), *pargs], tree=base), cpu=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="h2proxy against nghttpx, a bare relay and mitmproxy")
    ap.add_argument("--quick", action="store_true", help="3 short rounds (~1-2 minutes)")
    ap.add_argument("--rounds", type=int, help="rounds per figure (default 5, --quick 3)")
    ap.add_argument("--duration", type=float, help="seconds measured per h2load run (default 2, --quick 1)")
    ap.add_argument("--json", metavar="OUT", help="write every sample and the summary as JSON")
    ap.add_argument("--no-mitm", action="store_true",
                    help="skip mitmproxy; without --only, the other TLS targets too (name them in --only: "
                    "--only h2proxy_tls,nghttpx_tls measures them)")
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every h2proxy started (repeatable), e.g. --proxy-arg=--altsvc=forward")
    ap.add_argument("--baseline-tree", type=Path, metavar="DIR",
                    help="also measure the headers hook, the hookless proxy and the three issue 16 cases "
                    "(fault_none, push_never, fault_1pct) with the h2proxy of this source tree (e.g. "
                    "`git archive OLD | tar -x -C DIR`): before/after in the same run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) and print its path")
    ap.add_argument("--only", metavar="KEYS", help="measure only these targets (comma-separated: h2proxy, nghttpx, "
                    "relay, record, hook, headers, nghttpx_hdr, fault_none, push_never, fault_1pct, workers, "
                    "origin_tls, h2proxy_tls, nghttpx_tls, mitm); the origin is always measured, the TLS origin "
                    "whenever a TLS target is")
    ap.add_argument("--record-load", type=float, metavar="SECONDS",
                    help="also run bench/record_load.py: recording at full load for SECONDS per size (1 KiB, "
                         "1 MiB): throughput vs off, drops, log completeness, stop time, recorder MB/s")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    duration = args.duration or (1.0 if args.quick else 2.0)
    warmup = 0.3 if args.quick else 0.5
    require("nghttpd", "nghttpx", "h2load")
    raise_nofile(4096)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="h2proxy-bench-"))
    services: List[Service] = []
    targets: Dict[str, Target] = {}
    notes: List[str] = []

    only = set(args.only.split(",")) if args.only else None

    def add(key: str, label: str, starter: Callable[[], Service], cpu: bool = False) -> None:
        if only is not None and key not in only:
            return
        try:
            svc = starter()
        except Exception as exc:  # a target that cannot start is reported, not fatal
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            notes.append(f"{label}: not measured: {lines[-1] if lines else repr(exc)}")
            log(f"bench: {label} did not start: {exc}")
            return
        services.append(svc)
        targets[key] = Target(key, label, svc, cpu=cpu)

    try:
        docroot = make_docroot(work / "docroot")
        pki = make_cert(work / "pki")
        pargs = list(args.proxy_arg)
        origin = start_nghttpd(docroot, work)
        services.append(origin)
        targets["origin"] = Target("origin", "nghttpd (origin, direct)", origin, cpu=True)
        add("h2proxy", "h2proxy", lambda: start_h2proxy(f"h2c://127.0.0.1:{origin.port}", work, extra=pargs),
            cpu=True)
        add("nghttpx", "nghttpx (1 worker)", lambda: start_nghttpx(origin.port, work), cpu=True)
        add("relay", "bare uvloop relay", lambda: start_relay_floor(origin.port, work), cpu=True)
        (work / "rec").mkdir(exist_ok=True)
        add("record", "h2proxy --record", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-record",
            extra=["--record", str(work / "rec" / "frames.jsonl"), *pargs]), cpu=True)
        add("hook", "h2proxy -s hooks_rewrite.py", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-hook",
            extra=["-s", str(ROOT / "bench" / "hooks_rewrite.py"), *pargs]), cpu=True)
        # The same one-header rewrite in both: the built-in headers hook, nghttpx --add-response-header.
        headers_cfg = work / "headers-hook.toml"
        headers_cfg.write_text('[[hooks]]\nuse = "headers"\n[[hooks.rules]]\nmatch = { direction = "response" }\n'
                               f'set = {{ "{ADDED_HEADER[0]}" = "{ADDED_HEADER[1]}" }}\n')
        add("headers", "h2proxy headers hook", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-headers",
            extra=["--config", str(headers_cfg), *pargs]), cpu=True)
        # Interception that matches little or nothing of the traffic (issue 16): each should cost little.
        add("fault_none", "h2proxy fault on /never/*", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-fault-none",
            extra=["--fault", FAULT_NONE, *pargs]), cpu=True)
        push_cfg = work / "push-never.toml"
        push_cfg.write_text('[[hooks]]\nuse = "push"\n[[hooks.rules]]\npath = "/never/*"\n'
                            'push = [{ path = "/style.css", body = "x" }]\n')
        add("push_never", "h2proxy push on /never/*", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-push-never",
            extra=["--config", str(push_cfg), *pargs]), cpu=True)
        add("fault_1pct", "h2proxy reset every 100th", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-fault-1pct",
            extra=["--fault", FAULT_1PCT, *pargs]), cpu=True)
        if args.baseline_tree:
            _add_baseline(add, only, args.baseline_tree.resolve(), origin.port, work, pargs, headers_cfg, push_cfg)
        add("nghttpx_hdr", "nghttpx --add-response-header", lambda: start_nghttpx(
            origin.port, work, name="nghttpx-hdr",
            extra=[f"--add-response-header={ADDED_HEADER[0]}: {ADDED_HEADER[1]}"]), cpu=True)
        add("workers", "h2proxy --workers 2", lambda: start_h2proxy(
            f"h2c://127.0.0.1:{origin.port}", work, name="h2proxy-workers", extra=["--workers", "2", *pargs]),
            cpu=True)
        # TLS on both legs: the TLS origin, then h2proxy, nghttpx and mitmproxy in front of it. --no-mitm
        # skips mitmproxy (slow to start, installed on first use); the other TLS targets need nothing but
        # nghttp2 and h2proxy, so when --only names them they run under --no-mitm too (issue 16's
        # no-regression check against nghttpx covers TLS). Without --only, --no-mitm still skips all of
        # TLS, as before: the short run it has always been.
        tls_keys = {"origin_tls", "h2proxy_tls", "nghttpx_tls"}
        want_mitm = not args.no_mitm and (only is None or "mitm" in only)
        if only is not None:
            want_tls = bool(only & tls_keys) or want_mitm
        else:
            want_tls = not args.no_mitm
        if want_tls:
            tls_origin = start_nghttpd(docroot, work, tls=pki, name="nghttpd-tls")
            services.append(tls_origin)
            targets["origin_tls"] = Target("origin_tls", "nghttpd TLS (origin, direct)", tls_origin)
            add("h2proxy_tls", "h2proxy TLS", lambda: start_h2proxy(
                f"https://127.0.0.1:{tls_origin.port}", work, tls=True, name="h2proxy-tls",
                extra=["--insecure", "--ca-dir", str(work / "ca"), *pargs]), cpu=True)
            # The same PKI as the origin's and h2proxy's, and the same --insecure to the origin.
            add("nghttpx_tls", "nghttpx TLS (1 worker)", lambda: start_nghttpx(
                tls_origin.port, work, name="nghttpx-tls", tls=pki), cpu=True)
            _add_baseline_tls(add, only, args.baseline_tree, tls_origin.port, work, pargs)
            if want_mitm:
                exe = ensure_mitm(log)
                if exe:
                    add("mitm", "mitmproxy (mitmdump)", lambda: start_mitm(exe, tls_origin.port, work), cpu=True)
                else:
                    notes.append("mitmproxy: not measured (could not install it into .venv-bench-mitm)")
            elif args.no_mitm:
                notes.append("mitmproxy: skipped (--no-mitm)")
        elif args.no_mitm and only is None:
            notes.append("mitmproxy and TLS: skipped (--no-mitm; name TLS targets in --only to measure them)")

        plan = [
            ("small", ["origin", "h2proxy", "nghttpx", "relay", "record", "hook", "headers", "headers_base",
                       "nghttpx_hdr", "fault_none", "push_never", "fault_1pct", "h2proxy_base", "fault_none_base",
                       "push_never_base", "fault_1pct_base", "workers"]),
            ("small_tls", ["origin_tls", "h2proxy_tls", "nghttpx_tls", "h2proxy_tls_base", "mitm"]),
            ("large", ["origin", "h2proxy", "nghttpx", "h2proxy_base", "relay"]),
            ("large_tls", ["origin_tls", "h2proxy_tls", "nghttpx_tls", "h2proxy_tls_base"]),
            ("latency", ["origin", "h2proxy", "nghttpx", "relay"]),
        ]
        runs = sum(len([k for k in keys if k in targets]) for _, keys in plan) * rounds
        log(f"bench: {len(targets)} targets up after {time.monotonic() - t_start:.1f} s; {rounds} rounds, "
            f"{runs} h2load runs of {warmup:g}+{duration:g} s")
        for rnd in range(rounds):
            t_round = time.monotonic()
            for case, keys in plan:
                keys = [k for k in keys if k in targets]
                if not keys:
                    continue
                shift = rnd % len(keys)
                for key in keys[shift:] + keys[:shift]:  # rotate the order each round
                    t = targets[key]
                    if t.service.alive():
                        measure(t, case, f"round {rnd + 1}", duration, warmup, work, notes)
                if "record" in targets:
                    _truncate(work / "rec" / "frames.jsonl")
            log(f"bench: round {rnd + 1}/{rounds} done in {time.monotonic() - t_round:.1f} s")
        for t in targets.values():
            if not t.service.alive():
                notes.append(f"{t.label}: exited during the run (code {t.service.proc.returncode}); "
                             f"log tail:\n{t.service.log_tail(8)}")
    finally:
        codes = {}
        for svc in reversed(services):
            codes[svc.name] = svc.stop()
        if args.keep:
            log(f"bench: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary = report(targets, notes, rounds, duration, warmup, time.monotonic() - t_start)
    for name, code in codes.items():
        if name.startswith("h2proxy") and code not in (0, None):
            print(f"note: {name} exited with code {code} on SIGTERM (expected 0)")
    if args.json:
        out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "rounds": rounds, "duration_s": duration, "warmup_s": warmup,
               "targets": {k: {"label": t.label, "samples": t.samples} for k, t in targets.items()},
               "summary": summary, "notes": notes}
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    record_load(args.record_load)
    return 0


def measure(t: Target, case: str, when: str, duration: float, warmup: float, work: Path,
            notes: List[str]) -> None:
    """One h2load run of ``case`` against ``t``: a sample in ``t.samples``, or a note saying why there is none."""
    path, c, m, _ = CASES[case]
    # Per-request latencies (h2load's --log-file) only at one request at a time: under load, writing a
    # log line per request costs h2load CPU on the same two cores, which a target that leaves CPU idle
    # does not feel and one that keeps both cores busy does (measured: h2proxy / nghttpx 1 KiB 1.17x
    # without the log, 1.04-1.06x with it, medians of ten interleaved runs). Loaded runs report
    # h2load's own mean request time.
    want_lat = case == "latency"
    try:
        res = h2load(t.service.url + path, clients=c, streams=m, duration=duration, warmup=warmup,
                     log_file=work / "h2load.log" if want_lat else None,
                     measure=[t.service] if (t.cpu and case in ("small", "small_tls")) else [],
                     timeout=warmup + duration + 60)
    except RuntimeError as exc:
        notes.append(f"{t.label} {case} {when}: {exc}")
        return
    if res.ok == 0:
        notes.append(f"{t.label} {case} {when}: no request completed "
                     f"({res.failed + res.errored} failed); round left out")
        return
    sample = {"rps": res.rps, "mib_s": res.mib_s, "ok": res.ok, "failed": res.failed + res.errored,
              "mean_ms": res.mean_s * 1e3}
    if res.latencies:
        sample["median_ms"] = res.pct(50) * 1e3
        sample["p99_ms"] = res.pct(99) * 1e3
    if t.service.name in res.cpu and res.ok:
        sample["cpu_us"] = res.cpu[t.service.name] / res.ok * 1e6
    if sample["failed"]:
        notes.append(f"{t.label} {case} {when}: {sample['failed']} requests failed")
    t.samples.setdefault(case, []).append(sample)


def record_load(seconds: Optional[float]) -> None:
    """With --record-load: bench/record_load.py, in its own processes, after the others have stopped (the
    recorder's converter must not run beside them)."""
    if not seconds:
        return
    print("\nrecording at full load (bench/record_load.py)", flush=True)
    rc = subprocess.run([sys.executable, str(ROOT / "bench" / "record_load.py"), "--duration",
                         str(seconds)]).returncode
    if rc:
        print("recording at full load: BELOW TARGET")


def _truncate(path: Path) -> None:
    try:
        os.truncate(path, 0)
    except OSError:
        pass


def report(targets: Dict[str, Target], notes: List[str], rounds: int, duration: float, warmup: float,
           elapsed: float) -> dict:
    def g(key: str, case: str, metric: str) -> Optional[float]:
        t = targets.get(key)
        return t.med(case, metric) if t else None

    print()
    print(f"h2proxy benchmark: {rounds} rounds x {duration:g} s (+{warmup:g} s warm-up) per figure, medians; "
          f"{os.cpu_count()} CPUs; {elapsed:.0f} s in all")
    for case, cols in (("small", ["rps", "mib_s", "mean_ms", "cpu_us"]),
                       ("small_tls", ["rps", "mib_s", "mean_ms", "cpu_us"]),
                       ("large", ["mib_s", "rps", "mean_ms"]),
                       ("large_tls", ["mib_s", "rps", "mean_ms"]),
                       ("latency", ["median_ms", "p99_ms", "rps"])):
        rows = [t for t in targets.values() if t.samples.get(case)]
        if not rows:
            continue
        names = {"rps": "req/s", "mib_s": "MiB/s", "mean_ms": "mean ms", "p99_ms": "p99 ms",
                 "cpu_us": "CPU us/req", "median_ms": "median ms"}
        print()
        print(f"{CASES[case][3]}")
        print(f"  {'target':32}" + "".join(f"{names[c]:>13}" for c in cols))
        for t in rows:
            cells = []
            for c in cols:
                v = t.med(case, c)
                digits = 0 if c in ("rps",) else (3 if c.endswith("_ms") else 1)
                cells.append(f"{fmt(v, digits) if v is not None else '-':>13}")
            print(f"  {t.label:32}" + "".join(cells))

    checks = []

    def ratio(a, b):
        return a / b if a is not None and b else None

    def check(name: str, value: Optional[float], op: str, target: float, unit: str = "") -> None:
        if value is None:
            checks.append({"name": name, "value": None, "target": f"{op} {target:g}{unit}", "result": "n/a"})
            return
        ok = value >= target if op == ">=" else value <= target
        checks.append({"name": name, "value": value, "target": f"{op} {target:g}{unit}",
                       "result": "PASS" if ok else "MISS"})

    # Issue 16: no regression where nothing is installed (no hooks, no rules): at least nghttpx's
    # throughput, 1 KiB and 1 MiB responses, h2c and TLS on both legs.
    check("h2proxy / nghttpx req/s (1 KiB)", ratio(g("h2proxy", "small", "rps"), g("nghttpx", "small", "rps")),
          ">=", 1.0)
    check("h2proxy / nghttpx req/s (1 KiB, TLS)",
          ratio(g("h2proxy_tls", "small_tls", "rps"), g("nghttpx_tls", "small_tls", "rps")), ">=", 1.0)
    check("h2proxy / mitmproxy req/s (1 KiB, TLS)",
          ratio(g("h2proxy_tls", "small_tls", "rps"), g("mitm", "small_tls", "rps")), ">=", 100)
    check("h2proxy / nghttpx MiB/s (1 MiB)", ratio(g("h2proxy", "large", "mib_s"), g("nghttpx", "large", "mib_s")),
          ">=", 1.0)
    check("h2proxy / nghttpx MiB/s (1 MiB, TLS)",
          ratio(g("h2proxy_tls", "large_tls", "mib_s"), g("nghttpx_tls", "large_tls", "mib_s")), ">=", 1.0)
    check("CPU per request h2proxy / bare relay",
          ratio(g("h2proxy", "small", "cpu_us"), g("relay", "small", "cpu_us")), "<=", 3)
    added = None
    if g("h2proxy", "latency", "median_ms") is not None and g("origin", "latency", "median_ms") is not None:
        added = g("h2proxy", "latency", "median_ms") - g("origin", "latency", "median_ms")
    check("added median latency at low load (ms)", added, "<=", 0.2, " ms")
    slow = ratio(g("record", "small", "rps"), g("h2proxy", "small", "rps"))
    check("recording on: slowdown vs off", None if slow is None else 1 - slow, "<=", 0.15)   # issue 19: >= 0.85x
    check("headers hook / nghttpx add-header req/s",
          ratio(g("headers", "small", "rps"), g("nghttpx_hdr", "small", "rps")), ">=", 0.3)
    check("fault rule matching nothing / no hooks req/s",
          ratio(g("fault_none", "small", "rps"), g("h2proxy", "small", "rps")), ">=", 0.8)
    check("push rule never triggered / no hooks req/s",
          ratio(g("push_never", "small", "rps"), g("h2proxy", "small", "rps")), ">=", 0.8)
    check("rule acting on 1% / no hooks req/s",
          ratio(g("fault_1pct", "small", "rps"), g("h2proxy", "small", "rps")), ">=", 0.6)

    info = {
        "nghttpx / origin req/s": ratio(g("nghttpx", "small", "rps"), g("origin", "small", "rps")),
        "h2proxy / origin req/s": ratio(g("h2proxy", "small", "rps"), g("origin", "small", "rps")),
        "h2proxy / bare relay req/s": ratio(g("h2proxy", "small", "rps"), g("relay", "small", "rps")),
        "hook on: slowdown vs off": None if ratio(g("hook", "small", "rps"), g("h2proxy", "small", "rps")) is None
        else 1 - ratio(g("hook", "small", "rps"), g("h2proxy", "small", "rps")),
        "headers hook on: slowdown vs off": None if ratio(g("headers", "small", "rps"),
                                                          g("h2proxy", "small", "rps")) is None
        else 1 - ratio(g("headers", "small", "rps"), g("h2proxy", "small", "rps")),
        "headers hook, this tree / baseline tree req/s": ratio(g("headers", "small", "rps"),
                                                               g("headers_base", "small", "rps")),
        "baseline tree: fault rule matching nothing / no hooks req/s": ratio(g("fault_none_base", "small", "rps"),
                                                                           g("h2proxy_base", "small", "rps")),
        "baseline tree: push rule never triggered / no hooks req/s": ratio(g("push_never_base", "small", "rps"),
                                                                         g("h2proxy_base", "small", "rps")),
        "baseline tree: rule acting on 1% / no hooks req/s": ratio(g("fault_1pct_base", "small", "rps"),
                                                                 g("h2proxy_base", "small", "rps")),
        "baseline tree: h2proxy / nghttpx req/s (1 KiB)": ratio(g("h2proxy_base", "small", "rps"),
                                                                g("nghttpx", "small", "rps")),
        "baseline tree: h2proxy / nghttpx MiB/s (1 MiB)": ratio(g("h2proxy_base", "large", "mib_s"),
                                                                g("nghttpx", "large", "mib_s")),
        "baseline tree: h2proxy / nghttpx req/s (1 KiB, TLS)": ratio(g("h2proxy_tls_base", "small_tls", "rps"),
                                                                     g("nghttpx_tls", "small_tls", "rps")),
        "baseline tree: h2proxy / nghttpx MiB/s (1 MiB, TLS)": ratio(g("h2proxy_tls_base", "large_tls", "mib_s"),
                                                                     g("nghttpx_tls", "large_tls", "mib_s")),
        "nghttpx --add-response-header / nghttpx req/s": ratio(g("nghttpx_hdr", "small", "rps"),
                                                               g("nghttpx", "small", "rps")),
        "--workers 2 / 1 worker req/s": ratio(g("workers", "small", "rps"), g("h2proxy", "small", "rps")),
        "h2proxy TLS / h2c req/s": ratio(g("h2proxy_tls", "small_tls", "rps"), g("h2proxy", "small", "rps")),
        "CPU per request h2proxy / nghttpx": ratio(g("h2proxy", "small", "cpu_us"), g("nghttpx", "small", "cpu_us")),
        "CPU per request h2proxy / nghttpx (TLS)": ratio(g("h2proxy_tls", "small_tls", "cpu_us"),
                                                         g("nghttpx_tls", "small_tls", "cpu_us")),
        "nghttpx TLS / origin TLS req/s": ratio(g("nghttpx_tls", "small_tls", "rps"),
                                                g("origin_tls", "small_tls", "rps")),
        "added median latency nghttpx (ms)": None if g("nghttpx", "latency", "median_ms") is None
        or g("origin", "latency", "median_ms") is None
        else g("nghttpx", "latency", "median_ms") - g("origin", "latency", "median_ms"),
    }
    print()
    print("targets")
    for c in checks:
        v = c["value"]
        shown = "n/a" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}")
        if v is not None and "slowdown" in c["name"]:
            shown = f"{v * 100:.1f}%"
        print(f"  {c['name']:44} {shown:>10}   target {c['target']:10} {c['result']}")
    print("other ratios (no target)")
    for name, v in info.items():
        shown = "n/a" if v is None else (f"{v * 100:.1f}%" if "slowdown" in name else f"{v:.3f}")
        print(f"  {name:44} {shown:>10}")
    if notes:
        print("notes")
        for n in notes:
            print("  - " + n.replace("\n", "\n    "))
    return {"checks": checks, "info": info,
            "figures": {k: {case: {m: t.med(case, m) for m in ("rps", "mib_s", "mean_ms", "median_ms", "p99_ms",
                                                                 "cpu_us")}
                            for case in t.samples} for k, t in targets.items()}}


if __name__ == "__main__":
    sys.exit(main())
