"""Resource limits the proxy enforces on both sides, in every mode.

Defaults follow mature implementations (nghttp2, h2o, Go's x/net/http2): a
peer that hits one gets GOAWAY ENHANCE_YOUR_CALM, the other side a clean
GOAWAY, and a log line names the limit and its value.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


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

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]


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
