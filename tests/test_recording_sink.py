"""Frame logs: the sink interface, the JSON Lines recorder and the text renderer."""
from __future__ import annotations

import base64
import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framecodec.frame import (
    AltSvcFrame,
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from proxy.recording.logfile import connections, read_records
from proxy.recording.recorder import FORMAT_NAME, FORMAT_VERSION, JsonlRecorder
from proxy.recording.simulate import simulate
from proxy.recording.sink import FrameSink, MultiSink
from proxy.recording.text import LivePrinter, Renderer

REQUESTS = [("GET", "/index.html", [("accept", "*/*")], b""),
            ("POST", "/echo", [("content-type", "text/plain")], b"hello"),
            ("GET", "/size/70000", [], b""),
            ("GET", "/missing", [], b"")]


def _lines(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _record(tmp_path, name="log.jsonl", **kw):
    path = tmp_path / name
    return path, JsonlRecorder(path, **kw)


# ---------------------------------------------------------------- the recorder


def test_header_record_and_wire_invariant(tmp_path):
    path, rec = _record(tmp_path)
    transcript = {}
    results = simulate(rec, REQUESTS, ping=True, transcript=transcript)
    rec.close()
    assert results[1]["status"] == 200 and len(results[5]["body"]) == 70000
    records = _lines(path)
    head = records[0]
    assert head["record"] == "header" and head["format"] == FORMAT_NAME and head["version"] == FORMAT_VERSION
    assert head["tool_version"] and head["started"].endswith("Z") and isinstance(head["started_ts"], float)
    kinds = [r["record"] for r in records]
    assert kinds[1] == "connection_opened" and kinds[-1] == "connection_closed"
    # The invariant: the wire bytes of each (conn, leg, dir), in order, are exactly what went over that socket.
    conn = connections(records)[1]
    assert set(transcript) == {("client", "recv"), ("client", "send"), ("upstream", "recv"), ("upstream", "send")}
    for (leg, direction), data in transcript.items():
        assert conn.wire_bytes(leg, direction) == data, (leg, direction)
    # seq numbers are unique and increasing; sent frames point at the received one they came from.
    seqs = [r["seq"] for r in records if "seq" in r]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    by_seq = {r["seq"]: r for r in records if "seq" in r}
    sent = [r for r in records if r["record"] == "frame" and r["dir"] == "send"]
    assert sent and all(by_seq[r["origin"]]["dir"] == "recv" and by_seq[r["origin"]]["wire"] == r["wire"]
                        for r in sent)


def test_headers_are_decoded_on_every_leg(tmp_path):
    path, rec = _record(tmp_path)
    simulate(rec, REQUESTS[:2])
    rec.close()
    frames = [r for r in _lines(path) if r["record"] == "frame" and r["type"] == "HEADERS"]
    # requests on the client leg (recv) and the upstream leg (send), responses the other way
    for leg, direction in (("client", "recv"), ("upstream", "send")):
        got = [dict(map(tuple, r["headers"])) for r in frames if r["leg"] == leg and r["dir"] == direction]
        assert [(h[":method"], h[":path"]) for h in got] == [("GET", "/index.html"), ("POST", "/echo")]
        assert got[0]["accept"] == "*/*"
    for leg, direction in (("upstream", "recv"), ("client", "send")):
        got = [dict(map(tuple, r["headers"])) for r in frames if r["leg"] == leg and r["dir"] == direction]
        assert [h[":status"] for h in got] == ["200", "200"]


def _feed(rec, frames, conn=1, leg="client", direction="recv"):
    return [rec.frame(conn, leg, direction, 1000.0 + i, wire) for i, wire in enumerate(frames)]


def test_decoded_fields_per_type(tmp_path):
    from hpack import Encoder
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/a"), (":scheme", "https"), (":authority", "x")])
    settings_wire = bytes.fromhex("000012 04 00 00000000") + bytes.fromhex(
        "0003 00000064" "0004 0000ffff" "0003 000000c8")          # a duplicate, kept in order
    unknown_setting = bytes.fromhex("000006 04 00 00000000 00ff 00000007")
    frames = [
        DataFrame(1, data=b"abc", pad_length=4, flags=["PADDED", "END_STREAM"]).serialize(),
        HeadersFrame(3, data=block[:5], depends_on=1, stream_weight=255, exclusive=True,
                     flags=["PRIORITY", "END_STREAM"]).serialize(),
        ContinuationFrame(3, data=block[5:], flags=["END_HEADERS"]).serialize(),
        PriorityFrame(5, depends_on=3, stream_weight=0, exclusive=False).serialize(),
        RstStreamFrame(3, error_code=8).serialize(),
        settings_wire,
        unknown_setting,
        SettingsFrame(0, flags=["ACK"]).serialize(),
        PushPromiseFrame(3, promised_stream_id=2, data=b"", flags=["END_HEADERS"]).serialize(),
        PingFrame(0, opaque_data=b"\x01\x02\x03\x04\x05\x06\x07\x08", flags=["ACK"]).serialize(),
        GoAwayFrame(0, last_stream_id=7, error_code=0xb, additional_data=b"calm down").serialize(),
        WindowUpdateFrame(0, window_increment=1 << 20).serialize(),
        AltSvcFrame(0, origin=b"example.com", field=b'h2=":443"').serialize(),
        bytes.fromhex("000003 fa 5a 00000009") + b"xyz",      # unknown type 0xfa
        bytes.fromhex("000007 06 00 00000000") + b"1234567",  # PING with 7 bytes: does not parse
        b"\x00\x01",                                           # not even a frame header
    ]
    path, rec = _record(tmp_path)
    _feed(rec, frames)
    rec.close()
    got = [r for r in _lines(path) if r["record"] == "frame"]
    assert len(got) == len(frames)
    data, headers, cont, prio, rst, sett, sett2, ack, push, ping, goaway, wu, altsvc, unknown, bad, short = got
    assert data["type"] == "DATA" and data["type_byte"] == 0 and data["flags"] == 0x09
    assert data["flag_names"] == ["END_STREAM", "PADDED"] and data["stream"] == 1 and data["length"] == 8
    assert data["fields"] == {"data_length": 3, "pad_length": 4}
    assert headers["fields"]["priority"] == {"exclusive": True, "depends_on": 1, "weight": 256}
    assert headers["fields"]["pad_length"] is None and "headers" not in headers
    assert cont["type"] == "CONTINUATION" and cont["flag_names"] == ["END_HEADERS"]
    assert cont["headers"] == [[":method", "GET"], [":path", "/a"], [":scheme", "https"], [":authority", "x"]]
    assert prio["fields"] == {"exclusive": False, "depends_on": 3, "weight": 1}
    assert rst["fields"] == {"error_code": 8, "error": "CANCEL"}
    assert sett["fields"] == {"ack": False, "settings": [["SETTINGS_MAX_CONCURRENT_STREAMS", 100],
                                                         ["SETTINGS_INITIAL_WINDOW_SIZE", 65535],
                                                         ["SETTINGS_MAX_CONCURRENT_STREAMS", 200]]}
    assert sett2["fields"]["settings"] == [[255, 7]]
    assert ack["fields"] == {"ack": True, "settings": []} and ack["flag_names"] == ["ACK"]
    assert push["fields"]["promised_stream_id"] == 2 and push["type"] == "PUSH_PROMISE"
    assert ping["fields"] == {"ack": True, "opaque": "0102030405060708"}
    assert goaway["fields"]["last_stream_id"] == 7 and goaway["fields"]["error"] == "ENHANCE_YOUR_CALM"
    assert goaway["fields"]["error_code"] == 0xb and goaway["fields"]["debug_data"] == "calm down"
    assert wu["fields"] == {"increment": 1 << 20}
    assert altsvc["fields"] == {"origin": "example.com", "field": 'h2=":443"'}
    assert unknown["type"] == "0xfa" and unknown["type_byte"] == 0xFA and unknown["fields"] == {}
    assert unknown["flags"] == 0x5A and unknown["flag_names"] == [] and unknown["stream"] == 9
    assert "parse_error" in bad["fields"] and bad["type"] == "PING"
    assert "parse_error" in short["fields"]
    for r, wire in zip(got, frames, strict=True):
        assert base64.b64decode(r["wire"]) == wire


def test_filters_keep_hpack_state(tmp_path):
    path, rec = _record(tmp_path, filter_stream=[3])
    simulate(rec, REQUESTS[:3])
    rec.close()
    records = _lines(path)
    frames = [r for r in records if r["record"] == "frame"]
    assert frames and {r["stream"] for r in frames} == {3}
    assert not [r for r in records if r["record"] in ("preface", "raw")]
    assert [r["record"] for r in records if r["record"] not in ("frame",)] == \
        ["header", "connection_opened", "connection_closed"]
    # stream 1's header blocks were not written, yet stream 3's decode (the HPACK state was kept)
    req = [r for r in frames if r["type"] == "HEADERS" and r["leg"] == "client" and r["dir"] == "recv"]
    assert dict(map(tuple, req[0]["headers"]))[":path"] == "/echo"

    path, rec = _record(tmp_path, "types.jsonl", filter_types=["HEADERS", "rst_stream"])
    simulate(rec, REQUESTS[:3])
    rec.close()
    frames = [r for r in _lines(path) if r["record"] == "frame"]
    assert {r["type"] for r in frames} == {"HEADERS"} and len(frames) == 12
    assert all(r.get("headers") for r in frames)

    path, rec = _record(tmp_path, "conn.jsonl", filter_conn=[2])
    simulate(rec, REQUESTS[:1], conn_id=1)
    simulate(rec, REQUESTS[:1], conn_id=2)
    rec.close()
    assert {r["conn"] for r in _lines(path) if "conn" in r} == {2}

    with pytest.raises(ValueError):
        JsonlRecorder(tmp_path / "x.jsonl", filter_types=["NOPE"]).close()


def test_max_bytes_truncates_with_a_final_record(tmp_path):
    path, rec = _record(tmp_path, max_bytes=6000)
    simulate(rec, REQUESTS)
    rec.close()
    assert rec.truncated
    size = path.stat().st_size
    records = _lines(path)
    assert records[-1]["record"] == "truncated" and records[-1]["max_bytes"] == 6000
    assert sum(1 for r in records if r["record"] == "truncated") == 1
    assert size - len(json.dumps(records[-1], separators=(",", ":"))) - 1 <= 6000
    # everything before the cap is intact and in order
    seqs = [r["seq"] for r in records if "seq" in r]
    assert seqs == list(range(1, len(seqs) + 1))


def test_multisink_shares_sequence_numbers(tmp_path):
    class Plain(FrameSink):            # an old-style sink without seq=
        def __init__(self):
            self.frames = []

        def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None):
            self.frames.append(bytes(wire))
            return 999

    path = tmp_path / "a.jsonl"
    rec = JsonlRecorder(path)
    out = io.StringIO()
    printer = LivePrinter(out, verbosity=2, color=False)
    plain = Plain()
    multi = MultiSink([rec, printer, plain])
    assert multi.needs_headers is False
    simulate(multi, REQUESTS[:1])
    s1 = multi.frame(1, "client", "recv", 1.0, PingFrame(0, opaque_data=b"12345678").serialize())
    multi.close()
    seqs = [r["seq"] for r in _lines(path) if r["record"] == "frame"]
    assert s1 == seqs[-1] and seqs == sorted(seqs)
    printed = [int(m) for m in re.findall(r"\(seq=(\d+)", out.getvalue())]
    assert set(seqs) <= set(printed)
    assert len(plain.frames) == len(seqs)


def test_base_sink_numbers_records():
    sink = FrameSink()
    assert sink.preface(1, "client", "recv", 0.0, b"x") == 1
    assert sink.frame(1, "client", "recv", 0.0, b"") == 2
    assert sink.raw(1, "client", "send", 0.0, b"", "n") == 3
    sink.violation(1, 0.0, "client", "6.9", "FLOW_CONTROL_ERROR", "m")
    sink.close()


def test_other_records(tmp_path):
    path, rec = _record(tmp_path)
    info = {"client_addr": "127.0.0.1:1", "listen_addr": "127.0.0.1:2", "upstream_addr": None,
            "client_tls": {"alpn": "h2", "version": "TLSv1.3", "sni": "a", "cipher": "X"}, "upstream_tls": None,
            "mode": "reverse"}
    rec.connection_opened(4, 10.0, info)
    info["upstream_tls"] = {"alpn": "h2", "version": "TLSv1.3", "sni": "u", "cipher": "Y"}  # filled in later
    assert rec.raw(4, "client", "send", 10.5, b"HTTP/1.1 505 \r\n\r\n", "HTTP/1.1 refused") == 1
    rec.violation(4, 11.0, "client", "6.9.1", "FLOW_CONTROL_ERROR", "window overflow")
    rec.error(4, 11.5, "hook x raised")
    rec.hook_action(4, 12.0, "fault", "dropped", {"stream": 1, "why": b"bytes"})
    rec.frame(4, "client", "send", 12.5, memoryview(PingFrame(0, opaque_data=b"a").serialize()),
              actions=[{"hook": "fault", "action": "injected"}])
    rec.connection_closed(4, 13.0, "client went away")
    rec.close()
    rec.close()  # twice is fine
    records = _lines(path)
    kinds = [r["record"] for r in records]
    assert kinds == ["header", "connection_opened", "raw", "violation", "error", "hook_action", "frame",
                     "connection_closed"]
    assert records[1]["info"]["client_tls"]["alpn"] == "h2" and records[1]["info"]["upstream_tls"] is None
    assert records[2]["note"] == "HTTP/1.1 refused" and base64.b64decode(records[2]["wire"]).startswith(b"HTTP/1.1")
    assert records[3] == {"record": "violation", "ts": 11.0, "conn": 4, "side": "client", "section": "6.9.1",
                          "code": "FLOW_CONTROL_ERROR", "message": "window overflow"}
    assert records[5]["detail"] == {"stream": 1, "why": "bytes"}
    assert records[6]["actions"] == [{"hook": "fault", "action": "injected"}] and "origin" not in records[6]
    assert records[7]["info"]["upstream_tls"]["sni"] == "u"


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)),
                                                    max_size=3) | st.none())
def test_never_raises_on_any_bytes(wire, headers):
    from proxy.recording.decode import frame_record
    r = frame_record(1, 0.0, 1, "client", "recv", wire, headers)
    json.dumps(r)
    assert isinstance(r["fields"], dict)
    lines = Renderer(verbosity=2).render(r)
    assert lines and all(isinstance(x, str) for x in lines)


def test_render_never_raises_on_odd_records():
    r = Renderer(color=True, verbosity=2)
    for rec in [{}, {"record": "frame"}, {"record": "frame", "flags": "x"}, {"record": "nope"},
                {"record": "frame", "type": "SETTINGS", "fields": {"settings": [[1]]}, "flags": 0},
                {"record": "violation", "ts": "soon"}, {"record": "raw", "wire": "!!"}, []]:
        assert isinstance(r.render(rec), list)


def test_read_records_skips_a_cut_line(tmp_path):
    path, rec = _record(tmp_path)
    simulate(rec, REQUESTS[:1])
    rec.close()
    with open(path, "a") as fh:
        fh.write('{"record": "frame", "seq": 99')   # a crash mid-line
    warnings = []
    records = read_records(str(path), warn=warnings.append)
    assert records[0]["record"] == "header" and warnings


# ---------------------------------------------------------------- text


def _strip(line: str) -> str:
    """A line without the "c1 upstream " prefix and the timestamp column."""
    line = line[len("c1 upstream "):]
    return re.sub(r"^\[\s*\d+\.\d{3}\]", "[TIME]", line).replace(" " * 10, "          ", 1)


def test_live_printer_layout_and_color(tmp_path):
    out = io.StringIO()
    printer = LivePrinter(out, verbosity=1)       # a StringIO is not a terminal: no colour
    simulate(printer, REQUESTS[:1])
    printer.close()
    text = out.getvalue()
    assert "\033[" not in text
    lines = text.splitlines()
    i = lines.index(next(x for x in lines if "upstream [" in x and "send SETTINGS frame" in x))
    assert re.match(r"c1 upstream \[  0\.\d{3}\] send SETTINGS frame <length=42, flags=0x00, stream_id=0>$",
                    lines[i])
    assert lines[i + 1] == "c1 upstream           (niv=7)"
    assert lines[i + 2] == "c1 upstream           [SETTINGS_HEADER_TABLE_SIZE(0x01):4096]"
    j = lines.index(next(x for x in lines if "upstream [" in x and "send HEADERS frame" in x))
    assert lines[j].endswith("send HEADERS frame <length=34, flags=0x05, stream_id=1>") or \
        "flags=0x05, stream_id=1>" in lines[j]
    assert lines[j + 1:j + 5] == ["c1 upstream           ; END_STREAM | END_HEADERS",
                                  "c1 upstream           (padlen=0)",
                                  "c1 upstream           ; Open new stream",
                                  "c1 upstream           :method: GET"]
    assert "c1 client   " in text and "Connected:" in text and "Closed:" in text

    out = io.StringIO()
    printer = LivePrinter(out, verbosity=2, color=True)
    simulate(printer, REQUESTS[:1])
    printer.violation(1, 0.0, "server", "6.5", "PROTOCOL_ERROR", "bad")
    printer.close()
    text = out.getvalue()
    assert "\033[1;35mSETTINGS frame\033[0m" in text and "\033[1;36m" in text
    assert "\033[1;34m:method\033[0m: GET" in text
    assert re.search(r"00000000  00 00 00 00 .*\|", text)           # hex dump of the SETTINGS ACK? any payload
    assert "VIOLATION" in text


def test_flush_makes_output_visible():
    out = io.StringIO()
    printer = LivePrinter(out, verbosity=1, color=False)
    printer.frame(7, "upstream", "recv", 5.0, RstStreamFrame(1, error_code=7).serialize())
    assert printer.flush(5)
    assert "c7 upstream [  0.000] recv RST_STREAM frame <length=4, flags=0x00, stream_id=1>" in out.getvalue()
    assert "(error_code=REFUSED_STREAM(0x07))" in out.getvalue()
    printer.close()


def test_writer_falling_behind_drops_and_says_so(tmp_path):
    import threading
    path = tmp_path / "slow.jsonl"
    gate = threading.Event()

    class Slow(JsonlRecorder):
        def emit(self, record):
            gate.wait(5)
            super().emit(record)

    rec = Slow(path, max_queue=50)
    wire = PingFrame(0, opaque_data=b"12345678").serialize()
    seqs = [rec.frame(1, "client", "recv", 1.0, wire) for _ in range(500)]
    assert seqs == list(range(1, 501))        # numbering goes on for dropped events
    assert rec.dropped > 0
    gate.set()
    rec.close()
    records = _lines(path)
    errors = [r for r in records if r["record"] == "error"]
    assert errors and "were not recorded" in errors[0]["message"]
    assert sum(int(e["message"].split()[0]) for e in errors) == rec.dropped
    assert len([r for r in records if r["record"] == "frame"]) == 500 - rec.dropped


def test_hot_path_is_cheap(tmp_path):
    import time as _time
    rec = JsonlRecorder(tmp_path / "fast.jsonl")
    wire = memoryview(DataFrame(1, data=b"x" * 1000).serialize())
    n = 20000
    start = _time.perf_counter()
    for _ in range(n):
        rec.frame(1, "client", "recv", 1.0, wire)
    per_call = (_time.perf_counter() - start) / n
    rec.close()
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} us per frame() call"
    assert sum(1 for _ in open(tmp_path / "fast.jsonl")) == n + 1


@pytest.mark.parametrize("count", [1, 3])
def test_forwarded_batches_take_two_numbers_per_frame(tmp_path, count):
    """A batch of n forwarded frames is numbered recv/send per frame; the next event follows them all."""
    path = tmp_path / "f.jsonl"
    rec = JsonlRecorder(path)
    multi = MultiSink([rec, FrameSink()])
    wires = [PingFrame(0, opaque_data=bytes([i]) * 8).serialize() for i in range(count)]
    first = multi.forwarded(1, "client", "upstream", 1.0, wires)
    after = multi.frame(1, "client", "recv", 2.0, PingFrame(0, opaque_data=b"z" * 8).serialize())
    assert after == first + 2 * count
    multi.close()
    seqs = [r["seq"] for r in _lines(path) if r["record"] == "frame"]
    assert seqs == list(range(first, first + 2 * count + 1))
