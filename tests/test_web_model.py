"""The web view's model, fed by a real proxy and real peers: fingerprints, streams, windows, stalls,
bounds; and the page's routes behind the admin API's token and Host checks."""
from __future__ import annotations

import asyncio
import json
import re
from contextlib import asynccontextmanager
from typing import AsyncIterator, Tuple

import pytest

from proxy.faults import FaultHook
from proxy.faults.admin import AdminServer
from proxy.testing import RunningProxy, h2proxy_running
from proxy.web.app import WebView
from proxy.web.model import Limits, WebModel
from proxy.web.sink import WebSink
from tests.peers import h2load, http_url, nghttp, run

pytestmark = pytest.mark.peers


#: A fault rule withholding the WINDOW_UPDATEs towards the server for 800 ms once it sends DATA: a server stall.
SERVER_STALL = "stall towards=server type=data direction=s2c ms=800 name=slow"


async def download_with_server_stall(origin, sink) -> str:
    """nghttp -nv gets /size/300000 through a proxy with :data:`SERVER_STALL` recording into ``sink``
    (closed afterwards); nghttp's output."""
    try:
        async with h2proxy_running(origin.url, [SERVER_STALL], sink=sink) as proxy:
            rc, out = await nghttp("-nv", http_url(proxy) + "/size/300000")
            assert rc == 0
    finally:
        sink.close()
    return out


@asynccontextmanager
async def web_proxy(upstream: str, faults=(), **model_options) -> AsyncIterator[Tuple[RunningProxy, WebModel]]:
    """A proxy to ``upstream`` feeding a fresh live WebModel through a WebSink: (proxy, model).

    On leaving the block the proxy is stopped and the sink must have handed every record to the model.
    """
    model = WebModel("live", **model_options)
    sink = WebSink(model, rate=2000, burst=10000, cpu_share=1.0)
    try:
        async with h2proxy_running(upstream, faults, sink=sink) as proxy:
            yield proxy, model
        assert sink.flush()
    finally:
        sink.close()


def expected_fingerprint(nghttp_out: str) -> str:
    """The client's Akamai fingerprint, from what ``nghttp -nv`` says it sent."""
    settings, prios, pseudo, wu = [], [], [], "00"
    lines = nghttp_out.splitlines()
    seen_headers = False
    for i, line in enumerate(lines):
        if "send SETTINGS frame" in line and not settings and "flags=0x01" not in line:
            for follow in lines[i + 1:]:
                m = re.search(r"\[SETTINGS_\w+\((0x[0-9a-f]+)\):(\d+)\]", follow)
                if m:
                    settings.append(f"{int(m.group(1), 16)}:{m.group(2)}")
                elif not follow.startswith(" ") or "(niv=" not in follow and settings:
                    break
        elif "send PRIORITY frame" in line and not seen_headers:
            sid = re.search(r"stream_id=(\d+)", line).group(1)
            m = re.search(r"dep_stream_id=(\d+), weight=(\d+), exclusive=(\d)", lines[i + 1])
            prios.append(f"{sid}:{m.group(3)}:{m.group(1)}:{m.group(2)}")
        elif "send WINDOW_UPDATE frame" in line and "stream_id=0" in line and not seen_headers and wu == "00":
            wu = re.search(r"window_size_increment=(\d+)", lines[i + 1]).group(1)
        elif "send HEADERS frame" in line and not seen_headers:
            seen_headers = True
            for follow in lines[i + 1:]:
                m = re.match(r"\s+(:\w+): ", follow)
                if m:
                    pseudo.append({":method": "m", ":authority": "a", ":scheme": "s", ":path": "p"}[m.group(1)])
                elif pseudo and not follow.strip().startswith(("; ", "(")) and not re.match(r"\s+[\w-]+: ", follow):
                    break
    return f"{';'.join(settings)}|{wu}|{','.join(prios) or '0'}|{','.join(pseudo)}"


async def test_fingerprints_streams_and_windows_of_an_nghttp_download(origin):
    async with web_proxy(origin.url) as (proxy, model):
        rc, out = await nghttp("-nv", http_url(proxy) + "/size/200000")
        assert rc == 0, out
    (conn,) = model.snapshot()["conns"]
    detail = model.connection(conn["id"])
    fp = detail["fingerprints"]
    assert fp["client"]["text"] == expected_fingerprint(out)
    assert fp["client"]["settings"][0][0] == 3 and fp["client"]["text"].endswith("|m,p,s,a")
    assert fp["proxy to upstream"]["settings"] == fp["client"]["settings"]
    assert fp["server"]["text"].endswith("|st")
    (stream,) = [s for s in detail["streams"] if s["path"] == "/size/200000"]
    assert stream["method"] == "GET" and stream["status"] == "200" and stream["resp_bytes"] == 200000
    assert stream["ended"] == "END_STREAM" and stream["duration_ms"] >= 0
    assert detail["summary"]["state"] == "closed" and detail["summary"]["closed"]
    # nghttp's 64 KiB window: the server's and the proxy's send windows went down and came back
    assert min(v for _, v in detail["windows"]["proxy to client"]) < 65535
    swin = model.stream(conn["id"], stream["id"])["windows"]
    assert set(swin) >= {"proxy to client", "server"}
    assert detail["stalls"] == []
    frames = model.stream(conn["id"], stream["id"])["frames"]
    legs = {(f["leg"], f["dir"], f["type"]) for f in frames}
    assert {("client", "recv", "HEADERS"), ("upstream", "send", "HEADERS"), ("upstream", "recv", "DATA"),
            ("client", "send", "DATA")} <= legs
    headers = next(f for f in frames if f["type"] == "HEADERS" and f["leg"] == "client" and f["dir"] == "recv")
    assert [":path", "/size/200000"] in headers["headers"] and headers["wire"]


async def test_a_stall_fault_shows_as_a_stall_of_the_server(origin):
    async with web_proxy(origin.url, [SERVER_STALL], stall_threshold=0.3) as (proxy, model):
        rc, out = await nghttp("-n", http_url(proxy) + "/size/300000")
        assert rc == 0, out
    (conn,) = model.snapshot()["conns"]
    detail = model.connection(conn["id"])
    stalls = [s for s in detail["stalls"] if s["side"] == "server"]
    assert stalls, detail["stalls"]
    assert stalls[0]["duration_ms"] >= 600 and stalls[0]["ended_by"] == "WINDOW_UPDATE"
    assert any(h["hook"] == "fault:slow" for h in detail["hooks"])
    assert not [s for s in detail["stalls"] if s["side"] == "client"]


async def test_the_model_stays_bounded_under_h2load(origin):
    limits = Limits(max_conns=3, conn_frames=50, closed_conn_frames=10, stream_frames=5, overall_frames=100,
                    max_streams=20)
    async with web_proxy(origin.url, limits=limits) as (proxy, model):
        result = await h2load(http_url(proxy) + "/size/100", n=400, c=5, m=4)
        assert result["succeeded"] == 400, result.output
    snap = model.snapshot()
    assert len(snap["conns"]) == 3 and model.evicted == 2
    assert len(snap["frames"]) == 100 and snap["cursor"] > 1000     # 3 of the 5 connections are kept
    for c in snap["conns"]:
        detail = model.connection(c["id"])
        assert len(detail["streams"]) <= 20 and len(detail["frames"]) <= 10
        assert c["frames"] > 100        # counts are kept whole
        for s in detail["streams"]:
            assert len(model.stream(c["id"], s["id"])["frames"]) <= 5


async def _get(port, path, token=None, host=None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    w.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


async def test_page_and_data_routes_keep_the_admin_checks():
    model = WebModel("live")
    server = AdminServer("127.0.0.1:0", "tok", FaultHook(), announce=False, extensions=[WebView(model)])
    await server.start()
    try:
        p = server.port
        status, head, body = await _get(p, "/")
        assert status == 200 and b"<script src=\"/static/app.js\">" in body and "text/html" in head
        status, _, body = await _get(p, "/static/app.js")
        assert status == 200 and b"/api/web/events" in body
        status, _, _ = await _get(p, "/", host=f"evil.example:{p}")
        assert status == 403
        for path in ("/api/web/snapshot", "/api/web/conn/1", "/api/web/events", "/faults"):
            status, _, _ = await _get(p, path)
            assert status == 401, path
            status, _, _ = await _get(p, path, token="tok", host=f"attacker.test:{p}")
            assert status == 403, path
        status, _, body = await _get(p, "/api/web/snapshot", token="tok")
        assert status == 200 and json.loads(body)["mode"] == "live"
        status, _, body = await _get(p, "/api/web/conn/7", token="tok")
        assert status == 404 and "no connection 7" in json.loads(body)["error"]
        status, _, body = await _get(p, "/api/web/conn/x/stream/1", token="tok")
        assert status == 400 and "'x'" in json.loads(body)["error"]
        status, _, body = await _get(p, "/api/web/events?version=soon", token="tok")
        assert status == 400 and "integers" in json.loads(body)["error"]
        status, _, body = await _get(p, "/static/../model.py", token="tok")
        assert status == 404 and b"import" not in body
        status, _, body = await _get(p, "/static/%2e%2e%2fmodel.py", token="tok")
        assert status == 404 and b"import" not in body
    finally:
        await server.stop()


async def test_log_stats_prints_fingerprints_and_stalls(origin, tmp_path):
    from proxy.recording.recorder import JsonlRecorder
    log = tmp_path / "frames.jsonl"
    out = await download_with_server_stall(origin, JsonlRecorder(log))
    import sys
    rc, text = await run(sys.executable, "-m", "proxy.cli", "log", "stats", str(log))
    assert rc == 0, text
    assert f"fingerprint of the client: {expected_fingerprint(out)}" in text, text
    assert re.search(r"stall: the server held stream 13 at a zero (stream|connection) window for \d+ ms", text), text
    rc, js = await run(sys.executable, "-m", "proxy.cli", "log", "stats", "--json", str(log))
    c = json.loads(js)["connections"][0]
    assert c["fingerprints"]["client"] == expected_fingerprint(out)
    assert c["stalls"] and c["stalls"][0]["side"] == "server"


async def test_the_end_of_verbose_output_prints_fingerprints_and_stalls(origin):
    import io

    from proxy.recording.text import LivePrinter
    out_text = io.StringIO()
    out = await download_with_server_stall(origin, LivePrinter(out_text, verbosity=1, color=False))
    text = out_text.getvalue()
    tail = text[text.index("h2proxy: fingerprints (Akamai format) and window stalls:"):]
    assert f"  fingerprint of the client: {expected_fingerprint(out)}" in tail, tail
    assert re.search(r"stall: the server held stream 13 at a zero \w+ window for \d+ ms \(ended by WINDOW_UPDATE\)",
                     tail), tail


async def test_over_its_budget_the_sink_counts_frames_and_marks_the_connection_sampled(origin, tmp_path):
    from proxy.recording.logfile import read_records
    from proxy.recording.recorder import JsonlRecorder
    from proxy.recording.sink import MultiSink
    from proxy.recording.stats import compute_stats
    model = WebModel("live")
    web = WebSink(model, rate=50, burst=300, cpu_share=1.0)
    rec = JsonlRecorder(tmp_path / "frames.jsonl")
    try:
        async with h2proxy_running(origin.url, sink=MultiSink([rec, web])) as proxy:
            result = await h2load(http_url(proxy) + "/size/100", n=300, c=1, m=10)
            assert result["succeeded"] == 300, result.output
        web.flush()
    finally:
        web.close()
        rec.close()
    (conn,) = model.snapshot()["conns"]
    stats = compute_stats(read_records(str(tmp_path / "frames.jsonl")))["connections"][0]
    assert conn["frames"] == sum(slot["frames"] for slot in stats["legs"].values())     # counted, all of them
    assert conn["sampled"] and conn["skipped_frames"] > 1000
    detail = model.connection(conn["id"])
    assert detail["windows_stopped"] == conn["sampled"] and detail["stalls"] == []
    assert len(detail["streams"]) < 300          # the streams past the budget were not seen
    assert detail["fingerprints"]["client"]["text"]      # what came before the budget ran out is whole


async def grpc_say(target: str, *messages: bytes) -> list:
    """Call /demo.Echo/Say through ``target`` (HOST:PORT) with a grpcio client, once per message."""
    import grpc
    async with grpc.aio.insecure_channel(target) as channel:
        say = channel.unary_unary("/demo.Echo/Say")
        return [await say(m, timeout=10) for m in messages]


async def test_grpc_messages_are_read_from_the_data_frames(grpc_echo):
    model = WebModel("live")
    sink = WebSink(model, rate=2000, burst=10000, cpu_share=1.0)
    try:
        async with h2proxy_running(grpc_echo, sink=sink) as proxy:
            answers = await grpc_say(proxy.url.split("://")[-1], b"web view", b"x" * 1000)
            assert answers == [b"hello web view", b"hello " + b"x" * 1000]
        sink.flush()
    finally:
        sink.close()
    (conn,) = model.snapshot()["conns"]
    first, second = model.connection(conn["id"])["streams"]
    assert first["path"] == "/demo.Echo/Say" and first["grpc_status"] == "0" and first["ended"] == "END_STREAM"
    assert first["grpc_messages"]["client"]["messages"][0] == {**first["grpc_messages"]["client"]["messages"][0],
                                                               "length": 8, "preview": b"web view".hex()}
    assert first["grpc_messages"]["proxy to client"]["messages"][0]["preview"] == b"hello web view".hex()
    assert second["grpc_messages"]["client"]["messages"][0]["length"] == 1000
    assert second["grpc_messages"]["client"]["count"] == 1 and not second["grpc_messages"]["client"]["lost"]


async def test_a_connection_over_the_budget_is_detached_and_runs_at_full_speed(origin):
    model = WebModel("live")
    web = WebSink(model, rate=50, burst=300, cpu_share=1.0)
    try:
        async with h2proxy_running(origin.url, sink=web) as proxy:
            result = await h2load(http_url(proxy) + "/size/100", n=500, c=2, m=10)
            assert result["succeeded"] == 500, result.output
            web.flush()
            conns = model.snapshot()["conns"]
            assert len(conns) == 2 and all(c["state"] == "not followed" and c["detached"] for c in conns), conns
            assert not web.relays                   # nothing kept of the detached relays
            # a new connection is followed again once the budget refilled
            web._tokens = web.burst
            rc, out = await nghttp("-n", http_url(proxy) + "/size/10")
            assert rc == 0, out
        web.flush()
    finally:
        web.close()
    third = model.snapshot()["conns"][-1]
    assert third["state"] == "closed" and not third["sampled"] and third["streams"] >= 1


@pytest.mark.parametrize("args, words", [
    (["--web", "0.0.0.0:0"], ["loopback only"]),
    (["--web", "127.0.0.1:0", "--workers", "2"], ["--web cannot be combined with --workers"]),
])
async def test_cli_refuses_a_web_view_it_cannot_serve_safely(args, words):
    import sys

    from tests.peers import free_port
    rc, text = await run(sys.executable, "-m", "proxy.cli", "--listen", f"h2c://127.0.0.1:{free_port()}",
                         "--upstream", "h2c://127.0.0.1:1", *args, timeout=30)
    assert rc == 2, text
    for w in words:
        assert w in text, text


async def test_with_no_page_following_the_frames_wait_unprocessed_until_a_read_asks(origin):
    model = WebModel("live")
    sink = WebSink(model)               # the proxy's defaults
    try:
        async with h2proxy_running(origin.url, sink=sink) as proxy:
            rc, out = await nghttp("-n", http_url(proxy) + "/size/1000")
            assert rc == 0, out
        sink._tick()                    # a slice of the event loop: no page follows, so nothing is built
        assert sink._queue and not model.conns and model.frames_total == 0
        model.readers += 1              # a page follows: the next slice builds records
        sink._tick()
        assert model.conns
        model.readers -= 1
        (conn,) = model.snapshot()["conns"]                                   # a read catches up on the rest
        assert not sink._queue and conn["state"] == "closed" and conn["streams"] >= 1
        assert conn["fingerprints"]["client"]
    finally:
        sink.close()


async def test_a_server_push_the_proxy_renumbered_is_one_stream_under_its_client_id(nghttpd):
    """Once the proxy has pushed on a connection, the server's pushes get new ids towards the client
    (docs/hooks.md): the page shows each pushed stream once, under the id the client saw, with the
    frames of both legs and its request line from the promise."""
    from proxy.hooks.builtin.push import PushHook
    server = nghttpd(extra=["-p", "/index.html=/small.txt"])
    push = PushHook(rules=[{"path": "/index.html", "push": [{"path": "/own.css", "body": "a{}"}]}], when="request")
    model = WebModel("live")
    sink = WebSink(model, rate=2000, burst=10000, cpu_share=1.0)
    try:
        async with h2proxy_running(server.url, hooks=[push], sink=sink) as proxy:
            rc, out = await nghttp("-nv", http_url(proxy) + "/index.html")
            assert rc == 0, out
        assert sink.flush()
    finally:
        sink.close()
    # What nghttp saw: the proxy's push on 2, nghttpd's (its stream 2) on 4.
    assert sorted(re.findall(r"promised_stream_id=(\d+)", out)) == ["2", "4"]
    (conn,) = model.snapshot()["conns"]
    streams = {s["id"]: s for s in model.connection(conn["id"])["streams"] if s["ended"] != "idle (PRIORITY only)"}
    assert sorted(streams) == [2, 4, 13], streams      # (nghttp's request is 13, after its PRIORITY anchors)
    assert streams[2]["path"] == "/own.css" and streams[4]["path"] == "/small.txt"
    assert streams[4]["resp_bytes"] == 1024 and streams[2]["resp_bytes"] == 3
    assert streams[2]["ended"] == streams[4]["ended"] == "END_STREAM"
    frames = model.stream(conn["id"], 4)["frames"]
    legs = {(f["leg"], f["dir"], f["type"], f["stream"]) for f in frames}
    assert {("upstream", "recv", "HEADERS", 2), ("upstream", "recv", "DATA", 2), ("client", "send", "HEADERS", 4),
            ("client", "send", "DATA", 4)} <= legs, legs
    assert not [f for f in model.stream(conn["id"], 2)["frames"] if f["leg"] == "upstream"]
