"""Rotated (--record-rotate) and compressed (.gz, .zst) frame logs: each file stands alone, the series reads as
one log, and every converter reads them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from proxy.recording.cli import log_main
from proxy.recording.decode import HpackState, frame_record, unb64
from proxy.recording.logwriter import numbered_path, parse_size
from proxy.recording.reader import LogReader
from proxy.recording.recorder import JsonlRecorder
from proxy.recording.simulate import simulate

H2PROXY = [sys.executable, "-m", "proxy.cli"]
T0 = 1_700_000_000.0
ROTATE = 6000


def _record(path, rotate=None) -> JsonlRecorder:
    """Two connections, the first open across many files, with headers that fill the HPACK tables."""
    rec = JsonlRecorder(path, rotate=rotate)
    reqs = [("GET", f"/size/{50 * i}", [("x-request", f"r{i}" * 5), ("x-trace", str(i))], b"") for i in range(24)]
    simulate(rec, reqs, conn_id=1, t0=T0, ping=True, close=False)
    simulate(rec, [("POST", "/echo", [("content-type", "text/plain")], b"hello")], conn_id=2, t0=T0 + 1)
    rec.connection_closed(1, T0 + 2, "done")
    rec.close()
    return rec


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rot")
    plain = _record(d / "plain.jsonl")
    out = {"plain": plain.files}
    for name in ("frames.jsonl", "frames.jsonl.gz", "frames.jsonl.zst"):
        if name.endswith(".zst"):
            pytest.importorskip("zstandard")
        out[name] = _record(d / name, rotate=ROTATE).files
    out["whole.gz"] = _record(d / "whole.jsonl.gz").files
    return out


def _body(records):
    """The records that do not depend on when and how the log was written."""
    return [r for r in records if r["record"] not in ("header", "connection_state")]


def test_parse_size():
    assert parse_size("100M") == 100 << 20 and parse_size("512k") == 512 << 10 and parse_size("2GiB") == 2 << 30
    assert parse_size("4096") == 4096
    for bad in ("", "ten", "-1", "0", "5X"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert numbered_path("/a/frames.jsonl.gz", 3) == "/a/frames-000003.jsonl.gz"


@pytest.mark.parametrize("name", ["frames.jsonl", "frames.jsonl.gz", "frames.jsonl.zst"])
def test_rotated_series_reads_as_the_whole_log(logs, name):
    files = logs[name]
    assert len(files) >= 5 and files[0].endswith("-000001" + name[len("frames"):])
    whole = list(LogReader(logs["plain"][0], progress=False))
    # The first file brings the rest; so does naming them all.
    assert _body(LogReader(files[0], progress=False)) == _body(whole)
    assert _body(LogReader(files, progress=False)) == _body(whole)
    # Files are cut at record boundaries, around the size asked.
    for f in files[:-1]:
        raw = subprocess.run(["zcat" if f.endswith(".gz") else "cat", f], capture_output=True).stdout \
            if not f.endswith(".zst") else __import__("zstandard").ZstdDecompressor().decompressobj().decompress(
                open(f, "rb").read())
        assert raw.endswith(b"\n") and len(raw) >= ROTATE


@pytest.mark.parametrize("name", ["frames.jsonl", "frames.jsonl.gz"])
def test_each_file_alone_is_a_log_whose_header_blocks_decode(logs, name):
    """A reader of one file alone restores the HPACK tables from its connection_state records and decodes
    every header block in it to the headers the recorder wrote."""
    blocks = 0
    for n, f in enumerate(logs[name], 1):
        records = list(LogReader(f, progress=False))
        head = records[0]
        assert head["record"] == "header" and head["part"] == n and head["rotate"] == ROTATE
        hpack = HpackState()
        states = [r for r in records if r["record"] == "connection_state"]
        if n > 1:
            assert states and states[0]["info"]["client_addr"] == "127.0.0.1:50001"
        for st in states:
            hpack.restore(st["conn"], st["hpack"])
        for r in records:
            if r["record"] != "frame":
                continue
            again = frame_record(r["seq"], r["ts"], r["conn"], r["leg"], r["dir"], unb64(r["wire"]), hpack=hpack)
            if "headers" in r:
                assert again.get("headers") == r["headers"], (f, r["seq"])
                blocks += 1
        # Text prints each file by itself, connections opened earlier included.
        assert log_main(["text", f, "-o", os.devnull]) == 0
    assert blocks > 50


@pytest.mark.parametrize("name", ["frames.jsonl", "frames.jsonl.gz", "frames.jsonl.zst", "whole.gz"])
def test_every_converter_reads_rotated_and_compressed_logs(logs, name, tmp_path, capsys):
    plain = logs["plain"][0]
    first = logs[name][0]
    for cmd in (["text"], ["stats", "--json"]):
        assert log_main([cmd[0], plain, *cmd[1:], "-o", str(tmp_path / "a")]) == 0
        assert log_main([cmd[0], first, *cmd[1:], "-o", str(tmp_path / "b")]) == 0
        assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    for cmd in ("pcap", "har"):
        assert log_main([cmd, plain, "-o", str(tmp_path / "a")]) == 0
        assert log_main([cmd, first, "-o", str(tmp_path / "b")]) == 0
        assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    capsys.readouterr()
    # replay: the recorded server (from the rotated/compressed log) answers the recorded client (from the plain one)
    server = subprocess.Popen([*H2PROXY, "log", "replay", first, "--as", "server", "--listen", "h2c://127.0.0.1:0",
                               "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        m = re.search(r"listening on (h2c://\S+)", line)
        assert m, line
        client = subprocess.run([*H2PROXY, "log", "replay", plain, "--as", "client", "--to", m.group(1),
                                 "--timeout", "20"], capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stdout + client.stderr
        assert "result: 0 of 24 streams differ" in client.stdout
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_record_rotate_option(tmp_path):
    from proxy.cli import build_parser, merge_args
    from proxy.config import Config
    args = build_parser().parse_args(["--record", str(tmp_path / "f.jsonl"), "--record-rotate", "64M"])
    assert merge_args(Config(), args).record_rotate == 64 << 20
    bad = subprocess.run([*H2PROXY, "--record", str(tmp_path / "f.jsonl"), "--record-rotate", "lots"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a size" in bad.stderr
