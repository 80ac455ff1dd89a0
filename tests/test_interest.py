"""Interest (issue 16): hooks and fault rules see only the frames they can act on.

A stream no hook wants is forwarded byte for byte with hooks installed (raw sockets on both
sides of a running proxy); a rule or hook on a path sees exactly the frames of the matching
streams (the sans-I/O relay); changing rules at run time through the admin API changes what an
open connection's hooks see at once.
"""
from __future__ import annotations

import asyncio

import hpack

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from proxy.faults import FaultHook
from proxy.hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, header_value
from proxy.hooks.builtin.headers import HeadersHook
from proxy.hooks.builtin.push import PushHook
from proxy.hooks.chain import HookChain
from proxy.hooks.interest import Interest
from proxy.testing import h2proxy_running
from tests.rawpeers import SETTINGS, SETTINGS_ACK, Origin, RawClient, raw
from tests.test_admin_api import http
from tests.test_relay_playbook import Peer, out, parsed, wire

REQ = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/plain/1")]


class PathRecorder:
    """A user hook that sees every frame type (on_frame) but declares interest in /api/* streams only."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen = []

    def interest(self):
        return Interest(stream=lambda req: (header_value(req, ":path") or "").startswith("/api/"))

    def on_frame(self, ctx, frame):
        self.seen.append((ctx.direction, type(frame).__name__, ctx.stream.id if ctx.stream else frame.stream_id))

    def on_headers(self, ctx, frame, headers):
        self.seen.append((ctx.direction, "HeadersFrame", ctx.stream.id if ctx.stream else frame.stream_id))


def _hooks_wanting_other_paths():
    """Hooks and rules that are installed but want nothing of /plain/* streams."""
    return [HeadersHook(rules=[{"match": {"path": "/never/*"}, "set": {"x-rewritten": "1"}}]),
            PushHook(rules=[{"path": "/never/*", "push": [{"path": "/style.css", "body": "x"}]}]),
            PathRecorder()]


# ---------------------------------------------------------------- byte for byte, real sockets

class RawOrigin:
    """A raw-socket HTTP/2 server: records every byte received, answers each request HEADERS with
    bytes it built itself (an HPACK block with literal fields, and DATA), so the test knows them."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.sent = []
        self.enc = hpack.Encoder()
        self.got_request = asyncio.Event()

    async def start(self) -> "RawOrigin":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        writer.write(SETTINGS)
        frames = FrameReader(expect_preface=True)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.received += data
                for f in frames.feed(data):
                    if f.type == 0x4 and not f.flags & 0x1:
                        writer.write(SETTINGS_ACK)
                    if f.type == 0x0 and f.flags & 0x1:       # the request's last DATA: respond
                        block = self.enc.encode([(":status", "200"), ("server", "raw-origin"),
                                                 ("x-stream", str(f.stream_id))])
                        response = raw(0x1, 0x4, f.stream_id, block) + raw(0x0, 0x1, f.stream_id, b"hello " * 50)
                        self.sent.append(response)
                        writer.write(response)
                        self.got_request.set()
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()


async def test_a_stream_no_hook_wants_is_forwarded_byte_for_byte_with_hooks_installed():
    origin = await RawOrigin().start()
    rules = ["rst_stream path=/never/*", "drop type=data path=/never/* direction=s2c"]
    try:
        async with h2proxy_running(f"h2c://127.0.0.1:{origin.port}", rules, hooks=_hooks_wanting_other_paths()) \
                as proxy:
            client = await RawClient.connect(proxy.port)
            sent = []
            for sid in (1, 3, 5):
                request = client.headers(sid, [(k, f"/plain/{sid}" if k == ":path" else v) for k, v in REQ],
                                         end=False)
                body = raw(0x0, 0x0, sid, b"a" * 100) + raw(0x0, 0x1, sid, b"b" * 10)
                sent.append(request + body)
                client.send(request + body)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not (len(origin.sent) == 3 and all(r in bytes(client.received) for r in origin.sent)):
                assert loop.time() < deadline, "the responses did not all arrive"
                await client.read_some(0.5)
            bridge = next(iter(proxy.server.bridges))
            relay_decodes = [side.decoding for side in bridge.relay.sides]
            client.close()
        # What each side sent reached the other as the very bytes, frame for frame and in order.
        upstream = bytes(origin.received)
        assert upstream.startswith(PREFACE)
        assert b"".join(sent) in upstream
        assert len(origin.sent) == 3
        for response in origin.sent:
            assert response in bytes(client.received)
        # (The installed hooks do decode header blocks: the bytes are forwarded all the same.)
        assert relay_decodes == [True, True]
        assert proxy.fault_hook.matches("rst_stream-1") == 0
    finally:
        await origin.stop()


# ---------------------------------------------------------------- exactly the frames of matching streams

class Conn:
    """A relay between two playbook peers, SETTINGS exchanged."""

    def __init__(self, hooks, client_settings=None) -> None:
        self.chain = HookChain(hooks)
        for h in hooks:
            if isinstance(h, FaultHook):
                h.attach(self.chain)
        self.relay = Relay(1, RelayOptions(), hooks=self.chain)
        self.client, self.server = Peer(), Peer()
        self.relay.receive(C2S, PREFACE + wire(fc.SettingsFrame(0, settings=client_settings or {})), 0.0)
        self.relay.receive(S2C, wire(fc.SettingsFrame(0), fc.SettingsFrame(0, flags=["ACK"])), 0.0)
        self.relay.receive(C2S, wire(fc.SettingsFrame(0, flags=["ACK"])), 0.0)
        out(self.relay, C2S), out(self.relay, S2C)

    def send(self, d, *frames):
        self.relay.receive(d, wire(*frames), 0.0)

    def exchange(self, sid: int, path: str) -> tuple:
        """A POST with a body and its response; returns the bytes out each way."""
        req = [(k, path if k == ":path" else v) for k, v in REQ]
        c = wire(fc.HeadersFrame(sid, data=self.client.enc.encode(req), flags=["END_HEADERS"]),
                 fc.DataFrame(sid, data=b"x" * 20, flags=["END_STREAM"]))
        self.relay.receive(C2S, c, 0.0)
        up = out(self.relay, C2S)
        s = wire(fc.HeadersFrame(sid, data=self.server.enc.encode([(":status", "200")]), flags=["END_HEADERS"]),
                 fc.DataFrame(sid, data=b"y" * 30), fc.DataFrame(sid, data=b"", flags=["END_STREAM"]))
        self.relay.receive(S2C, s, 0.0)
        down = out(self.relay, S2C)
        return (c, up), (s, down)


def test_a_hook_on_a_path_sees_exactly_the_frames_of_matching_streams():
    recorder = PathRecorder()
    c = Conn([recorder])
    (c1, up1), (s1, down1) = c.exchange(1, "/plain/a")
    (c3, up3), (s3, down3) = c.exchange(3, "/api/items")
    (c5, up5), (s5, down5) = c.exchange(5, "/plain/b")
    assert recorder.seen == [(CLIENT_TO_SERVER, "HeadersFrame", 3), (CLIENT_TO_SERVER, "DataFrame", 3),
                             (SERVER_TO_CLIENT, "HeadersFrame", 3), (SERVER_TO_CLIENT, "DataFrame", 3),
                             (SERVER_TO_CLIENT, "DataFrame", 3)]
    # The others went through as they came.
    assert (up1, down1, up5, down5) == (c1, s1, c5, s5)
    # Connection-level frames are no stream's: a hook with a stream condition does not get them.
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    assert len(recorder.seen) == 5


def test_a_fault_rule_on_a_path_matches_exactly_the_frames_of_matching_streams():
    # A rule that never fires (after = a million) counts every frame it matches.
    hook = FaultHook(["drop path=/api/* after=1000000 name=count"])
    c = Conn([hook])
    for sid, path in ((1, "/plain/a"), (3, "/api/x"), (5, "/plain/b"), (7, "/api/y")):
        (cb, up), (sb, down) = c.exchange(sid, path)
        assert (up, down) == (cb, sb)
    # Per matching stream: HEADERS + DATA from the client, HEADERS + 2 DATA from the server.
    assert hook.matches("count") == 2 * 5
    assert c.relay.streams == {}


def _requests(c: Conn, paths) -> bytes:
    """One read of requests (HEADERS, END_STREAM) on new client streams 1, 3, 5, ..."""
    return wire(*(fc.HeadersFrame(2 * i + 1, data=c.client.enc.encode([(k, p if k == ":path" else v) for k, v in REQ]),
                                  flags=["END_HEADERS", "END_STREAM"]) for i, p in enumerate(paths)))


def test_a_read_of_requests_no_rule_acts_on_goes_out_as_one_buffer():
    # A rule on a path, and a rule on every request that does not fire: each request is decided on,
    # and the read still goes out as it came, in one piece (as with nothing installed).
    for rule in ("rst_stream path=/never/*", "rst_stream type=headers direction=c2s after=1000000"):
        c = Conn([FaultHook([rule])])
        read = _requests(c, [f"/plain/{i}" for i in range(10)])
        c.relay.receive(C2S, read, 0.0)
        assert [bytes(b) for b in c.relay.take_output(C2S)] == [read], rule
        assert sorted(c.relay.streams) == list(range(1, 21, 2))


def test_a_request_a_rule_acts_on_in_the_middle_of_a_read_keeps_the_order_of_the_others():
    c = Conn([FaultHook(["rst_stream path=/api/* towards=client code=REFUSED_STREAM"])])
    paths = ["/plain/a", "/plain/b", "/api/x", "/plain/c", "/plain/d"]
    read = _requests(c, paths)
    frames = [bytes(f.wire) for f in FrameReader().feed(read)]
    c.relay.receive(C2S, read, 0.0)
    sent = out(c.relay, C2S)
    # The two before it as they came; stream 5 never reaches the server; the two behind it re-encoded
    # (the dropped block filled the table), in order, and the server decodes what the client sent.
    assert sent.startswith(frames[0] + frames[1])
    heads = parsed(sent)
    assert [f.stream_id for f in heads] == [1, 3, 7, 9]
    decoder = hpack.Decoder()
    assert [dict(decoder.decode(f.data))[":path"] for f in heads] == paths[:2] + paths[3:]
    c.relay.tick(1.0)                                                       # (the reset is held a moment)
    [reset] = parsed(out(c.relay, S2C))
    assert isinstance(reset, fc.RstStreamFrame) and (reset.stream_id, reset.error_code) == (5, 7)


def test_rules_on_type_alone_reset_the_same_streams_alone_and_beside_a_rule_on_a_path():
    # Alone, the type-only rule's entry list is the same for every stream and screens with what it knows
    # when it is made; beside a rule on a path the lists differ per stream and the general screen asks.
    # Both count the same matches and reset the same requests, also across reads.
    every_third = "rst_stream type=headers direction=c2s every=3 towards=client code=REFUSED_STREAM"
    reset = {}
    for rules in ([every_third], [every_third, "rst_stream path=/never/*"]):
        c = Conn([FaultHook(rules)])
        for batch in range(3):
            c.relay.receive(C2S, wire(*(fc.HeadersFrame(
                10 * batch + 2 * i + 1, data=c.client.enc.encode([(k, f"/plain/{batch}/{i}" if k == ":path" else v)
                                                                  for k, v in REQ]),
                flags=["END_HEADERS", "END_STREAM"]) for i in range(5))), 0.0)
        forwarded = {f.stream_id for f in parsed(out(c.relay, C2S)) if isinstance(f, fc.HeadersFrame)}
        c.relay.tick(1.0)                                                   # (the resets are held a moment)
        resets = [f.stream_id for f in parsed(out(c.relay, S2C)) if isinstance(f, fc.RstStreamFrame)]
        assert forwarded.isdisjoint(resets) and len(forwarded) + len(resets) == 15, rules
        reset[len(rules)] = resets
    assert reset[1] == reset[2] == [5, 11, 17, 23, 29]


def test_the_headers_hook_on_responses_decodes_no_request_and_rewrites_only_matching_streams():
    hook = HeadersHook(rules=[{"match": {"direction": "response", "path": "/api/*"}, "set": {"x-api": "1"}}])
    c = Conn([hook])
    assert [side.decoding for side in c.relay.sides] == [True, True]  # (requests are decoded: the path is theirs)
    (c1, up1), (s1, down1) = c.exchange(1, "/plain")
    assert (up1, down1) == (c1, s1)
    (_, _), (_, down3) = c.exchange(3, "/api/v1")
    heads = [f for f in parsed(down3) if isinstance(f, fc.HeadersFrame)]
    assert hpack.Decoder().decode(heads[0].data) == [(":status", "200"), ("x-api", "1")]
    any_path = HeadersHook(rules=[{"match": {"direction": "response"}, "set": {"x-any": "1"}}])
    assert [side.decoding for side in Conn([any_path]).relay.sides] == [False, True]  # no request is decoded for it


def test_a_push_rule_on_a_path_never_requested_leaves_every_frame_alone():
    push = PushHook(rules=[{"path": "/never/*", "push": [{"path": "/style.css", "body": "x"}]}])
    c = Conn([push])
    for sid in (1, 3, 5):
        (cb, up), (sb, down) = c.exchange(sid, f"/page/{sid}")
        assert (up, down) == (cb, sb)
    assert not c.relay.streams and [side.decoding for side in c.relay.sides] == [True, True]


# ---------------------------------------------------------------- rules changed at run time

async def test_rules_changed_through_the_admin_api_change_interest_at_once_on_an_open_connection():
    origin = await Origin().start()
    try:
        async with h2proxy_running(origin.url, admin=True, admin_token="tok") as proxy:
            client = await RawClient.connect(proxy.port)
            port = proxy.admin.port

            async def status_of(sid: int, path: str):
                client.send(client.headers(sid, [(k, path if k == ":path" else v) for k, v in REQ], end=True))
                f = await client.until(lambda f: getattr(f, "stream_id", 0) == sid
                                       and isinstance(f, (fc.HeadersFrame, fc.RstStreamFrame)))
                return "reset" if isinstance(f, fc.RstStreamFrame) else "answered"

            assert await status_of(1, "/a") == "answered"
            relay = next(iter(proxy.server.bridges)).relay
            # An open stream: the origin holds /hold.
            client.send(client.headers(3, [(k, "/hold" if k == ":path" else v) for k, v in REQ], end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not any(3 in conn.streams for conn in origin.conns):      # (the origin has it)
                assert loop.time() < deadline, "the origin never got the request"
                await asyncio.wait_for(origin.new_conn.wait(), 5)
                await asyncio.sleep(0.01)
            assert relay.streams[3].hooks is None            # nobody wants it yet
            code, _, _ = await http(port, "POST", "/faults", {"line": "rst_stream path=/a* towards=client "
                                                                      "name=no-a"}, token="tok")
            assert code == 201, code
            assert await status_of(5, "/a") == "reset"          # the same connection, the next request
            assert await status_of(7, "/b") == "answered"
            code, _, _ = await http(port, "POST", "/faults", {"line": "drop path=/hold type=rst_stream "
                                                                      "direction=c2s name=keep-hold"}, token="tok")
            assert code == 201, code
            assert relay.streams[3].hooks is not None          # the open stream is wanted now
            code, _, _ = await http(port, "DELETE", "/faults/no-a", token="tok")
            assert code in (200, 204), code
            assert await status_of(9, "/a") == "answered"
            code, _, _ = await http(port, "DELETE", "/faults/keep-hold", token="tok")
            assert relay.streams[3].hooks is None              # and not wanted any more
            client.close()
    finally:
        await origin.stop()


# ---------------------------------------------------------------- dropping a block that changed no table

def _requests_through(rule: str, n: int = 3):
    """n GET requests with the same headers through a relay with ``rule``; (relay, the client's blocks,
    what reached the server, the header lists the server decodes from it)."""
    hook = FaultHook([rule])
    c = Conn([hook])
    req = [(":method", "GET"), (":scheme", "http"), (":authority", "example.org"), (":path", "/same"),
           ("user-agent", "interest-test")]
    sent = []
    for i in range(n):
        block = wire(fc.HeadersFrame(2 * i + 1, data=c.client.enc.encode(req), flags=["END_HEADERS", "END_STREAM"]))
        sent.append(block)
        c.relay.receive(C2S, block, 0.0)
    upstream = out(c.relay, C2S)
    server = hpack.Decoder()
    decoded = [server.decode(f.data) for f in parsed(upstream) if isinstance(f, fc.HeadersFrame)]
    return c.relay, sent, upstream, decoded, req


def test_a_dropped_block_that_changed_no_hpack_table_needs_no_reencoding():
    # The 2nd request is all indexed (the 1st filled the table): dropping it keeps the server in step.
    relay, sent, upstream, decoded, req = _requests_through(
        "rst_stream type=headers direction=c2s nth_stream=2 towards=client")
    assert relay.sides[C2S].encoder is None
    assert upstream == sent[0] + sent[2]                       # the others byte for byte
    assert decoded == [req, req]


def test_a_dropped_block_that_filled_the_table_makes_the_direction_reencoded():
    relay, sent, upstream, decoded, req = _requests_through(
        "rst_stream type=headers direction=c2s nth_stream=1 towards=client")
    assert relay.sides[C2S].encoder is not None
    assert upstream != sent[1] + sent[2]
    assert decoded == [req, req]                                 # and the server still decodes them right


def test_a_rule_on_a_path_leaves_connection_frames_alone_and_watches_only_untracked_streams():
    c = Conn([FaultHook(["rst_stream path=/never/*"])])
    # Nothing on stream 0 (SETTINGS, PING, WINDOW_UPDATE) meets a hook ...
    assert all(t not in c.relay.hook_table[d] for d in (C2S, S2C) for t in (0x4, 0x6, 0x8))
    assert all(e[0] != "faults" for d in (C2S, S2C) for entries in c.relay.hook_table[d].values() for e in entries)
    # ... the book-keeping watches frames on streams the relay no longer tracks (those a rule reset) ...
    assert "faults" in [e[0] for e in c.relay.untracked_table[C2S][0]]
    # ... and no stream that does not match has any entry.
    (cb, up), (sb, down) = c.exchange(1, "/plain")
    assert (up, down) == (cb, sb)
    ping = wire(fc.PingFrame(0, opaque_data=b"12345678"), fc.WindowUpdateFrame(0, window_increment=1000))
    c.relay.receive(C2S, ping, 0.0)
    assert out(c.relay, C2S) == ping


# ---------------------------------------------------------------- blocks decoded only to keep the table in step

def _open(c: Conn, sid: int, path: str) -> None:
    req = [(k, path if k == ":path" else v) for k, v in REQ]
    c.send(C2S, fc.HeadersFrame(sid, data=c.client.enc.encode(req), flags=["END_HEADERS", "END_STREAM"]))
    out(c.relay, C2S)


def test_a_block_dropped_in_a_read_reencodes_the_blocks_behind_it_in_the_same_read():
    # The response of /api/x fills the server's table and is dropped; the response of /plain, in the
    # same read, refers to that entry: the client (which never got the first) must get it re-encoded.
    c = Conn([FaultHook(["drop type=headers direction=s2c path=/api/*"])])
    _open(c, 1, "/api/x")
    _open(c, 3, "/plain")
    fields = [(":status", "200"), ("server", "h2proxy-test-origin")]
    first = c.server.enc.encode(fields)
    second = c.server.enc.encode(fields)
    assert len(second) < len(first)                           # (indexed: it needs the first one's entry)
    c.send(S2C, fc.HeadersFrame(1, data=first, flags=["END_HEADERS"]),
           fc.HeadersFrame(3, data=second, flags=["END_HEADERS", "END_STREAM"]))
    heads = [f for f in parsed(out(c.relay, S2C)) if isinstance(f, fc.HeadersFrame)]
    assert [f.stream_id for f in heads] == [3]
    assert hpack.Decoder().decode(heads[0].data) == fields


def test_a_block_that_does_not_decode_on_a_stream_no_hook_wants_is_reported_as_before():
    c = Conn([FaultHook(["rst_stream path=/never/*"])])
    _open(c, 1, "/plain")
    bad = bytes([0x80 | 0x7E])                                 # index 126: past both tables
    c.send(S2C, fc.HeadersFrame(1, data=bad, flags=["END_HEADERS", "END_STREAM"]))
    assert [(v["section"], v["code"]) for v in c.relay.violations if "does not decode" in v["message"]] == [
        ("4.3", "COMPRESSION_ERROR")], c.relay.violations
    assert c.relay.sides[S2C].decoding_broken and not c.relay.sides[S2C].fast_synced
    # Transparent mode: forwarded as it came; later blocks of that direction go the general way.
    assert out(c.relay, S2C) == wire(fc.HeadersFrame(1, data=bad, flags=["END_HEADERS", "END_STREAM"]))


def test_a_reset_at_the_request_decodes_responses_only_where_the_client_allows_push():
    # `rst_stream path=...` resets each stream it wants at its request block: such a stream never gets a
    # response, so responses need decoding only for pushed streams (a PUSH_PROMISE carries their request).
    bad = bytes([0x80 | 0x7E])                                 # index 126: does not decode
    seen = {}
    for push in (0, 1):
        hook = FaultHook(["rst_stream code=REFUSED_STREAM path=/never/*"])
        hook.static = True                                     # (as h2proxy --fault without --admin)
        c = Conn([hook], client_settings={0x2: push})
        _open(c, 1, "/never/a")
        assert [(f.stream_id, f.error_code) for f in parsed(out(c.relay, S2C))] == [(1, 7)]   # reset either way
        _open(c, 3, "/plain")
        c.send(S2C, fc.HeadersFrame(3, data=bad, flags=["END_HEADERS", "END_STREAM"]))
        # Forwarded as it came either way (transparent mode); reported only where it was decoded.
        assert out(c.relay, S2C) == wire(fc.HeadersFrame(3, data=bad, flags=["END_HEADERS", "END_STREAM"]))
        seen[push] = [v["code"] for v in c.relay.violations if "does not decode" in v["message"]]
    assert seen == {0: [], 1: ["COMPRESSION_ERROR"]}
    # A rule that may let the request by and act on the response needs responses decoded in any case.
    hook = FaultHook(["rst_stream code=REFUSED_STREAM path=/never/* after=1"])
    hook.static = True
    c = Conn([hook], client_settings={0x2: 0})
    _open(c, 1, "/plain")
    c.send(S2C, fc.HeadersFrame(1, data=bad, flags=["END_HEADERS", "END_STREAM"]))
    assert [v["code"] for v in c.relay.violations if "does not decode" in v["message"]] == ["COMPRESSION_ERROR"]


def test_blocks_decoded_only_for_the_table_are_not_checked_but_those_a_hook_is_handed_are():
    recorder = PathRecorder()
    c = Conn([recorder])
    assert [side.fast_synced for side in c.relay.sides] == [True, True]
    upper = [("X-Upper", "1")]
    for sid, path in ((1, "/plain/a"), (3, "/api/b")):
        req = [(k, path if k == ":path" else v) for k, v in REQ] + upper
        c.send(C2S, fc.HeadersFrame(sid, data=c.client.enc.encode(req), flags=["END_HEADERS", "END_STREAM"]))
    # Only the /api/ stream's request went to the hook, and only it was checked (RFC 9113 8.2.1).
    assert [v["stream"] for v in c.relay.violations if "x-upper" in v["message"].lower()] == [3], \
        c.relay.violations
    # With decode_headers every block is checked.
    checked = Relay(2, RelayOptions(decode_headers=True), hooks=HookChain([PathRecorder()]))
    assert checked.check_all and [side.fast_synced for side in checked.sides] == [False, False]


def test_a_request_block_sent_again_is_checked_again_when_a_hook_is_handed_it():
    # (The relay remembers a request block's section 8 verdict with what it opened its stream with:
    # the same bytes again are reported again, not let through as remembered.)
    c = Conn([FaultHook(["rst_stream type=headers direction=c2s every=1000"])])
    block = b"\x82\x86\x01\x01e\x04\x02/a" + b"\x00\x07X-Upper\x011"    # (nothing indexed: the same each time)
    for sid in (1, 3, 5):
        c.send(C2S, fc.HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]))
    assert [v["stream"] for v in c.relay.violations if "x-upper" in v["message"].lower()] == [1, 3, 5], \
        c.relay.violations
    # Transparent mode: each forwarded as it came.
    assert out(c.relay, C2S) == b"".join(
        wire(fc.HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"])) for sid in (1, 3, 5))


# ---------------------------------------------------------------- a hook that only rewrites header lists

class _SameRewriteByHand:
    """What the headers hook does, as a plain on_headers hook (the hook chain's way)."""

    def interest(self):
        return Interest(types=["headers"], directions=[SERVER_TO_CLIENT])

    def on_headers(self, ctx, frame, headers):
        return [h for h in headers if h[0] != "x-drop"] + [("x-via", "1")]


def test_the_headers_hook_called_directly_sends_what_the_hook_chain_sends():
    rules = [{"match": {"direction": "response"}, "remove": ["x-drop"], "set": {"x-via": "1"}}]
    hook = HeadersHook(rules=rules)
    direct, chained = Conn([hook]), Conn([_SameRewriteByHand()])
    assert type(direct.relay.hooks.stream_tables(_stream_with(REQ))[S2C][0x1]).__name__ == "RewriteEntries"
    assert type(chained.relay.hooks.stream_tables(_stream_with(REQ))[S2C][0x1]).__name__ == "Entries"
    dec = hpack.Decoder()
    for sid in (1, 3, 5):
        _open(direct, sid, "/a")
        _open(chained, sid, "/a")
        fields = [(":status", "200"), ("x-drop", "y"), ("server", f"s{sid}")]
        blocks = []
        for c in (direct, chained):
            c.send(S2C, fc.HeadersFrame(sid, data=c.server.enc.encode(fields), flags=["END_HEADERS"]),
                   fc.DataFrame(sid, data=b"z", flags=["END_STREAM"]))
            blocks.append(out(c.relay, S2C))
        assert blocks[0] == blocks[1]
        heads = [f for f in parsed(blocks[0]) if isinstance(f, fc.HeadersFrame)]
        assert dec.decode(heads[0].data) == [(":status", "200"), ("server", f"s{sid}"), ("x-via", "1")]
    assert hook.changed == 3 and not direct.relay.streams


def test_a_rewrite_that_raises_goes_through_the_hook_chain_and_is_reported(caplog):
    hook = HeadersHook(rules=[{"match": {"direction": "response"}, "set": {"x-via": "1"}}])
    hook.rewrite = lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
    c = Conn([hook])
    _open(c, 1, "/a")
    block = c.server.enc.encode([(":status", "200")])
    c.send(S2C, fc.HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
    assert out(c.relay, S2C) == wire(fc.HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
    assert c.relay.counters["hook_errors"] == 1
    assert any("boom" in r.getMessage() or (r.exc_info and "boom" in str(r.exc_info[1])) for r in caplog.records)


def _stream_with(request):
    from proxy.core.relay import Stream
    s = Stream(1, "open", 65535, 65535)
    s.request_headers = request
    return s


def test_identical_requests_share_a_remembered_outcome_only_for_conditions_on_the_request_alone():
    # Three identical requests: a rule on the path alone matches all three (its outcome is remembered
    # per request list), one on the path and the stream's ordinal only the second.
    by_path = FaultHook(["drop path=/api/* after=1000000 name=count"])
    by_ordinal = FaultHook(["drop path=/api/* nth_stream=2 after=1000000 name=count"])
    for hook, streams in ((by_path, 3), (by_ordinal, 1)):
        c = Conn([hook])
        assert (c.chain._memo is not None) == (hook is by_path)
        for sid in (1, 3, 5):
            (cb, up), (sb, down) = c.exchange(sid, "/api/x")
            assert (up, down) == (cb, sb)
        assert hook.matches("count") == 5 * streams
