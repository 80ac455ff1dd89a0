"""Load and faults through the proxy: h2load, 1,000 connections, a killed upstream, a vanished
client, a client that never reads.

The memory figures come from the proxy running as its own process (``.venv/bin/h2proxy``),
read from /proc/PID/status (VmRSS). Each test prints what it measured (``pytest -s`` shows it);
docs/robustness.md has the figures of a run.
"""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from framecodec import frame as fc
from tests.peers import Nghttpd, free_port, h2load, need, wait_port
from tests.rawpeers import Origin, RawClient, h2_get, raw, req

ROOT = Path(__file__).resolve().parents[1]
MiB = 2 ** 20
H2PROXY = ROOT / ".venv" / "bin" / "h2proxy"
if not H2PROXY.exists():
    H2PROXY = Path(sys.executable).parent / "h2proxy"


def rss(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def settled_rss(pid: int, seconds: float = 2.0) -> int:
    """RSS once it stops moving (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss(pid)
        if abs(now - last) < 128 * 1024:
            return now
        last = now
    return last


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ProxyProcess:
    """``h2proxy`` as a subprocess on a free loopback port, started once it prints "listening on"."""

    def __init__(self, upstream: str, tmp: Path, *extra: str, quiet: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._launch(["--listen", f"h2c://127.0.0.1:{self.port}", "--upstream", upstream,
                      *(["-q"] if quiet else []), *extra], tmp / f"h2proxy-{self.port}.stderr", b"listening on")

    def _launch(self, args: List[str], err: Path, ready: bytes, cwd: Optional[Path] = ROOT) -> None:
        """Run h2proxy with ``args`` (stderr to ``err``); return once ``ready`` is in its stderr and its port
        takes connections."""
        self.err = err
        with open(self.err, "wb") as fe:
            self.proc = subprocess.Popen([str(H2PROXY), *args], stdout=subprocess.DEVNULL, stderr=fe,
                                         stdin=subprocess.DEVNULL, cwd=None if cwd is None else str(cwd))
        deadline = time.monotonic() + 20
        while ready not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"h2proxy did not start:\n{self.err.read_text()[-2000:]}")
            time.sleep(0.02)
        wait_port(self.port, proc=self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss(self.proc.pid)

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class PeakSampler:
    """Samples a process's RSS every 50 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def report(**figures) -> None:
    print("\n" + ", ".join(f"{k} = {v}" for k, v in figures.items()))


# ------------------------------------------------------------------ (a) h2load

async def test_h2load_100k_requests(proxy_process, nghttpd):
    """``h2load -n 100000 -c 100 -m 100`` through the proxy: nothing fails, memory comes back."""
    need("h2load")
    origin = nghttpd()
    px = proxy_process(origin.url)
    warm = await h2load(px.url + "/index.html", 2000, 10, 10, timeout=60)
    assert warm["succeeded"] == 2000, warm.output
    base = settled_rss(px.pid)
    sampler = PeakSampler(px.pid)
    t0 = time.monotonic()
    res = await h2load(px.url + "/index.html", 100000, 100, 100, timeout=120)
    seconds = time.monotonic() - t0
    peak = sampler.stop()
    after = settled_rss(px.pid, 3.0)
    report(h2load_seconds=f"{seconds:.1f}", succeeded=res["succeeded"], failed=res["failed"],
           errored=res["errored"], rss_baseline_mib=f"{base / MiB:.1f}", rss_peak_mib=f"{peak / MiB:.1f}",
           rss_after_mib=f"{after / MiB:.1f}")
    assert res["succeeded"] == 100000 and res["failed"] == 0 and res["errored"] == 0, res.output[-1500:]
    assert res.get("2xx") == 100000
    # Back near the baseline: what 10,000 concurrent streams took is given back (or reused).
    assert after - base < 24 * MiB, (base, peak, after)
    assert "Traceback" not in px.log()


# ------------------------------------------------------------------ (b) 1,000 connections

async def test_1000_concurrent_connections(proxy_process, nghttpd):
    """1,000 connections held open at once; then a request still works on a new one and an old one."""
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * count + 512
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        origin = nghttpd()
        px = proxy_process(origin.url)          # (inherits the raised limit)
        get, close = await h2_get(px.port)
        assert (await get("/index.html"))[0] == "200"
        base = settled_rss(px.pid)
        held = []
        t0 = time.monotonic()
        while len(held) < count:
            batch = await asyncio.gather(*(RawClient.connect(px.port) for _ in range(min(100, count - len(held)))))
            held.extend(batch)
        opened = time.monotonic() - t0
        # Wait until the proxy holds a client and an upstream socket for each connection.
        deadline = time.monotonic() + 20
        while fd_count(px.pid) < 2 * count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with_all = settled_rss(px.pid)
        fds = fd_count(px.pid)
        assert fds >= 2 * count, fds             # a client and an upstream socket for each
        # A new connection and one of the old ones are both served.
        get2, close2 = await h2_get(px.port)
        assert (await get2("/index.html"))[0] == "200"
        close2()
        old = held[count // 2]
        old.send(old.headers(1, req("/index.html")))
        await old.until(lambda f: isinstance(f, fc.HeadersFrame) and f.stream_id == 1)
        per_conn = (with_all - base) / count
        report(connections=count, open_seconds=f"{opened:.1f}", rss_baseline_mib=f"{base / MiB:.1f}",
               rss_with_all_mib=f"{with_all / MiB:.1f}", per_connection_kib=f"{per_conn / 1024:.1f}", fds=fds)
        assert per_conn < 64 * 1024, per_conn
        for c in held:
            c.close()
        close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------------ (c) upstream killed mid-stream

async def test_upstream_killed_with_50_streams_open(proxy_factory, docroot):
    """nghttpd is SIGKILLed with 50 responses under way: each client stream ends with RST_STREAM or a
    GOAWAY that covers it, and the proxy serves the next connection once the upstream is back."""
    origin = Nghttpd(docroot).start()
    try:
        px = await proxy_factory(origin.url)
        # A small window: the 50 responses start (HEADERS) and wait for window in the middle of their body.
        c = await RawClient.connect(px.port, settings=raw(0x4, 0, 0, b"\0\x04\0\0\x01\0"))     # 256 bytes
        sids = list(range(1, 101, 2))
        c.send(b"".join(c.headers(sid, req("/1m.bin")) for sid in sids))
        for sid in sids:
            await c.until(lambda f, sid=sid: isinstance(f, fc.HeadersFrame) and f.stream_id == sid, 10)
        origin.proc.kill()
        origin.proc.wait(5)
        await c.read_to_eof(10)
        resets = {f.stream_id for f in c.frames if isinstance(f, fc.RstStreamFrame)}
        goaway = [f for f in c.frames if isinstance(f, fc.GoAwayFrame)]
        assert goaway, "no GOAWAY"
        ended = {sid for sid in sids if sid in resets or sid > goaway[-1].last_stream_id}
        report(streams=len(sids), reset=len(resets & set(sids)), goaway_code=goaway[-1].error_code)
        assert ended == set(sids), sorted(set(sids) - ended)
        # The upstream comes back on the same port: the next connection is served.
        origin = Nghttpd(docroot, port=origin.port).start()
        get, close = await h2_get(px.port)
        status, body = await get("/index.html")
        assert status == "200" and b"hello" in body
        close()
    finally:
        origin.stop()


# ------------------------------------------------------------------ (d) client gone

@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_gone_with_80_streams_open(proxy_factory, how):
    """The client vanishes with 80 streams open: the upstream gets RST_STREAM CANCEL for each, a GOAWAY,
    and the close."""
    origin = await Origin().start()
    try:
        px = await proxy_factory(origin.url)
        c = await RawClient.connect(px.port)
        sids = list(range(1, 161, 2))
        c.send(b"".join(c.headers(sid, req("/hold")) for sid in sids))
        deadline = time.monotonic() + 10
        while not origin.conns or len(origin.conns[0].streams) < 80:
            assert time.monotonic() < deadline, "the origin did not see 80 streams"
            await asyncio.sleep(0.02)
        if how == "reset":
            sock = c.writer.get_extra_info("socket")
            sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.writer.transport.abort()
        else:
            c.close()
        up = origin.conns[0]
        await asyncio.wait_for(up.closed.wait(), 5)
        frames = up.frames()
        cancelled = {f.stream_id for f in frames if isinstance(f, fc.RstStreamFrame) and f.error_code == 8}
        assert cancelled == set(sids), sorted(set(sids) - cancelled)
        assert any(isinstance(f, fc.GoAwayFrame) and f.error_code == 0 for f in frames)
        # The proxy lets go of the connection.
        deadline = time.monotonic() + 5
        while px.bridges:
            assert time.monotonic() < deadline, "the proxy still holds the connection"
            await asyncio.sleep(0.02)
    finally:
        await origin.stop()


# ------------------------------------------------------------------ (e) a client that never reads

def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


async def test_client_never_reads_1gb(proxy_process, tmp_path):
    """The upstream has 1 GB for a client that opened its windows wide and reads nothing: the proxy
    stops reading the upstream and its RSS stays within baseline + 64 MiB."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_bytes(b"hello\n")
    sparse_file(root / "1g.bin", 2 ** 30)
    with Nghttpd(root) as origin:
        px = proxy_process(origin.url)
        get, close = await h2_get(px.port)
        assert (await get("/index.html"))[0] == "200"
        base = settled_rss(px.pid)
        sampler = PeakSampler(px.pid)
        c = await RawClient.connect(px.port, rcvbuf=65536, settings=raw(0x4, 0, 0, b"\0\x04\x7f\xff\xff\xff"))
        c.send(raw(0x8, 0, 0, (2 ** 31 - 1 - 65535).to_bytes(4, "big")) + c.headers(1, req("/1g.bin")))
        # nghttpd keeps trying to send for 4 s while nothing is read.
        await asyncio.sleep(4)
        peak = sampler.stop()
        now = px.rss()
        report(rss_baseline_mib=f"{base / MiB:.1f}", rss_peak_mib=f"{peak / MiB:.1f}",
               rss_growth_mib=f"{(peak - base) / MiB:.1f}")
        assert peak - base < 64 * MiB, (base, peak)
        # The proxy still serves others meanwhile.
        assert (await get("/index.html"))[0] == "200"
        assert now - base < 64 * MiB
        # The response was flowing all along: reading again gets it going.
        while c.data_bytes < 16 * MiB:
            assert await c.read_some(5)
        c.close()
        close()
