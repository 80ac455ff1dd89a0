"""One peer of a relayed connection, and the direction it sends in.

A relayed connection has two peers, the client and the upstream server, and
two directions. The relay numbers both the same way: side 0 is the client and
sends direction 0 (client to server), side 1 is the server and sends direction
1. Everything the relay keeps per direction is therefore kept here, on the
side that sends it: its frame reader, the SETTINGS it announced, the window it
may still send into, the header block it is in the middle of, its HPACK
decoder (and the proxy's encoder for the blocks it sends on), what the proxy
holds back from it, its flood counters and which of its frames may take the
fast path. ``side.peer`` is the other side: the receiver of what it sends.

Nothing here acts: the relay reads and updates these fields, so that
``side.window`` is as cheap as the list element it replaces.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from framecodec.hpack import Decoder as HpackDecoder
from framecodec.hpack import Encoder as HpackEncoder
from framecodec.reader import Chunk, FrameFields, FrameReader, RawFrame

from .interfaces import HeldOutput
from .limits import Limits, RateCounter
from .protocol import DEFAULT_WINDOW, INITIAL_SETTINGS

if TYPE_CHECKING:
    from .hookrun import Finish, HookGen
    from .streams import Stream

CLIENT, SERVER = 0, 1
SIDE_NAME = ("client", "server")


class Side:
    """The client or the server of one relayed connection: what it said, sends, and is owed."""

    __slots__ = ("index", "name", "peer", "reader", "greeting", "settings", "settings_seen", "unacked_settings",
                 "settings_sent_at", "table_sizes_due", "window", "owed", "last_stream", "held_streams",
                 "held_fcl", "block", "block_size", "decoding", "decoder", "decoding_broken", "encoder",
                 "goaway", "paused", "inbox", "empty_rate", "control_rate", "reset_rate", "fast_headers",
                 "fast_data", "fast_decoded", "fast_synced", "stalled_since", "heard", "opened_by", "resets",
                 "resets_due")

    peer: Side

    def __init__(self, index: int, limits: Limits, decoding: bool, decode_any: bool, now: float) -> None:
        self.index = index
        self.name = SIDE_NAME[index]
        # The client's socket starts with the connection preface.
        self.reader = FrameReader(limits.max_frame_size, expect_preface=index == CLIENT)
        #: What the proxy itself sends towards this side's peer before this side's SETTINGS went out
        #: (RFC 9113 3.4: an endpoint's first frame is SETTINGS), as (wire, origin, actions); None once
        #: released (see Relay._out and Relay._release_held).
        self.greeting: Optional[List[HeldOutput]] = []
        #: RST_STREAMs a hook made towards this side's peer while its other streams were open, waiting
        #: to go with the next frames towards it, until ``resets_due`` at the latest (Relay.reset_stream).
        self.resets: List[HeldOutput] = []
        self.resets_due = 0.0
        #: The SETTINGS this side announced (all of them, defaults for those it did not send).
        self.settings: Dict[int, int] = dict(INITIAL_SETTINGS)
        self.settings_seen = False
        #: This side's SETTINGS frames its peer has not acknowledged yet.
        self.unacked_settings = 0
        #: When each of them was sent (SETTINGS-ACK timeout).
        self.settings_sent_at: List[float] = []
        #: The SETTINGS_HEADER_TABLE_SIZE of each of them (None: not in it).
        self.table_sizes_due: List[Optional[int]] = []
        #: The connection-level flow-control window this side may still send DATA into (its peer's).
        self.window = DEFAULT_WINDOW
        #: Connection-level window the proxy used up on this side's behalf (DATA it sent in its name).
        self.owed = 0
        #: The highest stream id opened by the client / promised by the server.
        self.last_stream = 0
        #: Streams with DATA from this side held back for flow control, in the order they were held.
        self.held_streams: "OrderedDict[int, Stream]" = OrderedDict()
        #: Flow-controlled bytes of that DATA: added when held, taken off when sent. Clearing a queue
        #: does not take them off, so this may overstate (see Relay._held_past_window).
        self.held_fcl = 0
        #: The header block this side is in the middle of (HEADERS or PUSH_PROMISE, CONTINUATIONs).
        self.block: Optional[List[RawFrame]] = None
        self.block_size = 0
        #: Whether this side's header blocks are decoded (every block: the HPACK table stays in step).
        self.decoding = decoding
        #: Its HPACK decoder: present on both sides when either side's blocks are decoded.
        self.decoder: Optional[HpackDecoder] = HpackDecoder(limits.max_header_list_size) if decode_any else None
        #: A block of this side did not decode: its later blocks are not decoded either.
        self.decoding_broken = False
        #: The proxy's encoder for the blocks this side sends, once they are re-encoded.
        self.encoder: Optional[HpackEncoder] = None
        #: What this side's GOAWAY said: (last stream id, error code); None before one.
        self.goaway: Optional[Tuple[int, int]] = None
        #: A hook chain suspended on one of this side's frames, and the frames read behind it.
        self.paused: Optional[Tuple[HookGen, Finish]] = None
        self.inbox: List[FrameFields] = []
        self.empty_rate = RateCounter(limits.max_empty_frames_per_second, 1.0)
        self.control_rate = RateCounter(limits.max_control_frames_per_second, 1.0)
        #: The client's RST_STREAMs (rapid reset) and, in strict mode, the streams the proxy reset for
        #: this side's stream errors (MadeYouReset): both count towards max_resets_per_second.
        self.reset_rate = RateCounter(limits.max_resets_per_second, 1.0)
        #: Which of this side's frames may take the fast path (Relay._update_fast_path).
        self.fast_headers = False
        self.fast_data = False
        self.fast_decoded = False
        self.fast_synced = False
        #: Request blocks that opened streams, as they came -> (decoder table version, the hook chain's
        #: request_tables, the decoder's list limit, the header list, the stream's hook tables, the section 8
        #: verdict per END_STREAM flag): a request sent again while neither table nor rules changed opens
        #: its stream without decoding, asking the chain or checking it again (Relay._open_decoded).
        self.opened_by: Dict[Chunk, Tuple[Any, ...]] = {}      # (keys are bytes; views of reads look up)
        #: Since when the peer's window keeps a stream of this side waiting (zero_window_timeout).
        self.stalled_since: Optional[float] = None
        #: When this side last sent bytes (the upstream's silence).
        self.heard = now

    def __repr__(self) -> str:
        return f"Side({self.name})"


def pair(limits: Limits, decoding: Tuple[bool, bool], now: float) -> Tuple[Side, Side]:
    """The client and the server side of a new connection, each the other's peer."""
    decode_any = decoding[0] or decoding[1]
    client = Side(CLIENT, limits, decoding[0], decode_any, now)
    server = Side(SERVER, limits, decoding[1], decode_any, now)
    client.peer = server
    server.peer = client
    return client, server
