"""Fuzz the sans-I/O relay core: bytes into a Relay from both sides.

Input format (``make_corpus.py`` writes conversations in it):

* byte 0, the configuration: bit 0 strict mode; bits 1-3 the hooks (see ``HOOK_SETS``);
  bit 4 the harness opens the connection itself (preface + SETTINGS both ways) before the
  records, otherwise the records must; bit 5 a recording sink that wants headers; bit 6
  small limits (so that they bite);
* then records: ``op`` (1 byte), ``n`` (2 bytes, big-endian), ``n`` bytes. ``op`` bit 0 is the
  side (0 client, 1 server); bits 1-2: 0 feed the bytes, 1 feed them in chunks of
  ``(op >> 3) + 1`` bytes, 2 let ``n / 10`` seconds pass (``tick``; no bytes follow), 3 the
  side closes its socket (``op >> 3 == 0``) or the proxy shuts down (no bytes follow).

After each record: nothing raised, the output towards each side is whole frames (the preface
first towards the server), the relay holds no more than its limits allow, and once closed it
stays closed.

    .venv/bin/python bench/fuzz/fuzz_relay.py /tmp/h2corpus/relay -max_total_time=120
    .venv/bin/python bench/fuzz/fuzz_relay.py --replay /tmp/h2corpus/relay
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import instrumented, main  # noqa: E402

with instrumented(("framecodec", "proxy.core", "proxy.hooks")):
    from framecodec import frame as fc
    from framecodec.reader import PREFACE, FrameReader
    from proxy.core.commands import Close
    from proxy.core.limits import Limits
    from proxy.core.relay import C2S, S2C, Relay, RelayOptions
    from proxy.hooks.api import RawBytes
    from proxy.hooks.chain import HookChain
    from proxy.recording.sink import FrameSink


class RewriteHeaders:
    def on_headers(self, ctx, frame, headers):
        if headers is not None:
            return list(headers) + [("x-fuzz", "h" * 20)]

    def on_push_promise(self, ctx, frame, headers):
        if headers is not None:
            return list(headers) + [("x-fuzz-push", "1")]


class DropData:
    def on_data(self, ctx, frame):
        if len(frame.data) % 2:
            return []


class GrowData:
    def on_data(self, ctx, frame):
        if ctx.direction == "server->client" and frame.data:
            return fc.DataFrame(frame.stream_id, data=frame.data * 2,
                                flags=["END_STREAM"] if "END_STREAM" in frame.flags else [])


class Pusher:
    def on_headers(self, ctx, frame, headers):
        if ctx.direction == "client->server" and frame.stream_id % 4 == 1:
            ctx.push("/p.css", [("content-type", "text/css")], b"p" * 3000)


class RawPing:
    def on_ping(self, ctx, frame):
        return [RawBytes(frame.serialize(), "fuzz raw ping")]


class HeaderSink(FrameSink):
    needs_headers = True


HOOK_SETS = [[], [RewriteHeaders()], [DropData()], [GrowData()], [Pusher()],
             [RewriteHeaders(), DropData()], [RawPing()], [Pusher(), GrowData(), RewriteHeaders()]]
SMALL = Limits(max_frame_size=1 << 15, max_continuations=4, max_header_block_size=3000,
               max_header_list_size=3000, max_resets_per_second=6, max_empty_frames_per_second=6,
               max_control_frames_per_second=40, max_settings_entries=6, max_streams=10,
               settings_ack_timeout=5.0, idle_timeout=30.0, zero_window_timeout=20.0)


class Checker:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.readers = [FrameReader(2 ** 24 - 1, expect_preface=True), FrameReader(2 ** 24 - 1)]
        self.closed = False

    def check(self) -> None:
        r = self.relay
        outs = [r.take_output(C2S), r.take_output(S2C)]
        commands = r.take_commands()
        if self.closed:
            assert r.closed and not outs[0] and not outs[1] and not commands, "activity after close"
            return
        for d in (C2S, S2C):
            reader = self.readers[d]
            for buf in outs[d]:
                if d == S2C and r.closed and bytes(buf[:12]) == b"HTTP/1.1 505":
                    continue          # the answer to a client that does not speak HTTP/2
                reader.feed(bytes(buf))
            assert reader.buffered == 0, "output ends inside a frame"
        if any(isinstance(c, Close) for c in commands):
            assert r.closed
        self.closed = r.closed
        limit = r.limits.max_frame_size + 9
        assert sum(side.reader.buffered for side in r.sides) <= 2 * limit + len(PREFACE)
        for d in (C2S, S2C):
            held = sum(item[1] for s in r.sides[d].held_streams.values() if s.held is not None for item in s.held[d])
            assert held <= max(0, r.sides[d].window + r.sides[d].owed), f"held {held} past the window"
            # Frames wait in the inbox only behind an awaited hook, or (server) for the client's preface.
            assert not r.sides[d].inbox or r.sides[d].paused is not None or (d == S2C and not r.preface_forwarded)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    config = data[0]
    hooks = HOOK_SETS[(config >> 1) & 7]
    relay = Relay(1, RelayOptions(strict=bool(config & 1), limits=SMALL if config & 0x40 else Limits()),
                  hooks=HookChain(hooks) if hooks else None,
                  sink=HeaderSink() if config & 0x20 else None)
    checker = Checker(relay)
    now = 0.0
    if config & 0x10:
        relay.receive(C2S, PREFACE + fc.SettingsFrame(0).serialize(), now)
        relay.receive(S2C, fc.SettingsFrame(0).serialize(), now)
        checker.check()
    pos = 1
    n = len(data)
    while pos + 3 <= n:
        op = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 3], "big")
        pos += 3
        d = op & 1
        kind = (op >> 1) & 3
        if kind == 2:
            now += size / 10
            relay.tick(now)
        elif kind == 3:
            if op >> 3:
                relay.shutdown()
            else:
                relay.eof(d, "fuzz")
        else:
            payload = data[pos:pos + size]
            pos += size
            if kind == 0:
                relay.receive(d, payload, now)
            else:
                step = (op >> 3) + 1
                for i in range(0, len(payload), step):
                    relay.receive(d, payload[i:i + step], now)
        checker.check()
    relay.close("fuzz done")
    checker.check()


if __name__ == "__main__":
    main(TestOneInput)
