"""Fuzzing the sans-I/O relay core: random, mutated and valid frame sequences from both sides.

A hypothesis state machine plays a client and a server around one :class:`Relay`: it opens
with a valid preface and SETTINGS, then each step feeds either side valid frames (HEADERS
with real HPACK blocks split into CONTINUATIONs, DATA, WINDOW_UPDATE, RST_STREAM, PING,
SETTINGS, PRIORITY, GOAWAY, PUSH_PROMISE from the server, unknown types), mutated frames
(bit flips, truncation, lying length fields, bad stream ids, random flags and types) or plain
random bytes, in arbitrary chunks, and lets time pass through ``tick()``. The relay runs
transparent or strict, with or without hooks that rewrite headers, drop or grow DATA or send
raw bytes, and with or without a recording sink. Small :class:`Limits` make the limits bite.

After every step:

* nothing raised (the relay reports bad input through violations, log lines, GOAWAY and
  ``Close`` commands; it has no exception of its own for peer input);
* the bytes the relay holds (``relay.buffered``) stay under what the limits allow;
* what it wrote towards each side splits into whole frames (the preface first towards the
  server), and every frame the proxy made itself (not forwarded as received) parses and fits
  the receiver's SETTINGS_MAX_FRAME_SIZE;
* every frame handed to the sink is one whole frame;
* once closed the relay stays closed: no more output, no more commands;
* no log record carries a traceback, and a connection closed because of its input was
  closed with a logged warning that names the error code or the limit.

``FUZZ_RELAY_EXAMPLES=5000`` (environment) runs a longer hunt; the default keeps the file
at a few seconds. See also ``bench/fuzz/`` (atheris harnesses) and ``docs/robustness.md``.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import List, Optional

import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from framecodec import frame as fc
from framecodec.exceptions import FrameCodecError
from framecodec.reader import PREFACE, FrameReader
from proxy.core.commands import AwaitHook, Close
from proxy.core.limits import Limits
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from proxy.hooks.api import RawBytes
from proxy.hooks.chain import HookChain
from proxy.recording.sink import FrameSink
from tests.conftest import data_dir

EXAMPLES = int(os.environ.get("FUZZ_RELAY_EXAMPLES", "120"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, stateful_step_count=40,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])
PLAIN = settings(max_examples=max(EXAMPLES // 2, 40), deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CORPUS = data_dir("http2-frame-test-case")

REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/")]
RESP = [(":status", "200"), ("server", "origin")]
EXTRA = [("x-a", "1"), ("accept", "*/*"), ("cookie", "k=v"), ("x-long", "y" * 300), ("Bad", "UPPER"),
         ("connection", "close"), ("te", "trailers"), ("content-length", "3"), (":status", "204")]

MAX_READ = 1 << 15
SMALL = dict(max_frame_size=MAX_READ, max_continuations=4, max_header_block_size=3000,
             max_header_list_size=3000, max_resets_per_second=6, max_empty_frames_per_second=6,
             max_control_frames_per_second=40, max_settings_entries=6, max_streams=10,
             zero_window_timeout=20.0)
#: What a log line about bad input names: an error code, a limit, a codec error's field.
NAMED = re.compile(r"[A-Z][A-Z_]{4,}|limit \w+|preface|timeout|\(field: ")

log = logging.getLogger("h2proxy")


# ----------------------------------------------------------------------- hooks and sinks

class RewriteHeaders:
    """Adds a header to every block both ways (forces HPACK re-encoding and block splitting)."""

    def on_headers(self, ctx, frame, headers):
        if headers is not None:
            return list(headers) + [("x-fuzz", "h" * (len(headers) * 7))]

    def on_push_promise(self, ctx, frame, headers):
        if headers is not None:
            return list(headers) + [("x-fuzz-push", "1")]


class DropData:
    """Drops DATA frames with an odd payload length (the proxy must credit the sender)."""

    def on_data(self, ctx, frame):
        if len(frame.data) % 2:
            return []


class GrowData:
    """Doubles DATA payloads towards the client (the proxy owes window and holds DATA)."""

    def on_data(self, ctx, frame):
        if ctx.direction == "server->client" and frame.data:
            flags = ["END_STREAM"] if "END_STREAM" in frame.flags else []
            return fc.DataFrame(frame.stream_id, data=frame.data * 2, flags=flags)


class RawPing:
    """Sends PINGs on as RawBytes (repairs off); the bytes are still one whole frame."""

    def on_ping(self, ctx, frame):
        return [RawBytes(frame.serialize(), "fuzz raw ping")]


class Pusher:
    """Pushes a resource on every request (proxy-owned streams, renumbered server pushes)."""

    def on_headers(self, ctx, frame, headers):
        if ctx.direction == "client->server" and frame.stream_id % 4 == 1:
            ctx.push("/p.css", [("content-type", "text/css")], b"p" * 3000)


class SlowPing:
    """An async hook: frames behind a PING wait until the test resumes it."""

    def on_ping(self, ctx, frame):
        async def later():
            return None
        return later()


HOOKS = {
    "none": [],
    "headers": [RewriteHeaders()],
    "drop": [DropData()],
    "headers+drop": [RewriteHeaders(), DropData()],
    "grow": [GrowData()],
    "raw": [RawPing()],
    "push": [Pusher()],
    "async": [SlowPing(), DropData()],
}


class CheckingSink(FrameSink):
    """A sink that keeps counts and checks every frame it is given is one whole frame."""

    def __init__(self, needs_headers: bool) -> None:
        self.needs_headers = needs_headers
        self.frames = 0
        self.closed = 0

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, *, seq=None):
        n = len(wire)
        assert n >= 9 and int.from_bytes(bytes(wire[:3]), "big") == n - 9, "sink got a partial frame"
        self.frames += 1
        return super().frame(conn_id, leg, direction, t, wire, headers, origin, actions, seq=seq)

    def connection_closed(self, conn_id, t, reason):
        self.closed += 1


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def capture_logs():
    handler = LogRecords()
    log.addHandler(handler)
    old = (log.level, log.propagate)
    log.setLevel(logging.INFO)
    log.propagate = False      # (thousands of examples: kept out of pytest's own log capture)
    return handler, old


def release_logs(handler, old) -> None:
    log.removeHandler(handler)
    log.level, log.propagate = old


# ----------------------------------------------------------------------- frame building

def mk(cls, sid: int, *args, **kwargs) -> fc.Frame:
    """A frame on stream ``sid``, 0 included (the constructors refuse 0 where a stream is due)."""
    f = cls(sid or 1, *args, **kwargs)
    f.stream_id = sid
    return f


def headers_wires(enc: hpack.Encoder, sid: int, headers, end: bool, pieces: int, pad: int,
                  prio: Optional[int], promised: Optional[int] = None) -> List[bytes]:
    """A header block as HEADERS (or PUSH_PROMISE) + CONTINUATION frames."""
    block = enc.encode(headers)
    pieces = max(1, min(pieces, len(block) or 1))
    step = -(-len(block) // pieces) if block else 0
    frags = [block[i:i + step] for i in range(0, len(block), step)] if step else [b""]
    if promised is not None:
        head = mk(fc.PushPromiseFrame, sid, promised_stream_id=promised, data=frags[0])
    else:
        head = mk(fc.HeadersFrame, sid, data=frags[0])
        if end:
            head.flags.add("END_STREAM")
        if prio is not None:
            head.flags.add("PRIORITY")
            head.depends_on = prio
            head.stream_weight = 15
    if pad:
        head.flags.add("PADDED")
        head.pad_length = pad
    out = [head]
    for frag in frags[1:]:
        out.append(mk(fc.ContinuationFrame, sid, data=frag))
    out[-1].flags.add("END_HEADERS")
    return [f.serialize() for f in out]


def mutate(wire: bytes, how: int, a: int, b: int, blob: bytes) -> bytes:
    """One of several ways to break a frame (or a run of frames)."""
    n = len(wire)
    w = bytearray(wire)
    if how == 0 and n:                     # flip one bit
        w[a % n] ^= 1 << (b % 8)
    elif how == 1:                         # truncate
        del w[a % (n + 1):]
    elif how == 2 and n >= 3:              # lying length field
        length = b % (MAX_READ * 2) if a % 2 else max(0, n - 9 + b % 9 - 4)
        w[0:3] = length.to_bytes(3, "big")
    elif how == 3 and n >= 9:              # bad stream id (0, even, huge, reserved bit set)
        w[5:9] = [0, 2, 0x7FFFFFFF, 0x80000001, a & 0xFFFFFFFF][b % 5].to_bytes(4, "big")
    elif how == 4 and n >= 9:              # random flags
        w[4] = a & 0xFF
    elif how == 5 and n >= 9:              # another type
        w[3] = a & 0xFF
    elif how == 6 and n >= 9:              # body grown or shrunk, length field kept consistent
        body = bytes(w[9:]) + blob if a % 2 else bytes(w[9:9 + (b % (n - 8))])
        w = bytearray(len(body).to_bytes(3, "big") + bytes(w[3:9]) + body)
    elif how == 7:                         # garbage in the middle
        pos = a % (n + 1)
        w[pos:pos] = blob
    return bytes(w)


def chunks(data: bytes, sizes: List[int]):
    if not sizes:
        yield data
        return
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos:pos + size]
        pos += size
        i += 1


# ----------------------------------------------------------------------- the state machine

SIDE = st.sampled_from([C2S, S2C])
SIZES = st.one_of(st.just([]), st.lists(st.integers(1, 40), min_size=1, max_size=5))
SETTING_ENTRIES = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x4242]),
                                     st.sampled_from([0, 1, 2, 100, 4096, 16384, 65535, 1 << 20,
                                                      2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])),
                           max_size=8)
CONFIG = st.fixed_dictionaries({
    "strict": st.booleans(),
    "hooks": st.sampled_from(sorted(HOOKS)),
    "sink": st.sampled_from([None, "plain", "headers"]),
    "decode": st.booleans(),
    "settings_ack_timeout": st.sampled_from([0.0, 5.0]),
    "idle_timeout": st.sampled_from([0.0, 30.0]),
    "client_settings": st.sampled_from([{}, {4: 1000}, {4: 0}, {5: 20000, 1: 0}, {2: 0, 3: 1}]),
    "server_settings": st.sampled_from([{}, {4: 1000}, {3: 2}, {5: 30000}, {1: 100}]),
})


class RelayFuzz(RuleBasedStateMachine):

    def __init__(self) -> None:
        super().__init__()
        self.relay: Optional[Relay] = None
        self.handler, self.old_level = capture_logs()

    # -- setup -----------------------------------------------------------------------

    @initialize(config=CONFIG)
    def start(self, config) -> None:
        self.config = config
        limits = Limits(settings_ack_timeout=config["settings_ack_timeout"],
                        idle_timeout=config["idle_timeout"], **SMALL)
        hooks = HOOKS[config["hooks"]]
        self.sink = CheckingSink(config["sink"] == "headers") if config["sink"] else None
        self.relay = Relay(1, RelayOptions(strict=config["strict"], decode_headers=config["decode"],
                                           limits=limits),
                           hooks=HookChain(hooks) if hooks else None, sink=self.sink, now=0.0)
        self.now = 0.0
        self.enc = [hpack.Encoder(), hpack.Encoder()]
        self.next_client = 1
        self.next_push = 2
        self.known: List[int] = [1]
        self.pending = [b"", b""]
        self.sent = [bytearray(), bytearray()]
        self.readers = [FrameReader(2 ** 24 - 1, expect_preface=True), FrameReader(2 ** 24 - 1)]
        self.max_fs = [16384, 16384]
        self.closed_at: Optional[int] = None
        self.closed_by_us = False
        self.gone: set = set()      # sides whose socket the fuzzer closed (eof) before the relay closed
        self.records_seen = 0
        self.awaiting: list = []
        self.feed(C2S, PREFACE + fc.SettingsFrame(0, settings=config["client_settings"]).serialize(), [])
        self.feed(S2C, fc.SettingsFrame(0, settings=config["server_settings"]).serialize(), [])
        self.feed(C2S, fc.SettingsFrame(0, flags=["ACK"]).serialize(), [])
        self.feed(S2C, fc.SettingsFrame(0, flags=["ACK"]).serialize(), [])

    def teardown(self) -> None:
        try:
            if self.relay is not None:
                for d in (C2S, S2C):
                    if self.pending[d]:
                        self.feed(d, b"", [7])
                self.check()
                while self.awaiting and not self.relay.closed:
                    self.resume_hook(True)
                    self.check()
                for cmd in self.awaiting:
                    cmd.awaitable.close()
                if not self.relay.closed:
                    self.gone.add(C2S)
                self.relay.eof(C2S, "fuzz done")
                self.closed_by_us = True
                self.check()
        finally:
            release_logs(self.handler, self.old_level)

    # -- feeding ---------------------------------------------------------------------

    def feed(self, d: int, data: bytes, sizes: List[int], flush: bool = True) -> None:
        self.pending[d] += data
        if not flush:
            return
        data, self.pending[d] = self.pending[d], b""
        self.sent[d] += data
        for piece in chunks(data, sizes):
            self.relay.receive(d, piece, self.now)

    def sid(self, pick: int) -> int:
        if pick < 0:
            return [0, 2, 0x7FFFFFFF, 1001, self.next_client + 2][-pick % 5]
        return self.known[pick % len(self.known)]

    def build(self, d: int, kind: str, pick: int, n: int, flag: bool, pad: int) -> bytes:
        """A frame (or header block) a peer on side d might send, mostly valid."""
        sid = self.sid(pick)
        if kind == "headers":
            if d == C2S and flag:
                sid = self.next_client
                self.next_client += 2
                self.known.append(sid)
                headers = REQ + EXTRA[:n % 3]
            else:
                headers = (RESP if d == S2C else [("x-trailer", "t")]) + EXTRA[n % len(EXTRA):][:1]
            prio = (sid + 2 if n % 3 == 1 else sid if n % 7 == 2 else None)
            return b"".join(headers_wires(self.enc[d], sid, headers, bool(n & 4), n % 4 + 1, pad % 3, prio))
        if kind == "push" and d == S2C:
            promised = self.next_push
            self.next_push += 2
            self.known.append(promised)
            return b"".join(headers_wires(self.enc[S2C], sid, REQ, False, n % 3 + 1, pad % 2, None,
                                          promised=promised))
        if kind == "data":
            size = [0, 1, 2, 100, 1000, 16384, 17000][n % 7]
            f = mk(fc.DataFrame, sid, data=b"d" * size, flags=["END_STREAM"] if flag else [])
            if pad:
                f.flags.add("PADDED")
                f.pad_length = pad
            return f.serialize()
        if kind == "window":
            return fc.WindowUpdateFrame(sid if n % 3 else 0,
                                        window_increment=[1, 100, 65535, 2 ** 31 - 1, 1 << 20][n % 5]).serialize()
        if kind == "rst":
            return mk(fc.RstStreamFrame, sid, error_code=n % 14).serialize()
        if kind == "ping":
            return fc.PingFrame(0, opaque_data=n.to_bytes(8, "big"), flags=["ACK"] if flag else []).serialize()
        if kind == "settings":
            if flag:
                return fc.SettingsFrame(0, flags=["ACK"]).serialize()
            entries = [(4, 65535 + n), (5, 16384 + n), (3, n % 50), (1, n % 8192), (6, 1000 + n)][:pad % 5 + 1]
            return fc.SettingsFrame(0, settings=dict(entries)).serialize()
        if kind == "priority":
            return mk(fc.PriorityFrame, sid, depends_on=self.sid(n), stream_weight=n % 256,
                                    exclusive=flag).serialize()
        if kind == "goaway":
            return fc.GoAwayFrame(0, last_stream_id=self.sid(n), error_code=n % 14,
                                  additional_data=b"bye" * (pad % 4)).serialize()
        if kind == "continuation":
            return mk(fc.ContinuationFrame, sid, data=b"\x82" * (n % 5),
                                        flags=["END_HEADERS"] if flag else []).serialize()
        if kind == "altsvc":
            return fc.AltSvcFrame(sid if flag else 0, origin=b"" if flag else b"example",
                                  field=b'h2=":443"').serialize()
        # An extension frame of an unknown type.
        return fc.ExtensionFrame(type=0x0B + n % 0xF0, stream_id=sid if flag else 0, flag_byte=pad,
                                 body=b"e" * (n % 40)).serialize()

    KINDS = st.sampled_from(["headers", "headers", "data", "data", "window", "rst", "ping", "settings",
                             "priority", "goaway", "continuation", "altsvc", "extension", "push", "push"])
    PICK = st.integers(-6, 30)
    N = st.integers(0, 255)
    PAD = st.integers(0, 20)

    # -- rules -----------------------------------------------------------------------

    @rule(d=SIDE, kind=KINDS, pick=PICK, n=N, flag=st.booleans(), pad=PAD, sizes=SIZES, flush=st.booleans())
    def send_frame(self, d, kind, pick, n, flag, pad, sizes, flush) -> None:
        self.feed(d, self.build(d, kind, pick, n, flag, pad), sizes, flush)

    @rule(d=SIDE, kind=KINDS, pick=PICK, n=N, flag=st.booleans(), pad=PAD, how=st.integers(0, 7),
          a=st.integers(0, 2 ** 32 - 1), b=st.integers(0, 2 ** 16), blob=st.binary(max_size=24), sizes=SIZES)
    def send_mutated(self, d, kind, pick, n, flag, pad, how, a, b, blob, sizes) -> None:
        self.feed(d, mutate(self.build(d, kind, pick, n, flag, pad), how, a, b, blob), sizes)

    @rule(d=SIDE, data=st.binary(min_size=1, max_size=64), sizes=SIZES)
    def send_random_bytes(self, d, data, sizes) -> None:
        self.feed(d, data, sizes)

    @rule(d=SIDE, t=st.integers(0, 255), flags=st.integers(0, 255), sid=st.integers(0, 2 ** 32 - 1),
          body=st.binary(max_size=40), sizes=SIZES)
    def send_random_frame(self, d, t, flags, sid, body, sizes) -> None:
        """A well-framed frame with random type, flags, stream id and body."""
        wire = len(body).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + body
        self.feed(d, wire, sizes)

    @rule(dt=st.sampled_from([0.0, 0.01, 0.3, 1.1, 6.0, 25.0, 400.0]))
    def advance(self, dt) -> None:
        self.now += dt
        self.relay.tick(self.now)

    @rule(first=st.booleans())
    def resume_hook(self, first) -> None:
        """An awaited hook finishes (the shell would await cmd.awaitable)."""
        if self.awaiting:
            cmd = self.awaiting.pop(0 if first else -1)
            try:
                cmd.awaitable.send(None)
            except StopIteration as done:
                self.relay.resume(cmd.direction, done.value)

    @rule(which=st.integers(0, 15), d=SIDE)
    def end(self, which, d) -> None:
        """Rarely: a socket closes, or the proxy shuts down."""
        if which == 0:
            self.closed_by_us = True
            if not self.relay.closed:
                self.gone.add(d)
            self.relay.eof(d, "fuzz eof")
        elif which == 1:
            self.relay.shutdown()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def checked(self) -> None:
        self.check()

    def check(self) -> None:
        r = self.relay
        if r is None:
            return
        for d in (C2S, S2C):
            self.max_fs[d] = max(self.max_fs[d], r.sides[1 - d].settings[5])
        self.check_logs()
        self.check_bounds()
        outputs = [r.take_output(C2S), r.take_output(S2C)]
        commands = r.take_commands()
        waits = [c for c in commands if isinstance(c, AwaitHook)]
        assert not waits or self.config["hooks"] == "async"
        self.awaiting += waits
        assert len(self.awaiting) <= 2, "more than one hook awaited per direction"
        if self.closed_at is not None:
            assert r.closed, "a closed relay opened again"
            assert not outputs[0] and not outputs[1], "a closed relay wrote output"
            assert not commands, f"a closed relay gave commands: {commands}"
            return
        for d in (C2S, S2C):
            self.check_output(d, outputs[d])
        if any(isinstance(c, Close) for c in commands):
            assert r.closed, "Close commands from a relay that is not closed"
        if r.closed:
            self.closed_at = len(self.handler.records)
            # (Each side is closed, but the one whose socket closed first: it needs no Close.)
            assert {c.side for c in commands if isinstance(c, Close)} == {0, 1} - self.gone
            if not self.closed_by_us:
                named = [rec for rec in self.handler.records if rec.levelno >= logging.INFO
                         and NAMED.search(rec.getMessage())]
                assert named, "the relay closed without a log line that names why"
            if self.sink is not None:
                assert self.sink.closed == 1

    def check_logs(self) -> None:
        records = self.handler.records
        for rec in records[self.records_seen:]:
            assert rec.exc_info is None, f"traceback logged: {rec.getMessage()}"
            if rec.levelno >= logging.WARNING:
                assert NAMED.search(rec.getMessage()), f"unnamed error: {rec.getMessage()}"
        self.records_seen = len(records)
        if self.relay.counters["violations"]:
            assert any("violation by the" in rec.getMessage() for rec in records)

    def check_bounds(self) -> None:
        r = self.relay
        readers = sum(side.reader.buffered for side in r.sides)
        assert readers <= 2 * (MAX_READ + 9) + 24
        held_wire = 0
        for d in (C2S, S2C):
            queued = [item for hs in r.sides[d].held_streams.values() if hs.held is not None for item in hs.held[d]]
            held_wire += sum(len(item[0]) for item in queued)
            held = sum(item[1] for item in queued)
            # A sender may only have in flight what its own view of the window allows: the
            # receiver's window plus what the proxy owes it (past that: FLOW_CONTROL_ERROR).
            assert held <= max(0, r.sides[d].window + r.sides[d].owed), f"held DATA {held} past the window"
        # Only hooks that make the proxy send more DATA than it received (grown frames, pushed
        # bodies using up the client's connection window) make it hold the sender's DATA.
        if self.config["hooks"] not in ("grow", "push"):
            assert held_wire == 0
        inbox = 0
        for d in (C2S, S2C):
            assert not r.sides[d].inbox or r.sides[d].paused is not None, "frames queued while no hook is awaited"
            inbox += sum(f[3] + 9 for f in r.sides[d].inbox)
        assert r.buffered == readers + held_wire + inbox
        assert len(r.streams) <= r.limits.max_streams + 64
        assert len(r.violations) <= 100

    def check_output(self, d: int, out: list) -> None:
        reader = self.readers[d]
        frames = []
        for buf in out:
            frames += reader.feed(bytes(buf))
        assert reader.buffered == 0, "output ends in the middle of a frame"
        sent = bytes(self.sent[d])
        for raw in frames:
            w = bytes(raw.wire)
            if w in sent:
                continue       # forwarded as received
            # Made (or changed) by the proxy: a valid frame the receiver accepts. (Transparent mode
            # re-encodes a header block on stream 0 too, as received, after logging the violation.)
            try:
                raw.parse()
            except FrameCodecError as exc:
                if self.config["strict"] or getattr(exc, "field", None) != "stream id":
                    raise
                assert self.relay.counters["violations"]
            assert raw.length <= self.max_fs[d], f"proxy-made frame of {raw.length} bytes: {raw}"


RelayFuzz.TestCase.settings = SETTINGS
TestRelayFuzz = RelayFuzz.TestCase


# ----------------------------------------------------------------------- plain tests

def started(strict: bool, hooks=(), sink=None, limits=None) -> Relay:
    r = Relay(1, RelayOptions(strict=strict, limits=limits or Limits(**SMALL)),
              hooks=HookChain(list(hooks)) if hooks else None, sink=sink)
    r.receive(C2S, PREFACE + fc.SettingsFrame(0).serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0).serialize(), 0.0)
    r.take_output(C2S)
    r.take_output(S2C)
    return r


def whole_frames(r: Relay, d: int) -> list:
    reader = FrameReader(2 ** 24 - 1)
    frames = reader.feed(b"".join(bytes(b) for b in r.take_output(d)))
    assert reader.buffered == 0
    return frames


@PLAIN
@given(strict=st.booleans(), hooks=st.sampled_from(sorted(HOOKS)),
       data=st.lists(st.tuples(SIDE, st.binary(min_size=1, max_size=200)), min_size=1, max_size=12))
def test_random_bytes_from_both_sides_after_a_valid_start(strict, hooks, data):
    handler, old = capture_logs()
    try:
        r = started(strict, HOOKS[hooks])
        for d, chunk in data:
            r.receive(d, chunk, 0.5)
            for dd in (C2S, S2C):
                whole_frames(r, dd)
            assert r.buffered <= 2 * (MAX_READ + 9)
        assert all(rec.exc_info is None for rec in handler.records)
    finally:
        release_logs(handler, old)


@PLAIN
@given(head=st.binary(min_size=1, max_size=40), rest=st.binary(max_size=40))
def test_anything_but_the_preface_is_refused_with_a_named_error(head, rest):
    handler, old = capture_logs()
    try:
        r = Relay(1, RelayOptions(limits=Limits(**SMALL)))
        data = head + rest
        r.receive(C2S, data, 0.0)
        if not PREFACE.startswith(data[:len(PREFACE)]):
            assert r.closed
            assert b"505" in b"".join(bytes(b) for b in r.take_output(S2C))
            assert any("preface" in rec.getMessage() for rec in handler.records)
        assert not r.take_output(C2S) or PREFACE.startswith(data[:len(PREFACE)])
        assert all(rec.exc_info is None for rec in handler.records)
    finally:
        release_logs(handler, old)


@PLAIN
@given(strict=st.booleans(), n=st.integers(1, 30), d=SIDE)
def test_server_bytes_before_the_client_preface_wait_and_stay_bounded(strict, n, d):
    """The server may speak first; nothing of it reaches the client before the client's preface."""
    r = Relay(1, RelayOptions(strict=strict, limits=Limits(**SMALL)))
    ping = fc.PingFrame(0, opaque_data=b"12345678").serialize()
    r.receive(S2C, fc.SettingsFrame(0).serialize() + ping * n, 0.0)
    assert not r.take_output(S2C)
    r.receive(C2S, PREFACE + fc.SettingsFrame(0).serialize(), 0.0)
    frames = whole_frames(r, S2C)
    assert not r.sides[S2C].inbox and r.buffered == 0
    assert len(frames) >= 1


def _corpus_cases():
    return sorted(CORPUS.glob("*/*.json"))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("path", _corpus_cases(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_frames_from_either_side(path, strict):
    """Each http2jp frame, from the client and from the server: a named violation or a clean pass."""
    case = json.loads(path.read_text())
    wire = bytes.fromhex(case["wire"])
    codes = {1: "PROTOCOL_ERROR", 6: "FRAME_SIZE_ERROR"}
    for d in (C2S, S2C):
        handler, old = capture_logs()
        try:
            r = started(strict, limits=Limits())
            # A header block needs a stream: open 1 (client) / promise on it (server).
            hp = hpack.Encoder()
            r.receive(C2S, fc.HeadersFrame(1, data=hp.encode(REQ), flags=["END_HEADERS"]).serialize(), 0.0)
            r.take_output(C2S)
            # A PING behind it ends a header block left open (the relay judges whole blocks).
            r.receive(d, wire + fc.PingFrame(0, opaque_data=b"fuzzping").serialize(), 0.0)
            for dd in (C2S, S2C):
                whole_frames(r, dd)
            text = " ".join(rec.getMessage() for rec in handler.records)
            assert all(rec.exc_info is None for rec in handler.records)
            if case["error"] is not None and strict and len(wire) - 9 == int(case["wire"][:6], 16):
                # A malformed frame in strict mode: a violation naming one of the corpus's codes.
                # (Error frames that are truncated, e.g. data-frame-size, stay incomplete.)
                named = [codes[c] for c in case["error"] if codes[c] in text]
                assert named, f"{path.name} from side {d}: expected {case['error']}, logged: {text}"
        finally:
            release_logs(handler, old)


# ----------------------------------------------------------------------- regressions found by the machine

def test_regression_client_push_promise_with_no_promised_id_while_reencoding():
    """Issue 13.12 ("cannot re-encode the header block on stream 0", about 2 runs in 8): a client's
    empty PUSH_PROMISE on stream 0 was taken for an HPACK failure, which stopped decoding for good;
    every later block was then forwarded undecoded into a re-encoded stream, with an unnamed error."""
    state = RelayFuzz()
    try:
        state.start(config={"strict": False, "hooks": "headers", "sink": None, "decode": False,
                            "settings_ack_timeout": 0.0, "idle_timeout": 0.0, "client_settings": {},
                            "server_settings": {}})
        state.checked()
        state.send_frame(d=0, flag=False, flush=False, kind="headers", n=0, pad=0, pick=0, sizes=[])
        state.checked()
        state.send_random_frame(body=b"", d=0, flags=0, sid=0, sizes=[], t=0)
        state.checked()
        state.send_random_frame(body=b"", d=0, flags=0, sid=0, sizes=[], t=5)
        state.checked()
        state.send_random_frame(body=b"", d=0, flags=0, sid=0, sizes=[], t=0)
        state.checked()
        assert not state.relay.sides[C2S].decoding_broken
        state.send_frame(d=0, flag=True, flush=True, kind="headers", n=0, pad=0, pick=0, sizes=[])
        state.checked()
    finally:
        state.teardown()


def test_regression_a_smaller_table_binds_the_encoder_only_after_the_settings_ack():
    """Issue 13.12: the client's smaller SETTINGS_HEADER_TABLE_SIZE was applied to the server's blocks
    at once, so a block the server sent before acknowledging it was a false COMPRESSION_ERROR."""
    r = started(False, hooks=[RewriteHeaders()])
    client, server = hpack.Encoder(), hpack.Encoder()
    r.receive(C2S, mk(fc.HeadersFrame, 1, data=client.encode(REQ), flags=["END_HEADERS"]).serialize(), 0.0)
    r.receive(C2S, fc.SettingsFrame(0, settings={1: 0}).serialize(), 0.0)
    # The server answers with its 4096-byte table still in use, then acknowledges, then shrinks.
    r.receive(S2C, mk(fc.HeadersFrame, 1, data=server.encode(RESP), flags=["END_HEADERS"]).serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0, flags=["ACK"]).serialize(), 0.0)
    server.header_table_size = 0
    r.receive(S2C, mk(fc.HeadersFrame, 1, data=server.encode([("x-t", "1")]),
                      flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    assert not r.violations and not r.sides[S2C].decoding_broken
