"""The converters read logs as a stream: same results as in memory, filters, ``-o -``, progress on a terminal,
compressed logs, and (slow) bounded memory on a generated 1 GB log."""
from __future__ import annotations

import gzip
import json
import os
import pty
import subprocess
import sys

import pytest

from proxy.recording.biglog import template_lines, write_big_log
from proxy.recording.cli import log_main
from proxy.recording.logfile import connections, read_records
from proxy.recording.reader import LogError, LogReader, conn_filter, frame_type_filter
from proxy.recording.stats import compute_stats

H2PROXY = [sys.executable, "-m", "proxy.cli"]


@pytest.fixture(scope="module")
def template():
    return template_lines(requests=40, large_every=10)


@pytest.fixture(scope="module")
def multi_log(tmp_path_factory, template):
    """Three connections with their records interleaved."""
    path = tmp_path_factory.mktemp("stream") / "multi.jsonl"
    conns = write_big_log(str(path), 1, concurrency=3, template=template)
    assert conns == 3
    return path


def test_stats_streamed_matches_the_records(multi_log, capsys):
    records = read_records(str(multi_log))
    assert log_main(["stats", "--json", str(multi_log)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert [c["conn"] for c in stats["connections"]] == [1, 2, 3]
    by_conn = connections(records)
    for c in stats["connections"]:
        frames = by_conn[c["conn"]].frames("client")
        streams = {r["stream"] for r in frames if r["stream"]}
        assert sorted(int(s) for s in c["streams"]["client"]) == sorted(streams)
        for sid, st in c["streams"]["client"].items():
            mine = [r for r in frames if r["stream"] == int(sid)]
            assert sum(st["frames"].values()) == len(mine)
            assert st["data_bytes"] == sum(r["fields"].get("data_length", 0) for r in mine if r["type"] == "DATA")
            assert st["method"] == "GET" and st["status"] == "200"
    assert stats["total_frames"] == sum(1 for r in records if r["record"] == "frame")
    assert stats == json.loads(json.dumps(compute_stats(records)))


def test_text_filters_skip_lines_without_changing_the_output(multi_log, capsys):
    assert log_main(["text", str(multi_log), "--no-color"]) == 0
    everything = capsys.readouterr().out.splitlines()
    assert log_main(["text", str(multi_log), "--no-color", "--conn", "2", "--types", "HEADERS,GOAWAY"]) == 0
    some = capsys.readouterr().out.splitlines()
    assert some and all(line.startswith("c2 ") or line.startswith("   ") or line.startswith("c2") for line in some)
    frame_lines = [line for line in some if " frame <" in line]
    assert frame_lines and all("HEADERS frame" in line or "GOAWAY frame" in line for line in frame_lines)
    # Every line shown is one the unfiltered output has, in the same order.
    it = iter(everything)
    assert all(any(line == other for other in it) for line in some)


def test_line_filters_are_necessary_conditions():
    keep = conn_filter([3])
    assert keep(b'{"record":"frame","seq":1,"ts":1.0,"conn":3,"leg":"client"}')
    assert keep(b'{"record": "frame", "conn": 3}')
    assert not keep(b'{"record":"frame","seq":1,"ts":1.0,"conn":33,"leg":"client"}')
    assert keep(b'{"record":"header","format":"h2proxy-frame-log"}')
    types = frame_type_filter(["GOAWAY"])
    assert types(b'{"record":"frame","type":"GOAWAY"}') and not types(b'{"record":"frame","type":"DATA"}')
    assert types(b'{"record":"connection_closed","conn":1}')


def test_dash_o_writes_standard_output(multi_log, tmp_path):
    pcap = subprocess.run([*H2PROXY, "log", "pcap", str(multi_log), "-o", "-"], capture_output=True, check=True)
    assert pcap.stdout[:4] == b"\x0a\x0d\x0d\x0a" and b"TCP conversations" in pcap.stderr
    har = subprocess.run([*H2PROXY, "log", "har", str(multi_log), "-o", "-"], capture_output=True, check=True)
    entries = json.loads(har.stdout)["log"]["entries"]
    assert len(entries) == 3 * 40 and b"120 entries" in har.stderr
    assert [e["startedDateTime"] for e in entries] == sorted(e["startedDateTime"] for e in entries)
    for cmd in (["text"], ["stats"]):
        out = tmp_path / f"{cmd[0]}.txt"
        to_file = subprocess.run([*H2PROXY, "log", *cmd, str(multi_log), "-o", str(out)], capture_output=True,
                                 check=True)
        to_stdout = subprocess.run([*H2PROXY, "log", *cmd, str(multi_log), "-o", "-"], capture_output=True,
                                   check=True)
        assert to_file.stdout == b"" and out.read_bytes() == to_stdout.stdout and to_stdout.stdout


def test_progress_bar_only_on_a_terminal(multi_log):
    plain = subprocess.run([*H2PROXY, "log", "stats", str(multi_log), "-o", os.devnull], capture_output=True)
    assert plain.returncode == 0 and plain.stderr == b""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([*H2PROXY, "log", "stats", str(multi_log), "-o", os.devnull], stderr=follower,
                              stdout=subprocess.DEVNULL)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"log stats" in shown and b"B/s" in shown


def test_compressed_logs_are_read_by_name_and_by_content(multi_log, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    raw = multi_log.read_bytes()
    gz = tmp_path / "multi.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    zst = tmp_path / "multi.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    want = list(LogReader(str(multi_log), progress=False))
    assert list(LogReader(str(gz), progress=False)) == want
    assert list(LogReader(str(zst), progress=False)) == want
    piped = subprocess.run([*H2PROXY, "log", "stats", "-"], input=gzip.compress(raw), capture_output=True,
                           check=True)
    direct = subprocess.run([*H2PROXY, "log", "stats", str(multi_log)], capture_output=True, check=True)
    assert piped.stdout == direct.stdout


def test_a_log_cut_mid_line_is_read_up_to_the_cut(multi_log, tmp_path):
    raw = multi_log.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(raw[: len(raw) // 2])
    warnings = []
    records = list(LogReader(str(cut), warn=warnings.append, progress=False))
    assert records and any("not a JSON record" in w for w in warnings)
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(raw)[:-100])
    warnings = []
    assert list(LogReader(str(gz), warn=warnings.append, progress=False))
    assert warnings


def test_empty_log_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(LogError, match="no records"):
        list(LogReader(str(empty), progress=False))


#: The memory bound the converters keep whatever the size of the log (issue 19).
RSS_BOUND = 200 << 20


@pytest.mark.slow
def test_converters_on_a_1gb_log_stay_under_the_memory_bound(tmp_path):
    path = tmp_path / "big.jsonl"
    write_big_log(str(path), 1 << 30)
    assert path.stat().st_size >= 1 << 30
    for cmd in (["stats"], ["text", "--conn", "7", "--types", "GOAWAY"], ["har", "-o", os.devnull],
                ["pcap", "-o", os.devnull], ["text"]):
        out = open(os.devnull, "w")
        proc = subprocess.Popen([*H2PROXY, "log", cmd[0], str(path), *cmd[1:]], stdout=out,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        assert proc.returncode == 0, (cmd, proc.stderr.read())
        assert usage.ru_maxrss * 1024 < RSS_BOUND, (cmd, usage.ru_maxrss)


def _frame(seq, ts, d, ftype, sid, flags=0, headers=None, **fields):
    rec = {"record": "frame", "seq": seq, "ts": ts, "conn": 1, "leg": "client", "dir": d, "type": ftype,
           "type_byte": {"HEADERS": 1, "PUSH_PROMISE": 5, "DATA": 0}[ftype], "stream": sid, "flags": flags,
           "length": 10, "fields": fields}
    if headers is not None:
        rec["headers"] = headers
    return rec


def test_streamed_stats_push_promises_and_grpc_calls_after_the_close(capsys, tmp_path):
    """Streaming stats: a pushed stream gets its request from the PUSH_PROMISE and is done when its response
    ends; a grpc_call record written after its connection closed is counted in the table, not as a connection."""
    records = [
        {"record": "header", "format": "h2proxy-frame-log", "version": 1},
        {"record": "connection_opened", "ts": 1.0, "conn": 1, "info": {"client_addr": "127.0.0.1:1"}},
        _frame(1, 1.1, "recv", "HEADERS", 1, 0x5, [[":method", "POST"], [":path", "/p.S/M"],
                                                  ["content-type", "application/grpc"]]),
        _frame(2, 1.2, "send", "PUSH_PROMISE", 1, 0x4, [[":method", "GET"], [":path", "/pushed.css"]],
               promised_stream_id=2),
        _frame(3, 1.3, "send", "HEADERS", 1, 0x4, [[":status", "200"]]),
        _frame(4, 1.4, "send", "HEADERS", 2, 0x5, [[":status", "200"]]),
        _frame(5, 1.5, "send", "HEADERS", 1, 0x5, [["grpc-status", "0"]]),
        {"record": "connection_closed", "ts": 2.0, "conn": 1, "reason": "done"},
        {"record": "grpc_call", "ts": 2.0, "conn": 1, "stream": 1, "path": "/p.S/M", "status": 0,
         "messages": {"client->server": 1, "server->client": 1}, "duration_ms": 400.0},
    ]
    path = tmp_path / "push.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    stats = compute_stats(records)
    assert [c["conn"] for c in stats["connections"]] == [1]
    pushed = stats["connections"][0]["streams"]["client"]["2"]
    assert (pushed["pushed_by"], pushed["method"], pushed["path"], pushed["status"]) == (1, "GET", "/pushed.css",
                                                                                         "200")
    assert stats["connections"][0]["streams"]["client"]["1"]["path"] == "/p.S/M"
    assert stats["grpc_methods"]["/p.S/M"]["calls"] == 1
    assert log_main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stream 2 (pushed on stream 1): GET /pushed.css -> 200" in out
    assert "gRPC methods:" in out and out.rstrip().splitlines()[-1].startswith("total: 1 connections")
