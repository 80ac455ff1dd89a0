"""The sans-I/O relay as playbooks: frames in from one side, the exact frames expected out.

No sockets: each test feeds bytes to :class:`Relay` and reads what it would write.
"""
from __future__ import annotations

import hpack
import pytest

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader
from proxy.core.commands import AwaitHook, Close
from proxy.core.limits import Limits
from proxy.core.protocol import ErrorCode
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from proxy.hooks.api import RawBytes
from proxy.hooks.chain import HookChain

REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/")]
RESP = [(":status", "200"), ("server", "origin")]


class Peer:
    """One endpoint's HPACK encoder, to build header blocks as a real peer would."""

    def __init__(self) -> None:
        self.enc = hpack.Encoder()

    def headers(self, sid, headers, end=False, **kw):
        f = fc.HeadersFrame(sid, data=self.enc.encode(headers), **kw)
        f.flags.add("END_HEADERS")
        if end:
            f.flags.add("END_STREAM")
        return f


def wire(*frames) -> bytes:
    return b"".join(f if isinstance(f, (bytes, bytearray)) else f.serialize() for f in frames)


def closes(r: Relay):
    """The sockets the relay asked the shell to close since last asked: [(side, abort)]."""
    return [(c.side, c.abort) for c in r.take_commands() if isinstance(c, Close)]


def out(relay: Relay, d: int) -> bytes:
    return b"".join(bytes(b) for b in relay.take_output(d))


def parsed(data: bytes):
    return [f.parse() for f in FrameReader().feed(data)]


def start(hooks=None, **options) -> Relay:
    r = Relay(1, RelayOptions(**options), hooks=HookChain(hooks) if hooks else None)
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
    assert out(r, C2S) == PREFACE + wire(fc.SettingsFrame(0))
    r.receive(S2C, wire(fc.SettingsFrame(0)), 0.0)
    assert out(r, S2C) == wire(fc.SettingsFrame(0))
    return r


def test_untouched_frames_leave_as_they_came_in_any_chunking():
    client = Peer()
    stream = PREFACE + wire(fc.SettingsFrame(0, settings={4: 70000}),
                            client.headers(1, REQ), fc.DataFrame(1, data=b"x" * 100, pad_length=5,
                                                                 flags=["PADDED", "END_STREAM"]),
                            fc.ExtensionFrame(type=0xBE, stream_id=0, flag_byte=0xFF, body=b"ext"))
    stream += bytes.fromhex("000008" "06" "f2" "80000000") + b"abcdefgh"   # PING, undefined flags, R bit
    for size in (1, 7, 9, 1000):
        r = Relay(1)
        got = b""
        for i in range(0, len(stream), size):
            r.receive(C2S, stream[i:i + size], 0.0)
            got += out(r, C2S)
        assert got == stream


def test_stream_states_and_windows_follow_the_frames():
    r = start()
    c, s = Peer(), Peer()
    r.receive(C2S, wire(c.headers(1, REQ)), 0.0)
    assert r.streams[1].state == "open"
    r.receive(C2S, wire(fc.DataFrame(1, data=b"a" * 1000, flags=["END_STREAM"])), 0.0)
    assert r.streams[1].state == "half-closed (local)"
    assert r.sides[C2S].window == 65535 - 1000 and r.streams[1].window[C2S] == 65535 - 1000
    r.receive(S2C, wire(fc.WindowUpdateFrame(0, window_increment=1000)), 0.0)
    assert r.sides[C2S].window == 65535
    r.receive(S2C, wire(s.headers(1, RESP), fc.DataFrame(1, data=b"b", flags=["END_STREAM"])), 0.0)
    assert 1 not in r.streams
    assert r.counters["violations"] == 0


def test_initial_window_size_change_applies_to_open_streams():
    r = start()
    r.receive(C2S, wire(Peer().headers(1, REQ)), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0, settings={4: 100000})), 0.0)
    assert r.streams[1].window[C2S] == 100000


@pytest.mark.parametrize("frame, section, code", [
    (fc.DataFrame(1, data=b"x"), "5.1", "PROTOCOL_ERROR"),
    (bytes.fromhex("000003" "00" "00" "00000000") + b"abc", "6.1", "PROTOCOL_ERROR"),
    (bytes.fromhex("000007" "06" "00" "00000000") + b"1234567", "6.7", "FRAME_SIZE_ERROR"),
    (bytes.fromhex("000004" "08" "00" "00000000") + b"\x00\x00\x00\x00", "6.9", "PROTOCOL_ERROR"),
    (bytes.fromhex("000006" "04" "00" "00000000") + b"\x00\x02\x00\x00\x00\x05", "6.5.2", "PROTOCOL_ERROR"),
    (fc.ContinuationFrame(1, data=b"", flags=["END_HEADERS"]), "6.10", "PROTOCOL_ERROR"),
])
def test_violations_are_named_and_still_forwarded(frame, section, code):
    r = start()
    r.receive(C2S, wire(frame), 0.0)
    assert out(r, C2S) == wire(frame)
    assert r.violations[-1]["section"] == section and r.violations[-1]["code"] == code
    assert r.violations[-1]["side"] == "client"


def test_a_side_that_closes_its_socket_only_gets_the_other_side_closed():
    """eof(side): the relay says the connection ends and closes the other socket; the one that closed
    gets no Close (Relay._finish honours close_sides)."""
    for side in (C2S, S2C):
        r = start()
        r.eof(side, "gone")
        assert r.closed and closes(r) == [(1 - side, False)]
        if side == S2C:     # (the client hears why; a client leaving with no stream open owes the server nothing)
            [goaway] = parsed(out(r, S2C))
            assert isinstance(goaway, fc.GoAwayFrame) and goaway.error_code == ErrorCode.INTERNAL_ERROR
        assert out(r, C2S) == b""


def test_strict_mode_answers_connection_error_and_closes():
    r = start(strict=True)
    r.receive(C2S, bytes.fromhex("000003" "00" "00" "00000000") + b"abc", 0.0)
    assert out(r, C2S) == wire(fc.GoAwayFrame(0, last_stream_id=0, error_code=0,
                                              additional_data=b"h2proxy: the client's connection failed "
                                                              b"(PROTOCOL_ERROR)"))
    to_client = parsed(out(r, S2C))
    assert isinstance(to_client[0], fc.GoAwayFrame) and to_client[0].error_code == 1
    assert {side for side, _ in closes(r)} == {0, 1}


def test_even_client_stream_and_decreasing_ids_are_violations():
    r = start()
    c = Peer()
    r.receive(C2S, wire(c.headers(3, REQ)), 0.0)
    r.receive(C2S, wire(c.headers(1, REQ)), 0.0)
    assert r.violations[-1]["section"] == "5.1.1"
    r.receive(C2S, wire(c.headers(6, REQ)), 0.0)
    assert "even" in r.violations[-1]["message"]


class DropData:
    def on_data(self, ctx, frame):
        if ctx.direction == "server->client":
            return []


def test_dropped_data_is_credited_back_to_the_sender():
    r = start(hooks=[DropData()])
    c, s = Peer(), Peer()
    r.receive(C2S, wire(c.headers(1, REQ, end=True)), 0.0)
    out(r, C2S)
    r.receive(S2C, wire(s.headers(1, RESP), fc.DataFrame(1, data=b"z" * 5000)), 0.0)
    to_server = parsed(out(r, C2S))
    credits = {(f.stream_id, f.window_increment) for f in to_server if isinstance(f, fc.WindowUpdateFrame)}
    assert credits == {(0, 5000), (1, 5000)}
    to_client = parsed(out(r, S2C))
    assert not any(isinstance(f, fc.DataFrame) for f in to_client)


class AddHeader:
    def on_headers(self, ctx, frame, headers):
        if ctx.direction == "server->client":
            return headers + [("x-proxied", "1")]


def test_changed_header_blocks_are_reencoded_and_stay_decodable():
    r = start(hooks=[AddHeader()])
    c, s = Peer(), Peer()
    client_decoder = hpack.Decoder()
    for sid in (1, 3, 5):
        r.receive(C2S, wire(c.headers(sid, REQ, end=True)), 0.0)
        r.receive(S2C, wire(s.headers(sid, RESP + [("x-n", str(sid))], end=True)), 0.0)
        frames = parsed(out(r, S2C))
        assert len(frames) == 1 and isinstance(frames[0], fc.HeadersFrame)
        headers = client_decoder.decode(frames[0].data)
        assert headers == RESP + [("x-n", str(sid)), ("x-proxied", "1")]
        assert "END_STREAM" in frames[0].flags
    # Requests were not touched: they still pass byte for byte.
    assert r.sides[C2S].encoder is None


def test_big_header_block_is_resplit_to_the_receivers_frame_size():
    class Huge:
        def on_headers(self, ctx, frame, headers):
            if ctx.direction == "client->server":
                return headers + [("x-big", "v" * 40000)]
    r = start(hooks=[Huge()])
    r.receive(C2S, wire(Peer().headers(1, REQ, end=True)), 0.0)
    frames = parsed(out(r, C2S))
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "ContinuationFrame", "ContinuationFrame"]
    assert all(len(f.serialize()) - 9 <= 16384 for f in frames)
    assert "END_HEADERS" in frames[-1].flags and "END_HEADERS" not in frames[0].flags


def test_header_block_with_continuations_passes_whole():
    c = Peer()
    block = c.enc.encode(REQ + [("x-long", "y" * 100)])
    r = start(hooks=[AddHeader()])
    head = fc.HeadersFrame(1, data=block[:10])
    cont = fc.ContinuationFrame(1, data=block[10:], flags=["END_HEADERS"])
    r.receive(C2S, wire(head), 0.0)
    assert out(r, C2S) == b""          # nothing leaves until the block is complete
    r.receive(C2S, wire(cont), 0.0)
    assert out(r, C2S) == wire(head, cont)


def test_oversized_data_from_a_hook_is_split():
    class Grow:
        def on_data(self, ctx, frame):
            if ctx.direction == "client->server":
                return fc.DataFrame(frame.stream_id, data=b"q" * 40000, flags=["END_STREAM"])
    r = start(hooks=[Grow()])
    r.receive(S2C, wire(fc.SettingsFrame(0, settings={4: 1 << 20})), 0.0)
    r.receive(C2S, wire(fc.WindowUpdateFrame(0, window_increment=0)), 0.0) if False else None
    r.receive(C2S, wire(Peer().headers(1, REQ), fc.DataFrame(1, data=b"x", flags=["END_STREAM"])), 0.0)
    frames = [f for f in parsed(out(r, C2S)) if isinstance(f, fc.DataFrame)]
    assert [len(f.data) for f in frames] == [16384, 16384, 40000 - 32768]
    assert "END_STREAM" in frames[-1].flags and "END_STREAM" not in frames[0].flags
    # The proxy sent 39999 more bytes than the client: it owes them to the server's window.
    assert r.sides[C2S].owed == 39999


def test_growing_data_beyond_the_window_holds_it_until_window_update():
    class Grow:
        def on_data(self, ctx, frame):
            if ctx.direction == "server->client":
                return fc.DataFrame(frame.stream_id, data=frame.data * 2)
    r = start(hooks=[Grow()])
    c, s = Peer(), Peer()
    r.receive(C2S, wire(c.headers(1, REQ, end=True)), 0.0)
    r.receive(S2C, wire(s.headers(1, RESP)), 0.0)
    out(r, S2C)
    r.receive(S2C, wire(fc.DataFrame(1, data=b"a" * 16000)), 0.0)     # becomes 32000
    r.receive(S2C, wire(fc.DataFrame(1, data=b"b" * 16000)), 0.0)     # 32000 more: 64000 of 65535
    r.receive(S2C, wire(fc.DataFrame(1, data=b"c" * 16000)), 0.0)     # does not fit: held
    sent = [f for f in parsed(out(r, S2C)) if isinstance(f, fc.DataFrame)]
    assert [len(f.data) for f in sent] == [16384, 15616, 16384, 15616]   # split to the frame size
    # The client's WINDOW_UPDATE pays the proxy's debt first; the server sees only what it is owed.
    r.receive(C2S, wire(fc.WindowUpdateFrame(0, window_increment=64000),
                        fc.WindowUpdateFrame(1, window_increment=64000)), 0.0)
    sent = [f for f in parsed(out(r, S2C)) if isinstance(f, fc.DataFrame)]
    assert [len(f.data) for f in sent] == [16384, 15616]
    to_server = [f for f in parsed(out(r, C2S)) if isinstance(f, fc.WindowUpdateFrame)]
    assert sum(f.window_increment for f in to_server if f.stream_id == 0) == 64000 - 48000


def test_async_hook_holds_the_frame_and_those_behind_it():
    class Slow:
        def on_ping(self, ctx, frame):
            async def later():
                return None
            return later()
    r = start(hooks=[Slow()])
    ping = fc.PingFrame(0, opaque_data=b"12345678")
    after = fc.WindowUpdateFrame(0, window_increment=10)
    r.receive(C2S, wire(ping, after), 0.0)
    assert out(r, C2S) == b""
    [cmd] = [c for c in r.take_commands() if isinstance(c, AwaitHook)]
    cmd.awaitable.close()
    r.resume(C2S, None)
    assert out(r, C2S) == wire(ping, after)


def test_hook_that_raises_is_contained(caplog):
    class Boom:
        def on_frame(self, ctx, frame):
            raise RuntimeError("boom")
    r = start(hooks=[Boom()])
    errors_before = r.counters["hook_errors"]
    ping = fc.PingFrame(0, opaque_data=b"12345678")
    r.receive(C2S, wire(ping, ping), 0.0)
    assert out(r, C2S) == wire(ping, ping)
    assert sum("hook Boom raised" in rec.getMessage() for rec in caplog.records) == 1
    assert r.counters["hook_errors"] == errors_before + 2


def test_proxy_push_gets_a_fresh_even_id_and_server_pushes_are_renumbered():
    class Pusher:
        def on_headers(self, ctx, frame, headers):
            if ctx.direction == "client->server":
                assert ctx.push("/style.css", [("content-type", "text/css")], b"body{}")
    r = start(hooks=[Pusher()])
    c, s = Peer(), Peer()
    r.receive(C2S, wire(c.headers(1, REQ, end=True)), 0.0)
    to_client = parsed(out(r, S2C))
    pp = [f for f in to_client if isinstance(f, fc.PushPromiseFrame)][0]
    assert pp.stream_id == 1 and pp.promised_stream_id == 2
    assert [f.stream_id for f in to_client if isinstance(f, fc.DataFrame)] == [2]
    # The server now pushes its own stream 2: the client must see it as 4.
    promise = fc.PushPromiseFrame(1, promised_stream_id=2, data=s.enc.encode(REQ), flags=["END_HEADERS"])
    r.receive(S2C, wire(promise, s.headers(2, RESP), fc.DataFrame(2, data=b"pushed", flags=["END_STREAM"])), 0.0)
    frames = parsed(out(r, S2C))
    assert [f.promised_stream_id for f in frames if isinstance(f, fc.PushPromiseFrame)] == [4]
    assert {f.stream_id for f in frames if not isinstance(f, fc.PushPromiseFrame)} == {4}
    # The client's WINDOW_UPDATE for the proxy's stream never reaches the server.
    out(r, C2S)
    r.receive(C2S, wire(fc.WindowUpdateFrame(2, window_increment=100)), 0.0)
    assert out(r, C2S) == b""
    assert r.counters["violations"] == 0


def test_push_refused_when_client_disabled_it():
    refusals = []

    class Pusher:
        def on_headers(self, ctx, frame, headers):
            if ctx.direction == "client->server":
                refusals.append(ctx.push("/a.css", [], b"x"))
    r = Relay(1, hooks=HookChain([Pusher()]))
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0, settings={2: 0})), 0.0)
    r.receive(C2S, wire(Peer().headers(1, REQ, end=True)), 0.0)
    assert not refusals[0] and "ENABLE_PUSH" in refusals[0].reason
    assert not any(isinstance(f, fc.PushPromiseFrame) for f in parsed(out(r, S2C)))


def test_raw_bytes_bypass_repairs():
    class Corrupt:
        def on_ping(self, ctx, frame):
            return [RawBytes(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00garbage!", "corrupt ping")]
    r = start(hooks=[Corrupt()])
    r.receive(C2S, wire(fc.PingFrame(0, opaque_data=b"12345678")), 0.0)
    assert out(r, C2S) == b"\x00\x00\x08\x06\x00\x00\x00\x00\x00garbage!"


def test_rapid_reset_limit_sends_enhance_your_calm():
    r = start(limits=Limits(max_resets_per_second=10))
    c = Peer()
    for i in range(12):
        sid = 1 + 2 * i
        r.receive(C2S, wire(c.headers(sid, REQ), fc.RstStreamFrame(sid, error_code=8)), 0.0)
    frames = parsed(out(r, S2C))
    assert isinstance(frames[-1], fc.GoAwayFrame) and frames[-1].error_code == 0xB
    assert b"max_resets_per_second" in frames[-1].additional_data


def test_continuation_flood_is_stopped():
    r = start(limits=Limits(max_continuations=4))
    r.receive(C2S, wire(fc.HeadersFrame(1, data=b"")), 0.0)
    for _ in range(6):
        r.receive(C2S, wire(fc.ContinuationFrame(1, data=b"")), 0.0)
    frames = parsed(out(r, S2C))
    assert frames and isinstance(frames[-1], fc.GoAwayFrame) and frames[-1].error_code == 0xB
    assert r.closed


def test_bad_preface_answers_plain_text():
    r = Relay(1)
    r.receive(C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    assert b"HTTP/2 only" in out(r, S2C)
    assert r.closed and out(r, C2S) == b""


def test_frame_larger_than_limit_is_a_frame_size_error():
    r = start(limits=Limits(max_frame_size=16384))
    r.receive(C2S, bytes.fromhex("004001" "00" "00" "00000001"), 0.0)
    frames = parsed(out(r, S2C))
    assert isinstance(frames[-1], fc.GoAwayFrame) and frames[-1].error_code == 6


def test_idle_timeout_closes_with_goaway():
    r = start(limits=Limits(idle_timeout=30))
    r.tick(10.0)
    assert not r.closed
    r.tick(31.0)
    assert r.closed
    frames = parsed(out(r, S2C))
    assert isinstance(frames[-1], fc.GoAwayFrame) and b"idle" in frames[-1].additional_data


def test_settings_not_acknowledged_is_a_settings_timeout():
    r = start(limits=Limits(settings_ack_timeout=5))
    r.tick(6.0)
    frames = parsed(out(r, C2S))
    # The server never acknowledged the client's SETTINGS: it gets GOAWAY SETTINGS_TIMEOUT.
    assert isinstance(frames[0], fc.GoAwayFrame) and frames[0].error_code == 4


def test_acknowledged_settings_do_not_time_out():
    r = start(limits=Limits(settings_ack_timeout=5))
    r.receive(S2C, wire(fc.SettingsFrame(0, flags=["ACK"])), 1.0)
    r.receive(C2S, wire(fc.SettingsFrame(0, flags=["ACK"])), 1.0)
    r.tick(6.0)
    assert not r.closed


# ------------------------------------------- issue 13.1: nothing before the server's SETTINGS

def _client_only(**options) -> Relay:
    r = Relay(1, RelayOptions(**options))
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
    out(r, C2S)
    return r


def test_proxy_frames_towards_the_client_wait_for_the_servers_settings():
    r = _client_only()
    r.inject(S2C, fc.PingFrame(0, opaque_data=b"h2proxy!"))
    assert out(r, S2C) == b""
    server_settings = fc.SettingsFrame(0, settings={3: 100})
    r.receive(S2C, wire(server_settings), 0.0)
    assert out(r, S2C) == wire(server_settings, fc.PingFrame(0, opaque_data=b"h2proxy!"))


def test_the_proxy_speaks_first_when_the_connection_ends_before_the_servers_settings():
    r = _client_only(strict=True)
    r.receive(C2S, wire(Peer().headers(1, REQ + [("connection", "close")], end=True)), 0.0)
    assert out(r, S2C) == b""
    r.eof(1, "gone")
    frames = parsed(out(r, S2C))
    assert isinstance(frames[0], fc.SettingsFrame) and not frames[0].settings and "ACK" not in frames[0].flags
    assert isinstance(frames[1], fc.RstStreamFrame) and frames[1].error_code == 1
    assert isinstance(frames[2], fc.GoAwayFrame)


def test_limit_goaway_before_the_servers_settings_follows_the_proxys_own_settings():
    r = _client_only(limits=Limits(max_streams=2))
    p = Peer()
    r.receive(C2S, wire(*(p.headers(i, REQ, end=True) for i in (1, 3, 5, 7))), 0.0)
    frames = parsed(out(r, S2C))
    assert [type(f).__name__ for f in frames] == ["SettingsFrame", "GoAwayFrame"]
    assert frames[1].error_code == 0xb


# ------------------------------------------- issue 13.2: the receiver's SETTINGS_HEADER_TABLE_SIZE

class _AddHeader:
    name = "add"

    def on_headers(self, ctx, frame, headers):
        return headers + [("x-via", "h2proxy")]


def _first_block(data: bytes) -> bytes:
    return bytes(next(f for f in parsed(data) if isinstance(f, fc.HeadersFrame)).data)


@pytest.mark.parametrize("size, update", [(0, b"\x20"), (64, b"\x20\x3f\x21"), (4096, b"\x20\x3f\xe1\x1f")])
def test_reencoded_blocks_honour_the_receivers_table_size(size, update):
    r = Relay(1, RelayOptions(), hooks=HookChain([_AddHeader()]))
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0, settings={1: size})), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0)), 0.0)
    out(r, C2S), out(r, S2C)
    client, server = Peer(), Peer()
    server.enc.header_table_size = size      # (a server that honours the client's SETTINGS)
    r.receive(C2S, wire(client.headers(1, REQ, end=True)), 0.0)
    r.receive(S2C, wire(server.headers(1, RESP, end=True)), 0.0)
    assert not r.violations
    block = _first_block(out(r, S2C))
    assert block.startswith(update) and block[len(update):][:1] not in (b"\x20", b"\x3f")
    dec = hpack.Decoder()
    dec.max_allowed_table_size = size
    assert ("x-via", "h2proxy") in [(n, v) for n, v in dec.decode(block, raw=False)]


def test_a_table_size_change_is_signalled_at_the_start_of_the_next_block():
    r = Relay(1, RelayOptions(), hooks=HookChain([_AddHeader()]))
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0)), 0.0)
    client, server = Peer(), Peer()
    r.receive(C2S, wire(client.headers(1, REQ, end=True)), 0.0)
    r.receive(S2C, wire(server.headers(1, RESP, end=True)), 0.0)
    out(r, C2S), out(r, S2C)
    r.receive(C2S, wire(fc.SettingsFrame(0, settings={1: 0}), client.headers(3, REQ, end=True)), 0.0)
    server.enc.header_table_size = 0
    r.receive(S2C, wire(server.headers(3, RESP, end=True)), 0.0)
    assert not r.violations
    assert _first_block(out(r, S2C)).startswith(b"\x20")


# ------------------------------------------- issue 13.5: a hook returning a wrong type

class _ReturnsInt:
    name = "forty-two"

    def on_data(self, ctx, frame):
        return 42


@pytest.mark.parametrize("hook_result", [42, [b"x", 42], object()])
def test_a_wrong_return_type_is_treated_like_an_exception(caplog, hook_result):
    hook = _ReturnsInt()
    hook.on_data = lambda ctx, frame: hook_result
    hook.on_data.__name__ = "on_data"
    r = start([hook])
    body = fc.DataFrame(1, data=b"hello", flags=["END_STREAM"])
    r.receive(C2S, wire(Peer().headers(1, REQ)), 0.0)
    out(r, C2S)
    with caplog.at_level("ERROR", logger="h2proxy"):
        r.receive(C2S, wire(body), 0.0)
    assert out(r, C2S) == wire(body)
    line = " ".join(rec.getMessage() for rec in caplog.records)
    assert "forty-two" in line and "on_data" in line and "stream 1" in line
    assert type(hook_result).__name__ in line or "int" in line


# ------------------------------------------- issue 13.3: frames in flight after the proxy's own reset

class _SeeHeaders:
    name = "see"

    def on_headers(self, ctx, frame, headers):
        return None


@pytest.mark.parametrize("strict", [False, True])
def test_frames_in_flight_after_a_reset_towards_the_client_are_discarded_with_credit(strict):
    r = start([_SeeHeaders()], strict=strict)
    client, server = Peer(), Peer()
    r.receive(C2S, wire(client.headers(1, REQ, end=True)), 0.0)
    r.receive(S2C, wire(server.headers(1, RESP)), 0.0)
    out(r, C2S), out(r, S2C)
    r.reset_stream(1, 8, "client")
    assert out(r, S2C) == wire(fc.RstStreamFrame(1, error_code=8))
    # In flight from the server: a promise, DATA, trailers; then its pushed stream's response.
    promise = fc.PushPromiseFrame(1, promised_stream_id=2, data=server.enc.encode(REQ), flags=["END_HEADERS"])
    r.receive(S2C, wire(promise, fc.DataFrame(1, data=b"x" * 100), server.headers(2, RESP, end=False),
                        fc.DataFrame(2, data=b"y" * 10, flags=["END_STREAM"]),
                        server.headers(1, [("x-t", "1")], end=True)), 0.0)
    assert not r.violations
    assert out(r, S2C) == b""
    to_server = parsed(out(r, C2S))
    resets = [(f.stream_id, f.error_code) for f in to_server if isinstance(f, fc.RstStreamFrame)]
    assert resets == [(2, 8)]                                          # the promise is cancelled
    credit = [(f.stream_id, f.window_increment) for f in to_server if isinstance(f, fc.WindowUpdateFrame)]
    assert (0, 100) in credit and (1, 100) in credit and (0, 10) in credit


def test_frames_in_flight_after_a_strict_stream_error_draw_no_more_resets():
    r = start(strict=True)
    client = Peer()
    r.receive(C2S, wire(client.headers(1, REQ, end=False)), 0.0)
    out(r, C2S)
    r.receive(C2S, b"\x00\x00\x04\x08\x00\x00\x00\x00\x01\x00\x00\x00\x00", 0.0)   # WINDOW_UPDATE of 0
    assert [type(f).__name__ for f in parsed(out(r, S2C))] == ["RstStreamFrame"]
    assert [type(f).__name__ for f in parsed(out(r, C2S))] == ["RstStreamFrame"]
    # The client's DATA in flight, and the server's response in flight: discarded, no new RST_STREAM.
    r.receive(C2S, wire(fc.DataFrame(1, data=b"z" * 50, flags=["END_STREAM"])), 0.0)
    r.receive(S2C, wire(Peer().headers(1, RESP, end=True)), 0.0)
    assert not [f for f in parsed(out(r, S2C)) if isinstance(f, fc.RstStreamFrame)]
    assert not [f for f in parsed(out(r, C2S)) if isinstance(f, fc.RstStreamFrame)]
    assert len(r.violations) == 1


def _exchanges(n: int, body: int = 100):
    """``n`` requests in one read and their responses (HEADERS + DATA) in another, as h2load pipelines them."""
    client, server = Peer(), Peer()
    ids = range(1, 2 * n, 2)
    requests = wire(*(client.headers(i, REQ, end=True) for i in ids))
    responses = wire(*(f for i in ids for f in (server.headers(i, RESP),
                                                fc.DataFrame(i, data=b"r" * body, flags=["END_STREAM"]))))
    return requests, responses


@pytest.mark.parametrize("altsvc", [False, True])
def test_a_read_of_many_exchanges_goes_out_byte_for_byte_and_every_frame_is_counted(altsvc):
    from proxy.hooks.chain import load_hook
    r = start(hooks=load_hook("altsvc", {"mode": "drop"}) if altsvc else None)
    frames_in, frames_out = list(r.counters["frames_in"]), list(r.counters["frames_out"])
    requests, responses = _exchanges(30)
    r.receive(C2S, requests, 1.0)
    assert out(r, C2S) == requests
    r.receive(S2C, responses, 1.0)
    assert out(r, S2C) == responses
    assert r.counters["frames_in"] == [frames_in[0] + 30, frames_in[1] + 60]
    assert r.counters["frames_out"] == [frames_out[0] + 30, frames_out[1] + 60]
    assert not r.streams and not r.violations


def test_reads_cut_anywhere_relay_the_same_bytes():
    import random
    rng = random.Random(16)
    r = start()
    requests, responses = _exchanges(20, body=1000)
    for d, data in ((C2S, requests), (S2C, responses)):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        sent = b""
        for a, b in zip([0] + cuts, cuts + [len(data)], strict=True):
            r.receive(d, data[a:b], 1.0)
            sent += out(r, d)
        assert sent == data
    assert not r.streams and not r.violations
    assert r.counters["frames_in"][C2S] == 1 + 20 and r.counters["frames_in"][S2C] == 1 + 40


def test_queued_frames_are_counted_against_a_reader_that_does_not_read_one_by_one():
    """Frames forwarded as they came leave as one buffer per run; what waits for a peer that reads
    nothing is still counted frame by frame (max_queued_control_frames), DATA aside."""
    r = start()
    requests, responses = _exchanges(5)
    r.receive(C2S, requests, 1.0)
    out(r, C2S)
    r.receive(S2C, responses, 1.0)
    assert r.pending_control(S2C) == 5       # the five HEADERS, not the five DATA frames
    assert len(r.take_output(S2C)) == 1      # (one run)
