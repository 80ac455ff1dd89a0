"""The short fuzz CI runs: each harness of ``bench/fuzz/`` over the seed corpus and seeded mutations.

The harnesses are atheris targets (``TestOneInput``); here they run without atheris: every seed
of the corpus ``bench/fuzz/make_corpus.py`` builds (the http2jp frames and conversations made
with the h2 library), then a fixed number of random and mutated inputs from a fixed seed, so a
failure reproduces. ``FUZZ_CORPUS_INPUTS=100000`` runs a longer hunt; a long coverage-guided run
is ``bench/fuzz/README.md``'s business.

Plus the regression inputs of crashes the fuzzers found, each minimized.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import hpack
import pytest

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from proxy.hooks.chain import HookChain

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz"
INPUTS = int(os.environ.get("FUZZ_CORPUS_INPUTS", "3000"))


def _load(name: str):
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    spec = importlib.util.spec_from_file_location(f"bench_fuzz_{name}", FUZZ / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("common")
make_corpus = _load("make_corpus")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-corpus")
    counts = make_corpus.build(out)
    assert counts["frames"] and counts["relay"]
    return out


@pytest.fixture
def quiet():
    log = logging.getLogger("h2proxy")
    old = (log.level, log.propagate)
    common.quiet_logging()
    yield
    log.level, log.propagate = old


@pytest.mark.parametrize("harness, subdir, count", [
    ("fuzz_codec", "frames", INPUTS),
    ("fuzz_reader", "frames", INPUTS),
    ("fuzz_relay", "relay", INPUTS // 2),
])
def test_harness_over_corpus_and_mutations(harness, subdir, count, corpus, quiet, tmp_path, monkeypatch):
    test = _load(harness).TestOneInput
    seeds = common.inputs_of([corpus / subdir])
    assert seeds
    monkeypatch.chdir(tmp_path)          # where a failing input would be saved
    assert common.run_inputs(test, seeds) == 0
    assert common.run_inputs(test, common.random_inputs(seeds, count, seed=20240601)) == 0


def test_replay_command_line(corpus, quiet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        common.main(_load("fuzz_codec").TestOneInput, ["fuzz_codec.py", "--replay", str(corpus / "frames")])
    assert done.value.code == 0


def test_corpus_from_a_frame_log(tmp_path):
    import base64
    import json
    ping = fc.PingFrame(0, opaque_data=b"abcdefgh").serialize()
    log = tmp_path / "frames.jsonl"
    records = [{"record": "header", "format": "h2proxy-frame-log", "version": 1},
               {"record": "preface", "conn": 1, "leg": "client", "dir": "recv",
                "wire": base64.b64encode(PREFACE).decode()},
               {"record": "frame", "conn": 1, "leg": "client", "dir": "recv",
                "wire": base64.b64encode(ping).decode()},
               {"record": "frame", "conn": 1, "leg": "upstream", "dir": "send",
                "wire": base64.b64encode(ping).decode()}]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    assert make_corpus.log_conversations(log) == [[(0, PREFACE), (0, ping)]]
    counts = make_corpus.build(tmp_path / "out", [log], synth=False, corpus=None)
    with pytest.raises(FileNotFoundError, match="http2jp corpus is missing"):
        make_corpus.build(tmp_path / "out2", synth=False, corpus=tmp_path / "none")
    assert (tmp_path / "out" / "frames").is_dir() and counts["relay"] == 3


# ---------------------------------------------------------------- regressions (minimized inputs)

def _frames(r: Relay, d: int):
    reader = FrameReader()
    frames = reader.feed(b"".join(bytes(b) for b in r.take_output(d)))
    assert reader.buffered == 0
    return frames


REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/")]


def _start(hooks, client_settings=None) -> Relay:
    r = Relay(1, RelayOptions(), hooks=HookChain(hooks))
    r.receive(C2S, PREFACE + fc.SettingsFrame(0, settings=client_settings or {}).serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0).serialize(), 0.0)
    r.take_output(C2S)
    r.take_output(S2C)
    return r


def test_reencoded_header_block_on_stream_0_is_forwarded_not_raised():
    """Found by test_fuzz_relay: once a direction was re-encoded, HEADERS on stream 0 (transparent mode
    forwards it as a violation) made the proxy build HeadersFrame(0), which raised InvalidDataError."""
    class Rewrite:
        def on_headers(self, ctx, frame, headers):
            if headers is not None:
                return list(headers) + [("x", "1")]
    r = _start([Rewrite()])
    enc = hpack.Encoder()
    r.receive(C2S, fc.HeadersFrame(1, data=enc.encode(REQ), flags=["END_HEADERS"]).serialize(), 0.0)
    bad = bytearray(fc.HeadersFrame(1, data=enc.encode(REQ), flags=["END_HEADERS"]).serialize())
    bad[5:9] = b"\0\0\0\0"
    r.receive(C2S, bytes(bad), 0.0)
    assert r.violations[-1]["section"] == "6.2" and not r.closed
    sent = _frames(r, C2S)
    assert (sent[-1].type, sent[-1].stream_id) == (1, 0)     # re-encoded, on stream 0 as received


def test_stalled_proxy_push_and_window_update_do_not_raise():
    """Found while fuzzing: a proxy push waiting for the client's window sits in held_streams with
    no held frames; the client's WINDOW_UPDATE then raised TypeError in _flush_held (and
    Relay.buffered did too). Behind it: the push then restarted its body from the beginning."""
    class Pusher:
        def on_headers(self, ctx, frame, headers):
            if ctx.direction == "client->server":
                ctx.push("/a.css", [], b"x" * 5000)
    r = _start([Pusher()], {4: 1000})
    r.receive(C2S, fc.HeadersFrame(1, data=hpack.Encoder().encode(REQ),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    assert r.sides[S2C].held_streams and r.buffered == 0
    r.take_output(S2C)
    r.receive(C2S, fc.WindowUpdateFrame(0, window_increment=100000).serialize()
              + fc.WindowUpdateFrame(2, window_increment=100000).serialize(), 0.0)
    data = [f for f in _frames(r, S2C) if f.type == 0]
    assert sum(f.length for f in data) == 5000 - 1000 and not r.sides[S2C].held_streams


def test_sender_ignoring_flow_control_cannot_grow_held_data_without_bound():
    """Found by test_fuzz_relay's bound on held DATA: while the proxy owed window (a hook grew DATA)
    and held DATA, a server that kept sending past its window had every frame held, without limit
    and without a violation (6 MB held for 3 MB sent). Now: FLOW_CONTROL_ERROR."""
    class Grow:
        def on_data(self, ctx, frame):
            if ctx.direction == "server->client":
                return fc.DataFrame(frame.stream_id, data=frame.data * 2)
    r = _start([Grow()])
    r.receive(C2S, fc.HeadersFrame(1, data=hpack.Encoder().encode(REQ),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    r.receive(S2C, fc.HeadersFrame(1, data=hpack.Encoder().encode([(":status", "200")]),
                                   flags=["END_HEADERS"]).serialize(), 0.0)
    for _ in range(4):       # 64000 bytes: within the server's window of 65535
        r.receive(S2C, fc.DataFrame(1, data=b"x" * 16000).serialize(), 0.0)
    assert not r.closed and r.buffered > 0
    r.receive(S2C, fc.DataFrame(1, data=b"x" * 16000).serialize(), 0.0)   # 80000: past it
    assert r.closed and r.buffered == 0
    goaway = [f for f in _frames(r, C2S) if f.type == 7][-1].parse()
    assert goaway.error_code == 3       # FLOW_CONTROL_ERROR towards the server


def test_no_goaway_towards_a_server_before_the_connection_preface():
    """Found by fuzz_relay: a connection error of the server before the client's preface (here, in
    strict mode, a first frame that is not SETTINGS) was answered with a GOAWAY towards the server
    as the very first bytes it got: not an HTTP/2 connection at all."""
    r = Relay(1, RelayOptions(strict=True))
    r.receive(S2C, fc.PingFrame(0, opaque_data=b"12345678").serialize(), 0.0)
    assert r.closed and r.violations[-1]["section"] == "3.4"
    assert not r.take_output(C2S)


@pytest.mark.parametrize("d", [C2S, S2C])
def test_strict_headers_on_stream_0_depending_on_itself_is_a_connection_error(d):
    """Found by fuzz_relay under atheris (crash input: config 0x11, then the server's bytes): in
    strict mode, HEADERS on stream 0 with the PRIORITY flag and a dependency on stream 0 was judged
    a stream error (5.3.1) on stream 0, and RstStreamFrame(0) raised InvalidDataError."""
    r = Relay(1, RelayOptions(strict=True))
    r.receive(C2S, PREFACE + fc.SettingsFrame(0).serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0).serialize(), 0.0)
    r.take_output(C2S)
    r.take_output(S2C)
    bad = bytes.fromhex("000006" "01" "24" "00000000" "00000000" "10") + b"\x82"   # PRIORITY|END_HEADERS
    r.receive(d, bad, 0.0)
    assert r.closed
    goaway = [f for f in _frames(r, 1 - d) if f.type == 7][0].parse()
    assert goaway.error_code == 1        # PROTOCOL_ERROR, towards the sender
