"""Recording through the real proxy: the frame log rebuilds the exact bytes of every socket."""
from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events
import pytest

from proxy.recording.logfile import read_records
from proxy.recording.offload import ProcessRecorder
from proxy.recording.recorder import JsonlRecorder
from tests.conftest import free_port, run
from tests.peers import nghttp as checked_nghttp  # (runs the shared SETTINGS-first / blame check)
from tests.test_proxy_peers import RecordingH2Server


def _streams(path):
    """Concatenated wire bytes per (leg, direction) from a frame log (read by the reader: it resolves
    ``wire_of``, the sent frames that carry the bytes of the received one they forwarded)."""
    out = {}
    records = read_records(str(path))
    for r in records:
        if r.get("record") in ("preface", "frame", "raw") and "wire" in r:
            key = (r["leg"], r["dir"])
            out[key] = out.get(key, b"") + base64.b64decode(r["wire"])
    return out, records


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_log_concatenation_equals_socket_bytes(proxy_factory, tmp_path, kind):
    server = await RecordingH2Server().start()
    log_path = tmp_path / "frames.jsonl"
    recorder = JsonlRecorder(str(log_path)) if kind == "thread" else ProcessRecorder(str(log_path))
    px = await proxy_factory(f"h2c://127.0.0.1:{server.port}", sink=recorder)
    reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")],
                      end_stream=True)
    sent = bytearray(conn.data_to_send())
    writer.write(bytes(sent))
    received = bytearray()
    done = False
    while not done:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data
        received += data
        for ev in conn.receive_data(data):
            done = done or isinstance(ev, h2.events.StreamEnded)
        more = conn.data_to_send()
        if more:
            sent += more
            writer.write(more)
    # Close once the origin has everything the client sent (the proxy relays it byte for byte).
    deadline = time.monotonic() + 10
    while len(server.received) < len(sent):
        assert time.monotonic() < deadline, f"the origin got {len(server.received)} of {len(sent)} bytes"
        await asyncio.sleep(0.01)
    writer.close()
    await asyncio.wait_for(server.done.wait(), 10)
    await server.stop()
    await px.stop(grace=0.2)
    recorder.close()
    streams, records = _streams(log_path)
    assert streams[("client", "recv")] == bytes(sent)
    assert streams[("client", "send")] == bytes(received)
    assert streams[("upstream", "send")] == bytes(server.received)
    assert streams[("upstream", "recv")] == bytes(server.sent)
    frames = [r for r in records if r.get("record") == "frame"]
    forwarded = [r for r in frames if r["dir"] == "send" and r["leg"] == "upstream"]
    assert forwarded and all(r.get("origin") for r in forwarded)
    request = [r for r in frames if r["type"] == "HEADERS" and r["leg"] == "client" and r["dir"] == "recv"][0]
    assert [":path", "/"] in request["headers"]


async def test_cli_record_and_verbose_with_nghttp(nghttpd, tmp_path):
    origin = nghttpd()
    port = free_port()
    log_path = tmp_path / "cli.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{port}", "--upstream", origin.url,
        "--record", str(log_path), "-v", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        from tests.conftest import await_port
        await await_port(port)
        rc, out = await checked_nghttp("-nv", f"http://127.0.0.1:{port}/index.html")
        assert rc == 0 and ":status: 200" in out
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    text = err.decode()
    assert "recv HEADERS frame" in text and "send HEADERS frame" in text and ":path: /index.html" in text
    records = [json.loads(line) for line in open(log_path)]
    assert records[0]["record"] == "header"
    assert any(r.get("record") == "frame" and r.get("headers") for r in records)
    rc, out = await run(sys.executable, "-m", "proxy.cli", "log", "stats", str(log_path))
    assert rc == 0, out
