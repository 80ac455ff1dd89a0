"""Recording under h2load load: no event dropped, every byte the client got is in the log, the proxy stops at
once and the log is finished by the converter on its own."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from framecodec.reader import FrameReader
from proxy.recording.decode import unb64
from proxy.recording.offload import ProcessRecorder
from proxy.recording.reader import LogReader
from proxy.testing import h2proxy_running
from tests.peers import free_port, h2load, need, wait_port

pytestmark = pytest.mark.peers

REQUESTS = 6000


def _check(log: str) -> dict:
    """Per (conn, leg, dir): the bytes of the log's records, checked to be a whole sequence of frames."""
    streams: dict = {}
    for rec in LogReader(log, progress=False):
        kind = rec["record"]
        assert not (kind == "error" and "not recorded" in rec["message"]), rec
        assert kind != "truncated", rec
        if kind in ("preface", "frame", "raw"):
            streams.setdefault((rec["conn"], rec["leg"], rec["dir"]), bytearray()).extend(unb64(rec["wire"]))
    for (conn, leg, d), data in streams.items():
        preface = leg == "client" and d == "recv" or leg == "upstream" and d == "send"
        # The concatenation is whole frames, nothing left over: no record was cut or lost mid-frame.
        reader = FrameReader(max_frame_size=1 << 24, expect_preface=preface)
        n = sum(1 for _ in reader.feed(bytes(data)))
        assert n and reader.buffered == 0, (conn, leg, d)
    return streams


def _traffic(output: str) -> int:
    return int(re.search(r"traffic: .*?\((\d+)\) total", output).group(1))


async def test_recording_under_h2load_drops_nothing_and_rebuilds_the_bytes(nghttpd, tmp_path):
    origin = nghttpd()
    log = str(tmp_path / "load.jsonl")
    sink = ProcessRecorder(log)
    async with h2proxy_running(origin.url, sink=sink) as proxy:
        result = await h2load(proxy.url + "/small.txt", REQUESTS, 10, 10, timeout=240)
    assert result.returncode == 0 and result["succeeded"] == REQUESTS, result.output
    sink.close()                      # returns once the converter has written the whole log
    assert not os.path.exists(log + ".journal")
    streams = _check(log)
    client_got = sum(len(v) for (c, leg, d), v in streams.items() if leg == "client" and d == "send")
    assert client_got == _traffic(result.output)
    # What the client sent reached the upstream, and what the upstream sent reached the client: the proxy
    # relays untouched frames, so the two legs carry the same bytes (prefaces and SETTINGS aside, same count).
    frames = {k: len(v) for k, v in streams.items()}
    conns = {c for c, _, _ in streams}
    assert len(conns) == 10
    for c in conns:
        assert frames[(c, "client", "send")] > REQUESTS // 10 * 1024


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR, as servers bind: connections the proxy closed may sit in TIME_WAIT on the port; what
        # matters is that nothing listens on it any more.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_sigterm_frees_the_port_at_once_and_the_log_finishes_on_its_own(nghttpd, tmp_path):
    origin = nghttpd()
    port = free_port()
    log = str(tmp_path / "cli.jsonl")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{port}",
                              "--upstream", origin.url, "--record", log, "-q"], stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, 20, proc=proxy)
        out = subprocess.run([need("h2load"), "-n", str(REQUESTS), "-c", "10", "-m", "10",
                              f"http://127.0.0.1:{port}/small.txt"], capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stdout
        proxy.send_signal(signal.SIGTERM)
        # The listening socket closes first: the port is free while the proxy finishes its streams.
        proxy.wait(60)
        assert _port_free(port), proxy.stderr.read()
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    journal = log + ".journal"
    deadline = time.monotonic() + 300
    while os.path.exists(journal) and time.monotonic() < deadline:
        time.sleep(0.1)       # the converter runs in its own session: its only sign of being done is this
    assert not os.path.exists(journal), f"the converter did not finish the log: {proxy.stderr.read()}"
    streams = _check(log)
    client_got = sum(len(v) for (c, leg, d), v in streams.items() if leg == "client" and d == "send")
    assert client_got == _traffic(out.stdout)


def test_a_stopped_converter_ends_the_log_with_a_truncated_record(tmp_path):
    """SIGTERM to the converter: whole lines, a truncated record naming the journal, and log convert finishes."""
    from proxy.recording.journal import convert
    from proxy.recording.simulate import simulate
    log = str(tmp_path / "t.jsonl")
    sink = ProcessRecorder(log, detach=True)
    # The converter has its SIGTERM handler once it writes the log (a signal during its start-up would
    # kill it outright): wait for its first line, the header.
    deadline = time.monotonic() + 60
    while os.path.getsize(log) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.getsize(log) > 0, "the converter wrote nothing"
    # Hold it still before any event is recorded, so that it has work left when it is stopped (recording
    # first, it could catch up and read the end marker before it saw the signal: a complete log, status 0).
    os.kill(sink._converter.pid, signal.SIGSTOP)
    simulate(sink, [("GET", "/size/2000", [], b"")] * 200, t0=1_700_000_000.0)
    sink.flush()
    sink.close()
    journal = log + ".journal"
    assert os.path.getsize(journal) > 100_000
    os.kill(sink._converter.pid, signal.SIGTERM)
    os.kill(sink._converter.pid, signal.SIGCONT)
    assert sink.wait_log(60) == 1
    raw = open(log, "rb").read()
    assert raw.endswith(b"\n")
    last = list(LogReader(log, progress=False))[-1]
    assert last["record"] == "truncated" and last["journal"] == journal and "log convert" in last["message"]
    assert os.path.exists(journal)
    # Converting the kept journal again gives the whole log.
    assert convert(journal, str(tmp_path / "again.jsonl"), quiet=True) == 0
    again = list(LogReader(str(tmp_path / "again.jsonl"), progress=False))
    assert sum(1 for r in again if r["record"] == "frame") > 200 * 4
    assert not any(r["record"] == "truncated" for r in again)


async def test_a_recorder_that_cannot_keep_up_pauses_the_proxy_instead_of_dropping(tmp_path):
    """The journal writer is held still: the backlog crosses the high mark (the proxy is told to stop reading),
    and once the writer runs again and the backlog is under the low mark, to read again; nothing is dropped."""
    import asyncio

    from framecodec.frame import DataFrame
    log = str(tmp_path / "slow.jsonl")
    sink = ProcessRecorder(log)
    sink.congestion_high, sink.congestion_low = 4 << 20, 1 << 20
    calls = []
    resumed = asyncio.Event()

    def congestion(congested: bool) -> None:
        calls.append(congested)
        if not congested:
            resumed.set()
    sink.on_congestion = congestion
    frame = DataFrame(1, data=b"x" * 16000).serialize()
    sink.connection_opened(1, 1.0, {"client_addr": "127.0.0.1:1"})
    os.kill(sink._proc.pid, signal.SIGSTOP)
    try:
        sent = 0
        while not calls:
            sink.forwarded(1, "upstream", "client", 2.0, [frame] * 16)
            sink._ship()
            sent += 16
            assert sent < 10_000, "the backlog never crossed the high mark"
    finally:
        os.kill(sink._proc.pid, signal.SIGCONT)
    assert calls == [True] and sink.dropped == 0
    await asyncio.wait_for(resumed.wait(), 60)
    assert calls == [True, False]
    sink.connection_closed(1, 3.0, "done")
    sink.close()
    records = list(LogReader(log, progress=False))
    assert sum(1 for r in records if r["record"] == "frame") == 2 * sent
    assert not any(r["record"] == "error" for r in records)
