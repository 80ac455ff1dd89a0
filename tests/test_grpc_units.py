"""The sans-I/O gRPC pieces: message reassembly, the raw protobuf decoder, statuses, the record tracker."""
from __future__ import annotations

import base64
import gzip
import random
import zlib

import pytest

from proxy.grpc.calls import GrpcOptions, is_grpc_content_type, split_path
from proxy.grpc.framing import (
    DecompressError,
    Message,
    MessageReader,
    Oversized,
    Passthrough,
    compress,
    decompress,
    frame_message,
)
from proxy.grpc.protowire import WireError, decode_raw, describe, format_raw
from proxy.grpc.status import parse_status, percent_decode, percent_encode, status_name
from proxy.grpc.tracker import GrpcTracker


def _msgs(events):
    return [(e.index, e.compressed, e.data) for e in events if isinstance(e, Message)]


def test_reader_messages_split_across_frames_and_several_per_frame():
    payloads = [b"", b"a", b"hello world", bytes(range(256)) * 400]
    stream = b"".join(frame_message(p) for p in payloads)
    rng = random.Random(18)
    for _ in range(50):
        reader = MessageReader()
        got = []
        pos = 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 5, 7, 100, 16384])
            got.extend(reader.feed(stream[pos:pos + n]))
            pos += n
        assert _msgs(got) == [(i + 1, False, p) for i, p in enumerate(payloads)]
        assert reader.leftover() is None and reader.buffered == 0
    # all in one chunk
    assert _msgs(MessageReader().feed(stream)) == [(i + 1, False, p) for i, p in enumerate(payloads)]


def test_reader_skimming_some_frames_keeps_the_boundaries_and_the_numbers():
    """Bytes that go on unseen (skim) are counted through: what is fed after them yields the messages that
    start there, numbered from the start of the stream, and nothing already gone is handed out twice."""
    payloads = [bytes([i]) * n for i, n in enumerate([0, 1, 4, 5, 9, 300, 20000, 3, 0, 77, 16384, 2])]
    stream = b"".join(frame_message(p) for p in payloads)
    starts = [sum(5 + len(q) for q in payloads[:i]) for i in range(len(payloads))]
    rng = random.Random(2612)
    for _ in range(200):
        reader = MessageReader(pass_oversized=True)
        out, expected, pos = [], [], 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 4, 6, 9, 100, 5000, 16384])
            chunk = stream[pos:pos + n]
            if not reader.keeping and rng.random() < 0.5:
                reader.skim(chunk)
                out.append(chunk)
            else:
                expected += [i + 1 for i, at in enumerate(starts) if pos <= at < pos + len(chunk)]
                for ev in reader.feed(chunk):
                    out.append(ev.wire() if isinstance(ev, Message) else ev.data if isinstance(ev, Passthrough)
                               else b"")
                    if isinstance(ev, Message):
                        assert ev.data == payloads[ev.index - 1]
                        expected.remove(ev.index)
            pos += len(chunk)
        assert b"".join(out) == stream
        assert expected == [] and reader.count == len(payloads)
        assert reader.leftover() is None and not reader.in_message


def test_reader_zero_length_message_completes_at_its_prefix():
    assert _msgs(MessageReader().feed(b"\x00\x00\x00\x00\x00")) == [(1, False, b"")]


def test_reader_oversized_is_reported_not_buffered():
    reader = MessageReader(max_size=10)
    events = reader.feed(frame_message(b"x" * 11)[:8])
    assert events == [Oversized(1, False, 11, 10)]
    assert reader.buffered == 0
    assert reader.feed(b"x" * 8) == []
    assert _msgs(reader.feed(frame_message(b"ok"))) == [(2, False, b"ok")]


def test_reader_pass_oversized_hands_the_bytes_through():
    reader = MessageReader(max_size=3, pass_oversized=True)
    wire = frame_message(b"abcdef")
    events = reader.feed(wire[:7]) + reader.feed(wire[7:])
    assert isinstance(events[0], Oversized)
    assert b"".join(e.data for e in events if isinstance(e, Passthrough)) == wire


def test_reader_leftover_names_the_truncation():
    reader = MessageReader()
    reader.feed(frame_message(b"abcdef")[:8])
    assert "3 of 6 bytes" in reader.leftover()
    assert reader.take_partial() == frame_message(b"abcdef")[:8]
    reader.feed(b"\x00\x00")
    assert "prefix (2 of 5 bytes)" in reader.leftover()


def test_compressed_flag_and_decompression():
    body = b"\x0a\x05hello" * 50
    gz = gzip.compress(body)
    events = MessageReader().feed(frame_message(gz, compressed=True))
    assert _msgs(events) == [(1, True, gz)]
    assert decompress(gz, "gzip") == body
    assert decompress(zlib.compress(body), "deflate") == body
    assert decompress(compress(body, "gzip"), "gzip") == body
    with pytest.raises(DecompressError, match="snappy"):
        decompress(gz, "snappy")
    with pytest.raises(DecompressError, match="does not decompress"):
        decompress(b"not gzip", "gzip")
    with pytest.raises(DecompressError, match="maximum message size"):
        decompress(gzip.compress(b"\0" * 100000), "gzip", max_size=1000)


def test_decode_raw_like_protoc():
    # field 1 "hello", 2 varint 150, 3 nested {1: 1, 2: "x"}, 4 fixed32, 5 fixed64, 6 bytes
    data = (b"\x0a\x05hello" + b"\x10\x96\x01" + b"\x1a\x05\x08\x01\x12\x01x" + b"\x25\x00\x00\x80\x3f"
            + b"\x29" + (1).to_bytes(8, "little") + b"\x32\x02\xff\x00")
    assert format_raw(decode_raw(data)) == [
        '1: "hello"', "2: 150", "3 {", "  1: 1", '  2: "x"', "}", "4: 0x3f800000", "5: 0x0000000000000001",
        '6: "\\377\\000"']


def test_decode_raw_groups_and_errors():
    assert format_raw(decode_raw(b"\x0b\x08\x01\x0c")) == ["1 {", "  1: 1", "}"]
    with pytest.raises(WireError, match="wire type 7"):
        decode_raw(b"\x0f")
    with pytest.raises(WireError, match="runs past the end"):
        decode_raw(b"\x0a\x05ab")
    with pytest.raises(WireError, match="field number 0"):
        decode_raw(b"\x00\x01")
    assert describe(b"\x0f")[0].startswith("(not a protobuf message: field 1 at offset 0 has wire type 7")
    assert describe(b"") == ["(empty message)"]


def test_decode_raw_deep_nesting_is_bounded():
    data = b"\x08\x01"
    for _ in range(200):
        data = b"\x0a" + bytes([len(data)]) + data if len(data) < 128 else data
    describe(data)      # no recursion error


def test_status_names_and_percent_encoding():
    assert status_name(14) == "UNAVAILABLE" and status_name("4") == "DEADLINE_EXCEEDED"
    assert status_name(99) == "CODE_99"
    assert parse_status("unavailable") == 14 and parse_status(5) == 5
    with pytest.raises(ValueError, match="unknown gRPC status"):
        parse_status("NOPE")
    text = "no such name: caf\u00e9 100%"
    assert percent_encode(text) == "no such name: caf%C3%A9 100%25"
    assert percent_decode(percent_encode(text)) == text
    assert percent_decode("50%zz") == "50%zz"


def test_content_types_and_paths():
    for ct in ("application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc; x=y"):
        assert is_grpc_content_type(ct)
    for ct in ("application/grpc-web", "application/grpc-web+proto", "application/json", None):
        assert not is_grpc_content_type(ct)
    assert split_path("/pkg.Svc/Method") == ("pkg.Svc", "Method")


def _frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def test_tracker_builds_message_and_call_records():
    tr = GrpcTracker(GrpcOptions(max_message=100))
    req = {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 1, "type_byte": 1, "flags": 4,
           "ts": 1.0, "headers": [[":method", "POST"], [":path", "/p.S/M"], ["content-type", "application/grpc"]]}
    assert tr.feed(req, None) == []
    wire = _frame(0, 1, 1, frame_message(b"\x0a\x02hi") + frame_message(b"x" * 200)[:20])
    data = {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 1, "type_byte": 0, "flags": 1,
            "ts": 1.1, "seq": 7}
    out = tr.feed(data, wire)
    assert out[0]["record"] == "grpc_message" and out[0]["index"] == 1 and out[0]["method"] == "M"
    assert base64.b64decode(out[0]["data"]) == b"\x0a\x02hi" and out[0]["frame_seq"] == 7
    assert out[1]["oversized"] and out[1]["length"] == 200
    trailers = {"record": "frame", "dir": "recv", "leg": "upstream", "conn": 1, "stream": 1, "type_byte": 1,
                "flags": 5, "ts": 1.5, "headers": [[":status", "200"], ["grpc-status", "14"],
                                                    ["grpc-message", "gone%21"]]}
    (call,) = tr.feed(trailers, None)
    assert call["record"] == "grpc_call" and call["status_name"] == "UNAVAILABLE" and call["message"] == "gone!"
    assert call["duration_ms"] == 500.0
    assert "inside oversized message 2" in call["problems"][0]
    assert tr.calls == {}


def test_method_stats_from_call_records_and_from_frames():
    from proxy.grpc.stats import format_methods, method_stats
    calls = [{"record": "grpc_call", "path": "/p.S/A", "status": 0, "duration_ms": float(ms),
              "messages": {"client->server": 1, "server->client": 2}} for ms in range(1, 101)]
    calls.append({"record": "grpc_call", "path": "/p.S/A", "status": 14, "duration_ms": 500.0,
                  "messages": {"client->server": 1, "server->client": 0}})
    table = method_stats(calls)
    row = table["/p.S/A"]
    assert row["calls"] == 101 and row["statuses"] == {"OK": 100, "UNAVAILABLE": 1}
    assert row["requests"] == 101 and row["responses"] == 200
    assert row["latency_ms"]["p50"] == 51.0 and row["latency_ms"]["max"] == 500.0
    text = "\n".join(format_methods(table))
    assert "/p.S/A" in text and "OK 100, UNAVAILABLE 1" in text
    # the same from frame records alone (a log recorded without gRPC decoding)
    frames = [
        {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 1, "type_byte": 1, "flags": 4,
         "ts": 0.0, "headers": [[":method", "POST"], [":path", "/p.S/B"], ["content-type", "application/grpc"]]},
        {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 1, "type_byte": 0, "flags": 1,
         "ts": 0.0, "wire": base64.b64encode(_frame(0, 1, 1, frame_message(b"\x08\x01"))).decode()},
        {"record": "frame", "dir": "recv", "leg": "upstream", "conn": 1, "stream": 1, "type_byte": 1, "flags": 5,
         "ts": 0.25, "headers": [[":status", "200"], ["grpc-status", "0"]]},
    ]
    row = method_stats(frames)["/p.S/B"]
    assert row["calls"] == 1 and row["requests"] == 1 and row["latency_ms"]["p50"] == 250.0


def test_docs_fault_lines_and_tables_parse():
    """Every --fault line and [[faults]] table in docs/grpc.md is a valid gRPC rule."""
    import re
    import shlex
    import tomllib
    from pathlib import Path

    from proxy.faults import build_fault_hook
    doc = (Path(__file__).resolve().parents[1] / "docs/grpc.md").read_text()
    lines = [shlex.split(m)[0] for m in re.findall(r"--fault ('[^']*')", doc)]
    assert len(lines) >= 7
    hook = build_fault_hook(lines=lines)
    assert all(r.grpc for r in hook.rules)
    tables = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S)]
    for t in tables:
        hook = build_fault_hook(tomllib.loads(t)["faults"])
        assert all(r.grpc for r in hook.rules)


def test_config_file_keys(tmp_path):
    from proxy.config import load_config
    p = tmp_path / "c.toml"
    p.write_text('proto_descriptor = "echo.desc"\ngrpc_max_message = 1048576\n')
    cfg = load_config(str(p))
    assert cfg.proto_descriptor == "echo.desc" and cfg.grpc_max_message == 1 << 20


def test_tracker_compressed_without_encoding_says_so():
    from proxy.recording.text import Renderer
    tr = GrpcTracker()
    req = {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 3, "type_byte": 1, "flags": 4,
           "ts": 1.0, "headers": [[":method", "POST"], [":path", "/p.S/M"], ["content-type", "application/grpc"]]}
    tr.feed(req, None)
    data = {"record": "frame", "dir": "recv", "leg": "client", "conn": 1, "stream": 3, "type_byte": 0, "flags": 0,
            "ts": 1.1, "seq": 9}
    (msg,) = tr.feed(data, _frame(0, 0, 3, frame_message(b"\x0a\x01x", compressed=True)))
    assert "grpc-encoding is identity" in msg["decode_error"]
    lines = Renderer().render(msg)
    assert "compressed (no grpc-encoding)" in lines[0] and "grpc-encoding is identity" in lines[1]
    # a gRPC-Web stream is not followed
    web = dict(req, stream=5, headers=[[":method", "POST"], [":path", "/p.S/M"],
                                       ["content-type", "application/grpc-web+proto"]])
    tr.feed(web, None)
    assert tr.feed(dict(data, stream=5), _frame(0, 0, 5, frame_message(b"x"))) == []


def test_tracker_trailers_in_headers_and_continuation_end_the_call():
    tr = GrpcTracker()
    base = {"record": "frame", "dir": "recv", "conn": 1, "stream": 1, "ts": 1.0}
    tr.feed(dict(base, leg="client", type_byte=1, flags=4, headers=[[":method", "POST"], [":path", "/p.S/M"],
                                                                      ["content-type", "application/grpc"]]), None)
    assert tr.feed(dict(base, leg="upstream", type_byte=1, flags=1), None) == []      # END_STREAM, no END_HEADERS
    (call,) = tr.feed(dict(base, leg="upstream", type_byte=9, flags=4, ts=2.0,
                           headers=[[":status", "200"], ["grpc-status", "0"]]), None)
    assert call["status_name"] == "OK" and call["duration_ms"] == 1000.0
