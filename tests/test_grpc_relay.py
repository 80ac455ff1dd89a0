"""The gRPC message hook in the sans-I/O relay: frames in, the exact frames and window repairs out."""
from __future__ import annotations

from framecodec import frame as fc
from proxy.core.relay import C2S, S2C
from proxy.grpc.framing import frame_message
from tests.test_relay_playbook import Peer, out, parsed, start, wire

GRPC_REQ = [(":method", "POST"), (":scheme", "http"), (":authority", "example"), (":path", "/p.S/M"),
            ("content-type", "application/grpc"), ("te", "trailers")]
PLAIN_REQ = [(":method", "POST"), (":scheme", "http"), (":authority", "example"), (":path", "/upload")]


class Upper:
    def __init__(self):
        self.seen = []

    def on_grpc_message(self, ctx, message):
        self.seen.append((ctx.method, message.direction, message.index, message.data))
        if message.data.startswith(b"up:"):
            return message.data.upper()
        return None


def _data(frames):
    return [f for f in frames if isinstance(f, fc.DataFrame)]


def _open_stream(hook, request=GRPC_REQ):
    """A relay with ``hook`` on which the client opened stream 1 with ``request`` (its HEADERS forwarded)."""
    r = start(hooks=[hook])
    r.receive(C2S, wire(Peer().headers(1, request)), 0.0)
    out(r, C2S)
    return r


def test_message_split_across_frames_is_held_then_sent_whole_with_credits():
    hook = Upper()
    r = _open_stream(hook)
    msg = frame_message(b"up:" + b"x" * 97)           # 105 bytes on the wire
    r.receive(C2S, wire(fc.DataFrame(1, data=msg[:3]), fc.DataFrame(1, data=msg[3:50])), 0.0)
    assert _data(parsed(out(r, C2S))) == []             # incomplete: nothing goes on
    credits = sorted((f.stream_id, f.window_increment) for f in parsed(out(r, S2C))
                     if isinstance(f, fc.WindowUpdateFrame))
    assert credits == [(0, 3), (0, 47), (1, 3), (1, 47)]   # the client gets its window back at once
    end = fc.DataFrame(1, data=msg[50:])
    end.flags.add("END_STREAM")
    r.receive(C2S, wire(end), 0.0)
    (sent,) = _data(parsed(out(r, C2S)))
    assert sent.data == frame_message(b"UP:" + b"X" * 97) and "END_STREAM" in sent.flags
    assert hook.seen == [("M", "client->server", 1, b"up:" + b"x" * 97)]
    # The proxy sent 50 bytes more than that last frame held: the server's next WINDOW_UPDATEs pay it.
    r.receive(S2C, wire(fc.WindowUpdateFrame(0, window_increment=105)), 0.0)
    passed = [f for f in parsed(out(r, S2C)) if isinstance(f, fc.WindowUpdateFrame)]
    assert [(f.stream_id, f.window_increment) for f in passed] == [(0, 55)]


def test_whole_unchanged_messages_go_on_byte_for_byte():
    hook = Upper()
    r = _open_stream(hook)
    frame = fc.DataFrame(1, data=frame_message(b"a") + frame_message(b"") + frame_message(b"bc"))
    r.receive(C2S, wire(frame), 0.0)
    assert out(r, C2S) == wire(frame)
    assert [x[2:] for x in hook.seen] == [(1, b"a"), (2, b""), (3, b"bc")]
    # several messages in a frame, one changed: the frame is rebuilt with all of them in order
    r.receive(C2S, wire(fc.DataFrame(1, data=frame_message(b"k") + frame_message(b"up:z"))), 0.0)
    (sent,) = _data(parsed(out(r, C2S)))
    assert sent.data == frame_message(b"k") + frame_message(b"UP:Z")


def test_streams_that_are_not_grpc_are_not_touched():
    hook = Upper()
    r = _open_stream(hook, PLAIN_REQ)
    body = fc.DataFrame(1, data=frame_message(b"up:not grpc")[:7])
    r.receive(C2S, wire(body), 0.0)
    assert out(r, C2S) == wire(body) and hook.seen == []


def test_grpc_abort_answers_trailers_only_and_cancels_the_server():
    import hpack

    class Abort:
        def on_grpc_message(self, ctx, message):
            ctx.grpc_abort("UNAVAILABLE", "no 100%")
    r = _open_stream(Abort())
    r.receive(C2S, wire(fc.DataFrame(1, data=frame_message(b"q"))), 0.0)
    to_server = parsed(out(r, C2S))
    others = [f for f in to_server if not isinstance(f, fc.WindowUpdateFrame)]
    assert [(type(f).__name__, f.stream_id, f.error_code) for f in others] == [("RstStreamFrame", 1, 8)]  # CANCEL
    to_client = parsed(out(r, S2C))
    heads = [f for f in to_client if isinstance(f, fc.HeadersFrame)]
    assert len(heads) == 1 and "END_STREAM" in heads[0].flags
    assert hpack.Decoder().decode(heads[0].data) == [
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14"),
        ("grpc-message", "no 100%25")]
    resets = [f for f in to_client if isinstance(f, fc.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, 0)]    # the client was still sending
    # the server's late frames on the stream are dropped
    r.receive(S2C, wire(Peer().headers(1, [(":status", "200"), ("content-type", "application/grpc")])), 0.0)
    assert [f for f in parsed(out(r, S2C)) if isinstance(f, (fc.HeadersFrame, fc.DataFrame))] == []


def test_bad_return_values_leave_the_message_as_it_was(caplog):
    class Bad:
        def on_grpc_message(self, ctx, message):
            if message.index == 1:
                return 42                        # not bytes, a message, a dict or a list
            if message.index == 2:
                return {"name": "x"}             # a dict without --proto-descriptor
            return [b"ok", 3.5]                  # the bad item is left out
    r = _open_stream(Bad())
    r.receive(C2S, wire(fc.DataFrame(1, data=frame_message(b"a") + frame_message(b"b") + frame_message(b"c"))), 0.0)
    (sent,) = _data(parsed(out(r, C2S)))
    assert sent.data == frame_message(b"a") + frame_message(b"b") + frame_message(b"ok")
    assert "returned int" in caplog.text and "returned dict" in caplog.text and "returned float" in caplog.text


def test_abort_on_a_response_sends_the_messages_before_it_then_trailers():
    import hpack

    class AbortSecond:
        def on_grpc_message(self, ctx, message):
            if not message.is_request and message.index == 2:
                ctx.grpc_abort(8, "enough")
    r = start(hooks=[AbortSecond()])
    c, s = Peer(), Peer()
    end = fc.DataFrame(1, data=frame_message(b"q"))
    end.flags.add("END_STREAM")
    r.receive(C2S, wire(c.headers(1, GRPC_REQ), end), 0.0)
    out(r, C2S)
    r.receive(S2C, wire(s.headers(1, [(":status", "200"), ("content-type", "application/grpc")]),
                        fc.DataFrame(1, data=frame_message(b"one") + frame_message(b"two"))), 0.0)
    to_client = [f for f in parsed(out(r, S2C)) if not isinstance(f, fc.WindowUpdateFrame)]
    assert [type(f).__name__ for f in to_client] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
    assert to_client[1].data == frame_message(b"one")
    trailers = to_client[2]
    assert "END_STREAM" in trailers.flags
    dec = hpack.Decoder()
    dec.decode(to_client[0].data)        # (the proxy's own encoder, from its first block on)
    assert dec.decode(trailers.data) == [("grpc-status", "8"), ("grpc-message", "enough")]
    to_server = [f for f in parsed(out(r, C2S)) if isinstance(f, fc.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in to_server] == [(1, 8)]


def test_true_binary_metadata_setting_is_taken_out():
    r = start(hooks=[Upper()])
    r.receive(C2S, wire(fc.SettingsFrame(0, settings={0xFE03: 1, 4: 70000})), 0.0)
    (settings,) = [f for f in parsed(out(r, C2S)) if isinstance(f, fc.SettingsFrame)]
    assert settings.settings == {4: 70000}
