"""Frame log format 2 and journal version 2: a frame forwarded unchanged is recorded once (its sent record
names the received one with ``wire_of``), every reader still rebuilds both sockets' bytes exactly, each
rotated file reads by itself, and large forwarded reads reach the log whole through the recorder pipe."""
from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys

from proxy.recording.decode import unb64
from proxy.recording.journal import JOURNAL_MAGIC, convert
from proxy.recording.logfile import connections, read_records
from proxy.recording.offload import ProcessRecorder
from proxy.recording.reader import LogReader
from proxy.recording.recorder import FORMAT_VERSION, JsonlRecorder
from proxy.recording.simulate import simulate

REQUESTS = [("GET", "/index.html", [("accept", "*/*")], b""),
            ("POST", "/echo", [("content-type", "text/plain")], b"hello"),
            ("GET", "/size/70000", [], b"")]


def _raw(path) -> list:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _data_frame(stream: int, payload: bytes, end: bool = False) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([0, 1 if end else 0]) + stream.to_bytes(4, "big") + payload


def test_a_forwarded_frame_is_recorded_once_and_read_back_whole(tmp_path):
    path = tmp_path / "log.jsonl"
    rec = JsonlRecorder(str(path))
    transcript: dict = {}
    simulate(rec, REQUESTS, transcript=transcript)
    rec.close()
    raw = _raw(path)
    assert raw[0]["version"] == FORMAT_VERSION == 2
    shared = [r for r in raw if "wire_of" in r]
    assert shared, "no sent frame shares the bytes of the frame it forwarded"
    by_seq = {r["seq"]: r for r in raw if "seq" in r}
    for r in shared:
        assert "wire" not in r and r["dir"] == "send" and r["wire_of"] == r["origin"]
        assert by_seq[r["wire_of"]]["dir"] == "recv" and "wire" in by_seq[r["wire_of"]]
    # The bytes are in the file about once: what the proxy received, not twice that.
    stored = sum(len(unb64(r["wire"])) for r in raw if "wire" in r)
    assert stored < 0.6 * sum(len(v) for v in transcript.values())
    # Every reader gets the records of a version 1 log: every byte record with its wire, no wire_of.
    records = read_records(str(path))
    assert not any("wire_of" in r for r in records)
    conn = connections(records)[1]
    for (leg, direction), data in transcript.items():
        assert conn.wire_bytes(leg, direction) == data, (leg, direction)
    # ... and so does grouping records parsed without the reader.
    raw_conn = connections(_raw(path))[1]
    for (leg, direction), data in transcript.items():
        assert raw_conn.wire_bytes(leg, direction) == data, (leg, direction)


def test_each_rotated_file_reads_by_itself(tmp_path):
    path = tmp_path / "frames.jsonl"
    rec = JsonlRecorder(str(path), rotate=3000)
    transcript: dict = {}
    simulate(rec, REQUESTS * 3, transcript=transcript)
    rec.close()
    files = rec.files
    assert len(files) >= 5
    for f in files[1:]:
        raw = _raw(f)
        first = next(r for r in raw if r["record"] in ("preface", "frame", "raw"))
        assert "wire" in first, (f, first)       # never a wire_of pointing into the previous file
        list(LogReader(f, progress=False))       # reads alone, no LogError
    conn = connections(list(LogReader(files[0], progress=False)))[1]
    for (leg, direction), data in transcript.items():
        assert conn.wire_bytes(leg, direction) == data, (leg, direction)


def test_a_wire_of_naming_another_record_is_one_clear_line(tmp_path):
    good = tmp_path / "good.jsonl"
    rec = JsonlRecorder(str(good))
    simulate(rec, REQUESTS[:1])
    rec.close()
    lines = good.read_text(encoding="utf-8").splitlines()
    n = next(i for i, line in enumerate(lines) if '"wire_of"' in line)
    spoiled = json.loads(lines[n])
    spoiled["wire_of"] = 1
    lines[n] = json.dumps(spoiled)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "log", "stats", str(bad)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    out = proc.stderr.strip().splitlines()
    assert len(out) == 1 and f"{bad}:{n + 1}:" in out[0] and "field 'wire_of' is 1" in out[0], out


def test_a_large_forwarded_read_reaches_the_log_whole_and_in_order(tmp_path):
    log = str(tmp_path / "big.jsonl")
    sink = ProcessRecorder(log)
    assert sink.direct_bytes <= 4 * 16384
    payloads = [bytes([i]) * 16384 for i in range(4)]
    frames = [_data_frame(1, p, end=i == 3) for i, p in enumerate(payloads)]
    before = _data_frame(1, b"before")
    after = _data_frame(1, b"after")
    sink.frame(1, "upstream", "recv", 1.0, before)
    # The relay's buffer: only valid during the call (spoiled right after it).
    buf = bytearray(b"".join(frames))
    view = memoryview(buf)
    wires, pos = [], 0
    for f in frames:
        wires.append(view[pos:pos + len(f)])
        pos += len(f)
    first = sink.forwarded(1, "upstream", "client", 2.0, wires)
    buf[:] = b"\xff" * len(buf)
    sink.frame(1, "upstream", "recv", 3.0, after)
    sink.close()
    assert not os.path.exists(log + ".journal")
    records = [r for r in read_records(log) if r["record"] == "frame"]
    got = [(r["seq"], r["leg"], r["dir"], unb64(r["wire"])) for r in records]
    expected = [(1, "upstream", "recv", before)]
    for i, f in enumerate(frames):
        expected += [(first + 2 * i, "upstream", "recv", f), (first + 2 * i + 1, "client", "send", f)]
    expected.append((first + 8, "upstream", "recv", after))
    assert got == expected


def test_a_version_1_journal_still_converts(tmp_path):
    log = tmp_path / "old.jsonl"
    journal = tmp_path / "old.jsonl.journal"
    head = json.dumps({"log": str(log), "options": {}, "header": {"started": "2026-01-01T00:00:00Z",
                                                                   "started_ts": 1767225600.0, "pid": 1}}).encode()
    frame = _data_frame(1, b"old journal", end=True)
    batch = pickle.dumps([("connection_opened", 1, 1.0, {}),
                          ("frame", 1, 1, "client", "recv", 1.0, frame, None, None, None, True),
                          ("connection_closed", 1, 2.0, "done", None)])
    assert JOURNAL_MAGIC != b"H2PJ\x01\n"
    journal.write_bytes(b"H2PJ\x01\n" + struct.pack(">I", len(head)) + head + struct.pack(">I", len(batch)) + batch
                        + struct.pack(">I", 0))
    assert convert(str(journal), quiet=True) == 0
    frames = [r for r in read_records(str(log)) if r["record"] == "frame"]
    assert [unb64(r["wire"]) for r in frames] == [frame]


def test_the_converter_waits_while_the_journal_grows_fast(tmp_path, monkeypatch):
    """The follower's yield_disk with a scripted clock and journal size: it waits while the journal grows
    faster than YIELD_RATE, and goes on as soon as the growth drops (or when asked to stop)."""
    from proxy.recording import journal as jmod
    path = tmp_path / "x.journal"
    path.write_bytes(b"")
    follower = jmod._Follower(str(path), os.getpid())
    clock = [100.0]
    # Journal sizes seen at each look: fast growth for four windows, then none.
    fast = int(jmod.YIELD_RATE * jmod.YIELD_WINDOW * 2)
    sizes = iter([fast, 2 * fast, 3 * fast, 4 * fast, 4 * fast, 4 * fast])
    sleeps = []
    monkeypatch.setattr(jmod.time, "monotonic", lambda: clock[0])

    def sleep(s):
        sleeps.append(s)
        clock[0] += s
    monkeypatch.setattr(jmod.time, "sleep", sleep)
    monkeypatch.setattr(follower, "_size", lambda: next(sizes))
    follower._mark = (clock[0], 0)
    clock[0] += jmod.YIELD_WINDOW
    follower.yield_disk()
    assert sleeps == [jmod.YIELD_WINDOW] * 4           # waited while it grew, not once more
    follower.stop = True
    follower._mark = (clock[0], 0)
    clock[0] += jmod.YIELD_WINDOW
    sizes = iter([10 * fast])
    monkeypatch.setattr(follower, "_size", lambda: next(sizes))
    follower.yield_disk()                               # growing fast, but a stop was asked: no wait
    assert len(sleeps) == 4
    follower.fh.close()
