"""The upstream's timeouts as relay playbooks, the clock driven by ``tick()`` (issue 14, item 7).

An upstream that never sends its SETTINGS (``upstream_settings_timeout``), or goes silent while
streams wait for it (``upstream_silence_timeout``), must not leave the client waiting with
nothing said: each open stream gets RST_STREAM INTERNAL_ERROR, the client GOAWAY INTERNAL_ERROR
naming the limit, the upstream RST_STREAM CANCEL and a clean GOAWAY, and both connections close.
"""
from __future__ import annotations

from framecodec import frame as fc
from framecodec.reader import PREFACE
from proxy.core.commands import Close
from proxy.core.limits import Limits
from proxy.core.protocol import ErrorCode
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from tests.test_relay_playbook import REQ, RESP, Peer, out, parsed, wire

INTERNAL = int(ErrorCode.INTERNAL_ERROR)
CANCEL = int(ErrorCode.CANCEL)
ACK = fc.SettingsFrame(0, flags=["ACK"])


def relay(**limits) -> Relay:
    return Relay(1, RelayOptions(limits=Limits(**limits)))


def timed_out(r: Relay, name: str, streams=(1,), first_to_client=None) -> None:
    """What a timed-out upstream leaves: the frames both ways, and both sides closed."""
    to_client, to_server = parsed(out(r, S2C)), parsed(out(r, C2S))
    if first_to_client is not None:
        assert isinstance(to_client[0], first_to_client)
    assert [(f.stream_id, f.error_code) for f in to_client if isinstance(f, fc.RstStreamFrame)] == \
        [(sid, INTERNAL) for sid in streams]
    g = [f for f in to_client if isinstance(f, fc.GoAwayFrame)]
    assert len(g) == 1 and g[0].error_code == INTERNAL and f"limit {name} = ".encode() in g[0].additional_data
    assert g[0].last_stream_id == max(streams)
    assert [(f.stream_id, f.error_code) for f in to_server if isinstance(f, fc.RstStreamFrame)] == \
        [(sid, CANCEL) for sid in streams]
    g = [f for f in to_server if isinstance(f, fc.GoAwayFrame)]
    assert len(g) == 1 and g[0].error_code == 0
    assert r.closed and {c.side for c in r.take_commands() if isinstance(c, Close)} == {0, 1}


def test_an_upstream_that_never_sends_settings_is_given_up():
    r = relay(upstream_settings_timeout=5.0)
    c = Peer()
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0), c.headers(1, REQ, end=True)), 0.0)
    assert out(r, C2S).startswith(PREFACE)
    r.tick(4.0)
    assert not r.closed and not out(r, S2C)
    r.tick(5.5)
    # The client never had the server's SETTINGS: the proxy's empty one comes first (RFC 9113 3.4).
    timed_out(r, "upstream_settings_timeout", first_to_client=fc.SettingsFrame)


def test_an_upstream_that_sent_settings_is_not_timed_out_for_them():
    r = relay(upstream_settings_timeout=5.0, upstream_silence_timeout=0)
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0)), 4.9)
    r.tick(9.0)
    assert not r.closed


def start(**limits):
    r = relay(**limits)
    c, s = Peer(), Peer()
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0), ACK), 0.0)
    r.receive(C2S, wire(ACK), 0.0)
    out(r, C2S), out(r, S2C)
    return r, c, s


def test_an_upstream_silent_mid_response_is_given_up():
    r, c, s = start(upstream_silence_timeout=10.0)
    r.receive(C2S, wire(c.headers(1, REQ, end=True), c.headers(3, REQ, end=True)), 1.0)
    r.receive(S2C, wire(s.headers(1, RESP), fc.DataFrame(1, data=b"x" * 100)), 1.5)   # then nothing
    out(r, C2S), out(r, S2C)
    for t in (2.0, 6.0, 11.0):
        r.tick(t)
        assert not r.closed
    r.tick(12.1)
    timed_out(r, "upstream_silence_timeout", streams=(1, 3))


def test_the_silence_counts_from_the_upstreams_last_byte_or_the_first_waiting_stream():
    r, c, s = start(upstream_silence_timeout=10.0, idle_timeout=0)
    r.tick(100.0)                                   # idle for long, no stream: not a silence
    r.receive(C2S, wire(c.headers(1, REQ, end=True)), 100.5)
    r.tick(101.0)
    for t in range(102, 111, 2):
        r.receive(S2C, wire(fc.PingFrame(0, opaque_data=b"12345678")), t)    # alive: not silent
        r.tick(t + 0.5)
    assert not r.closed
    r.tick(120.0)
    assert not r.closed
    r.tick(121.0)
    assert r.closed


def test_an_upstream_held_back_by_the_client_is_not_silent():
    # The client's window is closed: the upstream cannot send (zero_window_timeout's business).
    r = relay(upstream_silence_timeout=5.0, zero_window_timeout=0)
    c, s = Peer(), Peer()
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0, settings={4: 0})), 0.0)
    r.receive(S2C, wire(fc.SettingsFrame(0), ACK), 0.0)
    r.receive(C2S, wire(ACK), 0.0)
    r.receive(C2S, wire(c.headers(1, REQ, end=True)), 0.0)
    r.receive(S2C, wire(s.headers(1, RESP)), 0.5)
    for t in (1.0, 10.0, 100.0):
        r.tick(t)
    assert not r.closed
    # The shell stopped reading the upstream (backpressure): not its silence either.
    r2, c2, _ = start(upstream_silence_timeout=5.0)
    r2.receive(C2S, wire(c2.headers(1, REQ, end=True)), 0.0)
    for t in (1.0, 10.0, 100.0):
        r2.tick(t, upstream_held=True)
    assert not r2.closed
    r2.tick(101.0)
    r2.tick(106.5)
    assert r2.closed


def test_a_stream_the_upstream_has_finished_does_not_wait_for_it():
    # The upstream answered in full; the client is still uploading, slowly: the upstream owes nothing.
    r, c, s = start(upstream_silence_timeout=5.0, idle_timeout=0)
    r.receive(C2S, wire(c.headers(1, REQ)), 0.0)
    r.receive(S2C, wire(s.headers(1, RESP, end=True)), 0.5)
    for t in range(1, 60, 5):
        r.receive(C2S, wire(fc.DataFrame(1, data=b"u")), float(t))
        r.tick(t + 0.5)
    assert not r.closed and 1 in r.streams


def test_zero_turns_the_upstream_timeouts_off():
    r = relay(upstream_settings_timeout=0, upstream_silence_timeout=0, settings_ack_timeout=0)
    c = Peer()
    r.receive(C2S, PREFACE + wire(fc.SettingsFrame(0), c.headers(1, REQ, end=True)), 0.0)
    for t in (1.0, 100.0, 170.0):
        r.tick(t)
    assert not r.closed
