"""Frame logs against real HTTP/2 peers: nghttp's layout, and replaying recorded clients and servers.

Logs are recorded with :class:`proxy.recording.simulate.RecordingRelay` (a byte relay that reports
frames the way the proxy does) between ``nghttp`` and ``nghttpd`` on loopback.
"""
from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from proxy.recording.logfile import read_records
from proxy.recording.recorder import JsonlRecorder
from proxy.recording.replay import replay_client, replay_server
from proxy.recording.simulate import RecordingRelay, simulate

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (shutil.which("nghttp") and shutil.which("nghttpd")),
                                 reason="needs nghttp and nghttpd")]

BODY = b"hello world\n"
BIG = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nghttpd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def nghttpd(tmp_path_factory):
    docroot = tmp_path_factory.mktemp("www")
    (docroot / "index.html").write_bytes(BODY)
    (docroot / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256) + b"z" * (BIG % 256))
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen(["nghttpd", "--no-tls", "-d", str(docroot), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(port, proc)
            break
        except RuntimeError:
            proc.kill()
            proc.wait()
    else:
        pytest.fail("could not start nghttpd")
    yield port
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _record_nghttp(path, upstream_port: int, url_path: str = "/index.html"):
    """nghttp -nv through a recording relay to nghttpd; returns nghttp's output."""
    rec = JsonlRecorder(path)
    relay = RecordingRelay(rec, ("127.0.0.1", upstream_port))
    await relay.start()
    try:
        proc = await asyncio.create_subprocess_exec("nghttp", "-nv", f"{relay.url}{url_path}",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        await relay.wait_closed_connections(1)
    finally:
        await relay.stop()
        rec.close()
    return out.decode()


@pytest.fixture(scope="module")
def recorded(nghttpd, tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "nghttp.jsonl"
    output = asyncio.run(_record_nghttp(path, nghttpd))
    return path, output


def _blocks(lines, start_pattern):
    """The frame line matching ``start_pattern`` and its indented detail lines."""
    for i, line in enumerate(lines):
        if re.search(start_pattern, line):
            block = [line]
            for nxt in lines[i + 1:]:
                if nxt.startswith(" " * 10):
                    block.append(nxt)
                else:
                    break
            return block
    raise AssertionError(f"no line matches {start_pattern!r}")


def _no_time(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d{3}\]", "[TIME]", line)


def test_text_matches_nghttp_layout(recorded, capsys):
    """What the proxy sent upstream is what nghttp sent: the layouts must be the same, line for line."""
    from proxy.recording.cli import log_main
    path, nghttp_out = recorded
    assert log_main(["text", str(path), "--no-color"]) == 0
    ours = [line[len("c1 upstream "):] for line in capsys.readouterr().out.splitlines()
            if line.startswith("c1 upstream ")]
    theirs = nghttp_out.splitlines()
    for pattern in (r"send SETTINGS frame <length=12", r"send HEADERS frame", r"send PRIORITY frame .*stream_id=3>"):
        mine = [_no_time(x) for x in _blocks(ours, pattern)]
        ref = [_no_time(x) for x in _blocks(theirs, pattern)]
        assert mine == ref, (mine, ref)
    # spot checks of the shape
    assert any(re.match(r"\[  0\.\d{3}\] send SETTINGS frame <length=12, flags=0x00, stream_id=0>", x) for x in ours)
    assert "          [SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in ours
    assert "          ; END_STREAM | END_HEADERS | PRIORITY" in ours
    assert "          :path: /index.html" in ours


def test_recorded_log_of_real_peers(recorded):
    path, _ = recorded
    records = read_records(str(path))
    frames = [r for r in records if r["record"] == "frame"]
    resp = [r for r in frames if r["leg"] == "client" and r["dir"] == "send" and r["type"] == "HEADERS"]
    assert dict(map(tuple, resp[0]["headers"]))[":status"] == "200"
    data = [r for r in frames if r["leg"] == "client" and r["dir"] == "send" and r["type"] == "DATA"]
    assert sum(r["fields"]["data_length"] for r in data) == len(BODY)


async def test_replay_client_equal(recorded, nghttpd):
    path, _ = recorded
    out = io.StringIO()
    rc = await replay_client(read_records(str(path)), f"h2c://127.0.0.1:{nghttpd}", out=out, timeout=10)
    text = out.getvalue()
    assert rc == 0, text
    assert re.search(r"stream 13: GET /index.html: same \(200, 12 body bytes, HEADERS DATA\)", text), text
    assert "result: 0 of 1 streams differ" in text


def test_replay_client_cli_exit_codes(recorded, nghttpd, tmp_path):
    path, _ = recorded
    cmd = [sys.executable, "-m", "proxy.recording", "replay", str(path), "--as", "client",
           "--to", f"h2c://127.0.0.1:{nghttpd}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr

    # The recording now says the client got a 404 with a 99-byte body: the replay must say so.
    changed = tmp_path / "changed.jsonl"
    with open(path) as src, open(changed, "w") as dst:
        for line in src:
            rec = json.loads(line)
            if rec.get("record") == "frame" and rec["leg"] == "client" and rec["dir"] == "send":
                if rec.get("headers"):
                    rec["headers"] = [[n, "404" if n == ":status" else v] for n, v in rec["headers"]]
                if rec["type"] == "DATA":
                    rec["fields"]["data_length"] = 99
            dst.write(json.dumps(rec) + "\n")
    res = subprocess.run(cmd[:4] + [str(changed)] + cmd[5:], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "stream 13: GET /index.html: DIFFERENT" in res.stdout
    assert "status 200, recorded 404" in res.stdout and "body 12 bytes, recorded 99" in res.stdout


async def test_replay_client_reports_a_different_path(nghttpd, tmp_path):
    # Recorded against the in-memory server: /missing was a 404 with a 10-byte body there.
    path = tmp_path / "sim.jsonl"
    rec = JsonlRecorder(path)
    simulate(rec, [("GET", "/index.html", [], b""), ("GET", "/missing", [], b"")])
    rec.close()
    out = io.StringIO()
    rc = await replay_client(read_records(str(path)), f"h2c://127.0.0.1:{nghttpd}", out=out, timeout=10,
                             ignore_headers=["cache-control"])
    text = out.getvalue()
    assert rc == 1
    assert re.search(r"stream 1: GET /index.html: same \(200, 12 body bytes", text), text
    assert re.search(r"stream 3: GET /missing: DIFFERENT: .*body \d+ bytes, recorded 10", text), text


async def _run_nghttp(url: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec("nghttp", *args, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    return out.decode() + err.decode()


async def test_replay_server_to_nghttp(recorded):
    path, _ = recorded
    url_box = asyncio.get_running_loop().create_future()
    out = io.StringIO()
    server = asyncio.ensure_future(replay_server(read_records(str(path)), "h2c://127.0.0.1:0", out=out,
                                                 ready=url_box.set_result, timeout=10))
    url = await asyncio.wait_for(url_box, 10)
    client_out = await _run_nghttp(url.replace("h2c://", "http://") + "/index.html", "-v")
    rc = await asyncio.wait_for(server, 15)
    assert rc == 0, out.getvalue()
    assert "recv (stream_id=13) :status: 200" in client_out, client_out
    assert "recv (stream_id=13) server: nghttpd" in client_out
    assert BODY.decode() in client_out and "[ERROR]" not in client_out
    assert "stream 13 (recorded stream 13): GET /index.html" in out.getvalue()


async def test_replay_server_maps_streams(tmp_path):
    """Recorded with stream 1; nghttp opens stream 13: the answer goes to 13."""
    path = tmp_path / "sim.jsonl"
    rec = JsonlRecorder(path)
    simulate(rec, [("GET", "/index.html", [], b"")])
    rec.close()
    cmd = [sys.executable, "-m", "proxy.recording", "replay", str(path), "--as", "server",
           "--listen", "h2c://127.0.0.1:0", "--timeout", "10"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        m = re.search(r"listening on (h2c://127\.0\.0\.1:\d+)", line)
        assert m, line
        client_out = await _run_nghttp(m.group(1).replace("h2c://", "http://") + "/index.html", "-v")
        rest, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, rest.decode() + err.decode()
    assert "recv (stream_id=13) :status: 200" in client_out, client_out
    assert "recv (stream_id=13) content-type: text/html" in client_out
    assert BODY.decode() in client_out
    assert "stream 13 (recorded stream 1): GET /index.html" in rest.decode()


async def test_replay_both_sides_over_tls(recorded):
    """The recorded server over https (a throwaway certificate), the recorded client against it."""
    path, _ = recorded
    records = read_records(str(path))
    url_box = asyncio.get_running_loop().create_future()
    server_out = io.StringIO()
    server = asyncio.ensure_future(replay_server(records, "https://127.0.0.1:0", out=server_out,
                                                 ready=url_box.set_result, timeout=10))
    url = await asyncio.wait_for(url_box, 10)
    assert url.startswith("https://127.0.0.1:")
    out = io.StringIO()
    rc = await replay_client(records, url, insecure=True, out=out, timeout=10)
    assert rc == 0, out.getvalue()
    assert "stream 13: GET /index.html: same" in out.getvalue()
    assert await asyncio.wait_for(server, 15) == 0


def _data_bytes(nghttp_output: str, stream: int) -> int:
    return sum(int(m) for m in re.findall(rf"recv DATA frame <length=(\d+), flags=0x0\d, stream_id={stream}>",
                                           nghttp_output))


async def test_replay_large_bodies_respect_flow_control(nghttpd, tmp_path):
    """300 kB is far beyond the 64 kB default windows: both replays must follow WINDOW_UPDATEs."""
    path = tmp_path / "big.jsonl"
    await _record_nghttp(path, nghttpd, "/big.bin")
    records = read_records(str(path))
    out = io.StringIO()
    rc = await replay_client(records, f"h2c://127.0.0.1:{nghttpd}", out=out, timeout=15)
    assert rc == 0, out.getvalue()
    assert f"stream 13: GET /big.bin: same (200, {BIG} body bytes, HEADERS DATA)" in out.getvalue()

    url_box = asyncio.get_running_loop().create_future()
    server_out = io.StringIO()
    server = asyncio.ensure_future(replay_server(records, "h2c://127.0.0.1:0", out=server_out,
                                                 ready=url_box.set_result, timeout=15))
    url = await asyncio.wait_for(url_box, 10)
    client_out = await _run_nghttp(url.replace("h2c://", "http://") + "/big.bin", "-nv")
    assert await asyncio.wait_for(server, 20) == 0, server_out.getvalue()
    assert "[ERROR]" not in client_out and "FLOW_CONTROL_ERROR" not in client_out
    assert _data_bytes(client_out, 13) == BIG
    assert "window stayed below" not in server_out.getvalue()
