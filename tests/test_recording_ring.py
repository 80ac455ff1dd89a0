"""The flight recorder (--record-ring): the last SIZE of frames in memory, written out around a trigger."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys

import pytest

from proxy.recording.dump_route import record_dump
from proxy.recording.offload import ProcessRecorder
from proxy.recording.reader import LogReader
from proxy.recording.ring import FlightRecorder, dump_path
from proxy.testing import H2Client, h2proxy_running
from tests.peers import free_port, wait_port

RING = 64 << 10


def _dump(path: str, n: int = 1):
    return list(LogReader(dump_path(path, n), progress=False))


def _paths(records):
    return [dict(map(tuple, r["headers"])).get(":path") for r in records
            if r["record"] == "frame" and r["type"] == "HEADERS" and r["leg"] == "client" and r["dir"] == "recv"]


@pytest.mark.peers
async def test_fault_hit_dumps_the_frames_around_it(nghttpd, tmp_path):
    origin = nghttpd()
    path = str(tmp_path / "ring.jsonl")
    sink = ProcessRecorder(path, ring=RING, ring_after=600)
    rule = "rst_stream code=REFUSED_STREAM path=/small.txt"
    try:
        async with h2proxy_running(origin.url, [rule], sink=sink) as proxy:
            async with H2Client(proxy.url) as c:
                big = await c.get("/1m.bin")              # 1 MiB before: mostly pushed out of the ring
                assert big.status == 200 and len(big.body) == 1 << 20
                assert (await c.get("/index.html")).status == 200
                hit = await c.get("/small.txt")
                assert hit.reset == "REFUSED_STREAM"
                after = await c.get("/index.html?after")
                assert after.status == 200
            assert not os.path.exists(path)               # nothing written but the dump
    finally:
        sink.close()
    records = _dump(path)
    head = records[0]
    assert head["record"] == "header" and head["ring"] == RING
    assert head["dump"]["reason"].startswith("fault rule") and head["dump"]["number"] == 1
    kinds = [r["record"] for r in records]
    mark = kinds.index("dump")
    fault = kinds.index("hook_action")
    assert fault < mark
    # The connection opened long before (its opening left the ring): restated at the top.
    assert kinds[1] == "connection_state" and records[1]["info"]["upstream_addr"].endswith(f":{origin.port}")
    # Before the trigger: the request answered just before (the 1 MiB one left the ring); around it the faulty
    # one (the rule acts as its HEADERS arrive); after it: the next request.
    assert _paths(records[:mark]) == ["/index.html"]
    assert _paths(records) == ["/index.html", "/small.txt", "/index.html?after"]
    assert "/index.html?after" in _paths(records[mark:])
    resets = [r for r in records if r["record"] == "frame" and r["type"] == "RST_STREAM"]
    assert any(r["fields"]["error"] == "REFUSED_STREAM" and r["leg"] == "client" and r["dir"] == "send"
               for r in resets)
    # The ring held at most RING bytes of frames before the trigger; the 1 MiB body is mostly gone.
    held = sum(len(base64.b64decode(r["wire"])) for r in records[:mark] if r.get("wire"))
    assert held <= RING
    # Every record of the dump is whole and the frames decode: text prints it.
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "log", "text", dump_path(path, 1)],
                         capture_output=True, text=True, check=True).stdout
    assert "*** flight recorder dump: fault rule" in out and "RST_STREAM frame" in out


async def test_post_record_dump(nghttpd, tmp_path):
    origin = nghttpd()
    path = str(tmp_path / "ring.jsonl.gz")
    sink = ProcessRecorder(path, ring=RING, ring_after=600)
    try:
        async with h2proxy_running(origin.url, sink=sink) as proxy:
            async with H2Client(proxy.url) as c:
                assert (await c.get("/index.html")).status == 200
            assert record_dump(sink, b"{not json")[0] == 400
            assert record_dump(sink, b"[1]")[0] == 400
            status, payload = record_dump(sink, json.dumps({"reason": "looked slow"}).encode())
            assert status == 202 and payload["dumping"] and payload["files"][0].endswith("ring-dump-NNNN.jsonl.gz")
            assert record_dump(None)[0] == 409
    finally:
        sink.close()
    records = _dump(path)
    assert records[0]["dump"]["reason"] == "POST /record/dump: looked slow"
    assert _paths(records) == ["/index.html"]
    assert [r["record"] for r in records].count("connection_closed") == 1


def test_sigusr1_dumps_the_ring(nghttpd, tmp_path):
    origin = nghttpd()
    port = free_port()
    path = str(tmp_path / "ring.jsonl")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{port}",
                              "--upstream", origin.url, "--record", path, "--record-ring", "1M"],
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, 20, proc=proxy)
        got = subprocess.run(["nghttp", "-n", f"http://127.0.0.1:{port}/small.txt"], capture_output=True, timeout=30)
        assert got.returncode == 0
        proxy.send_signal(signal.SIGUSR1)
        for line in proxy.stderr:
            if "flight recorder: SIGUSR1: writing" in line:
                break
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    records = _dump(path)
    assert records[0]["dump"]["reason"] == "SIGUSR1"
    assert _paths(records) == ["/small.txt"]


def _admin(port: int, token, host=None, body: bytes = b"") -> tuple:
    """POST /record/dump on the admin API: (status, JSON answer)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": host or f"127.0.0.1:{port}", "Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("POST", "/record/dump", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_post_record_dump_through_the_admin_api(nghttpd, tmp_path):
    """--admin with --record-ring serves POST /record/dump, behind the admin API's token and Host checks."""
    origin = nghttpd()
    port, admin_port = free_port(), free_port()
    token = "a-long-enough-admin-token-for-the-test"
    path = str(tmp_path / "ring.jsonl")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{port}",
                              "--upstream", origin.url, "--record", path, "--record-ring", "1M",
                              "--admin", f"127.0.0.1:{admin_port}", "--admin-token", token],
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, 20, proc=proxy)
        wait_port(admin_port, 20, proc=proxy)
        got = subprocess.run(["nghttp", "-n", f"http://127.0.0.1:{port}/small.txt"], capture_output=True, timeout=30)
        assert got.returncode == 0
        assert _admin(admin_port, None)[0] == 401
        assert _admin(admin_port, "wrong-token-wrong-token-wrong")[0] == 401
        assert _admin(admin_port, token, host=f"evil.example:{admin_port}")[0] == 403
        assert _admin(admin_port, token, body=b"[1]")[0] == 400
        assert not any(name.startswith("ring-dump") for name in os.listdir(tmp_path))
        status, payload = _admin(admin_port, token, body=json.dumps({"reason": "rare failure seen"}).encode())
        assert status == 202 and payload["dumping"], payload
        assert payload["reason"] == "POST /record/dump: rare failure seen"
        assert payload["files"] == [str(tmp_path / "ring-dump-NNNN.jsonl")]
        for line in proxy.stderr:
            if "flight recorder: POST /record/dump: rare failure seen: writing" in line:
                break
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    records = _dump(path)
    assert records[0]["dump"]["reason"] == "POST /record/dump: rare failure seen"
    assert _paths(records) == ["/small.txt"]
    assert not os.path.exists(dump_path(path, 2))


def test_triggers(tmp_path):
    """Violations, tripped limits and fault hits start a dump; other errors and hook actions do not."""
    path = str(tmp_path / "r.jsonl")
    said = []
    ring = FlightRecorder(path, 4096, after=0.0, announce=said.append)
    ring.handle(("connection_opened", 1, 1.0, {"client_addr": "127.0.0.1:1"}))
    ring.handle(("error", 1, 1.1, "upstream: connection reset"))
    ring.handle(("hook_action", 1, 1.2, "log", "noted", {}))
    assert ring.dumps == 0
    for n in range(100):        # more than the ring holds: the oldest leave
        ring.handle(("raw", n + 1, 1, "client", "recv", 1.3, b"x" * 100, "junk"))
    assert ring.ring_bytes <= 4096
    ring.handle(("error", 1, 2.0, "client: limit max_streams = 100 exceeded: 101 open"))
    assert ring.dumps == 1 and said and "limit max_streams" in said[0]
    ring.handle(("raw", 200, 1, "client", "recv", 3.0, b"later", "junk"))   # past the window: ends the dump
    ring.handle(("violation", 1, 4.0, "client", "5.1", "PROTOCOL_ERROR", "DATA on an idle stream"))
    ring.handle(("hook_action", 1, 5.0, "fault:slow", "delay", {}))
    ring.close()
    first, second, third = _dump(path, 1), _dump(path, 2), _dump(path, 3)
    assert first[1]["record"] == "connection_state"
    assert sum(1 for r in first if r["record"] == "raw") < 100
    assert second[0]["dump"]["reason"].startswith("violation by the client")
    assert third[0]["dump"]["reason"] == "fault rule slow (delay) on connection 1"


def test_an_hpack_bomb_is_a_violation_and_a_trigger(tmp_path):
    """The ring decodes header blocks with the proxy's max_header_list_size: a block that inflates past it
    is not decoded, and the violation it makes starts a dump that shows it."""
    from framecodec.hpack import Encoder
    enc = Encoder()
    first = enc.encode([(":method", "GET"), (":path", "/"), ("x-bomb", "b" * 1000)])
    bomb = bytes([0x80 | 62]) * 100                   # 100 references to the 1 kB entry: ~100 kB of headers

    def headers_frame(sid: int, block: bytes) -> bytes:
        return len(block).to_bytes(3, "big") + b"\x01\x05" + sid.to_bytes(4, "big") + block

    path = str(tmp_path / "r.jsonl")
    said = []
    ring = FlightRecorder(path, 1 << 20, after=0.0, announce=said.append, max_header_list_size=16384)
    ring.handle(("connection_opened", 1, 1.0, {"client_addr": "127.0.0.1:1"}))
    ring.handle(("frame", 1, 1, "client", "recv", 1.1, headers_frame(1, first), None, None, None, True))
    assert ring.dumps == 0
    ring.handle(("frame", 2, 1, "client", "recv", 1.2, headers_frame(3, bomb), None, None, None, True))
    assert ring.dumps == 1 and "max_header_list_size = 16384 exceeded" in said[0]
    ring.close()
    records = _dump(path)
    assert records[0]["dump"]["reason"].startswith("violation by the client on connection 1 (RFC 9113 6.5.2")
    assert [dict(map(tuple, r["headers"]))[":path"] for r in records if r.get("headers")] == ["/"]
    bomb_frame = [r for r in records if r["record"] == "frame" and r["stream"] == 3]
    assert len(bomb_frame) == 1 and "headers" not in bomb_frame[0]
    violation = [r for r in records if r["record"] == "violation"]
    assert len(violation) == 1 and "stream 3" in violation[0]["message"]
