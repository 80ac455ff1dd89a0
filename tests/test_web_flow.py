"""Window stalls of FlowTracker when the connection window, not the stream's, holds the sender."""
from __future__ import annotations

from proxy.web.flow import FlowTracker


def _data(sid: int, n: int, t: float) -> dict:
    return {"record": "frame", "type": "DATA", "leg": "upstream", "dir": "recv", "stream": sid, "length": n,
            "flags": 0, "ts": t}


def _window_update(sid: int, inc: int, t: float) -> dict:
    return {"record": "frame", "type": "WINDOW_UPDATE", "leg": "upstream", "dir": "send", "stream": sid,
            "fields": {"increment": inc}, "ts": t}


def test_a_connection_window_update_ends_the_stalls_it_opens_in_the_order_the_streams_began() -> None:
    ft = FlowTracker(threshold=0.5)
    ft.feed({"record": "frame", "type": "SETTINGS", "leg": "upstream", "dir": "send", "stream": 0, "ts": 0.0,
             "fields": {"settings": [["SETTINGS_INITIAL_WINDOW_SIZE", 1 << 20]]}})
    ft.feed(_data(5, 40000, 0.1))            # the streams begin in the order 5, 3, 9
    ft.feed(_data(3, 25535, 0.2))            # the connection window is now 0: 3 stalls
    ft.feed(_data(9, 10, 0.3))               # and 9, then 5, send into it
    ft.feed(_data(5, 1, 0.4))
    assert [s["stream"] for s in ft.all_stalls(now=1.0)] == [5, 3, 9]      # (held, not ended yet)
    ft.feed(_window_update(0, 100000, 1.5))  # the connection opens: all three go on
    stalls = [(s["stream"], s["scope"], s["start"], s["end"], s["ended_by"]) for s in ft.all_stalls()]
    assert stalls == [(5, "stream", 0.4, 1.5, "WINDOW_UPDATE"), (3, "stream", 0.2, 1.5, "WINDOW_UPDATE"),
                      (9, "stream", 0.3, 1.5, "WINDOW_UPDATE")]


def test_a_stalled_stream_pushed_out_of_the_tracker_ends_no_stall() -> None:
    ft = FlowTracker(threshold=0.5, max_streams=2)
    ft.feed(_data(1, 65535, 0.0))            # connection and stream 1 at 0: stalled
    ft.feed(_window_update(3, 1, 0.1))
    ft.feed(_window_update(5, 1, 0.1))       # a third stream: stream 1 is forgotten
    assert ft.all_stalls(now=1.0) == []
    ft.feed(_window_update(0, 70000, 2.0))
    ft.feed(_window_update(1, 70000, 2.0))   # (a stream 1 again, from the start)
    assert ft.all_stalls(now=2.0) == []
