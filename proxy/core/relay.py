"""The sans-I/O connection core: one client connection relayed to one upstream.

Bytes from each socket go in through :meth:`Relay.receive`; frames come out as
buffers in ``relay.out[direction]`` (to be written to the receiving socket) and
as commands in ``relay.commands`` (close a side, await a hook). No sockets, no
clock: the caller passes the time in.

Per direction the pipeline is: streaming reader -> header-block assembly ->
RFC 9113 checks and the passive state (settings, streams, windows) -> hooks ->
repairs (HPACK re-encoding, splitting, flow control, stream-id mapping) ->
output. A frame that no hook asks for and no repair touches is forwarded as
the very bytes that arrived.
"""
from __future__ import annotations

import enum
import inspect
import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Final,
    Generator,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from framecodec import frame as fc
from framecodec.exceptions import FrameCodecError, FrameTooLargeError, PrefaceError
from framecodec.hpack import Decoder as HpackDecoder
from framecodec.hpack import Encoder as HpackEncoder
from framecodec.hpack import HpackDecodingError, OversizedHeaderListError, mark_never_indexed
from framecodec.reader import Chunk, FrameFields, FrameReader, RawFrame, Wire

from ..hooks.api import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    HeaderList,
    Headers,
    HookContext,
    PushRefused,
    PushStarted,
    RawBytes,
)
from . import messages
from . import streams as st
from .blocks import block_frames
from .interfaces import Actions, Counters, HeldData, HeldOutput, HookEntry, HookRunner, HookTable, StreamTables
from .limits import Limits, RateCounter
from .protocol import (
    ACK,
    ALTSVC,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_SETTINGS,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    Setting,
    error_name,
    frame_name,
    parse_error_code,
)

if TYPE_CHECKING:
    from ..recording.sink import FrameSink

log = logging.getLogger("h2proxy")
#: Directions whose "re-encoded from now on" line was logged at info level (once per process).
_REENCODING_LOGGED: Set[int] = set()

C2S, S2C = 0, 1                      # directions; the sending side of direction d is side d
CLIENT, SERVER = 0, 1                # sides
SIDE_NAME = ("client", "server")
DIRECTION_NAME = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)
RECV_LEG = ("client", "upstream")    # the socket a direction's frames arrive on
SEND_LEG = ("upstream", "client")    # the socket they leave on
SENDER = (st.CLIENT, st.SERVER)

_u32 = struct.Struct(">L")
_MAX_CONCURRENT = int(Setting.MAX_CONCURRENT_STREAMS)
_MAX_FRAME = int(Setting.MAX_FRAME_SIZE)
_INITIAL_WINDOW = int(Setting.INITIAL_WINDOW_SIZE)
_CLOSED = st.CLOSED
_OPEN = st.OPEN
_HALF_CLOSED_LOCAL = st.HALF_CLOSED_LOCAL
# The stream-state transitions for the fast path, indexed [direction][END_STREAM flag] -> {state: new state}.
_DATA_NEXT = tuple((st.by_state(sender, st.DATA), st.by_state(sender, st.DATA_END)) for sender in SENDER)
_HEADERS_NEXT = tuple((st.by_state(sender, st.HEADERS), st.by_state(sender, st.HEADERS_END)) for sender in SENDER)
#: Closed streams remembered (between this many and twice as many) to tell late frames from bad ones.
_REMEMBER_CLOSED = 256
#: Per direction, the stream states in which its sender may still send DATA.
_SENDING = ((st.OPEN, st.HALF_CLOSED_REMOTE), (st.OPEN, st.HALF_CLOSED_LOCAL))
_settings_entry = struct.Struct(">HL")
#: The proxy's own SETTINGS (all defaults), for when it must speak before the peer it relays.
_EMPTY_SETTINGS = bytes((0, 0, 0, SETTINGS, 0, 0, 0, 0, 0))
_goaway_head = struct.Struct(">LL")
_PAD_PRIO = PADDED | PRIORITY_FLAG
#: ``predecoded`` default of Relay._header_block: the block was not decoded yet.
_UNDECODED = object()


@dataclass
class Close:
    """Command: close the socket of ``side`` (0 client, 1 server) once its output is written."""
    side: int
    reason: str
    abort: bool = False


@dataclass
class AwaitHook:
    """Command: await ``awaitable`` and hand the outcome to :meth:`Relay.resume`."""
    direction: int
    awaitable: Any


@dataclass
class RelayOptions:
    strict: bool = False
    decode_headers: bool = False
    limits: Limits = field(default_factory=Limits)


class Stream:
    """What the proxy knows of one stream (ids are those of the client leg)."""

    # A stream is made per request, so only what every stream needs is set here; the rest keep
    # these class-level defaults until first assigned (then they live in the instance dict).
    __slots__ = ("id", "state", "window", "server_id", "__dict__")

    #: owed/held only matter once the proxy changed DATA on this stream: made on first use.
    owed: Optional[List[int]] = None
    held: Optional[List[List[HeldData]]] = None
    #: Flow-controlled bytes in ``held`` per direction (may overstate after a queue was cleared); set with ``held``.
    held_fcl: List[int]
    request_headers: Optional[HeaderList] = None
    response_headers: Optional[HeaderList] = None
    trailers: Optional[HeaderList] = None
    proxy_owned = False
    push_body: Optional[memoryview] = None
    #: The direction whose sender reset the stream, or the proxy's own reset (see ProxyReset).
    reset_by: Union[int, ProxyReset, None] = None
    #: Strict mode: content-length still due per direction.
    body: Optional[List[Optional[int]]] = None
    #: The hook entries for this stream's frames, per direction (type -> entries), decided when its
    #: request was read (:meth:`HookChain.stream_tables`); None: no hook wants any frame of it.
    hooks: Optional[StreamTables] = None
    #: The how-manieth stream the client opened on the connection (1 = first); None for pushes.
    ordinal: Optional[int] = None

    def __init__(self, sid: int, state: str, client_window: int, server_window: int) -> None:
        self.id = sid
        self.state = state
        # window[d]: what the receiver of direction d still accepts on this stream.
        self.window = [server_window, client_window]
        self.server_id = sid

    def __repr__(self) -> str:
        return f"Stream(id={self.id}, state={self.state!r})"


class RecentlyClosed:
    """Who closed the streams closed last (a dict-like map: stream id -> side, -1 or a mark).

    Two generations of at most ``_REMEMBER_CLOSED`` entries each: when the newer
    one is full it replaces the older, so between that many and twice as many
    streams are remembered at O(1) cost per closed stream.
    """

    __slots__ = ("new", "old")

    def __init__(self) -> None:
        self.new: Dict[int, Any] = {}
        self.old: Dict[int, Any] = {}

    def get(self, sid: int, default: Any = None) -> Any:
        value = self.new.get(sid, _MISSING)
        return self.old.get(sid, default) if value is _MISSING else value

    def __contains__(self, sid: int) -> bool:
        return sid in self.new or sid in self.old

    def __setitem__(self, sid: int, value: Any) -> None:
        self.old.pop(sid, None)
        new = self.new
        new[sid] = value
        if len(new) >= _REMEMBER_CLOSED:
            self.old, self.new = new, {}

    def pop(self, sid: int, default: Any = None) -> Any:
        value = self.new.pop(sid, _MISSING)
        old = self.old.pop(sid, _MISSING)
        if value is _MISSING:
            value = default if old is _MISSING else old
        return value

    def __len__(self) -> int:
        return len(self.new) + len(self.old)


_MISSING = object()


class ProxyReset:
    """A ``recently_closed`` mark: the proxy itself reset this stream towards ``sides``.

    Frames on it still in flight towards a side in ``sides`` are expected (RFC 9113 5.1, 5.4.2)
    and discarded quietly; towards the other side the stream goes on.
    """

    __slots__ = ("sides",)

    def __init__(self, sides: Iterable[int]) -> None:
        self.sides = frozenset(sides)

    def __repr__(self) -> str:
        return f"ProxyReset({sorted(self.sides)})"


class _Unit:
    """A frame, or a whole header block, on its way through the pipeline."""

    __slots__ = ("d", "frames", "headers", "seqs", "stream", "neutral")

    def __init__(self, d: int, frames: List[RawFrame], stream: Optional[Stream]) -> None:
        self.d = d
        self.frames = frames
        self.headers: Optional[HeaderList] = None
        #: The block was decoded and left the decoder's dynamic table as it was (all indexed fields, no
        #: insertion, no size update): dropping it, or sending it again, keeps the receiver in step.
        self.neutral = False
        self.seqs: List[Optional[int]] = [None] * len(frames)
        self.stream = stream


class _Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED` (an enum member, so that type checkers tell it from a list)."""
    UNCHANGED = "unchanged"


#: The hooks' outcome for a frame they left as it came: it is forwarded byte for byte.
UNCHANGED: Final = _Unchanged.UNCHANGED
#: What hooks may produce in place of a frame: frames, header lists to encode, raw bytes.
HookItem = Union[fc.Frame, Headers, RawBytes, bytes, bytearray, memoryview]
#: What the hooks made of a unit: UNCHANGED, or the items to send instead (an empty list drops it).
HookResult = Union[_Unchanged, List[HookItem]]
#: The hooks' outcome and what each hook did.
HookOutcome = Tuple[HookResult, Actions]
#: A hook chain run as a generator: it yields what an async hook returned, to be awaited by the shell.
HookGen = Generator[Awaitable[Any], Any, HookOutcome]
#: What to do with a hook chain's outcome once it finished.
Finish = Callable[[HookOutcome], None]


class MalformedFrame(fc.ExtensionFrame):
    """A frame of a known type whose body does not parse, handed to hooks as its raw parts.

    ``problem`` says what is wrong; :meth:`serialize` gives back the bytes that came in.
    """

    __slots__ = ("problem",)
    problem: str


class Relay:
    """Relays one HTTP/2 connection between a client and an upstream server."""

    def __init__(self, conn_id: int, options: Optional[RelayOptions] = None, hooks: Optional[HookRunner] = None,
                 sink: Optional[FrameSink] = None, now: float = 0.0, info: Optional[Dict[str, Any]] = None) -> None:
        self.id = conn_id
        self.options = options or RelayOptions()
        self.limits = self.options.limits
        self.strict = self.options.strict
        self.sink = sink
        self.info = info or {}
        self.now = now
        self.started = now
        self.hooks = hooks
        #: Entries for frames on stream 0 (those with no stream condition).
        self.hook_table: List[HookTable] = hooks.conn_table() if hooks is not None else [{}, {}]
        #: Entries for frames on streams the relay does not track (closed, idle, refused).
        self.untracked_table: List[HookTable] = hooks.untracked_table() if hooks is not None else [{}, {}]
        self.stream_tables: Optional[Callable[[Stream], Optional[StreamTables]]] = (
            hooks.stream_tables if hooks is not None else None)
        # Stream lifecycle calls cost two calls per stream: made only when some hook has those methods.
        self.stream_hooks = hooks if hooks is not None and getattr(hooks, "wants_stream_events", True) else None
        everything = bool(self.options.decode_headers or self.options.strict
                          or (sink is not None and sink.needs_headers))
        chain_decode = getattr(hooks, "decode", None) if hooks is not None else None
        if chain_decode is None:
            chain_decode = [bool(hooks is not None and hooks.needs_headers)] * 2
        #: Per direction, whether its header blocks are decoded (every block: the HPACK table stays in step).
        self.decoding = [everything or bool(chain_decode[0]), everything or bool(chain_decode[1])]
        self.decode = self.decoding[0] or self.decoding[1]
        max_read = self.limits.max_frame_size
        self.readers = [FrameReader(max_read, expect_preface=True), FrameReader(max_read)]
        self.out: List[List[Wire]] = [[], []]
        # Per direction, what the proxy itself sends before the receiver has had a SETTINGS frame
        # (RFC 9113 3.4: an endpoint's first frame is SETTINGS): held here as (wire, origin,
        # actions) until the sender's SETTINGS goes out, then sent right behind it; None once
        # released. See :meth:`_out` and :meth:`_release_held`.
        self.greeting: List[Optional[List[HeldOutput]]] = [[], []]
        self.commands: List[Union[Close, AwaitHook]] = []
        self.settings = [dict(INITIAL_SETTINGS), dict(INITIAL_SETTINGS)]   # as announced by each side
        self.settings_seen = [False, False]
        self.unacked_settings = [0, 0]
        self.window = [DEFAULT_WINDOW, DEFAULT_WINDOW]                     # per direction, receiver's view
        self.owed = [0, 0]                   # connection-level window the proxy used up on a sender's behalf
        self.streams: Dict[int, Stream] = {}
        self.recently_closed = RecentlyClosed()   # stream id -> side that reset it (-1: ended normally)
        self.last_stream = [0, 0]            # highest id opened by the client / promised by the server
        self.last_client_push_id = 0         # highest even id used towards the client
        self.push_map: Dict[int, int] = {}   # server-leg pushed id -> client-leg id (once renumbering started)
        self.push_unmap: Dict[int, int] = {}
        self.renumber_pushes = False
        self.proxy_ids: Set[int] = set()         # client-leg ids of streams the proxy created (pushes)
        self.client_streams_open = 0         # client-initiated streams not yet closed (for MAX_CONCURRENT_STREAMS)
        self.client_streams_total = 0        # client-initiated streams opened (Stream.ordinal)
        self.held_streams: List["OrderedDict[int, Stream]"] = [OrderedDict(), OrderedDict()]
        # Flow-controlled bytes of the DATA held per direction: added when held, taken off when sent.
        # Clearing a queue does not take them off, so this may overstate (see _held_past_window).
        self.held_fcl = [0, 0]
        self.block: List[Optional[List[RawFrame]]] = [None, None]
        self.block_size = [0, 0]
        self.decoders = [HpackDecoder(self.limits.max_header_list_size),
                         HpackDecoder(self.limits.max_header_list_size)] if self.decode else None
        self.decoding_broken = [False, False]
        self.encoders: List[Optional[HpackEncoder]] = [None, None]   # set once a direction is re-encoded
        self.goaway_from: List[Optional[Tuple[int, int]]] = [None, None]
        self.paused: List[Optional[Tuple[HookGen, Finish]]] = [None, None]   # a suspended hook chain per direction
        self.inbox: List[List[FrameFields]] = [[], []]
        self.closed = False
        #: Set by :meth:`halt`: nothing more is relayed (the connection is being closed on a hook's behalf).
        self.halted = False
        self.preface_forwarded = False
        self.counters: Counters = {"frames_in": [0, 0], "frames_out": [0, 0], "bytes_in": [0, 0],
                         "violations": 0, "streams": 0, "resets": [0, 0], "hook_errors": 0,
                         "pushes": 0}
        # Per side: the client's RST_STREAMs (rapid reset), and in strict mode the streams the proxy
        # reset for a side's stream errors (MadeYouReset): both count towards max_resets_per_second.
        self.reset_rate = RateCounter(self.limits.max_resets_per_second, 1.0)
        self.server_reset_rate = RateCounter(self.limits.max_resets_per_second, 1.0)
        self.empty_rate = [RateCounter(self.limits.max_empty_frames_per_second, 1.0),
                           RateCounter(self.limits.max_empty_frames_per_second, 1.0)]
        self.control_rate = [RateCounter(self.limits.max_control_frames_per_second, 1.0),
                             RateCounter(self.limits.max_control_frames_per_second, 1.0)]
        self.violations: List[Dict[str, Any]] = []
        self.fast_headers = [False, False]
        self.fast_data = [False, False]
        self.fast_decoded = [False, False]
        # With a sink that takes batches, fast-path frames are recorded per read, not per frame.
        self.rec: Optional[List[List[Wire]]] = [[], []] if sink is not None and hasattr(sink, "forwarded") else None
        self._update_fast_path()
        self.last_activity = now
        self.settings_sent_at: List[List[float]] = [[], []]   # times of each side's SETTINGS not yet ACKed
        # Per side, the SETTINGS_HEADER_TABLE_SIZE of each of its SETTINGS not yet ACKed (None: not in it).
        self.table_sizes_due: List[List[Optional[int]]] = [[], []]
        self.stalled_since: List[Optional[float]] = [None, None]
        self.heard = [now, now]              # when each side last sent bytes (the upstream's silence)
        self.preface_at = now                # when the upstream was sent the connection preface
        self.waiting_since: Optional[float] = None   # since when streams wait on a silent upstream
        # Set by the shell: call after producing output outside receive()/resume() (a hook's timer).
        self.wake: Optional[Callable[[], None]] = None
        if sink is not None:
            sink.connection_opened(conn_id, now, self.info)
            opened = getattr(sink, "relay_opened", None)     # (sinks that are not FrameSinks may lack it)
            if opened is not None:
                opened(self)
        if hooks is not None:
            hooks.connection_opened(self)

    # ------------------------------------------------------------------ input

    def receive(self, d: int, data: Chunk, now: float) -> None:
        """Bytes arrived on the socket of side ``d`` (0: from the client, 1: from the server)."""
        if self.closed:
            return
        self.now = now
        self.last_activity = now
        self.heard[d] = now
        reader = self.readers[d]
        self.counters["bytes_in"][d] += len(data)
        try:
            if reader.preface_pending:
                frames = reader.feed_fields(data)
                if not reader.preface_pending and not self.preface_forwarded:
                    self._forward_preface()
            else:
                frames = reader.feed_fields(data)
        except PrefaceError as exc:
            self._bad_preface(exc)
            return
        except FrameTooLargeError as exc:
            # The frames before the oversized one still go through.
            if exc.frames and self.paused[d] is None and not self.inbox[d]:
                self._run(d, exc.frames)
            why = str(exc)
            if exc.max_frame_size == self.limits.max_frame_size:
                why += f" (limit max_frame_size = {self.limits.max_frame_size})"
            self._connection_error(d, "4.2", ErrorCode.FRAME_SIZE_ERROR, why, forced=True)
            return
        except FrameCodecError as exc:
            self._connection_error(d, "4.1", ErrorCode.PROTOCOL_ERROR, str(exc), forced=True)
            return
        if not frames:
            return
        if not self.counters["frames_in"][d] and frames[0][0] != SETTINGS and self._violation(
                d, "3.4", ErrorCode.PROTOCOL_ERROR, True,
                f"the {SIDE_NAME[d]}'s first frame is {frame_name(frames[0][0])}, not SETTINGS"):
            return
        self.counters["frames_in"][d] += len(frames)
        if d == S2C and not self.preface_forwarded:
            # Nothing of the server reaches a client that has not proven it speaks HTTP/2.
            self.inbox[d].extend(frames)
            return
        if self.paused[d] is not None or self.inbox[d]:
            self.inbox[d].extend(frames)
            return
        self._run(d, frames)
        if self.greeting[d] is not None and self.paused[d] is None:
            # Side d's first frames went by and none was a SETTINGS sent on (dropped by a hook,
            # or a transparent-mode peer that began with another frame): hold nothing longer.
            self._release_held(d, False)
        rec = self.rec
        if rec is not None and (rec[0] or rec[1]):
            self._rec_flush()

    def _run(self, d: int, frames: List[FrameFields]) -> None:
        """Process one read batch's frames, ``(type, flags, stream id, length, wire)`` tuples, in order.

        Most traffic is DATA and one-frame HEADERS on streams the proxy already
        tracks, and the HEADERS that open client streams; where nothing reads or
        changes them (see :meth:`_update_fast_path`) they are forwarded right here,
        with no object and no call per frame. Anything else, and anything unusual
        about these (a window too small, a state that does not allow the frame),
        becomes a :class:`RawFrame` and goes through :meth:`_process`.
        """
        process = self._process
        streams = self.streams
        data_next = _DATA_NEXT[d]
        headers_next = _HEADERS_NEXT[d]
        block = self.block
        paused = self.paused
        fast_data = self.fast_data
        fast_headers = self.fast_headers
        fast_decoded = self.fast_decoded
        window = self.window
        # Frames above the receiver's SETTINGS_MAX_FRAME_SIZE, and one-frame blocks above the header
        # block limit, take the slow path (which checks them).
        max_frame = self.settings[1 - d][_MAX_FRAME]
        max_hb = min(self.limits.max_header_block_size, max_frame)
        # The lists forwarded (and, when recording, recorded) frames go to. Anything that may run a
        # hook or the slow path can hand them on and start new ones: they are fetched again after it.
        out_d = self.out[d]
        rec_d = self.rec[d] if self.rec is not None else None
        for i, (t, flags, sid, length, wire) in enumerate(frames):
            if self.closed or self.halted:
                return
            if t <= HEADERS and block[d] is None:
                s = streams.get(sid)
                if s is not None:
                    new = None
                    h = s.hooks
                    if t == DATA:
                        if fast_data[d] and s.held is None and length <= window[d] and length <= s.window[d] and (
                                length or flags & END_STREAM) and length <= max_frame and (
                                h is None or DATA not in h[d]):
                            new = data_next[flags & END_STREAM].get(s.state)
                            if new is not None:
                                window[d] -= length
                                s.window[d] -= length
                    elif flags & END_HEADERS and fast_headers[d] and length <= max_hb and (
                            h is None or HEADERS not in h[d]):
                        new = headers_next[flags & END_STREAM].get(s.state)
                    if new is not None:
                        s.state = new
                        out_d.append(wire)
                        if rec_d is not None:
                            rec_d.append(wire)
                        if new is _CLOSED:
                            self._close_stream(s)
                            if self.stream_hooks is not None:
                                out_d = self.out[d]
                                rec_d = self.rec[d] if self.rec is not None else None
                        continue
                elif t == HEADERS and d == C2S and self.fast_new_streams and flags & END_HEADERS and length <= max_hb:
                    # A new client stream (the request of a new exchange).
                    settings = self.settings
                    if (sid & 1 and sid > self.last_stream[CLIENT]
                            and self.client_streams_open < settings[SERVER][_MAX_CONCURRENT]
                            and len(streams) < self.limits.max_streams):
                        self.last_stream[CLIENT] = sid
                        s = streams[sid] = Stream(sid, _HALF_CLOSED_LOCAL if flags & END_STREAM else _OPEN,
                                                  settings[CLIENT][_INITIAL_WINDOW], settings[SERVER][_INITIAL_WINDOW])
                        self.client_streams_open += 1
                        self.client_streams_total += 1
                        s.ordinal = self.client_streams_total
                        self.counters["streams"] += 1
                        if self.stream_tables is not None:
                            s.hooks = self.stream_tables(s)
                        out_d.append(wire)
                        if rec_d is not None:
                            rec_d.append(wire)
                        if self.stream_hooks is not None:
                            self.stream_hooks.stream_opened(self, s)
                            out_d = self.out[d]
                            rec_d = self.rec[d] if self.rec is not None else None
                        continue
            if not (t == HEADERS and fast_decoded[d] and flags & END_HEADERS and not flags & _PAD_PRIO
                    and length <= max_hb and block[d] is None
                    and self._decoded_block(d, streams.get(sid), flags, sid, length, wire)):
                process(d, RawFrame(t, flags, sid, length, wire))
            out_d = self.out[d]
            rec_d = self.rec[d] if self.rec is not None else None
            if paused[d] is not None:
                rest = frames[i + 1:]
                if rest:
                    self.inbox[d][:0] = rest
                return

    def resume(self, d: int, result: Any = None, error: Optional[BaseException] = None) -> None:
        """An awaited hook finished: continue the held frame and those behind it."""
        pending = self.paused[d]
        if pending is None or self.closed:
            return
        self.paused[d] = None
        gen, finish = pending
        self._drive(d, gen, finish, result, error)
        while self.paused[d] is None and self.inbox[d] and not self.closed:
            frames, self.inbox[d] = self.inbox[d], []
            self._run(d, frames)
        if self.greeting[d] is not None and self.paused[d] is None and self.counters["frames_in"][d]:
            self._release_held(d, False)
        if self.rec is not None:
            self._rec_flush()

    def eof(self, d: int, reason: str = "") -> None:
        """Side ``d`` closed its socket (or it failed)."""
        if self.closed:
            return
        other = 1 - d
        cut = self.preface_forwarded and bool(self.streams)
        if cut:
            # The streams still open die with this socket: say so to the other side, stream by
            # stream (the upstream's are cancelled; the client's end with INTERNAL_ERROR).
            code = ErrorCode.CANCEL if d == CLIENT else ErrorCode.INTERNAL_ERROR
            for s in list(self.streams.values()):
                if d == CLIENT and s.proxy_owned:
                    continue          # (a push the proxy made: the upstream never heard of it)
                wire_sid = s.server_id if d == CLIENT else s.id
                if wire_sid:
                    # (Direction d: from the side that left towards the other.)
                    self._out(d, fc.RstStreamFrame(wire_sid, error_code=code).serialize(), None,
                              [{"hook": "h2proxy", "action": "injected"}])
        if d == CLIENT and cut and self.goaway_from[CLIENT] is None:
            self._send_goaway(C2S, self.last_stream[SERVER], ErrorCode.NO_ERROR,
                              f"h2proxy: the client closed the connection{': ' + reason if reason else ''}")
        if d == SERVER:
            log.info("c%d: server closed the connection%s%s", self.id, f": {reason}" if reason else "",
                     f"; {len(self.streams)} stream(s) still open: RST_STREAM INTERNAL_ERROR to the client"
                     if cut else "")
            if self.goaway_from[SERVER] is None and self.preface_forwarded:
                last = self.last_stream[CLIENT]
                # After the client's own GOAWAY, with no stream left, this is the expected end: no error.
                done = self.goaway_from[CLIENT] is not None and not self.streams
                self._send_goaway(S2C, last, ErrorCode.NO_ERROR if done else ErrorCode.INTERNAL_ERROR,
                                  f"h2proxy: upstream closed the connection{': ' + reason if reason else ''}")
            elif not self.preface_forwarded:
                # The client has not finished its preface (it may be slow, or about to be timed out): it
                # still gets a server preface and the reason, never a bare close (nothing of the upstream
                # reaches it: its frames wait for the client's preface).
                note = [{"hook": "h2proxy", "action": "injected"}]
                self._out(S2C, fc.SettingsFrame(0).serialize(), None, note)
                self._send_goaway(S2C, 0, ErrorCode.INTERNAL_ERROR,
                                  f"h2proxy: upstream closed the connection{': ' + reason if reason else ''}")
        self._finish(f"{SIDE_NAME[d]} closed the connection{': ' + reason if reason else ''}",
                     close_sides=(other,))

    def shutdown(self) -> None:
        """Graceful stop: tell the client no new streams will be accepted."""
        if self.closed or not self.preface_forwarded:
            return
        self._send_goaway(S2C, self.last_stream[CLIENT], ErrorCode.NO_ERROR, "h2proxy is shutting down")

    def tick(self, now: float, upstream_held: bool = False) -> None:
        """Time passes: enforce the idle, SETTINGS-ACK, zero-window and upstream timeouts.

        ``upstream_held``: the shell is not reading the upstream (backpressure from the client's
        socket), so its silence is not its own.
        """
        if self.closed:
            return
        self.now = now
        lim = self.limits
        if self.preface_forwarded and self._upstream_timed_out(now, upstream_held):
            return
        if lim.idle_timeout and now - self.last_activity > lim.idle_timeout and not self.active_streams:
            log.info("c%d: idle for %.0f s (limit idle_timeout = %s); closing with GOAWAY", self.id,
                     now - self.last_activity, lim.idle_timeout)
            if self.preface_forwarded:
                self._send_goaway(S2C, self.last_stream[CLIENT], ErrorCode.NO_ERROR, "h2proxy: idle timeout")
                self._send_goaway(C2S, self.last_stream[SERVER], ErrorCode.NO_ERROR, "h2proxy: idle timeout")
            self._finish("idle timeout")
            return
        if lim.settings_ack_timeout:
            for side in (CLIENT, SERVER):
                sent = self.settings_sent_at[side]
                if sent and now - sent[0] > lim.settings_ack_timeout:
                    # The side that did not acknowledge is the other one.
                    self._connection_error(1 - side, "6.5.3", ErrorCode.SETTINGS_TIMEOUT,
                                           f"SETTINGS of the {SIDE_NAME[side]} not acknowledged within "
                                           f"{lim.settings_ack_timeout:g} s (limit settings_ack_timeout = "
                                           f"{lim.settings_ack_timeout})",
                                           forced=True)
                    return
        if lim.zero_window_timeout:
            for d in (C2S, S2C):
                if self.held_streams[d] or self._window_closed(d):
                    since = self.stalled_since[d]
                    if since is None:
                        self.stalled_since[d] = now
                    elif now - since > lim.zero_window_timeout:
                        self._limit(1 - d, "zero_window_timeout",
                                    f"the {SIDE_NAME[1 - d]} kept its flow-control window closed for "
                                    f"{now - since:.0f} s")
                        return
                else:
                    self.stalled_since[d] = None

    def _upstream_timed_out(self, now: float, held: bool) -> bool:
        """The upstream's two timeouts (it never sends SETTINGS; it goes silent with streams waiting)."""
        lim = self.limits
        if lim.upstream_settings_timeout and not self.settings_seen[SERVER] \
                and now - self.preface_at > lim.upstream_settings_timeout:
            self._upstream_timeout("upstream_settings_timeout",
                                   f"the upstream sent no SETTINGS within {now - self.preface_at:.1f} s of the "
                                   f"connection preface")
            return True
        if not lim.upstream_silence_timeout:
            return False
        sending = _SENDING[S2C]
        waiting = sum(1 for s in self.streams.values() if s.state in sending)   # (the upstream still owes them)
        if not waiting or held or self.held_streams[S2C] or self._window_closed(S2C):
            self.waiting_since = None        # (nothing waits on the upstream, or something else holds it back)
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        silent = now - max(self.heard[SERVER], self.waiting_since)
        if silent > lim.upstream_silence_timeout:
            self._upstream_timeout("upstream_silence_timeout",
                                   f"the upstream sent nothing for {silent:.1f} s while {waiting} "
                                   f"stream(s) waited for it")
            return True
        return False

    def _upstream_timeout(self, name: str, detail: str) -> None:
        """A silent upstream: each stream still open gets RST_STREAM INTERNAL_ERROR towards the client and
        CANCEL towards the upstream, the client GOAWAY INTERNAL_ERROR naming the limit, the upstream a clean
        GOAWAY; both connections close. The log says so at the default verbosity."""
        message = f"limit {name} = {getattr(self.limits, name)} exceeded: {detail}"
        log.warning("c%d: upstream timeout: %s; %d stream(s) reset, connection closed", self.id, message,
                    len(self.streams))
        if self.sink is not None:
            self.sink.error(self.id, self.now, f"upstream timeout: {message}")
        note = [{"hook": "h2proxy", "action": "injected"}]
        if not self.settings_seen[SERVER]:
            # The client never had the server's preface: a server's first frame must be SETTINGS (RFC 9113 3.4).
            self._out(S2C, fc.SettingsFrame(0).serialize(), None, note)
        for s in list(self.streams.values()):
            self._out(S2C, fc.RstStreamFrame(s.id, error_code=ErrorCode.INTERNAL_ERROR).serialize(), None, note)
            if s.server_id and not s.proxy_owned:
                self._out(C2S, fc.RstStreamFrame(s.server_id, error_code=ErrorCode.CANCEL).serialize(), None, note)
        self._send_goaway(C2S, self.last_stream[SERVER], ErrorCode.NO_ERROR, f"h2proxy: {message}")
        self._send_goaway(S2C, self.last_stream[CLIENT], ErrorCode.INTERNAL_ERROR,
                          f"h2proxy: upstream timeout: {message}")
        self._finish(f"upstream timeout: {message}")

    def _window_closed(self, d: int) -> bool:
        """Whether the receiver of d keeps a window at zero that a stream still sending in d waits on."""
        sending = _SENDING[d]
        if self.window[d] <= 0:
            return any(s.state in sending for s in self.streams.values())
        return any(s.window[d] <= 0 and s.state in sending for s in self.streams.values())

    @property
    def active_streams(self) -> int:
        """Streams not closed yet (closed streams leave ``streams`` at once)."""
        return len(self.streams)

    @property
    def buffered(self) -> int:
        """Bytes the core holds (incomplete frames, held DATA, frames queued behind a hook)."""
        total = self.readers[0].buffered + self.readers[1].buffered
        for d in (0, 1):
            for f in self.inbox[d]:
                total += f[3] + 9      # (type, flags, stream id, length, wire)
            for s in self.held_streams[d].values():
                if s.held is not None:     # (a proxy push waiting for window holds no frames)
                    for item in s.held[d]:
                        total += len(item[0])
        return total

    def take_output(self, d: int) -> List[Wire]:
        """The buffers to write towards the receiver of direction d, in order (and forget them)."""
        out = self.out[d]
        if out:
            self.out[d] = []
            self.counters["frames_out"][d] += len(out)
        return out

    # ------------------------------------------------------------ dispatching

    def _rec_flush(self) -> None:
        """Hand frames recorded on the fast path to the sink, before any other record."""
        rec = self.rec
        sink = self.sink
        if rec is None or sink is None:
            return
        for d in (C2S, S2C):
            if rec[d]:
                wires, rec[d] = rec[d], []
                sink.forwarded(self.id, RECV_LEG[d], SEND_LEG[d], self.now, wires)

    def detach_sink(self) -> None:
        """Stop reporting to the sink (a busy web view asks this, between reads): what was recorded on
        the fast path goes out first, then the fast paths are those of a relay without a sink."""
        if self.sink is None:
            return
        if self.rec is not None:
            self._rec_flush()
        self.sink = None
        self.rec = None
        self._update_fast_path()

    def _update_fast_path(self) -> None:
        """Whether complete HEADERS frames of each direction may skip the general block path, DATA
        frames the slow one (each still only on a stream no hook wants them on: ``Stream.hooks``),
        and the HEADERS opening a client stream too (no hook could want it, whatever the request)."""
        for d in (C2S, S2C):
            plain = (self.sink is None or self.rec is not None) and not (d == S2C and self.push_map)
            self.fast_headers[d] = plain and not self.decoding[d] and self.encoders[d] is None
            self.fast_data[d] = plain and not self.strict
            # Decoded (every block of d is: the HPACK table stays in step), checked, handed to the hooks that
            # want it or forwarded, without the general path's detours (see _decoded_block).
            self.fast_decoded[d] = (self.sink is None and self.decoding[d] and not self.strict
                                    and not (d == S2C and self.push_map))
        self.fast_new_streams = self.fast_headers[C2S] and (
            self.hooks is None or HEADERS not in self.hooks.table()[C2S])

    def interest_changed(self) -> None:
        """The hooks' interest changed (rules changed at run time): every open stream takes it now."""
        tables = self.stream_tables
        if tables is not None and self.hooks is not None:
            followed = self.hooks.full_tables()
            for s in self.streams.values():
                if not s.proxy_owned and s.hooks is not followed:
                    s.hooks = tables(s)
        self._update_fast_path()

    def halt(self) -> None:
        """A hook closes the connection: no frame read from now on is relayed (those behind the one the
        hook acted on in the same read included)."""
        self.halted = True

    def follow_stream(self, sid: int) -> None:
        """A hook must see every frame of stream ``sid`` from now on (it acted on it: its repairs follow)."""
        s = self.streams.get(sid)
        if s is not None and self.hooks is not None:
            s.hooks = self.hooks.full_tables()

    def _process(self, d: int, f: RawFrame) -> None:
        t = f.type
        if f.length > self.settings[1 - d][_MAX_FRAME] and self._oversized(d, f):
            return
        blk = self.block[d]
        if blk is not None:
            if t == CONTINUATION and f.stream_id == blk[0].stream_id:
                blk.append(f)
                self.block_size[d] += f.length
                if f.flags & END_HEADERS:
                    self.block[d] = None
                    self._header_block(d, blk)
                elif (len(blk) > self.limits.max_continuations
                      or self.block_size[d] > self.limits.max_header_block_size):
                    self._limit(d, "max_continuations" if len(blk) > self.limits.max_continuations
                                else "max_header_block_size",
                                f"header block on stream {f.stream_id}: {len(blk) - 1} CONTINUATION frames, "
                                f"{self.block_size[d]} bytes")
                return
            self.block[d] = None
            dropped = self._violation(d, "6.10", ErrorCode.PROTOCOL_ERROR, True,
                                      f"{frame_name(t)} on stream {f.stream_id} inside the header block of "
                                      f"stream {blk[0].stream_id} (expected CONTINUATION)")
            if dropped:
                return
            self._header_block(d, blk)   # forward what there was, then this frame
        if t == DATA:
            self._data(d, f)
        elif t == HEADERS or t == PUSH_PROMISE:
            if f.length > self.limits.max_header_block_size:
                self._limit(d, "max_header_block_size",
                            f"{frame_name(t)} frame on stream {f.stream_id} of {f.length} bytes")
                return
            if f.flags & END_HEADERS:
                self._header_block(d, [f])
            else:
                self.block[d] = [f]
                self.block_size[d] = f.length
        else:
            self._control(d, f)

    def _oversized(self, d: int, f: RawFrame) -> bool:
        """A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE (RFC 9113 4.2).

        Strict mode never gets here (its frame reader stops such a frame: FRAME_SIZE_ERROR);
        transparent mode logs the violation and forwards the frame. A frame that can change
        the connection's state (a header block, SETTINGS, anything on stream 0) is a connection
        error, others a stream error.
        """
        t = f.type
        connection = f.stream_id == 0 or t in (HEADERS, PUSH_PROMISE, CONTINUATION, SETTINGS)
        limit = self.settings[1 - d][_MAX_FRAME]
        return self._violation(d, "4.2", ErrorCode.FRAME_SIZE_ERROR, connection,
                               f"{frame_name(t)} frame of {f.length} bytes on stream {f.stream_id}, above the "
                               f"{SIDE_NAME[1 - d]}'s SETTINGS_MAX_FRAME_SIZE {limit}", f.stream_id)

    # ---------------------------------------------------------------- DATA

    def _data(self, d: int, f: RawFrame) -> None:
        sid = f.stream_id
        if d == S2C and self.push_map:
            sid = self.push_map.get(sid, sid)
        s = self.streams.get(sid)
        if sid == 0:
            if self._violation(d, "6.1", ErrorCode.PROTOCOL_ERROR, True, "DATA on stream 0"):
                return
        elif s is None:
            if self._closed_stream_frame(d, f, sid):
                return
        else:
            new = st.TRANSITIONS.get((s.state, SENDER[d], st.DATA_END if f.flags & END_STREAM else st.DATA))
            if new is None:
                code, conn, why = st.violation_code(s.state, SENDER[d], "DATA")
                if self._violation(d, "5.1", code, conn, f"stream {sid}: {why}", sid):
                    return
            else:
                s.state = new
        if f.length == 0 and not f.flags & END_STREAM and self.empty_rate[d].hit(self.now):
            # (On any stream, tracked or not: a flood on closed streams costs as much.)
            self._limit(d, "max_empty_frames_per_second", "DATA frames with empty payloads")
            return
        if self.strict:
            bad = messages.data_check(self, d, s, f, sid)
            if bad is not None and self._violation(d, *bad, sid=sid):
                return
        if self.held_streams[d] and f.length and self._held_past_window(d, s, f.length, sid):
            return
        if s is None:
            hooks = (self.hook_table if sid == 0 else self.untracked_table)[d].get(DATA)
        else:
            hooks = s.hooks[d].get(DATA) if s.hooks is not None else None
        if hooks is None:
            self._send_data(d, s, f.wire, f.length, sid, self._record_in(d, f) if self.sink is not None else None,
                            None)
            if s is not None and s.state == st.CLOSED:
                self._close_stream(s)
            return
        self._hooked(d, _Unit(d, [f], s), hooks)

    def _send_data(self, d: int, s: Optional[Stream], wire: Wire, fcl: int, sid: int, origin: Optional[int],
                   actions: Optional[Actions]) -> None:
        """Send one DATA frame towards the receiver of ``d``, inside its flow-control windows."""
        if d == S2C and self.push_map:
            wire = self._map_ids(d, wire)
        if s is not None:
            held = s.held
            if (held is not None and held[d]) or ((fcl > self.window[d] or fcl > s.window[d])
                                                 and (self.owed[d] or (s.owed is not None and s.owed[d]))):
                if held is None:
                    held = s.held = [[], []]
                    s.held_fcl = [0, 0]
                held[d].append((wire, fcl, origin, actions))
                self.held_fcl[d] += fcl
                s.held_fcl[d] += fcl
                self.held_streams[d][s.id] = s
                return
            s.window[d] -= fcl
        self.window[d] -= fcl
        if fcl and (self.window[d] < 0 or (s is not None and s.window[d] < 0)):
            which = "connection" if self.window[d] < 0 else f"stream {sid}"
            self._violation(d, "6.9.1", ErrorCode.FLOW_CONTROL_ERROR, self.window[d] < 0,
                            f"DATA of {fcl} bytes on stream {sid} exceeds the {which} flow-control window "
                            f"(now {self.window[d] if self.window[d] < 0 or s is None else s.window[d]})", sid,
                            forwarded=True)
        self._out(d, wire, origin, actions)

    def _flush_held(self, d: int) -> None:
        """Send held DATA (and what queued behind it) as far as the receiver's windows allow."""
        held = self.held_streams[d]
        for sid in list(held):
            s = held[sid]
            # (A proxy push waiting for window is in held_streams with no frames held.)
            queue = s.held[d] if s.held is not None else ()
            while queue:
                wire, fcl, origin, actions = queue[0]
                if fcl and (fcl > self.window[d] or fcl > s.window[d]):
                    break
                queue.pop(0)
                self.held_fcl[d] -= fcl
                s.held_fcl[d] -= fcl
                s.window[d] -= fcl
                self.window[d] -= fcl
                self._out(d, wire, origin, actions)
            if not queue:
                del held[sid]
                if s.push_body is not None:
                    self._continue_push(s)

    def _held_past_window(self, d: int, s: Optional[Stream], n: int, sid: int) -> bool:
        """DATA of n bytes arrived while the proxy holds DATA for the receiver of d.

        The sender may have in flight no more than its own view of the window: the receiver's
        window, plus what the proxy owes it, less what the proxy still holds. A sender that
        ignores flow control would otherwise make the proxy hold without bound: it gets
        FLOW_CONTROL_ERROR (in both modes: such DATA cannot be forwarded in order). True when
        the connection was closed.
        """
        if n <= self.window[d] + self.owed[d] - self.held_fcl[d]:
            if s is None or s.held is None or not s.held[d] or self.unacked_settings[1 - d]:
                return False
            if n <= s.window[d] + (s.owed[d] if s.owed is not None else 0) - s.held_fcl[d]:
                return False
        # Exact sums (the running totals may overstate after a reset cleared a queue).
        total = 0
        for hs in self.held_streams[d].values():
            if hs.held is not None:
                for item in hs.held[d]:
                    total += item[1]
        self.held_fcl[d] = total
        room = self.window[d] + self.owed[d] - total
        which = "connection"
        if n <= room:
            # The stream's window too, once the receiver's SETTINGS (its initial window) are acknowledged.
            if s is None or s.held is None or not s.held[d] or self.unacked_settings[1 - d]:
                return False
            s.held_fcl[d] = sum(item[1] for item in s.held[d])
            room = s.window[d] + (s.owed[d] if s.owed is not None else 0) - s.held_fcl[d]
            if n <= room:
                return False
            which = f"stream {sid}"
        self._connection_error(d, "6.9.1", ErrorCode.FLOW_CONTROL_ERROR,
                               f"DATA of {n} bytes on stream {sid} exceeds the {which} flow-control window "
                               f"({room}) while the proxy holds {total} bytes of DATA for the "
                               f"{SIDE_NAME[1 - d]}", forced=True)
        return True

    # ----------------------------------------------------------- header blocks

    def _decoded_block(self, d: int, s: Optional[Stream], flags: int, sid: int, length: int, wire: Wire) -> bool:
        """A one-frame HEADERS block with neither padding nor priority, in a direction whose blocks are
        decoded, on stream ``s`` (None: it opens client stream ``sid``, when the proxy may open it at
        once). Decoded, checked (transparent mode: a problem is logged and the block goes on), then
        handed to the hooks that want it on this stream, or forwarded (re-encoded when the direction is).

        False, with nothing done, when the block must take the general path instead.
        """
        end = flags & END_STREAM
        new: Optional[str] = None
        if s is not None:
            new = _HEADERS_NEXT[d][end].get(s.state)
            if new is None:
                return False
        elif not (d == C2S and sid & 1 and sid > self.last_stream[CLIENT]
                  and self.client_streams_open < self.settings[SERVER][_MAX_CONCURRENT]
                  and len(self.streams) < self.limits.max_streams):
            return False          # (not a new client stream the proxy may open at once: the general path)
        if self.decoding_broken[d] or self.decoders is None:
            return False
        decoder = self.decoders[d]
        version = decoder.table_version
        try:
            headers = decoder.decode(memoryview(wire)[9:])
        except Exception as exc:
            f = RawFrame(HEADERS, flags, sid, length, wire)
            self._decode_failed(d, [f], exc)
            if not self.closed:
                self._header_block(d, [f], None)     # (the general path, with what there is)
            return True
        if s is None:
            if messages.check_block(None, d, headers, bool(end), "request", False) is not None:
                self._header_block(d, [RawFrame(HEADERS, flags, sid, length, wire)], headers)   # (it reports it)
                return True
            settings = self.settings
            self.last_stream[CLIENT] = sid
            s = self.streams[sid] = Stream(sid, _HALF_CLOSED_LOCAL if end else _OPEN,
                                           settings[CLIENT][_INITIAL_WINDOW], settings[SERVER][_INITIAL_WINDOW])
            self.client_streams_open += 1
            self.client_streams_total += 1
            s.ordinal = self.client_streams_total
            self.counters["streams"] += 1
            s.request_headers = headers
            if self.stream_tables is not None:
                s.hooks = self.stream_tables(s)
            if self.stream_hooks is not None:
                self.stream_hooks.stream_opened(self, s)
        else:
            assert new is not None
            s.state = new
            bad = messages.check_block(s, d, headers, bool(end), "next", False)
            if bad is not None:
                self._violation(d, *bad, sid=sid)
            if d == C2S:
                s.trailers = headers
            elif s.response_headers is None or _is_informational(s.response_headers):
                s.response_headers = headers
            else:
                s.trailers = headers
        h = s.hooks
        hooks = h[d].get(HEADERS) if h is not None else None
        if hooks is None and self.greeting[d] is None:
            if self.encoders[d] is None:
                self.out[d].append(wire)
            else:
                # This direction is re-encoded (a block was dropped or changed before): the proxy's encoder.
                out = self.out[d]
                for w in self._encode_block(d, Headers(sid, headers, bool(end))):
                    out.append(w)
            if new is _CLOSED:
                self._close_stream(s)
            return True
        unit = _Unit(d, [RawFrame(HEADERS, flags, sid, length, wire)], s)
        unit.headers = headers
        unit.neutral = decoder.table_version == version
        if hooks is None:
            self._forward_block(d, unit, UNCHANGED)
        else:
            self._hooked(d, unit, hooks)
        return True

    def _header_block(self, d: int, frames: List[RawFrame], predecoded: Any = _UNDECODED) -> None:
        first = frames[0]
        t = first.type
        sid = first.stream_id
        unit = _Unit(d, frames, None)
        bad = messages.frame_problem(first)
        malformed = False
        if bad is not None and bad[2]:
            if self._violation(d, *bad, sid=sid):
                return
            # (The block's fragment cannot be told from padding or fixed fields: it is not decoded,
            # and the decoder, which never saw it, goes on with the next block.)
            malformed = True
            bad = None
        if predecoded is not _UNDECODED:
            unit.headers = predecoded
        elif self.decoding[d] and not self.decoding_broken[d] and not malformed:
            version = self.decoders[d].table_version if self.decoders is not None else -1
            unit.headers = self._decode(d, frames)
            unit.neutral = unit.headers is not None and self.decoders is not None \
                and self.decoders[d].table_version == version
            if self.closed:
                return
        if bad is not None and self._violation(d, *bad, sid=sid):
            messages.block_dropped(self, d, unit)
            return
        if t == HEADERS:
            if self._check_headers(d, unit, sid):
                messages.block_dropped(self, d, unit)
                return
        else:
            if self._check_push_promise(d, unit, sid):
                messages.block_dropped(self, d, unit)
                return
        s = unit.stream
        if s is None:
            hooks = (self.hook_table if sid == 0 else self.untracked_table)[d].get(t)
        else:
            hooks = s.hooks[d].get(t) if s.hooks is not None else None
        if hooks is None:
            if self.sink is None and self.encoders[d] is None and not (d == S2C and self.push_map):
                # Fast path: nothing looks at or changes this block.
                out = self.out[d]
                for f in frames:
                    out.append(f.wire)
                s = unit.stream
                if s is not None and t == HEADERS and s.state == st.CLOSED:
                    self._close_stream(s)
                return
            self._forward_block(d, unit, UNCHANGED)
            return
        self._hooked(d, unit, hooks)

    def _check_headers(self, d: int, unit: _Unit, sid: int) -> bool:
        """State and rules for a HEADERS block; True when the block is dropped."""
        end = unit.frames[0].flags & END_STREAM
        if d == S2C and self.push_map:
            sid = self.push_map.get(sid, sid)
        if sid == 0:
            return self._violation(d, "6.2", ErrorCode.PROTOCOL_ERROR, True, "HEADERS on stream 0")
        s = self.streams.get(sid)
        if s is None:
            if d == C2S and sid > self.last_stream[CLIENT]:
                if not sid & 1:
                    if self._violation(d, "5.1.1", ErrorCode.PROTOCOL_ERROR, True,
                                       f"client opened stream {sid} with an even id"):
                        return True
                if sid in self.recently_closed:
                    pass
                limit = self.settings[SERVER][Setting.MAX_CONCURRENT_STREAMS]
                if self.client_streams_open >= limit:
                    if self._violation(d, "5.1.2", ErrorCode.REFUSED_STREAM, False,
                                       f"stream {sid} exceeds the server's SETTINGS_MAX_CONCURRENT_STREAMS "
                                       f"{limit}", sid):
                        return True
                if len(self.streams) >= self.limits.max_streams:
                    self._limit(d, "max_streams", f"{len(self.streams)} streams tracked")
                    return True
                if unit.headers is not None:
                    bad = messages.check_block(None, d, unit.headers, bool(end), "request", self.strict)
                    if bad is not None and self._violation(d, *bad, sid=sid):
                        self.last_stream[CLIENT] = sid
                        messages.refused(self, sid)
                        return True
                self.last_stream[CLIENT] = sid
                s = Stream(sid, st.IDLE, self.settings[CLIENT][Setting.INITIAL_WINDOW_SIZE],
                           self.settings[SERVER][Setting.INITIAL_WINDOW_SIZE])
                self.streams[sid] = s
                self.client_streams_open += 1
                self.client_streams_total += 1
                s.ordinal = self.client_streams_total
                self.counters["streams"] += 1
                s.state = st.HALF_CLOSED_LOCAL if end else st.OPEN
                s.request_headers = unit.headers
                if self.stream_tables is not None:
                    s.hooks = self.stream_tables(s)
                unit.stream = s
                if self.stream_hooks is not None:
                    self.stream_hooks.stream_opened(self, s)
                return False
            if d == C2S:
                if sid in self.recently_closed:
                    return self._closed_stream_frame(d, unit.frames[0], sid)
                return self._violation(d, "5.1.1", ErrorCode.PROTOCOL_ERROR, True,
                                       f"client sent HEADERS on stream {sid}, not above its last stream "
                                       f"{self.last_stream[CLIENT]}")
            if self._closed_stream_frame(d, unit.frames[0], sid):
                return True
            return False
        unit.stream = s
        new = st.TRANSITIONS.get((s.state, SENDER[d], st.HEADERS_END if end else st.HEADERS))
        if new is None:
            code, conn, why = st.violation_code(s.state, SENDER[d], "HEADERS")
            return self._violation(d, "5.1", code, conn, f"stream {sid}: {why}", sid)
        s.state = new
        if unit.headers is not None:
            bad = messages.check_block(s, d, unit.headers, bool(end), "next", self.strict)
            if bad is not None and self._violation(d, *bad, sid=sid):
                return True
        if unit.headers is not None:
            if d == C2S:
                s.trailers = unit.headers
            elif s.response_headers is None or _is_informational(s.response_headers):
                s.response_headers = unit.headers
            else:
                s.trailers = unit.headers
        return False

    def _check_push_promise(self, d: int, unit: _Unit, sid: int) -> bool:
        first = unit.frames[0]
        if d == C2S:
            return self._violation(d, "8.4", ErrorCode.PROTOCOL_ERROR, True, "the client sent PUSH_PROMISE")
        if sid == 0 and self._violation(d, "6.6", ErrorCode.PROTOCOL_ERROR, True, "PUSH_PROMISE on stream 0"):
            return True
        parent = self.streams.get(sid)
        if parent is None and sid and unit.headers is not None:
            mark = self.recently_closed.get(sid)
            if isinstance(mark, ProxyReset) and CLIENT in mark.sides:
                return self._promise_after_reset(unit)
        if sid and (not sid & 1 or (parent.state not in (st.OPEN, st.HALF_CLOSED_LOCAL) if parent is not None
                                    else self.recently_closed.get(sid) != CLIENT)):
            # Only on a client stream that is open or half-closed (local) from the client's view; one the
            # client reset may still get promises sent before the reset arrived (RFC 9113 6.6).
            if self._violation(d, "6.6", ErrorCode.PROTOCOL_ERROR, True,
                               f"PUSH_PROMISE on stream {sid}, which is "
                               f"{parent.state if parent is not None else 'idle or closed'}"):
                return True
        if self.settings[CLIENT][Setting.ENABLE_PUSH] == 0:
            if self._violation(d, "8.4", ErrorCode.PROTOCOL_ERROR, True,
                               "PUSH_PROMISE although the client set SETTINGS_ENABLE_PUSH to 0"):
                return True
        payload = first.payload
        pad = payload[0] if first.flags & PADDED and len(payload) else 0
        off = 1 if first.flags & PADDED else 0
        if len(payload) < off + 4:
            return self._violation(d, "6.6", ErrorCode.FRAME_SIZE_ERROR, True,
                                   f"PUSH_PROMISE on stream {sid}: body of {len(payload)} bytes has no promised "
                                   f"stream id")
        promised = _u32.unpack_from(payload, off)[0] & 0x7FFFFFFF
        del pad
        if self.push_map is not None and sid in self.push_map:
            sid = self.push_map[sid]
        if promised & 1 or promised <= self.last_stream[SERVER]:
            if self._violation(d, "5.1.1", ErrorCode.PROTOCOL_ERROR, True,
                               f"PUSH_PROMISE promises stream {promised}, which is odd or not above "
                               f"{self.last_stream[SERVER]}"):
                return True
        self.last_stream[SERVER] = max(self.last_stream[SERVER], promised)
        if unit.headers is not None:
            bad = messages.push_problem(unit.headers)
            if bad is not None and self._violation(d, *bad, sid=promised):
                messages.refused(self, promised)
                return True
        if len(self.streams) >= self.limits.max_streams:
            self._limit(d, "max_streams", f"{len(self.streams)} streams tracked, PUSH_PROMISE for one more")
            return True
        client_id = promised
        if self.renumber_pushes:
            client_id = self.last_client_push_id + 2
            self.push_map[promised] = client_id
            self.push_unmap[client_id] = promised
            self._update_fast_path()
        self.last_client_push_id = max(self.last_client_push_id, client_id)
        parent = self.streams.get(sid)
        unit.stream = parent
        s = Stream(client_id, st.RESERVED_REMOTE, self.settings[CLIENT][Setting.INITIAL_WINDOW_SIZE],
                   self.settings[SERVER][Setting.INITIAL_WINDOW_SIZE])
        s.server_id = promised
        s.request_headers = unit.headers
        if self.stream_tables is not None:
            s.hooks = self.stream_tables(s)
        self.streams[client_id] = s
        self.counters["streams"] += 1
        return False

    def _promise_after_reset(self, unit: _Unit) -> bool:
        """A PUSH_PROMISE in flight on a stream the proxy had reset towards the client (RFC 9113 6.6).

        The server did nothing wrong, and the client must not see a promise on a stream it was told
        was reset: the promise is dropped (its decoded block: later blocks are re-encoded), the
        promised stream is cancelled towards the server, and what the server still sends on it is
        discarded like any frame in flight on a stream the proxy reset. Returns True (dropped).
        """
        promised = self._promised_id(unit.frames[0])
        self.last_stream[SERVER] = max(self.last_stream[SERVER], promised)
        self._out(C2S, fc.RstStreamFrame(promised, error_code=ErrorCode.CANCEL).serialize(), None,
                  [{"hook": "h2proxy", "action": "injected"}])
        self.recently_closed[promised] = ProxyReset((CLIENT, SERVER))
        log.debug("c%d: PUSH_PROMISE of stream %d on stream %d, which the proxy reset towards the client: "
                  "dropped, the promised stream cancelled", self.id, promised, unit.frames[0].stream_id)
        return True

    def _forward_block(self, d: int, unit: _Unit, result: HookResult, actions: Optional[Actions] = None) -> None:
        """Send a header block on: unchanged (byte for byte, unless re-encoding), or as changed."""
        frames = unit.frames
        if result is UNCHANGED and (self.encoders[d] is None or unit.headers is None):
            if self.encoders[d] is not None and (self.decoding_broken[d] or not self.decoding[d]):
                # (A malformed frame has its violation logged already.)
                self._log_error(f"cannot re-encode the header block on stream {frames[0].stream_id}: the "
                                f"{SIDE_NAME[d]}'s header blocks are not decoded "
                                f"({'COMPRESSION_ERROR earlier' if self.decoding[d] else 'decoding is off'}); "
                                "forwarded as received")
            seqs = self._record_block_in(d, unit, actions)
            mapping = d == S2C and self.push_map
            for i, f in enumerate(frames):
                w = f.wire
                if mapping:
                    w = self._map_ids(d, w)
                    if i == 0 and f.type == PUSH_PROMISE:
                        w = self._map_promised(w, f.flags)
                self._out(d, w, seqs[i], None)
            self._after_block(unit)
            return
        seqs = self._record_block_in(d, unit, actions)
        origin = seqs[0]
        acts: Optional[Actions]
        if result is UNCHANGED:
            promised = None
            if frames[0].type == PUSH_PROMISE:
                promised = self._promised_id(frames[0])
                promised = self.push_map.get(promised, promised)
            assert unit.headers is not None     # (blocks not decoded were forwarded as received above)
            result = [Headers(frames[0].stream_id, unit.headers, bool(frames[0].flags & END_STREAM), promised)]
            acts = [{"hook": "h2proxy", "action": "reencoded"}]
        else:
            acts = actions
        for item in result:
            self._send_item(d, item, origin, acts, unit)
        if self.encoders[d] is None and unit.headers is not None and not _block_intact(frames, result) \
                and not (unit.neutral and _neutral_kept(frames, result)):
            # The receiver did not get the sender's block as it was (dropped, duplicated, replaced):
            # its HPACK table no longer follows the sender's, so later blocks are re-encoded. (Not when
            # the block changed no table and was only dropped or repeated as it was.)
            self._start_reencoding(d)
        self._after_block(unit)

    def _after_block(self, unit: _Unit) -> None:
        s = unit.stream
        if s is not None and s.state == st.CLOSED and unit.frames[0].type == HEADERS:
            self._close_stream(s)

    def _map_promised(self, wire: Wire, flags: int) -> Wire:
        """Rewrite the promised stream id of a raw PUSH_PROMISE frame when the push was renumbered."""
        off = 10 if flags & PADDED else 9
        promised = _u32.unpack_from(wire, off)[0]
        new = self.push_map.get(promised & 0x7FFFFFFF)
        if new is None:
            return wire
        buf = bytearray(wire)
        _u32.pack_into(buf, off, (promised & 0x80000000) | new)
        return bytes(buf)

    def _promised_id(self, f: RawFrame) -> int:
        off = 1 if f.flags & PADDED else 0
        promised: int = _u32.unpack_from(f.payload, off)[0]
        return promised & 0x7FFFFFFF

    def _decode(self, d: int, frames: List[RawFrame], block: Optional[Chunk] = None) -> Optional[HeaderList]:
        """The decoded header list of a block (``block``: its bytes when known), or None when it does not
        decode (reported; the direction's later blocks are not decoded) or is over a limit (connection closed)."""
        assert self.decoders is not None     # (called only when decoding)
        try:
            if block is None:
                block = b"".join(_fragment(f) for f in frames)
            return self.decoders[d].decode(block)      # never-indexed fields stay marked (NeverIndexed)
        except (HpackDecodingError, ValueError) as exc:   # (ValueError: padding that leaves no fragment)
            self._decode_failed(d, frames, exc)
            return None

    def _decode_failed(self, d: int, frames: List[RawFrame], exc: Exception) -> None:
        """A block over the header list limit (the connection closes), or one that does not decode."""
        if isinstance(exc, OversizedHeaderListError):
            self._limit(d, "max_header_list_size", str(exc))
            return
        if not isinstance(exc, (HpackDecodingError, ValueError)):
            raise exc
        self.decoding_broken[d] = True
        self._violation(d, "4.3", ErrorCode.COMPRESSION_ERROR, True,
                        f"header block on stream {frames[0].stream_id} does not decode: {exc}",
                        forwarded=not self.strict)

    def _start_reencoding(self, d: int) -> HpackEncoder:
        enc = self.encoders[d] = HpackEncoder()
        # Empty the receiver's dynamic table so that it matches the new encoder's.
        size = min(4096, self.settings[1 - d][Setting.HEADER_TABLE_SIZE])
        enc.header_table_size = 0
        enc.header_table_size = size
        self._update_fast_path()
        # Once per process and direction at info: the same line for every connection tells nothing new.
        log.log(logging.DEBUG if d in _REENCODING_LOGGED else logging.INFO,
                "c%d: %s header blocks are re-encoded by the proxy from now on%s", self.id, DIRECTION_NAME[d],
                "" if d in _REENCODING_LOGGED else " (said once; other connections follow at debug level)")
        _REENCODING_LOGGED.add(d)
        return enc

    def _encode_block(self, d: int, item: Headers) -> List[bytes]:
        """HPACK-encode with the proxy's own encoder for direction d and split to the receiver's frame size."""
        enc = self.encoders[d]
        if enc is None:
            enc = self._start_reencoding(d)
        headers = item.headers
        if self.decoders is not None and self.decoders[d].never_indexed_seen:
            # A hook may have rebuilt the pairs: what came in never-indexed goes out never-indexed.
            headers = mark_never_indexed(headers, self.decoders[d].never_indexed_seen)
        block = enc.encode(headers)
        return block_frames(item.stream_id, block, self.settings[1 - d][_MAX_FRAME], bool(item.end_stream),
                            item.promised_stream_id)

    # ---------------------------------------------------------- other frames

    def _control(self, d: int, f: RawFrame) -> None:
        t = f.type
        sid = f.stream_id
        if d == C2S and sid in self.proxy_ids and t in (WINDOW_UPDATE, RST_STREAM, PRIORITY):
            self._proxy_stream_frame(f)
            return
        if t == WINDOW_UPDATE:
            if self._window_update(d, f):
                return
        elif t == SETTINGS:
            if self._settings(d, f):
                return
        elif t == PING:
            if self._ping(d, f):
                return
        elif t == RST_STREAM:
            if self._rst_stream(d, f):
                return
        elif t == PRIORITY:
            if self._priority(d, f):
                return
        elif t == GOAWAY:
            if self._goaway_frame(d, f):
                return
        elif t == CONTINUATION:
            if self._violation(d, "6.10", ErrorCode.PROTOCOL_ERROR, True,
                               f"CONTINUATION on stream {sid} without a HEADERS or PUSH_PROMISE before it"):
                return
        # (On renumbered pushed streams, _map_ids gives the frame the other leg's stream id.)
        s = self.streams.get(sid) if sid else None
        if s is None:
            hooks = (self.hook_table if sid == 0 else self.untracked_table)[d].get(t if t <= ALTSVC else -1)
        else:
            hooks = s.hooks[d].get(t if t <= ALTSVC else -1) if s.hooks is not None else None
        if hooks is None:
            wire = f.wire
            if (d == S2C and self.push_map) or (d == C2S and self.push_unmap):
                wire = self._map_ids(d, wire)
            self._out(d, wire, self._record_in(d, f), None)
            return
        self._hooked(d, _Unit(d, [f], s), hooks)

    def _ping(self, d: int, f: RawFrame) -> bool:
        """The checks and the flood limit for a PING; True when the frame is dropped."""
        sid = f.stream_id
        if sid != 0 and self._violation(d, "6.7", ErrorCode.PROTOCOL_ERROR, True, f"PING on stream {sid}"):
            return True
        if f.length != 8 and self._violation(d, "6.7", ErrorCode.FRAME_SIZE_ERROR, True,
                                             f"PING with a body of {f.length} bytes, not 8"):
            return True
        if self.control_rate[d].hit(self.now):
            self._limit(d, "max_control_frames_per_second", "PING flood")
            return True
        return False

    def _priority(self, d: int, f: RawFrame) -> bool:
        """The checks and the churn limit for a PRIORITY; True when the frame is dropped (or consumed)."""
        sid = f.stream_id
        if self.control_rate[d].hit(self.now):
            # (Before the checks: a PRIORITY that is a stream error counts too.)
            self._limit(d, "max_control_frames_per_second", "PRIORITY churn")
            return True
        if sid == 0 and self._violation(d, "6.3", ErrorCode.PROTOCOL_ERROR, True, "PRIORITY on stream 0"):
            return True
        if f.length != 5 and self._violation(d, "6.3", ErrorCode.FRAME_SIZE_ERROR, False,
                                             f"PRIORITY on stream {sid} with a body of {f.length} bytes, not 5",
                                             sid):
            return True
        if f.length == 5 and (_u32.unpack_from(f.payload)[0] & 0x7FFFFFFF) == sid:
            if self._violation(d, "5.3.1", ErrorCode.PROTOCOL_ERROR, False,
                               f"PRIORITY: stream {sid} depends on itself", sid):
                return True
        if d == C2S and sid in self.streams and self.streams[sid].proxy_owned:
            self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
            return True
        return False

    def _goaway_frame(self, d: int, f: RawFrame) -> bool:
        """The checks for a GOAWAY, and what it says (``goaway_from``); True when the frame is dropped."""
        sid = f.stream_id
        if sid != 0 and self._violation(d, "6.8", ErrorCode.PROTOCOL_ERROR, True, f"GOAWAY on stream {sid}"):
            return True
        if f.length < 8:
            if self._violation(d, "6.8", ErrorCode.FRAME_SIZE_ERROR, True,
                               f"GOAWAY with a body of {f.length} bytes, shorter than 8"):
                return True
        else:
            last, code = _goaway_head.unpack_from(f.payload)
            self.goaway_from[d] = (last & 0x7FFFFFFF, code)
        return False

    def _proxy_stream_frame(self, f: RawFrame) -> None:
        """The client's WINDOW_UPDATE, RST_STREAM or PRIORITY on a stream the proxy pushed: handled here."""
        s = self.streams.get(f.stream_id)
        if s is not None:
            if f.type == WINDOW_UPDATE and f.length == 4:
                s.window[S2C] += _u32.unpack_from(f.payload)[0] & 0x7FFFFFFF
                if self.held_streams[S2C]:
                    self._flush_held(S2C)
            elif f.type == RST_STREAM:
                s.state = st.CLOSED
                s.reset_by = C2S
                s.push_body = None
                if s.held is not None:
                    s.held[S2C].clear()
                self.held_streams[S2C].pop(s.id, None)
                self._close_stream(s)
        self._record_in(C2S, f, [{"hook": "h2proxy", "action": "consumed"}])

    def _settings(self, d: int, f: RawFrame) -> bool:
        sid = f.stream_id
        if sid != 0 and self._violation(d, "6.5", ErrorCode.PROTOCOL_ERROR, True, f"SETTINGS on stream {sid}"):
            return True
        if f.flags & ACK:
            return self._settings_ack(d, f)
        if f.length % 6:
            return self._violation(d, "6.5", ErrorCode.FRAME_SIZE_ERROR, True,
                                   f"SETTINGS body of {f.length} bytes is not a multiple of 6")
        if f.length // 6 > self.limits.max_settings_entries:
            self._limit(d, "max_settings_entries", f"SETTINGS with {f.length // 6} entries")
            return True
        if self.control_rate[d].hit(self.now):
            self._limit(d, "max_control_frames_per_second", "SETTINGS flood")
            return True
        mine = self.settings[d]
        receiving = 1 - d        # the direction in which this side receives
        table_size = None
        for ident, value in _settings_entry.iter_unpack(f.payload):
            if ident == Setting.ENABLE_PUSH and (value > 1 or (value and d == SERVER)):
                if self._violation(d, "6.5.2", ErrorCode.PROTOCOL_ERROR, True,
                                   f"SETTINGS_ENABLE_PUSH = {value}, must be 0 or 1"
                                   f"{' (and 0 from a server)' if value == 1 else ''}"):
                    return True
            elif ident == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    if self._violation(d, "6.5.2", ErrorCode.FLOW_CONTROL_ERROR, True,
                                       f"SETTINGS_INITIAL_WINDOW_SIZE = {value}, above 2^31-1"):
                        return True
                    continue
                delta = value - mine[Setting.INITIAL_WINDOW_SIZE]
                if delta:
                    for s in self.streams.values():
                        s.window[receiving] += delta
            elif ident == Setting.MAX_FRAME_SIZE and not 16384 <= value <= 16777215:
                if self._violation(d, "6.5.2", ErrorCode.PROTOCOL_ERROR, True,
                                   f"SETTINGS_MAX_FRAME_SIZE = {value}, outside 16384..16777215"):
                    return True
                continue
            elif ident == Setting.HEADER_TABLE_SIZE:
                table_size = value
                if self.decoders is not None:
                    # A larger table is allowed at once; a smaller one binds the other side's encoder only
                    # once it acknowledged these SETTINGS (see the ACK above): blocks it sent before
                    # may still use the old size.
                    dec = self.decoders[receiving]
                    dec.max_allowed_table_size = max(dec.max_allowed_table_size, value)
                enc = self.encoders[receiving]
                if enc is not None:
                    # RFC 7541 §4.2: the next block re-encoded for this side starts with a size update.
                    enc.header_table_size = min(4096, value)
            mine[ident] = value
        if self.strict:
            self.readers[receiving].max_frame_size = min(self.limits.max_frame_size,
                                                         mine[Setting.MAX_FRAME_SIZE])
        self.settings_seen[d] = True
        self.unacked_settings[d] += 1
        if len(self.table_sizes_due[d]) < 64:
            self.table_sizes_due[d].append(table_size)
        if len(self.settings_sent_at[d]) < 64:
            self.settings_sent_at[d].append(self.now)
        if self.held_streams[receiving]:
            self._flush_held(receiving)
        return False

    def _settings_ack(self, d: int, f: RawFrame) -> bool:
        """Side d acknowledged the other side's SETTINGS; True when the frame is dropped."""
        if f.length and self._violation(d, "6.5", ErrorCode.FRAME_SIZE_ERROR, True,
                                        f"SETTINGS ACK with a body of {f.length} bytes"):
            return True
        other = 1 - d
        if self.unacked_settings[other]:
            self.unacked_settings[other] -= 1
        pending = self.table_sizes_due[other]
        if pending:
            size = pending.pop(0)
            if size is not None and self.decoders is not None:
                # From now on side d's encoder is held to the size (RFC 7541 4.2: the update
                # follows the SETTINGS acknowledgement); a larger one still unacknowledged stays allowed.
                later = [v for v in pending if v is not None]
                self.decoders[d].max_allowed_table_size = max([size] + later)
        if self.settings_sent_at[other]:
            self.settings_sent_at[other].pop(0)
        if self.control_rate[d].hit(self.now):
            self._limit(d, "max_control_frames_per_second", "SETTINGS flood")
            return True
        return False

    def _window_update(self, d: int, f: RawFrame) -> bool:
        sid = f.stream_id
        if f.length != 4:
            return self._violation(d, "6.9", ErrorCode.FRAME_SIZE_ERROR, True,
                                   f"WINDOW_UPDATE on stream {sid} with a body of {f.length} bytes, not 4")
        inc = _u32.unpack_from(f.payload)[0] & 0x7FFFFFFF
        if inc < 1024 and self.control_rate[d].hit(self.now):
            # (Only small increments count, 0 too: big ones are what a receiver reading DATA sends.)
            self._limit(d, "max_control_frames_per_second", "WINDOW_UPDATE churn")
            return True
        if inc == 0:
            return self._violation(d, "6.9", ErrorCode.PROTOCOL_ERROR, sid == 0,
                                   f"WINDOW_UPDATE on stream {sid} with an increment of 0", sid)
        other = 1 - d            # the direction whose receiver this side is
        self.stalled_since[other] = None       # (progress: zero_window_timeout starts again)
        if sid == 0:
            self.window[other] += inc
            if self.window[other] > MAX_WINDOW:
                if self._violation(d, "6.9.1", ErrorCode.FLOW_CONTROL_ERROR, True,
                                   f"connection window raised to {self.window[other]}, above 2^31-1"):
                    return True
            owed = self.owed[other]
            if owed:
                take = min(owed, inc)
                self.owed[other] -= take
                if self.held_streams[other]:
                    self._flush_held(other)
                if take == inc:
                    self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
                    return True
                self._out(d, fc.WindowUpdateFrame(0, window_increment=inc - take).serialize(),
                          self._record_in(d, f, [{"hook": "h2proxy", "action": "changed"}]),
                          [{"hook": "h2proxy", "action": "window-repair"}])
                return True
        else:
            s = self.streams.get(sid)
            if s is None:
                gone = messages.unknown_stream(self, sid)
                if gone == "idle":
                    return self._violation(d, "5.1", ErrorCode.PROTOCOL_ERROR, True,
                                           f"WINDOW_UPDATE on idle stream {sid}")
                if gone == "refused" or self._discard_after_reset(d, f, sid):
                    return True
            if s is not None:
                s.window[other] += inc
                if s.window[other] > MAX_WINDOW:
                    if self._violation(d, "6.9.1", ErrorCode.FLOW_CONTROL_ERROR, False,
                                       f"stream {sid} window raised to {s.window[other]}, above 2^31-1", sid):
                        return True
                owed_s = s.owed
                if s.proxy_owned or (owed_s is not None and owed_s[other]):
                    take = inc if s.proxy_owned or owed_s is None else min(owed_s[other], inc)
                    if not s.proxy_owned and owed_s is not None:
                        owed_s[other] -= take
                    if self.held_streams[other]:
                        self._flush_held(other)
                    if take == inc:
                        self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
                        return True
                    self._out(d, fc.WindowUpdateFrame(s.server_id if d == C2S else sid,
                                                      window_increment=inc - take).serialize(),
                              self._record_in(d, f, [{"hook": "h2proxy", "action": "changed"}]),
                              [{"hook": "h2proxy", "action": "window-repair"}])
                    return True
        if self.held_streams[other]:
            self._flush_held(other)
        return False

    def _rst_stream(self, d: int, f: RawFrame) -> bool:
        sid = f.stream_id
        if sid == 0:
            return self._violation(d, "6.4", ErrorCode.PROTOCOL_ERROR, True, "RST_STREAM on stream 0")
        if f.length != 4:
            return self._violation(d, "6.4", ErrorCode.FRAME_SIZE_ERROR, True,
                                   f"RST_STREAM on stream {sid} with a body of {f.length} bytes, not 4")
        if d == S2C and self.push_map:
            sid = self.push_map.get(sid, sid)
        self.counters["resets"][d] += 1
        if d == C2S and self.reset_rate.hit(self.now):
            self._limit(d, "max_resets_per_second", "stream resets (rapid reset, CVE-2023-44487)")
            return True
        s = self.streams.get(sid)
        if s is None:
            gone = messages.unknown_stream(self, sid)
            if gone == "idle":
                return self._violation(d, "5.1", ErrorCode.PROTOCOL_ERROR, True, f"RST_STREAM on idle stream {sid}")
            return gone == "refused" or bool(self._discard_after_reset(d, f, sid))
        s.state = st.CLOSED
        s.reset_by = d
        if s.proxy_owned and d == C2S:
            s.push_body = None
            if s.held is not None:
                s.held[S2C].clear()
            self.held_streams[S2C].pop(sid, None)
            self._close_stream(s)
            self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
            return True
        # DATA held for a reset stream will never be wanted.
        for dd in (0, 1):
            if s.held is not None and s.held[dd]:
                s.held[dd].clear()
                self.held_streams[dd].pop(sid, None)
        self._close_stream(s)
        return False

    def _closed_stream_frame(self, d: int, f: RawFrame, sid: int) -> bool:
        """A DATA or HEADERS frame for a stream the proxy does not track."""
        owner = CLIENT if sid & 1 else SERVER
        last = self.last_stream[owner] if owner == CLIENT else max(self.last_stream[SERVER],
                                                                   self.last_client_push_id)
        if sid > last:
            return self._violation(d, "5.1", ErrorCode.PROTOCOL_ERROR, True,
                                   f"{frame_name(f.type)} on idle stream {sid}")
        closer = self.recently_closed.get(sid, "unknown")
        if closer == "refused":
            return True      # strict mode refused the stream: the other side never heard of it
        if isinstance(closer, ProxyReset):
            return bool(self._discard_after_reset(d, f, sid))
        if closer == d or closer == -1:   # -1: both sides had ended it with END_STREAM
            # The sender itself closed the stream with END_STREAM or RST_STREAM and sends again.
            return self._violation(d, "5.1", ErrorCode.STREAM_CLOSED, False,
                                   f"{frame_name(f.type)} on stream {sid}, which the {SIDE_NAME[d]} had closed",
                                   sid)
        return False

    def _close_stream(self, s: Stream) -> None:
        if self.streams.pop(s.id, None) is None:
            return
        if s.id & 1:
            self.client_streams_open -= 1
        closer = s.reset_by
        if closer is None:
            closer = -1
        closed = self.recently_closed
        new = closed.new
        new[s.id] = closer
        if len(new) >= _REMEMBER_CLOSED:
            closed.old, closed.new = new, {}
        if self.stream_hooks is not None:
            self.stream_hooks.stream_closed(self, s)

    # ---------------------------------------------------------------- hooks

    def _hooked(self, d: int, unit: _Unit, hooks: List[HookEntry]) -> None:
        for entry in hooks:
            screen = entry[4] if len(entry) > 4 else None
            if screen is None or screen(self, d, unit, hooks):
                break
        else:
            # Every entry screened the raw frame and none will act on it: no object, no chain.
            first = unit.frames[0]
            if (first.type == HEADERS and self.sink is None and self.greeting[d] is None
                    and not (d == S2C and self.push_map) and not (d == C2S and self.push_unmap)):
                out = self.out[d]
                if self.encoders[d] is None:
                    for f in unit.frames:
                        out.append(f.wire)
                elif unit.headers is not None:
                    # A re-encoded direction's block, as in _decoded_block.
                    for w in self._encode_block(d, Headers(first.stream_id, unit.headers,
                                                           bool(first.flags & END_STREAM))):
                        out.append(w)
                else:
                    self._finish_unit(d, unit, (UNCHANGED, []))
                    return
                self._after_block(unit)
                return
            self._finish_unit(d, unit, (UNCHANGED, []))
            return
        gen = self._hook_chain(d, unit, hooks)
        self._drive(d, gen, lambda result: self._finish_unit(d, unit, result), None, None)

    def _drive(self, d: int, gen: HookGen, finish: Finish, value: Any, error: Optional[BaseException]) -> None:
        try:
            if error is not None:
                awaitable = gen.throw(error)
            else:
                awaitable = gen.send(value)
        except StopIteration as stop:
            finish(stop.value)
            return
        self.paused[d] = (gen, finish)
        self.commands.append(AwaitHook(d, awaitable))

    def _hook_chain(self, d: int, unit: _Unit, hooks: List[HookEntry]) -> HookGen:
        """Run the hooks on one unit; a generator so that an async hook can suspend it."""
        first = unit.frames[0]
        try:
            frame = self._frame_object(unit)
        except FrameCodecError as exc:
            if first.type == ALTSVC:
                # A malformed ALTSVC still goes to the hooks that decide what becomes of ALTSVC
                # frames (RFC 7838 4: an intermediary does not forward them), as the raw frame.
                frame = MalformedFrame(ALTSVC, first.stream_id, flag_byte=first.flags, body=bytes(first.payload))
                frame.problem = str(exc)
                return (yield from self._run_hooks(d, unit, hooks, frame))
            self._log_error(f"{frame_name(first.type)} on stream {first.stream_id} cannot be handed to hooks: "
                            f"{exc}; forwarded unchanged")
            return UNCHANGED, []
        return (yield from self._run_hooks(d, unit, hooks, frame))

    def _run_hooks(self, d: int, unit: _Unit, hooks: List[HookEntry], frame: fc.Frame) -> HookGen:
        first = unit.frames[0]
        original = frame.serialize() if unit.frames[0].type in (HEADERS, PUSH_PROMISE) else None
        items: List[HookItem] = [frame]
        actions: Actions = []
        changed = False
        for entry in hooks:
            name, method, wants_headers = entry[0], entry[1], entry[2]
            new_items: List[HookItem] = []
            for item in items:
                hdrs: Optional[Sequence[Tuple[Any, Any]]] = unit.headers
                if isinstance(item, Headers) and wants_headers and item.stream_id == first.stream_id:
                    # An earlier hook's header list: later header hooks see it (hooks run in order).
                    call_item, hdrs = frame, item.headers
                elif not isinstance(item, fc.Frame):
                    new_items.append(item)
                    continue
                else:
                    call_item = item
                ctx = HookCtx(self, d, name, unit.stream, call_item)
                try:
                    if wants_headers:
                        result = method(ctx, call_item, list(hdrs) if hdrs is not None else None)
                    else:
                        result = method(ctx, item)
                    if result is not None and type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                        actions.append({"hook": name, "action": "delayed"})
                        result = yield result
                except Exception as exc:
                    self._hook_error(name, exc, first)
                    new_items.append(item)
                    continue
                if result is not None and not _valid_result(result):
                    # Like an exception: the frame goes on as given, and the log says what came back.
                    self._hook_error(name, TypeError(
                        f"{getattr(method, '__name__', 'hook method')} returned {_type_name(result)} on "
                        f"{frame_name(first.type)} stream {first.stream_id}, not None, a frame, a header "
                        f"list, Headers, RawBytes or a list of them"), first, method)
                    new_items.append(item)
                    continue
                if result is None:
                    new_items.append(item)
                    actions.append({"hook": name, "action": "passed"})
                    continue
                changed = True
                if isinstance(result, (list, tuple)):
                    if result and isinstance(result[0], tuple):
                        if isinstance(item, Headers):
                            block = Headers(item.stream_id, result, item.end_stream, item.promised_stream_id)
                        else:
                            block = Headers(item.stream_id, result, "END_STREAM" in item.flags,
                                            getattr(item, "promised_stream_id", None)
                                            if isinstance(item, fc.PushPromiseFrame) else None)
                        new_items.append(block)
                        actions.append({"hook": name, "action": "changed"})
                    else:
                        new_items.extend(result)
                        actions.append({"hook": name, "action": "dropped" if not result else
                                        ("changed" if len(result) == 1 else "split")})
                else:
                    new_items.append(result)
                    actions.append({"hook": name, "action": "changed" if result is not item else "passed"})
            items = new_items
        if not changed and len(items) == 1 and items[0] is frame:
            if original is None or frame.serialize() == original:
                return UNCHANGED, actions
        if len(items) == 1 and items[0] is frame and original is not None and frame.serialize() == original:
            return UNCHANGED, actions
        return items, actions

    def _frame_object(self, unit: _Unit) -> fc.Frame:
        frames = unit.frames
        frame = frames[0].parse()
        # (Only a header block has more than one frame: its first is HEADERS or PUSH_PROMISE.)
        if len(frames) > 1 and isinstance(frame, (fc.HeadersFrame, fc.PushPromiseFrame)):
            frame.data = b"".join([frame.data] + [bytes(f.payload) for f in frames[1:]])
            frame.flags.add("END_HEADERS")
        return frame

    def _finish_unit(self, d: int, unit: _Unit, outcome: HookOutcome) -> None:
        if self.closed:
            return
        result, actions = outcome
        first = unit.frames[0]
        t = first.type
        if t in (HEADERS, PUSH_PROMISE):
            self._forward_block(d, unit, result, actions)
            return
        s = unit.stream
        if result is UNCHANGED:
            if t == DATA:
                self._send_data(d, s, first.wire, first.length, first.stream_id,
                                self._record_in(d, first, actions), None)
                if s is not None and s.state == st.CLOSED:
                    self._close_stream(s)
            else:
                self._out(d, self._map_ids(d, first.wire), self._record_in(d, first, actions), None)
            return
        origin = self._record_in(d, first, actions)
        sent_fcl = 0
        ahead = 0
        if t == DATA and s is not None:
            # More DATA out than came in (a hook joined held-back frames, duplicated, grew them): owe the
            # excess before sending, so that what does not fit the receiver's windows is held, not sent.
            ahead = sum(len(i.data) + (i.pad_length + 1 if "PADDED" in i.flags else 0)
                        for i in result if isinstance(i, fc.DataFrame)) - first.length
            if ahead > 0:
                self.owed[d] += ahead
                _owe(s, d, ahead)
        for item in result:
            sent_fcl += self._send_item(d, item, origin, [a for a in actions if a["action"] != "passed"], unit)
        if t == DATA and s is not None:
            if ahead > 0:
                # Settled below from what was really sent (splitting a padded frame drops its padding).
                self.owed[d] -= ahead
                assert s.owed is not None     # (made by _owe above)
                s.owed[d] -= ahead
            diff = first.length - sent_fcl
            if diff > 0 and not any(isinstance(item, RawBytes) for item in result):
                # (RawBytes in the result: repairs are off for this frame, no credit.)
                self._credit_sender(d, s, diff, bool(first.flags & END_STREAM))
            elif diff < 0:
                self.owed[d] += -diff
                _owe(s, d, -diff)
            if s.state == st.CLOSED:
                self._close_stream(s)

    def _credit_sender(self, d: int, s: Stream, amount: int, ended: bool) -> None:
        """DATA the sender spent window on never reached the receiver: give the window back."""
        back = 1 - d
        self._out(back, fc.WindowUpdateFrame(0, window_increment=amount).serialize(), None,
                  [{"hook": "h2proxy", "action": "window-credit"}])
        if not ended and s.id in self.streams:
            sid = s.server_id if d == S2C else s.id
            self._out(back, fc.WindowUpdateFrame(sid, window_increment=amount).serialize(), None,
                      [{"hook": "h2proxy", "action": "window-credit"}])

    def _send_item(self, d: int, item: HookItem, origin: Optional[int], actions: Optional[Actions],
                   unit: Optional[_Unit]) -> int:
        """Send one thing a hook produced towards the receiver of d; returns DATA bytes sent."""
        if isinstance(item, RawBytes):
            self._out_raw(d, item.data, item.note)
            return 0
        if isinstance(item, Headers):
            for wire in self._encode_block(d, item):
                self._out(d, self._map_ids(d, wire), origin, actions)
            return 0
        if isinstance(item, (bytes, bytearray, memoryview)):
            self._out_raw(d, bytes(item), "bytes from a hook")
            return 0
        if not isinstance(item, fc.Frame):
            self._log_error(f"a hook returned {type(item).__name__}, not a frame; ignored")
            return 0
        max_size = self.settings[1 - d][Setting.MAX_FRAME_SIZE]
        if isinstance(item, fc.DataFrame):
            data = item.data
            s = self.streams.get(item.stream_id)
            total = 0
            end = "END_STREAM" in item.flags
            if len(data) + (item.pad_length + 1 if "PADDED" in item.flags else 0) <= max_size:
                wire = item.serialize()
                fcl = len(wire) - 9
                self._send_data(d, s, wire, fcl, item.stream_id, origin, actions)
                return fcl
            view = memoryview(data)
            for pos in range(0, len(view), max_size):
                chunk = view[pos:pos + max_size]
                part = fc.DataFrame(item.stream_id, data=bytes(chunk))
                if end and pos + max_size >= len(view):
                    part.flags.add("END_STREAM")
                wire = part.serialize()
                self._send_data(d, s, wire, len(chunk), item.stream_id, origin,
                                (actions or []) + [{"hook": "h2proxy", "action": "split"}])
                total += len(chunk)
            return total
        if isinstance(item, (fc.HeadersFrame, fc.PushPromiseFrame)) and len(item.data) > max_size - 10:
            wires = _split_block(item, max_size)
            for wire in wires:
                self._out(d, self._map_ids(d, wire), origin, actions)
            return 0
        self._out(d, self._map_ids(d, item.serialize()), origin, actions)
        return 0

    def _hook_error(self, name: str, exc: BaseException, f: RawFrame,
                    method: Optional[Callable[..., Any]] = None) -> None:
        self.counters["hook_errors"] += 1
        key = (name, type(exc).__name__, method is not None)
        seen = self.hooks.errors_logged if self.hooks is not None else set()
        if key not in seen:
            seen.add(key)
            if method is not None:      # (a wrong return value: no traceback to show)
                log.error("c%d: hook %s: %s; the frame goes on unchanged", self.id, name, exc)
            else:
                log.error("c%d: hook %s raised on %s stream %d; the frame goes on unchanged", self.id, name,
                          frame_name(f.type), f.stream_id, exc_info=exc)
        else:
            log.debug("c%d: hook %s raised %r again", self.id, name, exc)
        if self.sink is not None:
            self.sink.error(self.id, self.now, f"hook {name}: {exc}" if method is not None
                            else f"hook {name} raised {type(exc).__name__}: {exc}")

    # -------------------------------------------------------- proxy actions

    def inject(self, d: int, item: HookItem, origin: Optional[int] = None, note: str = "injected") -> None:
        """Send a frame, a Headers block or RawBytes towards the receiver of d, with repairs."""
        if self.closed:
            return
        acts = [{"hook": note, "action": "injected"}]
        if isinstance(item, fc.DataFrame):
            s = self.streams.get(item.stream_id)
            n = self._send_item(d, item, origin, acts, None)
            self.owed[d] += n
            if s is not None:
                _owe(s, d, n)
            return
        self._send_item(d, item, origin, acts, None)

    def reset_stream(self, sid: int, code: int, towards: str, note: str = "h2proxy") -> None:
        """Reset stream ``sid`` (client-leg id) towards one side or both, on a hook's behalf.

        Frames still in flight on it towards a side that was reset are then discarded quietly,
        with their flow-control credit returned (see :meth:`_discard_after_reset`); towards the
        other side the stream goes on.
        """
        s = self.streams.get(sid)
        told = set()
        for side in _sides(towards):
            d = 1 - side    # towards the client = direction S2C
            wire_sid = s.server_id if (s is not None and side == SERVER) else sid
            if side == SERVER and s is not None and s.proxy_owned:
                continue
            self._out(d, fc.RstStreamFrame(wire_sid, error_code=code).serialize(), None,
                      [{"hook": note, "action": "injected"}])
            told.add(side)
        if s is not None:
            s.state = st.CLOSED
            s.reset_by = ProxyReset(told)
            self._drop_held(s)
            self._close_stream(s)
        elif told:
            previous = self.recently_closed.get(sid)
            if isinstance(previous, ProxyReset):
                told |= previous.sides
            self.recently_closed[sid] = ProxyReset(told)

    def _drop_held(self, s: Stream) -> None:
        """A reset stream's DATA held for flow control, and a proxy push's body, will never be sent."""
        for dd in (0, 1):
            if s.held is not None:
                s.held[dd].clear()
            self.held_streams[dd].pop(s.id, None)
        s.push_body = None

    def _discard_after_reset(self, d: int, f: RawFrame, sid: int) -> Optional[bool]:
        """A frame from side d on stream ``sid``, which the relay no longer tracks.

        None when the proxy did not reset that stream itself. Otherwise True when the frame is
        discarded: its receiver was told RST_STREAM by the proxy, so the frame was in flight and
        expected (no violation; a DATA frame's flow-control credit goes back to the sender, on the
        stream too while the sender, not reset, may still be finishing); False when it goes on to a
        receiver that was not reset. A header block is only discarded when it was decoded (the
        receiver's HPACK table then follows the proxy's re-encoding); otherwise it is forwarded so
        that the receiver's table stays in step.
        """
        mark = self.recently_closed.get(sid)
        if not isinstance(mark, ProxyReset):
            return None
        if (1 - d) not in mark.sides:
            return False
        t = f.type
        if t in (HEADERS, PUSH_PROMISE) and (not self.decoding[d] or self.decoding_broken[d]):
            return False
        if t == DATA and f.length:
            back = 1 - d
            self._out(back, fc.WindowUpdateFrame(0, window_increment=f.length).serialize(), None,
                      [{"hook": "h2proxy", "action": "window-credit"}])
            if d not in mark.sides and not f.flags & END_STREAM:
                self._out(back, fc.WindowUpdateFrame(f.stream_id, window_increment=f.length).serialize(), None,
                          [{"hook": "h2proxy", "action": "window-credit"}])
        if t not in (HEADERS, PUSH_PROMISE, CONTINUATION):
            self._record_in(d, f, [{"hook": "h2proxy", "action": "discarded"}])
        log.debug("c%d: %s on stream %d, which the proxy reset towards the %s, discarded", self.id,
                  frame_name(t), sid, SIDE_NAME[1 - d])
        return True

    def goaway(self, code: int, last_stream_id: Optional[int], debug: bytes, towards: str,
               note: str = "h2proxy") -> None:
        for side in _sides(towards):
            d = 1 - side
            last = last_stream_id
            if last is None:
                last = self.last_stream[CLIENT] if side == CLIENT else self.last_stream[SERVER]
            self._send_goaway(d, last, code, debug, note)

    def push(self, parent: Optional[Stream], path: str, headers: Iterable[Tuple[Any, Any]], body: bytes,
             status: int) -> Union[PushRefused, PushStarted]:
        """Push a resource to the client on ``parent``'s stream, as the server would."""
        if parent is None or parent.id % 2 == 0:
            return PushRefused("pushes need a client-initiated stream to be promised on")
        if parent.state not in (st.OPEN, st.HALF_CLOSED_LOCAL):
            return PushRefused(f"stream {parent.id} is {parent.state}; a push must be promised on an open stream")
        if self.settings[CLIENT][Setting.ENABLE_PUSH] == 0:
            return PushRefused("the client disabled push (SETTINGS_ENABLE_PUSH = 0)")
        active_pushes = sum(1 for s in self.streams.values() if s.id % 2 == 0 and s.state != st.CLOSED)
        limit = self.settings[CLIENT][Setting.MAX_CONCURRENT_STREAMS]
        if active_pushes >= limit:
            return PushRefused(f"the client allows {limit} concurrent pushed streams "
                               f"(SETTINGS_MAX_CONCURRENT_STREAMS) and {active_pushes} are open")
        if self.goaway_from[CLIENT] is not None:
            return PushRefused("the client sent GOAWAY")
        promised = max(self.last_client_push_id, self.last_stream[SERVER]) + 2
        self.last_client_push_id = promised
        self.renumber_pushes = True
        req = parent.request_headers or []
        authority = _header(req, ":authority") or "localhost"
        scheme = _header(req, ":scheme") or "https"
        request = [(":method", "GET"), (":scheme", scheme), (":authority", authority), (":path", path)]
        s = Stream(promised, st.RESERVED_LOCAL, self.settings[CLIENT][Setting.INITIAL_WINDOW_SIZE],
                   self.settings[SERVER][Setting.INITIAL_WINDOW_SIZE])
        s.proxy_owned = True
        self.proxy_ids.add(promised)
        s.request_headers = request
        self.streams[promised] = s
        self.counters["pushes"] += 1
        note = "push"
        self._send_item(S2C, Headers(parent.id, request, promised_stream_id=promised), None,
                        [{"hook": note, "action": "injected"}], None)
        response = [(":status", str(status))] + [(str(k).lower(), str(v)) for k, v in headers]
        if not any(k == "content-length" for k, _ in response[1:]):
            response.append(("content-length", str(len(body))))
        self._send_item(S2C, Headers(promised, response, end_stream=not body), None,
                        [{"hook": note, "action": "injected"}], None)
        s.state = st.HALF_CLOSED_LOCAL if body else st.CLOSED
        if body:
            s.push_body = memoryview(bytes(body))
            self._continue_push(s)
        else:
            self._close_stream(s)
        return PushStarted(promised)

    def _continue_push(self, s: Stream) -> None:
        """Send as much of a proxy-pushed body as the client's windows allow."""
        body = s.push_body
        max_size = self.settings[CLIENT][Setting.MAX_FRAME_SIZE]
        while body is not None and len(body):
            room = min(self.window[S2C], s.window[S2C], max_size)
            if room <= 0:
                s.push_body = body        # the rest, sent when the client's window opens
                self.held_streams[S2C][s.id] = s
                return
            chunk = body[:room]
            body = body[room:]
            frame = fc.DataFrame(s.id, data=bytes(chunk))
            if not len(body):
                frame.flags.add("END_STREAM")
            self.window[S2C] -= len(chunk)
            s.window[S2C] -= len(chunk)
            self.owed[S2C] += len(chunk)
            self._out(S2C, frame.serialize(), None, [{"hook": "push", "action": "injected"}])
        s.push_body = None
        self.held_streams[S2C].pop(s.id, None)
        s.state = st.CLOSED
        self._close_stream(s)

    # ------------------------------------------------------------- output

    def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None:
        greeting = self.greeting[d]
        if greeting is not None:
            if wire[3] != SETTINGS or wire[4] & ACK:
                # The receiver has not had its peer's SETTINGS yet: nothing may come before it.
                greeting.append((wire, origin, actions))
                return
            self.greeting[d] = None
            self._out(d, wire, origin, actions)
            for held in greeting:
                self._out(d, *held)
            return
        self.out[d].append(wire)
        if self.sink is not None:
            if self.rec is not None and (self.rec[0] or self.rec[1]):
                self._rec_flush()
            self.sink.frame(self.id, SEND_LEG[d], "send", self.now, wire, None, origin, actions)

    def _out_raw(self, d: int, data: bytes, note: str) -> None:
        self.out[d].append(data)
        log.info("c%d: raw bytes towards the %s (%d bytes, repairs off): %s", self.id, SIDE_NAME[1 - d],
                 len(data), note)
        if self.sink is not None:
            if self.rec is not None:
                self._rec_flush()
            self.sink.raw(self.id, SEND_LEG[d], "send", self.now, data, note)

    def _record_in(self, d: int, f: RawFrame, actions: Optional[Actions] = None,
                   headers: Optional[HeaderList] = None) -> Optional[int]:
        if self.sink is None:
            return None
        if self.rec is not None and (self.rec[0] or self.rec[1]):
            self._rec_flush()
        return self.sink.frame(self.id, RECV_LEG[d], "recv", self.now, f.wire, headers, None, actions)

    def _record_block_in(self, d: int, unit: _Unit, actions: Optional[Actions]) -> List[Optional[int]]:
        if self.sink is None:
            return [None] * len(unit.frames)
        if self.rec is not None and (self.rec[0] or self.rec[1]):
            self._rec_flush()
        last = len(unit.frames) - 1
        return [self.sink.frame(self.id, RECV_LEG[d], "recv", self.now, f.wire,
                                unit.headers if i == last else None, None, actions if i == 0 else None)
                for i, f in enumerate(unit.frames)]

    def _map_ids(self, d: int, wire: Wire) -> Wire:
        """Rewrite stream ids of frames on renumbered pushed streams."""
        if d == S2C:
            table = self.push_map
        else:
            table = self.push_unmap
        if not table:
            return wire
        sid = _u32.unpack_from(wire, 5)[0] & 0x7FFFFFFF
        new = table.get(sid)
        if new is None:
            return wire
        buf = bytearray(wire)
        _u32.pack_into(buf, 5, (_u32.unpack_from(wire, 5)[0] & 0x80000000) | new)
        return bytes(buf)

    def _forward_preface(self) -> None:
        self.preface_forwarded = True
        self.preface_at = self.now
        if self.sink is not None:
            self.sink.preface(self.id, "client", "recv", self.now, PREFACE)
        self.out[C2S].append(PREFACE)
        if self.sink is not None:
            self.sink.preface(self.id, "upstream", "send", self.now, PREFACE)
        if self.inbox[S2C] and self.paused[S2C] is None:
            held, self.inbox[S2C] = self.inbox[S2C], []
            self._run(S2C, held)

    def _release_held(self, d: int, speak_first: bool) -> None:
        """Stop holding the proxy's own frames towards the receiver of d and send them.

        Called when the sender's first frames went by without a SETTINGS to send them behind
        (``speak_first`` False: a hook dropped it, or a peer in transparent mode began with
        another frame), or when the connection ends before that SETTINGS came (``speak_first``:
        the proxy then sends its own SETTINGS, with no parameters, so that its GOAWAY or
        RST_STREAM is read; RFC 9113 3.4). Nothing goes to a server that has not had the
        connection preface.
        """
        greeting = self.greeting[d]
        if greeting is None:
            return
        self.greeting[d] = None
        if not greeting or (d == C2S and not self.preface_forwarded):
            return
        if speak_first:
            self._out(d, _EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        for held in greeting:
            self._out(d, *held)

    def _send_goaway(self, d: int, last: int, code: int, debug: Union[str, bytes], note: str = "h2proxy") -> None:
        if isinstance(debug, str):
            debug = debug.encode("utf-8", "replace")
        frame = fc.GoAwayFrame(0, last_stream_id=last, error_code=int(code), additional_data=debug[:1024])
        self._out(d, frame.serialize(), None, [{"hook": note, "action": "injected"}])

    # ------------------------------------------------------------- errors

    def _violation(self, d: int, section: str, code: int, connection: bool, message: str,
                   sid: Optional[int] = None, forwarded: Optional[bool] = None) -> bool:
        """Record a rule broken by side d. Returns True when the offending frame must be dropped."""
        self.counters["violations"] += 1
        kind = "connection error" if connection else f"stream error on stream {sid}"
        fate = "not forwarded" if self.strict else "forwarded"
        if forwarded is not None:
            fate = "forwarded" if forwarded else "not forwarded"
        n = self.counters["violations"]
        if n <= 20 or n % 1000 == 0:
            # Bounded logging: a peer repeating a violation must not flood the log.
            text = (f"c{self.id}: violation by the {SIDE_NAME[d]}: {message} (RFC 9113 section {section}); "
                    f"a conformant endpoint answers {error_name(code)} ({kind}); {fate}")
            if n == 20:
                text += "; further violations on this connection are logged every 1000th"
            log.warning("%s", text, extra=self._blame(d))
        record = {"side": SIDE_NAME[d], "section": section, "code": error_name(code), "message": message,
                  "connection": connection, "stream": sid}
        if len(self.violations) < 100:
            self.violations.append(record)
        if self.sink is not None:
            if self.rec is not None:
                self._rec_flush()
            self.sink.violation(self.id, self.now, SIDE_NAME[d], section, error_name(code), message)
        if not self.strict or forwarded:
            return False
        if connection or not sid:     # (a "stream error" on stream 0 can only be a connection error)
            self._connection_error(d, section, code, message, forced=False, logged=True)
        else:
            self._stream_error(d, sid, code, message)
        return True

    def _blame(self, d: int) -> Dict[str, Any]:
        """Fields for a log record about side d's error: which connection and peer (for log filters
        and the tests' check that no peer that behaved is blamed)."""
        return {"h2proxy_conn": self.id, "h2proxy_side": SIDE_NAME[d],
                "h2proxy_client": self.info.get("client_addr"), "h2proxy_upstream": self.info.get("upstream_addr")}

    def _stream_error(self, d: int, sid: int, code: int, message: str) -> None:
        """Strict mode: reset the stream towards the offender, cancel it towards the other side."""
        s = self.streams.get(sid)
        offender = d
        rate = self.reset_rate if offender == CLIENT else self.server_reset_rate
        if rate.hit(self.now):
            # A peer that makes the proxy reset streams for it resets them as surely as with RST_STREAM
            # (MadeYouReset, CVE-2025-8671): the same limit as rapid reset.
            self._limit(offender, "max_resets_per_second",
                        f"streams reset by the proxy for the {SIDE_NAME[offender]}'s stream errors "
                        f"(MadeYouReset, CVE-2025-8671)")
            return
        self._out(1 - offender, fc.RstStreamFrame(sid if offender == CLIENT or s is None else s.server_id,
                                                  error_code=int(code)).serialize(),
                  None, [{"hook": "h2proxy", "action": "strict"}])
        if s is not None:
            other_sid = s.server_id if offender == CLIENT else s.id
            told = {offender}
            if not (s.proxy_owned and offender == CLIENT):
                self._out(offender, fc.RstStreamFrame(other_sid, error_code=ErrorCode.CANCEL).serialize(),
                          None, [{"hook": "h2proxy", "action": "strict"}])
                told.add(1 - offender)
            s.state = st.CLOSED
            s.reset_by = ProxyReset(told)
            self._drop_held(s)
            self._close_stream(s)

    def _connection_error(self, d: int, section: str, code: int, message: str, forced: bool,
                          logged: bool = False) -> None:
        """Answer side d with GOAWAY(code), the other side with a clean GOAWAY, and close both."""
        if not logged:
            log.warning("c%d: %s: %s (RFC 9113 section %s) -> GOAWAY %s", self.id, SIDE_NAME[d], message,
                        section, error_name(code), extra=self._blame(d))
            if self.sink is not None:
                self.sink.violation(self.id, self.now, SIDE_NAME[d], section, error_name(code), message)
        towards_offender = 1 - d
        last_offender = self.last_stream[CLIENT] if d == CLIENT else self.last_stream[SERVER]
        if d == CLIENT or self.preface_forwarded:
            # (Not towards a server that has not had the connection preface: it would read garbage.)
            self._send_goaway(towards_offender, last_offender, code, f"h2proxy: {message}")
        if self.preface_forwarded or d == CLIENT:
            if d == CLIENT and self.preface_forwarded:
                self._send_goaway(d, 0, ErrorCode.NO_ERROR,
                                  f"h2proxy: the client's connection failed ({error_name(code)})")
            elif d == SERVER:
                # Towards the client the last stream id counts its streams: they did reach the upstream.
                self._send_goaway(d, self.last_stream[CLIENT], ErrorCode.NO_ERROR,
                                  f"h2proxy: the upstream's connection failed ({error_name(code)})")
        self._finish(f"{SIDE_NAME[d]} {error_name(code)}: {message}", close_sides=(CLIENT, SERVER))

    def _limit(self, d: int, name: str, detail: str) -> None:
        """A resource limit was hit by side d: ENHANCE_YOUR_CALM to it, a clean GOAWAY to the other."""
        value = getattr(self.limits, name, None)
        message = f"limit {name} = {value} exceeded: {detail}"
        log.warning("c%d: the %s hit a limit: %s", self.id, SIDE_NAME[d], message)
        if self.sink is not None:
            self.sink.error(self.id, self.now, f"{SIDE_NAME[d]}: {message}")
        self._connection_error(d, "10.5", ErrorCode.ENHANCE_YOUR_CALM, message, forced=True, logged=True)

    def _bad_preface(self, exc: PrefaceError) -> None:
        text = (b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: 56\r\n\r\nh2proxy speaks HTTP/2 only (prior knowledge or TLS+ALPN)\n")
        log.warning("c%d: the client did not send the HTTP/2 connection preface: %s", self.id, exc)
        if self.sink is not None:
            self.sink.error(self.id, self.now, str(exc))
        self._out_raw(S2C, text, "plain-text error for a client that does not speak HTTP/2")
        self._finish(str(exc), close_sides=(CLIENT, SERVER))

    def _log_error(self, message: str) -> None:
        log.error("c%d: %s", self.id, message)
        if self.sink is not None:
            self.sink.error(self.id, self.now, message)

    def _finish(self, reason: str, close_sides: Tuple[int, ...] = (CLIENT, SERVER)) -> None:
        if self.closed:
            return
        if self.rec is not None:
            self._rec_flush()
        self._release_held(C2S, True)
        self._release_held(S2C, True)
        self.closed = True
        # Nothing more will be relayed: let go of what the connection held.
        self.recently_closed = RecentlyClosed()
        self.inbox = [[], []]
        for held in self.held_streams:
            held.clear()
        for side in (CLIENT, SERVER):
            self.commands.append(Close(side, reason))
        if self.sink is not None:
            self.sink.connection_closed(self.id, self.now, reason)
        if self.hooks is not None:
            self.hooks.connection_closed(self)

    def close(self, reason: str) -> None:
        """The shell is done with this connection (both sockets gone)."""
        self._finish(reason)

    # ------------------------------------------------- what the shell reports (public boundary)

    def limit_exceeded(self, side: int, name: str, detail: str) -> None:
        """The shell saw side ``side`` exceed limit ``name`` (bytes or frames it does not read, a window
        held at zero): ENHANCE_YOUR_CALM to it, a clean GOAWAY to the other side, both closed."""
        self._limit(side, name, detail)

    def preface_timeout(self, seconds: float) -> None:
        """The client sent no connection preface in time: the server's SETTINGS (a server speaks
        first with them, RFC 9113 3.4), then GOAWAY ENHANCE_YOUR_CALM naming the limit."""
        if self.closed or self.preface_forwarded:
            return
        self._out(S2C, _EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        self._limit(CLIENT, "preface_timeout", f"no connection preface within {seconds:.1f} s")

    def upstream_failed(self, why: str, now: float) -> None:
        """The upstream could not be reached (or spoke no HTTP/2): the client gets SETTINGS, then GOAWAY
        INTERNAL_ERROR saying why, and the connection ends."""
        if self.closed:
            return
        self.now = now
        self._out(S2C, _EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        self._send_goaway(S2C, 0, ErrorCode.INTERNAL_ERROR, f"h2proxy: {why}")
        if self.sink is not None:
            self.sink.error(self.id, self.now, why)
        self._finish(why)


class HookCtx(HookContext):
    """The context a hook method gets: this frame's connection, stream and direction."""

    __slots__ = ("relay", "d", "hook", "stream", "frame")

    def __init__(self, relay: Relay, d: int, hook: str, stream: Optional[Stream], frame: Optional[fc.Frame]) -> None:
        self.relay = relay
        self.d = d
        self.hook = hook
        self.stream = stream
        self.frame = frame

    @property
    def direction(self) -> str:
        return DIRECTION_NAME[self.d]

    @property
    def conn(self) -> Relay:
        return self.relay

    @property
    def request_headers(self) -> Optional[HeaderList]:
        return self.stream.request_headers if self.stream is not None else None

    def inject(self, frame: HookItem, direction: Optional[str] = None) -> None:
        d = self.d if direction is None else _direction(direction)
        self.relay.inject(d, frame, note=self.hook)

    def reset_stream(self, stream_id: Optional[int] = None, code: Union[int, str] = "CANCEL",
                     towards: str = "both") -> None:
        if stream_id is None:
            if self.stream is not None:
                stream_id = self.stream.id
            elif self.frame is not None:
                stream_id = self.frame.stream_id
            else:
                raise ValueError("reset_stream: give the stream_id (this hook call has no frame)")
        self.relay.reset_stream(stream_id, parse_error_code(code), towards, note=self.hook)

    def goaway(self, code: Union[int, str] = "NO_ERROR", last_stream_id: Optional[int] = None, debug: bytes = b"",
               towards: str = "both") -> None:
        self.relay.goaway(parse_error_code(code), last_stream_id, debug, towards, note=self.hook)

    def push(self, path: str, headers: Iterable[Tuple[str, str]] = (), body: bytes = b"",
             status: int = 200) -> Union[PushRefused, PushStarted]:
        result = self.relay.push(self.stream, path, headers, body, status)
        if isinstance(result, PushRefused):
            log.info("c%d: push of %s refused: %s", self.relay.id, path, result.reason)
        return result

    def close(self, towards: str = "both", reset: bool = False) -> None:
        for side in _sides(towards):
            self.relay._release_held(1 - side, True)
            self.relay.commands.append(Close(side, f"hook {self.hook} closed the connection", abort=reset))


def _sides(towards: str) -> Tuple[int, ...]:
    towards = towards.lower()
    if towards == "both":
        return (CLIENT, SERVER)
    if towards in ("client", "downstream"):
        return (CLIENT,)
    if towards in ("server", "upstream"):
        return (SERVER,)
    raise ValueError(f"towards must be 'client', 'server' or 'both', not {towards!r}")


def _direction(direction: Union[int, str]) -> int:
    if direction in (C2S, CLIENT_TO_SERVER, "c2s", "to_server", "server", "upstream"):
        return C2S
    if direction in (S2C, SERVER_TO_CLIENT, "s2c", "to_client", "client", "downstream"):
        return S2C
    raise ValueError(f"direction must be {CLIENT_TO_SERVER!r} or {SERVER_TO_CLIENT!r}, not {direction!r}")


def _fragment(f: RawFrame) -> bytes:
    """The header block fragment of a HEADERS, PUSH_PROMISE or CONTINUATION frame."""
    p = f.payload
    if f.type == CONTINUATION:
        return bytes(p)
    start = 0
    end = len(p)
    if f.flags & PADDED:
        if not end:
            raise ValueError("PADDED frame without a pad length")
        end -= p[0]
        start = 1
    if f.type == HEADERS and f.flags & PRIORITY_FLAG:
        start += 5
    elif f.type == PUSH_PROMISE:
        start += 4
    if end < start:
        raise ValueError(f"padding of {p[0]} bytes longer than the frame body")
    return bytes(p[start:end])


def _block_intact(frames: List[RawFrame], result: List[HookItem]) -> bool:
    """Whether a hook's result carries the received header block's bytes exactly once, in order."""
    sent = []
    for item in result:
        if isinstance(item, Headers):
            return True      # encoded by the proxy's own encoder, which resets the receiver's table
        if isinstance(item, (fc.HeadersFrame, fc.PushPromiseFrame, fc.ContinuationFrame)):
            sent.append(bytes(item.data))
    try:
        return b"".join(sent) == b"".join(_fragment(f) for f in frames)
    except ValueError:
        return False


def _neutral_kept(frames: List[RawFrame], result: Sequence[Any]) -> bool:
    """Whether a hook's result holds no header block but copies of the received one, whole (a block that
    changed no HPACK table may be dropped or repeated so: the receiver's table stays in step)."""
    original: Optional[bytes] = None
    for item in result:
        if isinstance(item, (Headers, RawBytes, bytes, bytearray, memoryview, fc.ContinuationFrame)):
            return False
        if isinstance(item, (fc.HeadersFrame, fc.PushPromiseFrame)):
            if original is None:
                try:
                    original = b"".join(_fragment(f) for f in frames)
                except ValueError:
                    return False
            if bytes(item.data) != original or "END_HEADERS" not in item.flags:
                return False
    return True


def _split_block(frame: Union[fc.HeadersFrame, fc.PushPromiseFrame], max_size: int) -> List[bytes]:
    """Split a HEADERS or PUSH_PROMISE frame whose block is too large into the frame + CONTINUATIONs."""
    data = frame.data
    first_room = max_size - 20
    frame.data = data[:first_room]
    rest = data[first_room:]
    frame.flags.discard("END_HEADERS")
    wires = [frame.serialize()]
    while rest:
        chunk, rest = rest[:max_size], rest[max_size:]
        cont = fc.ContinuationFrame(frame.stream_id, data=chunk)
        if not rest:
            cont.flags.add("END_HEADERS")
        wires.append(cont.serialize())
    return wires


_RESULT_ITEMS = (fc.Frame, Headers, RawBytes, bytes, bytearray, memoryview)


def _valid_result(result: object) -> bool:
    """Whether a hook's return value is one the relay knows how to send (None aside)."""
    if isinstance(result, _RESULT_ITEMS):
        return True
    if not isinstance(result, (list, tuple)):
        return False
    if result and isinstance(result[0], tuple):
        # A header list: (name, value) pairs of text or bytes.
        text = _TEXT
        for h in result:
            if not isinstance(h, tuple) or not 2 <= len(h) <= 3 or not isinstance(h[0], text) \
                    or not isinstance(h[1], text):
                return False
        return True
    return all(isinstance(item, _RESULT_ITEMS) for item in result)


_TEXT = (str, bytes)
#: Result types that are never awaitable (the common ones: no inspect call for them).
_PLAIN_RESULTS = frozenset((list, tuple, Headers, RawBytes, bytes))


def _type_name(value: object) -> str:
    if isinstance(value, (list, tuple)):
        bad = next((v for v in value if not isinstance(v, _RESULT_ITEMS)), None)
        return f"a {type(value).__name__} holding {type(bad).__name__}"
    return f"{type(value).__name__} ({value!r:.40})"


def _owe(s: Stream, d: int, amount: int) -> None:
    """The proxy sent ``amount`` more DATA on this stream than the sender did."""
    if s.owed is None:
        s.owed = [0, 0]
    s.owed[d] += amount


def _header(headers: Sequence[Tuple[str, str]], name: str) -> Optional[str]:
    for k, v in headers:
        if k == name:
            return v
    return None


def _is_informational(headers: Sequence[Tuple[str, str]]) -> bool:
    status = _header(headers, ":status")
    return status is not None and status.startswith("1")
