"""``h2proxy log`` text, pcap, har and stats on logs made by the in-memory client/proxy/server."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from framecodec.frame import GoAwayFrame, RstStreamFrame
from proxy.recording.cli import log_main
from proxy.recording.har import build_har
from proxy.recording.logfile import read_records
from proxy.recording.recorder import JsonlRecorder
from proxy.recording.simulate import simulate

REQUESTS = [("GET", "/index.html?x=1&y=2", [("cookie", "a=1; b=2")], b""),
            ("POST", "/echo", [("content-type", "text/plain")], b"hello"),
            ("GET", "/size/20000", [], b"")]


def handler(method, path, headers, body):
    if path.startswith("/index.html"):
        return 200, [("content-type", "text/html"), ("set-cookie", "s=3; Path=/")], b"hello world\n"
    if path == "/echo":
        return 201, [("content-type", "text/plain")], body
    return 200, [("content-type", "application/octet-stream")], bytes(range(256)) * 78 + b"\xff" * 32


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("logs") / "sim.jsonl"
    rec = JsonlRecorder(path)
    simulate(rec, REQUESTS, handler, conn_id=1, t0=1_700_000_000.0, ping=True, close=False)
    t = 1_700_000_001.0
    # a reset and a GOAWAY from the server, relayed to the client
    for wire in (RstStreamFrame(5, error_code=8).serialize(),
                 GoAwayFrame(0, last_stream_id=5, error_code=0, additional_data=b"bye").serialize()):
        seq = rec.frame(1, "upstream", "recv", t, wire)
        rec.frame(1, "client", "send", t, wire, None, seq)
    rec.connection_closed(1, t + 0.5, "done")
    simulate(rec, REQUESTS[:1], handler, conn_id=2, t0=1_700_000_002.0,
             info={"client_addr": "127.0.0.1:50002", "listen_addr": "127.0.0.1:8080",
                   "upstream_addr": "127.0.0.1:9090", "client_tls": None, "upstream_tls": None, "mode": "reverse"})
    rec.close()
    return path


def test_text_command(log_path, capsys):
    assert log_main(["text", str(log_path), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "c1 client   [  0.001] recv connection preface <length=24>" in out
    assert "recv HEADERS frame <length=" in out and ":path: /index.html?x=1&y=2" in out
    assert "(error_code=CANCEL(0x08))" in out
    assert "(last_stream_id=5, error_code=NO_ERROR(0x00), opaque_data(3)=[bye])" in out
    assert "\033[" not in out and "00000000" not in out

    assert log_main(["text", str(log_path), "-vv", "--color", "--conn", "2", "--types", "HEADERS"]) == 0
    out = capsys.readouterr().out
    assert "\033[1;36m" in out and "c1 " not in out and "DATA frame" not in out
    assert "00000000  " in out


def test_pcap_is_dissected_by_tshark(log_path, tmp_path, capsys):
    out = tmp_path / "x.pcapng"
    assert log_main(["pcap", str(log_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tshark -r" in printed and "-d tcp.port==8080,http2" in printed and "-d tcp.port==9090,http2" in printed
    data = out.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0x0A0D0D0A and struct.unpack_from("<I", data, 8)[0] == 0x1A2B3C4D
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    cmd = ["tshark", "-r", str(out), "-d", "tcp.port==8080,http2", "-d", "tcp.port==9090,http2",
           "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-T", "fields", "-E", "separator=|", "-e", "tcp.stream", "-e", "http2.type", "-e", "http2.header.name",
           "-e", "http2.header.value", "-e", "frame.comment", "-e", "tcp.checksum.status", "-e", "ip.checksum.status",
           "-e", "tcp.analysis.flags"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|") for line in res.stdout.splitlines()]
    types = set()
    names = set()
    values = set()
    comments = []
    for _stream, ftype, hname, hvalue, comment, tcp_ok, ip_ok, analysis in rows:
        types.update(t for t in ftype.split(",") if t)
        names.update(hname.split(","))
        values.update(hvalue.split(","))
        if comment:
            comments.append(comment)
        assert tcp_ok == "1" and ip_ok == "1"          # checksums verified good
        assert analysis == ""                           # no retransmissions, lost segments or bad ACKs
    # DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY
    assert {"0", "1", "3", "4", "6", "7"} <= types
    assert {":path", ":method", ":status", "content-type"} <= names
    assert "/index.html?x=1&y=2" in values and "/echo" in values
    assert {r.split("|")[0] for r in res.stdout.splitlines()} == {"0", "1", "2", "3"}   # 2 connections x 2 legs
    records = read_records(str(log_path))
    n = sum(1 for r in records if r["record"] in ("preface", "frame", "raw"))
    assert len(comments) == n
    assert any(c.startswith("seq=1 conn=1 leg=client") for c in comments)


def test_har(log_path, tmp_path, capsys):
    out = tmp_path / "x.har"
    assert log_main(["har", str(log_path), "-o", str(out)]) == 0
    har = json.loads(out.read_text())
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "h2proxy"
    entries = log["entries"]
    assert len(entries) == 4
    for e in entries:
        for key in ("startedDateTime", "time", "request", "response", "cache", "timings"):
            assert key in e
        for key in ("method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"):
            assert key in e["request"]
        for key in ("status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                    "headersSize", "bodySize"):
            assert key in e["response"]
        t = e["timings"]
        assert t["send"] >= 0 and t["wait"] >= 0 and t["receive"] >= 0
        assert abs(e["time"] - (t["send"] + t["wait"] + t["receive"])) < 0.01
    first = entries[0]
    assert first["request"]["url"] == "http://127.0.0.1:8080/index.html?x=1&y=2"
    assert first["request"]["queryString"] == [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]
    assert first["request"]["cookies"] == [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]
    assert first["response"]["status"] == 200
    assert first["response"]["content"] == {"size": 12, "mimeType": "text/html", "text": "hello world\n"}
    assert first["response"]["cookies"] == [{"name": "s", "value": "3"}]
    assert first["startedDateTime"].startswith("2023-11-14T22:13:20")
    post = entries[1]
    assert post["request"]["method"] == "POST" and post["request"]["postData"]["text"] == "hello"
    assert post["response"]["status"] == 201 and post["request"]["bodySize"] == 5
    binary = entries[2]
    assert binary["response"]["content"]["encoding"] == "base64"
    assert binary["response"]["content"]["size"] == 20000 and binary["response"]["bodySize"] == 20000
    assert "reset by the server: CANCEL" in binary.get("comment", "")
    upstream = build_har(read_records(str(log_path)), leg="upstream")
    assert len(upstream["log"]["entries"]) == 4
    assert upstream["log"]["entries"][0]["serverIPAddress"] == "127.0.0.1"


def test_stats(log_path, capsys):
    assert log_main(["stats", str(log_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    records = read_records(str(log_path))
    c1, c2 = stats["connections"]
    assert c1["conn"] == 1 and c2["conn"] == 2
    frames = [r for r in records if r["record"] == "frame" and r["conn"] == 1]
    for key in ("client recv", "client send", "upstream recv", "upstream send"):
        leg, d = key.split()
        mine = [r for r in frames if r["leg"] == leg and r["dir"] == d]
        assert c1["legs"][key]["frames"] == len(mine)
        assert sum(c1["legs"][key]["types"].values()) == len(mine)
        assert c1["legs"][key]["bytes"] == sum(9 + r["length"] for r in mine) + (24 if key in ("client recv",
                                                                                              "upstream send") else 0)
    assert c1["legs"]["client send"]["types"]["RST_STREAM"] == 1
    assert c1["resets"][0]["code"] == "CANCEL" and c1["resets"][0]["stream"] == 5
    assert {g["by"] for g in c1["goaways"]} == {"server", "proxy to client"}
    assert all(g["code"] == "NO_ERROR" and g["last_stream_id"] == 5 for g in c1["goaways"])
    pings = {p["leg"]: p for p in c1["pings"]}
    assert pings["client"]["sent_by"] == "client" and pings["client"]["opaque"] == b"pingpong".hex()
    assert pings["client"]["rtt_ms"] == pytest.approx(1.0, abs=0.01)        # the simulation's clock step
    assert pings["upstream"]["sent_by"] == "proxy to upstream"
    assert c1["settings"]["client"]["SETTINGS_ENABLE_PUSH"] == 1
    assert c1["settings"]["server"]["SETTINGS_ENABLE_PUSH"] == 0
    s1 = c1["streams"]["client"]["1"]
    assert s1["method"] == "GET" and s1["status"] == "200" and s1["data_bytes"] == 12
    assert s1["frames"] == {"HEADERS": 2, "DATA": 1} and s1["duration_ms"] > 0
    s5 = c1["streams"]["client"]["5"]
    assert s5["reset"] == {"by": "proxy to client", "code": "CANCEL"}
    assert c1["duration_ms"] == pytest.approx((c1["end"] - c1["start"]) * 1000, abs=0.01)
    assert stats["total_frames"] == sum(1 for r in records if r["record"] == "frame")

    assert log_main(["stats", str(log_path)]) == 0
    text = capsys.readouterr().out
    assert "connection 1: 127.0.0.1:50001 -> 127.0.0.1:8080 -> 127.0.0.1:9090" in text
    assert "RST_STREAM from the proxy to client on stream 5: CANCEL" in text
    assert "PING on the client leg from the client" in text
    assert "stream 1: GET /index.html?x=1&y=2 -> 200" in text


def test_cli_errors(tmp_path, capsys):
    assert log_main(["stats", str(tmp_path / "missing.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record": "header", "format": "something-else", "version": 1}\n')
    assert log_main(["text", str(bad)]) == 2
    assert "not an h2proxy frame log" in capsys.readouterr().err
    assert log_main([]) == 2
    assert log_main(["--help"]) == 0


async def test_stats_and_replay_give_pushed_streams_their_own_status(proxy_factory, tmp_path):
    """nghttp against the demo origin's /push through a recording proxy: the PUSH_PROMISE's block is the
    promised stream's request, not a response block of the stream it came on (issue 13, item 7)."""
    import io

    from proxy.demo_origin import DemoOrigin
    from proxy.recording.logfile import read_records
    from proxy.recording.recorder import JsonlRecorder
    from proxy.recording.replay import replay_client
    from proxy.recording.stats import compute_stats, format_stats
    from tests.peers import need, nghttp
    need("nghttp")
    origin = DemoOrigin()
    await origin.start()
    try:
        log_path = tmp_path / "push.jsonl"
        recorder = JsonlRecorder(str(log_path))
        px = await proxy_factory(origin.url, sink=recorder)
        rc, out = await nghttp("-n", f"http://127.0.0.1:{px.port}/push")
        assert rc == 0, out
        await px.stop(grace=0.5)
        recorder.close()
        records = read_records(str(log_path))
        stats = compute_stats(records)
        streams = stats["connections"][0]["streams"]["client"]
        pushed = [st for st in streams.values() if st["pushed_by"]]
        parent = [st for st in streams.values() if st["path"] == "/push"]
        assert len(pushed) == 1 and len(parent) == 1
        assert (pushed[0]["method"], pushed[0]["path"], pushed[0]["status"]) == ("GET", "/pushed.css", "200")
        assert parent[0]["status"] == "200"
        text = format_stats(stats)
        assert "? ->" not in text and "GET /pushed.css -> 200" in text, text
        report = io.StringIO()
        assert await replay_client(records, origin.url, out=report) == 0, report.getvalue()
        lines = report.getvalue().splitlines()
        assert any(line.endswith("GET /push: same (200, 537 body bytes, PUSH_PROMISE HEADERS DATA)")
                   for line in lines), lines
        assert any("GET /pushed.css (pushed): same (200," in line for line in lines), lines
    finally:
        await origin.stop()
