"""``h2proxy --workers N``: worker processes sharing the port with SO_REUSEPORT, in front of nghttpd."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from tests.conftest import ROOT, need

pytestmark = pytest.mark.peers

BANNER = re.compile(r"^h2proxy \S+: listening on h2c://127\.0\.0\.1:(\d+), forwarding to (\S+); .*"
                    r"(\d+) workers \(pids ([\d, ]+)\)")
STOPPED = re.compile(r"worker (\d+) \(pid (\d+)\) stopped: served (\d+) connections")


class Proxy:
    """``h2proxy`` as a subprocess, its stderr read line by line on a thread."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", *args], cwd=str(cwd),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: List[str] = []
        self._q: "queue.Queue[Optional[str]]" = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_line(self, pattern: re.Pattern, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout} s:\n" + self.text())
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"h2proxy exited ({self.proc.wait()}) before {pattern.pattern!r}:\n"
                                     + self.text())
            self.lines.append(line)
            m = pattern.search(line)
            if m:
                return m

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._t.join(5)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def text(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def proxies():
    started: List[Proxy] = []

    def start(*args: str) -> Proxy:
        p = Proxy(*args)
        started.append(p)
        return p
    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _children(pid: int) -> List[int]:
    out: List[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out.extend(int(x) for x in f.read().split())
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _h2load(url: str, *args: str) -> str:
    out = subprocess.run([need("h2load"), *args, url], capture_output=True, text=True, timeout=120).stdout
    return out


def test_two_workers_share_the_port_and_stop_cleanly(nghttpd, proxies):
    origin = nghttpd()
    px = proxies("--workers", "2", "--listen", "h2c://127.0.0.1:0", "--upstream", origin.url)
    m = px.wait_line(BANNER)
    assert px.lines[0] == m.group(0), "the 'listening on' line must be the first line on stderr"
    port = int(m.group(1))
    assert m.group(2) == origin.url and m.group(3) == "2"
    pids = [int(p) for p in m.group(4).split(", ")]
    assert len(set(pids)) == 2
    assert sorted(_children(px.proc.pid)) == sorted(pids)

    # 32 connections: the kernel's SO_REUSEPORT hash puts all of them in one worker with p = 2**-31.
    out = _h2load(f"http://127.0.0.1:{port}/small.txt", "-n", "3200", "-c", "32", "-m", "4")
    assert "3200 succeeded, 0 failed, 0 errored" in out, out

    px.proc.send_signal(signal.SIGTERM)
    assert px.finish() == 0, px.text()
    served = {int(w): (int(pid), int(n)) for w, pid, n in STOPPED.findall(px.text())}
    assert sorted(served) == [0, 1], px.text()
    assert sorted(pid for pid, _ in served.values()) == sorted(pids)
    counts = [n for _, n in served.values()]
    assert all(n > 0 for n in counts), f"a worker served no connection: {served}"
    assert sum(counts) == 32, served
    assert all(_gone(pid) for pid in pids)


def test_sigint_is_forwarded_too(nghttpd, proxies):
    origin = nghttpd()
    px = proxies("--workers", "2", "--listen", "h2c://127.0.0.1:0", "--upstream", origin.url, "-q")
    m = px.wait_line(BANNER)
    port = int(m.group(1))
    out = _h2load(f"http://127.0.0.1:{port}/index.html", "-n", "200", "-c", "4", "-m", "2")
    assert "200 succeeded, 0 failed" in out, out
    px.proc.send_signal(signal.SIGINT)
    assert px.finish() == 0, px.text()
    assert len(STOPPED.findall(px.text())) == 2, px.text()


def test_workers_need_an_upstream(proxies):
    px = proxies("--workers", "2", "--listen", "h2c://127.0.0.1:0")
    assert px.finish() == 2
    assert "--workers needs --upstream" in px.text()


def test_a_dead_worker_stops_the_others(nghttpd, proxies):
    origin = nghttpd()
    px = proxies("--workers", "2", "--listen", "h2c://127.0.0.1:0", "--upstream", origin.url, "-q")
    m = px.wait_line(BANNER)
    pids = [int(p) for p in m.group(4).split(", ")]
    os.kill(pids[0], signal.SIGKILL)
    assert px.finish() == 1, px.text()
    assert re.search(rf"worker 0 \(pid {pids[0]}\) was killed by SIGKILL; stopping the other workers", px.text())
    assert all(_gone(pid) for pid in pids)


@pytest.mark.parametrize("name, expected", [("frames.jsonl", ["frames.jsonl.w0", "frames.jsonl.w1"]),
                                            ("frames.jsonl.gz", ["frames.jsonl.w0.gz", "frames.jsonl.w1.gz"])])
def test_each_worker_records_to_its_own_file(nghttpd, proxies, tmp_path, name, expected):
    pytest.importorskip("proxy.recording.recorder")
    origin = nghttpd()
    rec = tmp_path / name
    px = proxies("--workers", "2", "--listen", "h2c://127.0.0.1:0", "--upstream", origin.url, "-q",
                 "--record", str(rec))
    port = int(px.wait_line(BANNER).group(1))
    out = _h2load(f"http://127.0.0.1:{port}/index.html", "-n", "320", "-c", "32", "-m", "1")
    assert "320 succeeded, 0 failed" in out, out
    px.proc.send_signal(signal.SIGTERM)
    assert px.finish() == 0, px.text()
    assert not rec.exists()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == expected, files
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
    # Each is a whole log, compressed when its name says so: `log stats` reads both.
    from proxy.recording.reader import read_log
    requests = 0
    for f in files:
        if f.endswith(".gz"):
            assert (tmp_path / f).read_bytes()[:2] == b"\x1f\x8b"
        requests += sum(1 for r in read_log([str(tmp_path / f)])
                        if r.get("record") == "frame" and r.get("type") == "HEADERS" and r.get("leg") == "client"
                        and r.get("dir") == "recv")
    assert requests == 320


def test_a_taken_port_is_a_clear_error(proxies):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        px = proxies("--workers", "2", "--listen", f"h2c://127.0.0.1:{port}", "--upstream", "h2c://127.0.0.1:9")
        assert px.finish() == 2, px.text()
    assert "cannot listen on h2c://127.0.0.1:" in px.text(), px.text()
