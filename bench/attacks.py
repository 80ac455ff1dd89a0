"""The attack catalogue of issue 14, rerunnable: hostile raw-socket clients against one h2proxy process.

    .venv/bin/python bench/attacks.py              # every attack, a table of figures (about a minute)
    .venv/bin/python bench/attacks.py --only rapid_reset,hpack_bomb_verbose
    .venv/bin/python bench/attacks.py --json out.json

Not run in CI (tests/test_attacks.py and tests/test_limits.py are the regression tests). Each
attack runs against ``h2proxy`` as its own process, on 127.0.0.1 only, in front of an in-process
``h2``-library origin that counts the requests it receives, with the default limits except
shorter timeouts where waiting out the default would only cost time (said in the table). For each
attack: what the attacker got, what reached the origin, the proxy's RSS before and at its peak,
and whether a well-behaved client on another connection was served before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))          # (first: bench/proxy.py must not hide the proxy package)
from common import children, raise_nofile, rss_bytes, start_h2proxy  # noqa: E402
from framecodec import frame as fc  # noqa: E402
from framecodec.reader import PREFACE  # noqa: E402
from tests.rawpeers import Origin, RawClient, h2_get, raw, req  # noqa: E402

MiB = 2 ** 20
#: Timeouts shortened for the run (the attack is the same; only the wait is shorter).
TIMEOUTS = ["--limit", "preface_timeout=2", "--limit", "settings_ack_timeout=2",
            "--limit", "upstream_silence_timeout=2", "--limit", "upstream_settings_timeout=2"]


class Peak:
    """The highest RSS of some processes, sampled every 20 ms on a thread."""

    def __init__(self, pids: List[int]) -> None:
        self.pids = pids
        self.peak = {p: rss_bytes(p) for p in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss_bytes(p))
                except OSError:
                    pass

    def stop(self) -> Dict[int, int]:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def goaway_of(frames) -> str:
    g = [f for f in frames if isinstance(f, fc.GoAwayFrame)]
    if not g:
        return "no GOAWAY"
    from proxy.core.protocol import error_name
    return f"GOAWAY {error_name(g[-1].error_code)}"


async def attacker(port: int, payload: Callable[[RawClient], bytes], wait: float = 10.0) -> RawClient:
    c = await RawClient.connect(port)
    c.send(payload(c))
    try:
        await c.read_to_eof(wait)
    except (AssertionError, ConnectionError):
        pass
    c.close()
    return c


# ------------------------------------------------------------------ the attacks

async def rapid_reset(env) -> str:
    n = 5000
    c = await attacker(env.port, lambda c: b"".join(c.headers(sid, req("/hold")) + raw(0x3, 0, sid, b"\0\0\0\x08")
                                                 for sid in range(1, 2 * n, 2)))
    reached = sum(len(conn.streams) for conn in env.origin.conns[env.seen:])
    return f"{n:,} HEADERS+RST_STREAM pairs: {reached:,} reached the origin; attacker got {goaway_of(c.frames)}"


async def continuation_flood(env) -> str:
    c = await attacker(env.port, lambda c: c.headers(1, end_headers=False) + raw(0x9, 0, 1) * 100_000)
    return f"HEADERS + 100,000 empty CONTINUATION: attacker got {goaway_of(c.frames)} (max_continuations = 64)"


async def settings_flood(env) -> str:
    c = await attacker(env.port, lambda c: raw(0x4, 0, 0) * 100_000)
    return f"100,000 SETTINGS: attacker got {goaway_of(c.frames)} (max_control_frames_per_second = 2000)"


async def ping_flood(env) -> str:
    c = await attacker(env.port, lambda c: raw(0x6, 0, 0, b"pingpong") * 100_000)
    return f"100,000 PING: attacker got {goaway_of(c.frames)}"


def bomb(path: str = "/") -> bytes:
    import hpack
    head = hpack.Encoder().encode(req(path))
    literal = b"\x40\x06x-bomb\x7f" + bytes([(4000 - 127) % 128 + 128, (4000 - 127) // 128]) + b"b" * 4000
    block = head + literal + b"\xbe" * 60_000
    parts = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    return b"".join((raw(0x1, 0x1 | (0x4 if i == len(parts) - 1 else 0), 1, p) if i == 0 else
                     raw(0x9, 0x4 if i == len(parts) - 1 else 0, 1, p)) for i, p in enumerate(parts))


async def hpack_bomb(env) -> str:
    c = await attacker(env.port, lambda c: bomb(), wait=15)
    return (f"one 64 KB block decoding to 240 MB (60,000 references to a 4 KB entry): forwarded undecoded; "
            f"attacker got {goaway_of(c.frames) if c.frames else 'the origin answer'}")


async def slowloris(env) -> str:
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one():
        c = await RawClient.connect(env.port, preface=False)
        c.send(PREFACE[:10])
        try:
            await c.read_to_eof(10)
        except AssertionError:
            pass
        c.close()
        return bool(c.frames) and isinstance(c.frames[0], fc.SettingsFrame) and \
            any(isinstance(f, fc.GoAwayFrame) for f in c.frames)
    ok = await asyncio.gather(*(one() for _ in range(200)))
    return (f"200 half prefaces: {sum(ok)} of 200 got SETTINGS + GOAWAY ENHANCE_YOUR_CALM, all closed after "
            f"{loop.time() - start:.1f} s (preface_timeout = 2 here)")


async def garbage(env) -> str:
    rng = random.Random(14)
    answers = {"505": 0, "GOAWAY": 0, "closed": 0}

    async def one(i):
        r, w = await asyncio.open_connection("127.0.0.1", env.port)
        data = (PREFACE + raw(0x4, 0, 0) if i % 2 else b"") + bytes(rng.getrandbits(8) for _ in range(4096))
        w.write(data)
        try:
            got = await asyncio.wait_for(r.read(), 10)
        except (ConnectionError, asyncio.TimeoutError):
            got = b""
        w.close()
        key = "505" if got.startswith(b"HTTP/1.1 505") else "GOAWAY" if b"\x07\x00\x00\x00\x00\x00" in got else "closed"
        answers[key] += 1
    await asyncio.gather(*(one(i) for i in range(200)))
    return (f"200 connections of 4 KB of seeded random bytes (half after a valid preface): {answers['505']} got the "
            f"HTTP/1.1 505, {answers['GOAWAY']} a GOAWAY, {answers['closed']} a bare close")


async def hostile_1500(env) -> str:
    kinds = [lambda c: raw(0x6, 0, 0, b"pingpong") * 5000,
             lambda c: c.headers(1, end_headers=False) + raw(0x9, 0, 1) * 200,
             lambda c: b"".join(c.headers(s, req("/hold")) + raw(0x3, 0, s, b"\0\0\0\x08") for s in range(1, 600, 2)),
             lambda c: b"\xff" * 1000,
             lambda c: b""]

    outcome: Dict[str, int] = {}

    async def one(i):
        try:
            c = await RawClient.connect(env.port, preface=i % 5 != 4, ack=False)
            c.send(kinds[i % 5](c))
            await c.read_to_eof(30)
            c.close()
            key = "an answer, then the close" if c.frames or c.received else f"a bare close (kind {i % 5})"
        except (AssertionError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            key = type(exc).__name__
        outcome[key] = outcome.get(key, 0) + 1
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(one(i) for i in range(1500)))
    return (f"1,500 connections at once (PING floods, CONTINUATION floods, rapid resets, garbage, silence), all "
            f"ended within {loop.time() - start:.1f} s: " + ", ".join(f"{n} {k}" for k, n in sorted(outcome.items())))


ATTACKS = {
    "rapid_reset": (rapid_reset, []),
    "continuation_flood": (continuation_flood, []),
    "settings_flood": (settings_flood, []),
    "ping_flood": (ping_flood, []),
    "hpack_bomb_verbose": (hpack_bomb, ["-v"]),
    "hpack_bomb_record": (hpack_bomb, ["--record", "{tmp}/bomb.jsonl"]),
    "slowloris": (slowloris, []),
    "garbage": (garbage, []),
    "hostile_1500": (hostile_1500, []),
}


class Env:
    def __init__(self, svc, origin) -> None:
        self.svc = svc
        self.port = svc.port
        self.origin = origin
        self.seen = 0


async def run_one(name: str, tmp: Path) -> dict:
    fn, extra = ATTACKS[name]
    origin = await Origin().start()
    extra = [a.replace("{tmp}", str(tmp)) for a in extra]
    svc = await asyncio.get_running_loop().run_in_executor(
        None, lambda: start_h2proxy(origin.url, tmp, extra=[*TIMEOUTS, *extra], name=f"h2proxy-{name}"))
    try:
        get, close = await h2_get(svc.port)
        before_ok = (await get("/"))[0] == "200"
        env = Env(svc, origin)
        env.seen = len(origin.conns)
        pids = [svc.proc.pid, *children(svc.proc.pid)]
        base = {p: rss_bytes(p) for p in pids}
        peak = Peak(pids)
        figure = await fn(env)
        peaks = peak.stop()
        after_ok = (await get("/"))[0] == "200"
        close()
        output = sum(p.stat().st_size for p in svc.logs if p.exists())
        if "--record" in extra:
            output += Path(extra[extra.index("--record") + 1]).stat().st_size
        return {"attack": name, "figure": figure, "alive": svc.alive(),
                "bystander": before_ok and after_ok,
                "rss_mib": [round(base[p] / MiB, 1) for p in pids], "peak_mib": [round(peaks[p] / MiB, 1) for p in pids],
                "output_bytes": output}
    finally:
        svc.stop()
        await origin.stop()


def _quiet_cancellations(loop, context) -> None:
    """The origin's tasks cancelled at its stop are not worth a traceback; anything else is."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def main_async(names: List[str]) -> List[dict]:
    raise_nofile(8192)
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellations)
    out = []
    with tempfile.TemporaryDirectory(prefix="h2proxy-attacks-") as tmp:
        for name in names:
            res = await run_one(name, Path(tmp))
            out.append(res)
            print(f"{name}: {res['figure']}; RSS {res['rss_mib']} -> peak {res['peak_mib']} MiB "
                  f"(proxy{', recorder' if len(res['rss_mib']) > 1 else ''}); output {res['output_bytes']:,} bytes; "
                  f"bystander {'served' if res['bystander'] else 'NOT served'}; "
                  f"proxy {'alive' if res['alive'] else 'DEAD'}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated attack names: " + ", ".join(ATTACKS))
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        ap.error(f"unknown attack(s): {', '.join(unknown)}")
    results = asyncio.run(main_async(names))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["alive"] and r["bystander"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
