"""Resource limits the proxy enforces on both sides, in every mode.

Defaults follow mature implementations (nghttp2, h2o, Go's x/net/http2): a
peer that hits one gets GOAWAY ENHANCE_YOUR_CALM, the other side a clean
GOAWAY, and a log line names the limit and its value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import List, Optional


@dataclass
class Limits:
    #: Largest frame the proxy reads at all (the protocol's own ceiling is 2**24-1).
    max_frame_size: int = 16777215
    #: CONTINUATION frames in one header block (CONTINUATION flood).
    max_continuations: int = 64
    #: Bytes of one header block, all fragments together.
    max_header_block_size: int = 262144
    #: Decoded header list size (name + value + 32 per field, RFC 9113 6.5.2; HPACK bomb).
    max_header_list_size: int = 262144
    #: RST_STREAM frames a client may send per second (rapid reset, CVE-2023-44487); in strict mode
    #: the streams the proxy resets for a side's stream errors count too, per side (MadeYouReset,
    #: CVE-2025-8671). Resets a hook or fault rule asks for do not count.
    max_resets_per_second: int = 200
    #: DATA frames with empty payloads and no END_STREAM per second.
    max_empty_frames_per_second: int = 200
    #: PING, SETTINGS, PRIORITY and small WINDOW_UPDATE frames per second and side.
    max_control_frames_per_second: int = 2000
    #: Entries in one SETTINGS frame.
    max_settings_entries: int = 32
    #: Streams tracked per connection at once.
    max_streams: int = 10000
    #: Client connections open at once.
    max_connections: int = 10000
    #: Bytes buffered per connection and direction before the proxy stops reading the sender.
    high_water: int = 262144
    #: Frames other than DATA the proxy itself queued towards a side whose socket is backed up
    #: (RST_STREAM, WINDOW_UPDATE, ... made in answer to that side's own frames), counted until
    #: its socket drains again (nghttp2 caps its outbound queue at 10000 frames the same way).
    max_queued_control_frames: int = 10000
    #: Bytes queued in the socket buffer towards one side that does not read: a hard cap behind
    #: high_water (which stops reading the sender), so it must stay well above high_water.
    max_queued_bytes: int = 4194304
    #: Seconds a client has to send the connection preface.
    preface_timeout: float = 10.0
    #: Seconds for a TLS handshake.
    handshake_timeout: float = 10.0
    #: Seconds a peer has to acknowledge SETTINGS (nghttpx: 10 s; 0: no limit).
    settings_ack_timeout: float = 10.0
    #: Seconds a connection may be idle: no stream open, no bytes either way (nghttpx: 3 min; 0: no limit).
    idle_timeout: float = 180.0
    #: Seconds a receiver may keep a window closed while the sender waits, with no progress: its
    #: HTTP/2 flow-control window (connection or an open stream's) or its socket (it reads nothing
    #: of what the proxy queued for it) (0: no limit).
    zero_window_timeout: float = 300.0
    #: Seconds to wait for streams in flight after GOAWAY on shutdown.
    grace_period: float = 5.0
    #: Seconds to resolve and connect to the upstream (reverse mode) or a CONNECT target (forward
    #: mode), TLS handshake included; past it the client gets GOAWAY or 504.
    connect_timeout: float = 10.0
    #: Seconds the upstream has, once the proxy sent it the connection preface, to send its own
    #: (SETTINGS); past it the client's streams get RST_STREAM, the client GOAWAY naming the limit (0: no limit).
    upstream_settings_timeout: float = 10.0
    #: Seconds the upstream may stay silent (not a byte) while streams wait for it and nothing holds it
    #: back (its flow-control windows open); past it as above (nghttpx backend-read-timeout: 60 s; 0: no limit).
    upstream_silence_timeout: float = 60.0

    @classmethod
    def names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    def problems(self) -> List[str]:
        """What is wrong with these values (empty when nothing): one message per bad limit."""
        out = [p for p in (check_limit(f.name, getattr(self, f.name)) for f in fields(self)) if p]
        if self.max_queued_bytes < self.high_water:
            out.append(f"limit max_queued_bytes = {self.max_queued_bytes} must not be below high_water "
                       f"= {self.high_water} (it is the hard cap behind high_water)")
        return out


#: Smallest value of each count (the rest: at least 1): RFC 9113 4.2 makes 16384 the smallest frame size.
_MIN_COUNT = {"max_frame_size": 16384, "max_continuations": 0}
#: Largest value of a count: a frame length is 24 bits.
_MAX_COUNT = {"max_frame_size": (1 << 24) - 1}
#: Timeouts for which 0 means "no limit"; the others must be positive.
_ZERO_OFF = {"settings_ack_timeout", "idle_timeout", "zero_window_timeout", "grace_period",
             "upstream_settings_timeout", "upstream_silence_timeout"}


def check_limit(name: str, value) -> Optional[str]:
    """Why ``value`` is not a sensible value for the limit ``name`` (None when it is).

    Negative counts, a zero connection budget, NaN or infinite timeouts would not limit anything:
    they would fail every request or refuse everyone, so they are refused at start-up instead.
    """
    default = getattr(Limits, name, None)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"limit {name} = {value!r}: expected a finite number of seconds"
        if name in _ZERO_OFF:
            if value < 0:
                return f"limit {name} = {value:g}: must be 0 (no limit) or a positive number of seconds"
        elif value <= 0:
            return f"limit {name} = {value:g}: must be a positive number of seconds"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"limit {name} = {value!r}: expected an integer"
    low, high = _MIN_COUNT.get(name, 1), _MAX_COUNT.get(name)
    if value < low or (high is not None and value > high):
        where = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"limit {name} = {value}: must be {where}"
    return None


class RateCounter:
    """Counts events in a sliding window of fixed buckets: ``hit`` returns True past the limit."""

    __slots__ = ("limit", "period", "start", "count")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.start = 0.0
        self.count = 0

    def hit(self, now: float) -> bool:
        if now - self.start >= self.period:
            self.start = now
            self.count = 1
            return False
        self.count += 1
        return self.count > self.limit
