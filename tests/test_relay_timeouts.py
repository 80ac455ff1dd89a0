"""The relay's zero-window timeout, driven by the relay's own clock (``tick(now)``), not by sleeping.

The through-proxy tests in ``test_limits.py`` check the same limit end to end with real time;
these check its edges exactly: not a moment early, reset by progress, and what each side gets.
"""
from __future__ import annotations

import hpack

from framecodec import frame as fc
from framecodec.reader import PREFACE, FrameReader
from proxy.core.limits import Limits
from proxy.core.relay import C2S, S2C, Relay, RelayOptions

REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/")]
RESP = [(":status", "200")]
ENHANCE_YOUR_CALM = 0xB


def frames_out(r: Relay, d: int) -> list:
    """The frames the relay wrote in direction ``d`` since the last call, parsed."""
    reader = FrameReader(2 ** 24 - 1)
    raws = reader.feed(b"".join(bytes(b) for b in r.take_output(d)))
    assert reader.buffered == 0, "the relay wrote whole frames"
    return [raw.parse() for raw in raws]


def stalled_response(timeout: float) -> Relay:
    """A client that announced a zero stream window, asked for a resource and got its headers: the
    response body waits on the client's window, closed from t=1."""
    r = Relay(1, RelayOptions(limits=Limits(zero_window_timeout=timeout)), now=0.0)
    client_settings = fc.SettingsFrame(0, settings={fc.SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    r.receive(C2S, PREFACE + client_settings.serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0).serialize(), 0.0)
    r.receive(S2C, fc.SettingsFrame(0, flags=["ACK"]).serialize(), 0.0)
    r.receive(C2S, fc.SettingsFrame(0, flags=["ACK"]).serialize(), 0.0)
    r.receive(C2S, fc.HeadersFrame(1, data=hpack.Encoder().encode(REQ),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    r.receive(S2C, fc.HeadersFrame(1, data=hpack.Encoder().encode(RESP), flags=["END_HEADERS"]).serialize(), 1.0)
    assert PREFACE == b"".join(bytes(b) for b in r.take_output(C2S))[:len(PREFACE)]
    assert any(isinstance(f, fc.HeadersFrame) for f in frames_out(r, S2C))
    return r


def test_a_closed_window_is_tolerated_up_to_the_limit():
    r = stalled_response(timeout=10.0)
    r.tick(1.0)     # the stall is noticed here
    r.tick(11.0)    # exactly the limit: not past it
    assert not r.closed
    assert not frames_out(r, S2C) and not frames_out(r, C2S)


def test_a_window_closed_past_the_limit_closes_the_connection_naming_it():
    r = stalled_response(timeout=10.0)
    r.tick(1.0)
    r.tick(11.5)
    assert r.closed
    to_client = [f for f in frames_out(r, S2C) if isinstance(f, fc.GoAwayFrame)]
    to_server = [f for f in frames_out(r, C2S) if isinstance(f, fc.GoAwayFrame)]
    assert to_client and to_client[-1].error_code == ENHANCE_YOUR_CALM
    assert b"zero_window_timeout" in to_client[-1].additional_data
    assert to_server and to_server[-1].error_code == 0   # the bystander side: a clean GOAWAY


def test_opening_the_window_ends_the_stall():
    r = stalled_response(timeout=10.0)
    r.tick(1.0)
    r.receive(C2S, fc.WindowUpdateFrame(1, window_increment=1000).serialize(), 5.0)
    assert any(isinstance(f, fc.WindowUpdateFrame) for f in frames_out(r, C2S))
    r.tick(5.0)
    r.tick(30.0)
    assert not r.closed
    r.receive(S2C, fc.DataFrame(1, data=b"x" * 100, flags=["END_STREAM"]).serialize(), 31.0)
    assert [f.data for f in frames_out(r, S2C) if isinstance(f, fc.DataFrame)] == [b"x" * 100]
