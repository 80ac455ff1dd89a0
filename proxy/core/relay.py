"""The sans-I/O connection core: one client connection relayed to one upstream.

No sockets, no clock, no event loop: the caller passes bytes and the time in,
and takes bytes and commands out. The boundary with the shell
(``proxy/server.py``, ``proxy/forward.py``) is these calls and nothing else
(the shell reads no other attribute of the relay):

In, each followed by taking what came out:

* :meth:`Relay.receive` ``(side, data, now)``: bytes read from the socket of ``side``;
* :meth:`Relay.eof` ``(side, reason)``: that socket was closed by its peer;
* :meth:`Relay.tick` ``(now, upstream_held)``: once a second, for the timeouts, and when a
  :class:`Wake` command asks;
* :meth:`Relay.resume` ``(direction, result, error)``: the outcome of an :class:`AwaitHook`;
* the shell's own findings: :meth:`Relay.limit_exceeded`, :meth:`Relay.preface_timeout`,
  :meth:`Relay.upstream_failed`, :meth:`Relay.shutdown`, :meth:`Relay.close`.

Out, in this order:

1. :meth:`Relay.take_output` ``(direction)``: the buffers to write towards the receiver of
   ``direction`` (to the server for 0, to the client for 1), to write before anything else;
   :meth:`Relay.pending_output` says whether any wait (the shell takes them only once it
   has a socket to write them to), :meth:`Relay.pending_control` how many are not DATA;
2. :meth:`Relay.take_commands`: the commands (:mod:`proxy.core.commands`: :class:`Close` a
   socket once its output is written, :class:`AwaitHook` and hand the outcome to ``resume``,
   :class:`Wake`: call ``tick`` at a given time);
   :meth:`Relay.pending_commands` says whether any wait.

For backpressure: :attr:`Relay.buffered` (bytes the core holds) and
:meth:`Relay.inbox_empty` (no frame of a side waits unprocessed: reading it may resume);
:attr:`Relay.closed` once the connection ended. ``relay.wake`` is set by the shell to a
function that takes the output made outside these calls (a hook's timer).

Per direction the pipeline is: streaming reader -> header-block assembly ->
RFC 9113 checks and the passive state (settings, streams, windows) -> hooks ->
repairs (HPACK re-encoding, splitting, flow control, stream-id mapping) ->
output. A frame that no hook asks for and no repair touches is forwarded as
the very bytes that arrived.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
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
from framecodec.reader import Chunk, FrameFields, RawFrame, Wire
from framecodec.reader import unpack_header as _unpack_header

from ..hooks.api import (
    HeaderList,
    Headers,
    PushRefused,
    PushStarted,
    RawBytes,
)
from . import blocks, checks, messages
from . import streams as st
from .commands import AwaitHook, Close, Command
from .control import ControlFrames
from .errors import Violations
from .flow import SENDING, FlowControl, owe
from .headerpath import IN_RUN, HeaderBlocks
from .hookrun import (
    UNCHANGED,
    ConnView,
    Finish,
    HookGen,
    HookItem,
    HookOutcome,
    hook_chain,
    sides_towards,
)
from .interfaces import Actions, Counters, HookEntry, HookRunner, HookTable, Screen, StreamTables
from .limits import Limits
from .output import EMPTY_SETTINGS, Output
from .protocol import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    SETTINGS,
    ErrorCode,
    Setting,
    frame_name,
)
from .side import pair
from .streams import DATA_NEXT, HEADERS_NEXT, SENDER, ProxyReset, RecentlyClosed, Stream
from .unit import _Unit

if TYPE_CHECKING:
    from ..recording.sink import FrameSink

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1                      # directions; the sending side of direction d is side d
CLIENT, SERVER = 0, 1                # sides
SIDE_NAME = ("client", "server")

_MAX_CONCURRENT = int(Setting.MAX_CONCURRENT_STREAMS)
_MAX_FRAME = int(Setting.MAX_FRAME_SIZE)
_INITIAL_WINDOW = int(Setting.INITIAL_WINDOW_SIZE)
_CLOSED = st.CLOSED
_OPEN = st.OPEN
_HALF_CLOSED_LOCAL = st.HALF_CLOSED_LOCAL
_PAD_PRIO = PADDED | PRIORITY_FLAG


@dataclass
class RelayOptions:
    strict: bool = False
    decode_headers: bool = False
    limits: Limits = field(default_factory=Limits)


#: The ``max_read`` of frames the reader has split (and checked) already: :meth:`Relay._walk` takes them all.
_CHECKED = 1 << 24


def _stream_tables(hooks: Optional[HookRunner]) -> Tuple[Optional[Callable[[Stream], Optional[StreamTables]]],
                                                          Optional[StreamTables]]:
    """What the relay asks for each new stream's tables, or (None, the tables every stream has)."""
    if hooks is None:
        return None, None
    if getattr(hooks, "fixed_tables", False):
        return None, hooks.every_stream
    return hooks.stream_tables, None


class Relay(FlowControl, Output, ControlFrames, Violations, HeaderBlocks):
    """Relays one HTTP/2 connection between a client and an upstream server.

    Parts of it live in mixins, one job each: :mod:`.flow` (the flow-control ledger), :mod:`.output`
    (sending, recording, stream-id mapping), :mod:`.control` (control frames), :mod:`.errors`
    (violations and limits) and :mod:`.headerpath` (header blocks: decoding, checks, hooks or
    forwarding, re-encoding).
    """

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
        #: Asked for each new stream's tables; None when every stream has ``every_stream``'s.
        self.stream_tables: Optional[Callable[[Stream], Optional[StreamTables]]]
        self.every_stream: Optional[StreamTables]
        self.stream_tables, self.every_stream = _stream_tables(hooks)
        # Stream lifecycle calls cost a call per stream each, and a break in the walk's run: made only when
        # some hook has that method (opened and closed apart: a hook often wants only one of them).
        self.open_hooks = hooks if hooks is not None and getattr(hooks, "wants_stream_opened", True) else None
        self.close_hooks = hooks if hooks is not None and getattr(hooks, "wants_stream_closed", True) else None
        everything = bool(self.options.decode_headers or self.options.strict
                          or (sink is not None and sink.needs_headers))
        chain_decode = getattr(hooks, "decode", None) if hooks is not None else None
        if chain_decode is None:
            chain_decode = [bool(hooks is not None and hooks.needs_headers)] * 2
        if_push = getattr(hooks, "decode_if_push", None) if hooks is not None and not everything else None
        #: Directions decoded only while the client may allow server push: decoding stops there when the
        #: client's first SETTINGS disables it (ControlFrames._settings), before any block of theirs.
        self.decode_if_push: Tuple[bool, bool] = (bool(if_push and if_push[0]), bool(if_push and if_push[1]))
        #: The two peers, indexed by side (= the direction each sends in): what was kept per direction.
        self.sides = pair(self.limits, (everything or bool(chain_decode[0]) or self.decode_if_push[0],
                                        everything or bool(chain_decode[1]) or self.decode_if_push[1]), now)
        self.client, self.server = self.sides
        #: Whether every decoded block gets the RFC 9113 section 8 checks (``--strict``, ``decode_headers``);
        #: otherwise only those a hook is handed (see docs/proxy.md, *What is checked*).
        self.check_all = bool(self.options.decode_headers or self.options.strict)
        self.out: List[List[Wire]] = [[], []]
        self.commands: List[Command] = []
        self.streams: Dict[int, Stream] = {}
        self.recently_closed = RecentlyClosed()   # stream id -> side that reset it (-1: ended normally)
        self.last_client_push_id = 0         # highest even id used towards the client
        self.push_map: Dict[int, int] = {}   # server-leg pushed id -> client-leg id (once renumbering started)
        self.push_unmap: Dict[int, int] = {}
        self.renumber_pushes = False
        self.proxy_ids: Set[int] = set()         # client-leg ids of streams the proxy created (pushes)
        self.client_streams_open = 0         # client-initiated streams not yet closed (for MAX_CONCURRENT_STREAMS)
        self.client_streams_total = 0        # client-initiated streams opened (Stream.ordinal)
        self.closed = False
        #: Set by :meth:`halt`: nothing more is relayed (the connection is being closed on a hook's behalf).
        self.halted = False
        self.preface_forwarded = False
        self.counters: Counters = {"frames_in": [0, 0], "frames_out": [0, 0], "bytes_in": [0, 0],
                         "violations": 0, "streams": 0, "resets": [0, 0], "hook_errors": 0,
                         "pushes": 0}
        self.violations: List[Dict[str, Any]] = []
        # With a sink that takes batches, fast-path frames are recorded per read, not per frame.
        self.rec: Optional[List[List[Wire]]] = [[], []] if sink is not None and hasattr(sink, "forwarded") else None
        self.fast_new_streams = False
        self._update_fast_path()
        self.last_activity = now
        self.preface_at = now                # when the upstream was sent the connection preface
        self.waiting_since: Optional[float] = None   # since when streams wait on a silent upstream
        # Set by the shell: call after producing output outside receive()/resume() (a hook's timer).
        self.wake: Optional[Callable[[], None]] = None
        #: What hooks see of this connection (``ctx.conn``).
        self.view = ConnView(self)
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
        side = self.sides[d]
        if self.closed:
            return
        self.now = now
        self.last_activity = now
        side.heard = now
        reader = side.reader
        self.counters["bytes_in"][d] += len(data)
        try:
            if reader.preface_pending:
                frames, view, pos = reader.take(data)
                if not reader.preface_pending and not self.preface_forwarded:
                    self._forward_preface()
            else:
                frames, view, pos = reader.take(data)
            ran = False
            if frames:
                done = self._queued_or_run(d, frames)
                if done is None:
                    return
                ran = done
            if pos < len(view) and not self.closed:
                ran = self._chunk(d, view, pos) or ran
        except PrefaceError as exc:
            self._bad_preface(exc)
            return
        except FrameTooLargeError as exc:
            # The frames before the oversized one still go through.
            if exc.frames and side.paused is None and not side.inbox:
                self._run(d, exc.frames)
            why = str(exc)
            if exc.max_frame_size == self.limits.max_frame_size:
                why += f" (limit max_frame_size = {self.limits.max_frame_size})"
            self._connection_error(d, "4.2", ErrorCode.FRAME_SIZE_ERROR, why, forced=True)
            return
        except FrameCodecError as exc:
            self._connection_error(d, "4.1", ErrorCode.PROTOCOL_ERROR, str(exc), forced=True)
            return
        if ran and side.greeting is not None and side.paused is None:
            # Side d's first frames went by and none was a SETTINGS sent on (dropped by a hook,
            # or a transparent-mode peer that began with another frame): hold nothing longer.
            self._release_held(d, False)
        if self.server.resets and self.out[S2C]:
            self._release_resets(S2C)      # (with the frames now going to the client: _hold_reset)
        rec = self.rec
        if rec is not None and (rec[0] or rec[1]):
            self._rec_flush()

    def _first_frame_ok(self, d: int, t: int) -> bool:
        """RFC 9113 section 3.4: each side's first frame is a SETTINGS frame (False: the connection closed)."""
        return t == SETTINGS or not self._violation(
            d, "3.4", ErrorCode.PROTOCOL_ERROR, True,
            f"the {SIDE_NAME[d]}'s first frame is {frame_name(t)}, not SETTINGS")

    def _waits(self, d: int) -> bool:
        """Whether frames read from side ``d`` must be queued (``Side.inbox``) rather than processed now:
        behind an awaited hook or frames queued before, or from the server before the client's preface
        (nothing of the server reaches a client that has not proven it speaks HTTP/2)."""
        side = self.sides[d]
        return (d == S2C and not self.preface_forwarded) or side.paused is not None or bool(side.inbox)

    def _queued_or_run(self, d: int, frames: List[FrameFields]) -> Optional[bool]:
        """Frames the reader split (one completed across reads): queued while side ``d`` must wait
        (False), otherwise processed (True). None: the connection closed on the first frame."""
        side = self.sides[d]
        if not self.counters["frames_in"][d] and not self._first_frame_ok(d, frames[0][0]):
            return None
        self.counters["frames_in"][d] += len(frames)
        if self._waits(d):
            side.inbox.extend(frames)
            return False
        self._run(d, frames)
        return True

    def _chunk(self, d: int, view: memoryview, pos: int) -> bool:
        """The rest of a read, from the frame boundary at ``pos``: walked (:meth:`_walk`), or split and
        queued while side ``d`` must wait. True when some frame of it was processed."""
        side = self.sides[d]
        if not self.counters["frames_in"][d] and len(view) - pos >= 9:
            length = view[pos] << 16 | view[pos + 1] << 8 | view[pos + 2]
            if len(view) - pos >= 9 + length and not self._first_frame_ok(d, view[pos + 3]):
                return False
        if self._waits(d) or self.halted:
            self._walked(d, view, pos, 0)
            return False
        end, walked = self._walk(d, view, pos, side.reader.max_frame_size)
        self._walked(d, view, end, walked)
        return walked > 0

    def _run(self, d: int, frames: List[FrameFields]) -> None:
        """Process frames already split, ``(type, flags, stream id, length, wire)`` tuples (queued behind a
        hook or until the preface, completed across reads), in order: each as :meth:`_walk` does."""
        side = self.sides[d]
        for i, f in enumerate(frames):
            if self.closed or self.halted:
                return
            self._walk(d, memoryview(f[4]), 0, _CHECKED)
            if side.paused is not None:
                rest = frames[i + 1:]
                if rest:
                    side.inbox[:0] = rest
                return

    def _walk(self, d: int, view: memoryview, pos: int, max_read: int) -> Tuple[int, int]:
        """Split and process the frames of ``view[pos:]`` in one pass, in order.

        Most traffic is DATA and one-frame HEADERS on streams the proxy already
        tracks, and the HEADERS that open client streams; where nothing reads or
        changes them (see :meth:`_update_fast_path`) they are forwarded right here,
        with no object, no call and no slice of their own: a run of them goes out as
        one view of the read. Anything else, and anything unusual about these (a
        window too small, a state that does not allow the frame), becomes a
        :class:`RawFrame` and goes through :meth:`_process`.

        In a direction decoded only so that hooks can read some streams' blocks (``fast_synced``),
        a block no hook wants on its stream is decoded here (the HPACK table stays in step) and
        forwarded as it came, unchecked, as the transparent path forwards it.

        The walk stops at an incomplete frame, one longer than ``max_read`` (the reader's limit, which
        reports it), behind a hook that must be awaited, and when the connection closed or halted.
        Returns where it stopped and how many frames it walked (for a read: :meth:`_walked`). The
        connection is open and not halted when it starts.
        """
        side = self.sides[d]
        peer = side.peer
        process = self._process
        streams = self.streams
        data_next = DATA_NEXT[d]
        headers_next = HEADERS_NEXT[d]
        greeted = side.greeting is None
        # Frames above the receiver's SETTINGS_MAX_FRAME_SIZE, and one-frame blocks above the header
        # block limit, take the slow path (which checks them).
        max_frame = peer.settings[_MAX_FRAME]
        max_hb = min(self.limits.max_header_block_size, max_frame)
        # The lists forwarded (and, when recording, recorded) frames go to. Anything that may run a
        # hook or the slow path can hand them on and start new ones: they are fetched again after it.
        out_d = self.out[d]
        rec_d = self.rec[d] if self.rec is not None else None
        # Which frames may be forwarded as they came (see _update_fast_path): only the slow path, a stream
        # hook or _synced_block can change it, and they are fetched again after those, as the lists are.
        fast_data, fast_headers, fast_synced = side.fast_data, side.fast_headers, side.fast_synced and greeted
        new_streams = d == C2S and self.fast_new_streams
        unblocked = side.block is None
        size = len(view)
        start = pos         # where the run of frames forwarded as they came, not handed to out_d yet, starts
        walked = 0
        # Frames not in runs, and runs handed on: take_output counts buffers, the runs' frames are counted here.
        slow = runs = 0
        while size - pos >= 9:
            lt, flags, sid = _unpack_header(view, pos)
            length = lt >> 8
            end = pos + 9 + length
            if end > size or length > max_read:
                break
            t = lt & 0xFF
            sid &= 0x7FFFFFFF
            walked += 1
            # Set when a stream hook or _synced_block ran for this frame (the frame is dealt with, but the
            # lists may be new ones and the connection may have closed), as after the slow path.
            called = False
            if t <= HEADERS and unblocked:
                s = streams.get(sid)
                if s is not None:
                    new = None
                    h = s.hooks
                    if t == DATA:
                        if fast_data and s.held is None and length <= side.window and length <= s.window[d] and (
                                length or flags & END_STREAM) and length <= max_frame and (
                                h is None or DATA not in h[d]):
                            new = data_next[flags & END_STREAM].get(s.state)
                            if new is not None:
                                side.window -= length
                                s.window[d] -= length
                    elif flags & END_HEADERS and fast_headers and length <= max_hb and (
                            h is None or HEADERS not in h[d]):
                        new = headers_next[flags & END_STREAM].get(s.state)
                    elif fast_synced and flags & END_HEADERS and not flags & _PAD_PRIO and \
                            length <= max_hb and (h is None or HEADERS not in h[d]):
                        new = headers_next[flags & END_STREAM].get(s.state)
                        if new is not None and not self._synced_block(d, s, flags, sid, length, view, start, pos,
                                                                      end):
                            # (It did not decode, and was dealt with: the run before it went out first.)
                            runs += pos > start
                            slow += 1
                            start = pos = end
                            new = None
                            called = True
                    if new is not None:
                        s.state = new
                        if rec_d is not None:
                            rec_d.append(view[pos:end])
                        pos = end
                        if new is not _CLOSED:
                            continue
                        if self.close_hooks is None:
                            self._close_stream(s)
                            continue
                        out_d.append(view[start:end])
                        runs += 1
                        start = end
                        self._close_stream(s)
                        called = True
                elif t == HEADERS and new_streams and flags & END_HEADERS and length <= max_hb:
                    # A new client stream (the request of a new exchange).
                    client = self.client
                    if (sid & 1 and sid > client.last_stream
                            and self.client_streams_open < client.peer.settings[_MAX_CONCURRENT]
                            and len(streams) < self.limits.max_streams):
                        client.last_stream = sid
                        s = streams[sid] = Stream(sid, _HALF_CLOSED_LOCAL if flags & END_STREAM else _OPEN,
                                                  client.settings[_INITIAL_WINDOW],
                                                  client.peer.settings[_INITIAL_WINDOW])
                        self.client_streams_open += 1
                        self.client_streams_total += 1
                        s.ordinal = self.client_streams_total
                        self.counters["streams"] += 1
                        tables = self.stream_tables     # (_tables_of, inline)
                        s.hooks = tables(s) if tables is not None else self.every_stream
                        if rec_d is not None:
                            rec_d.append(view[pos:end])
                        pos = end
                        if self.open_hooks is None:
                            continue
                        out_d.append(view[start:end])
                        runs += 1
                        start = end
                        self.open_hooks.stream_opened(self, s)
                        called = True
            if not called:
                # A request some hook may want is decided on before the run goes out: one nobody acts on
                # joins the run (as with no hooks); otherwise _open_decoded sent the run out first.
                opened = (t == HEADERS and unblocked and s is None and d == C2S and side.fast_decoded
                          and flags & END_HEADERS and not flags & _PAD_PRIO and length <= max_hb
                          and self._open_decoded(flags, sid, length, view, start, pos, end))
                if opened is IN_RUN:
                    pos = end
                    continue
                # Not forwarded as it came: the run before it goes out first (if _open_decoded dealt with the
                # frame, it sent the run out).
                if pos > start and not opened:
                    out_d.append(view[start:pos])
                runs += pos > start
                slow += 1
                wire = view[pos:end]
                start = pos = end
                if not (opened or t == HEADERS and side.fast_decoded and flags & END_HEADERS
                        and not flags & _PAD_PRIO and length <= max_hb and side.block is None and s is not None
                        and self._decoded_block(d, s, flags, sid, length, wire)):
                    process(d, RawFrame(t, flags, sid, length, wire))
            if side.paused is not None or self.closed or self.halted:
                break
            out_d = self.out[d]
            rec_d = self.rec[d] if self.rec is not None else None
            fast_data, fast_headers, fast_synced = side.fast_data, side.fast_headers, side.fast_synced and greeted
            new_streams = d == C2S and self.fast_new_streams
            unblocked = side.block is None
        if pos > start:
            out_d.append(view[start:pos])
            runs += 1
        self.counters["frames_out"][d] += walked - slow - runs
        return pos, walked

    def _walked(self, d: int, view: memoryview, pos: int, walked: int) -> None:
        """A read was walked up to ``pos`` (``walked`` frames; none while side ``d`` must wait): count its
        frames, and hand the rest back to the reader (an incomplete last frame stays there; an oversized
        one raises). The complete frames of the rest are queued while side ``d`` waits (behind an awaited
        hook, or the client's preface), and dropped when the connection closed or halted."""
        self.counters["frames_in"][d] += walked
        if self.closed:
            return
        side = self.sides[d]
        rest = side.reader.rest(view, pos, walked)
        self.counters["frames_in"][d] += len(rest)
        if rest and not self.halted:
            # (Behind frames queued before, except those behind the frame that paused the walk.)
            if walked:
                side.inbox[:0] = rest
            else:
                side.inbox.extend(rest)

    def resume(self, d: int, result: Any = None, error: Optional[BaseException] = None) -> None:
        """An awaited hook finished: continue the held frame and those behind it."""
        side = self.sides[d]
        pending = side.paused
        if pending is None or self.closed:
            return
        side.paused = None
        gen, finish = pending
        self._drive(d, gen, finish, result, error)
        while side.paused is None and side.inbox and not self.closed:
            frames, side.inbox = side.inbox, []
            self._run(d, frames)
        if side.greeting is not None and side.paused is None and self.counters["frames_in"][d]:
            self._release_held(d, False)
        if self.server.resets and self.out[S2C]:
            self._release_resets(S2C)
        if self.rec is not None:
            self._rec_flush()

    def eof(self, d: int, reason: str = "") -> None:
        """Side ``d`` closed its socket (or it failed)."""
        if self.closed:
            return
        other = 1 - d
        if d == CLIENT:
            self.server.resets = []      # (resets held for a client that is gone: never sent)
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
        if d == CLIENT and cut and self.client.goaway is None:
            self._send_goaway(C2S, self.server.last_stream, ErrorCode.NO_ERROR,
                              f"h2proxy: the client closed the connection{': ' + reason if reason else ''}")
        if d == SERVER:
            log.info("c%d: server closed the connection%s%s", self.id, f": {reason}" if reason else "",
                     f"; {len(self.streams)} stream(s) still open: RST_STREAM INTERNAL_ERROR to the client"
                     if cut else "")
            if self.server.goaway is None and self.preface_forwarded:
                last = self.client.last_stream
                # After the client's own GOAWAY, with no stream left, this is the expected end: no error.
                done = self.client.goaway is not None and not self.streams
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
        self._send_goaway(S2C, self.client.last_stream, ErrorCode.NO_ERROR, "h2proxy is shutting down")

    def tick(self, now: float, upstream_held: bool = False) -> None:
        """Time passes: enforce the idle, SETTINGS-ACK, zero-window and upstream timeouts.

        ``upstream_held``: the shell is not reading the upstream (backpressure from the client's
        socket), so its silence is not its own.
        """
        if self.closed:
            return
        self.now = now
        if self.server.resets and now >= self.server.resets_due:
            self._release_resets(S2C)
        lim = self.limits
        if self.preface_forwarded and self._upstream_timed_out(now, upstream_held):
            return
        if lim.idle_timeout and now - self.last_activity > lim.idle_timeout and not self.active_streams:
            log.info("c%d: idle for %.0f s (limit idle_timeout = %s); closing with GOAWAY", self.id,
                     now - self.last_activity, lim.idle_timeout)
            if self.preface_forwarded:
                self._send_goaway(S2C, self.client.last_stream, ErrorCode.NO_ERROR, "h2proxy: idle timeout")
                self._send_goaway(C2S, self.server.last_stream, ErrorCode.NO_ERROR, "h2proxy: idle timeout")
            self._finish("idle timeout")
            return
        if lim.settings_ack_timeout:
            for side in self.sides:
                sent = side.settings_sent_at
                if sent and now - sent[0] > lim.settings_ack_timeout:
                    # The side that did not acknowledge is the other one.
                    self._connection_error(side.peer.index, "6.5.3", ErrorCode.SETTINGS_TIMEOUT,
                                           f"SETTINGS of the {side.name} not acknowledged within "
                                           f"{lim.settings_ack_timeout:g} s (limit settings_ack_timeout = "
                                           f"{lim.settings_ack_timeout})",
                                           forced=True)
                    return
        if lim.zero_window_timeout:
            for d, side in enumerate(self.sides):
                if side.held_streams or self._window_closed(d):
                    since = side.stalled_since
                    if since is None:
                        side.stalled_since = now
                    elif now - since > lim.zero_window_timeout:
                        self._limit(1 - d, "zero_window_timeout",
                                    f"the {SIDE_NAME[1 - d]} kept its flow-control window closed for "
                                    f"{now - since:.0f} s")
                        return
                else:
                    side.stalled_since = None

    def _upstream_timed_out(self, now: float, held: bool) -> bool:
        """The upstream's two timeouts (it never sends SETTINGS; it goes silent with streams waiting)."""
        lim = self.limits
        if lim.upstream_settings_timeout and not self.server.settings_seen \
                and now - self.preface_at > lim.upstream_settings_timeout:
            self._upstream_timeout("upstream_settings_timeout",
                                   f"the upstream sent no SETTINGS within {now - self.preface_at:.1f} s of the "
                                   f"connection preface")
            return True
        if not lim.upstream_silence_timeout:
            return False
        sending = SENDING[S2C]
        waiting = sum(1 for s in self.streams.values() if s.state in sending)   # (the upstream still owes them)
        if not waiting or held or self.server.held_streams or self._window_closed(S2C):
            self.waiting_since = None        # (nothing waits on the upstream, or something else holds it back)
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        silent = now - max(self.server.heard, self.waiting_since)
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
        if not self.server.settings_seen:
            # The client never had the server's preface: a server's first frame must be SETTINGS (RFC 9113 3.4).
            self._out(S2C, fc.SettingsFrame(0).serialize(), None, note)
        for s in list(self.streams.values()):
            self._out(S2C, fc.RstStreamFrame(s.id, error_code=ErrorCode.INTERNAL_ERROR).serialize(), None, note)
            if s.server_id and not s.proxy_owned:
                self._out(C2S, fc.RstStreamFrame(s.server_id, error_code=ErrorCode.CANCEL).serialize(), None, note)
        self._send_goaway(C2S, self.server.last_stream, ErrorCode.NO_ERROR, f"h2proxy: {message}")
        self._send_goaway(S2C, self.client.last_stream, ErrorCode.INTERNAL_ERROR,
                          f"h2proxy: upstream timeout: {message}")
        self._finish(f"upstream timeout: {message}")

    @property
    def active_streams(self) -> int:
        """Streams not closed yet (closed streams leave ``streams`` at once)."""
        return len(self.streams)

    @property
    def buffered(self) -> int:
        """Bytes the core holds (incomplete frames, held DATA, frames queued behind a hook)."""
        total = self.client.reader.buffered + self.server.reader.buffered
        for d, side in enumerate(self.sides):
            for f in side.inbox:
                total += f[3] + 9      # (type, flags, stream id, length, wire)
            for s in side.held_streams.values():
                if s.held is not None:     # (a proxy push waiting for window holds no frames)
                    for item in s.held[d]:
                        total += len(item[0])
        return total

    # ------------------------------------------------------------ dispatching

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
        for d, side in enumerate(self.sides):
            plain = (self.sink is None or self.rec is not None) and not (d == S2C and self.push_map)
            side.fast_headers = plain and not side.decoding and side.encoder is None
            side.fast_data = plain and not self.strict
            # Decoded (every block of d is: the HPACK table stays in step), checked, handed to the hooks that
            # want it or forwarded, without the general path's detours (see _open_decoded, _decoded_block).
            side.fast_decoded = (self.sink is None and side.decoding and not self.strict
                                 and not (d == S2C and self.push_map))
            # ... and those of streams no hook wants them on decoded (the table in step), then sent on as they
            # came, unchecked, in _run itself (not with decode_headers, which checks every block).
            side.fast_synced = (side.fast_decoded and not self.check_all and side.encoder is None
                                and not side.decoding_broken and side.decoder is not None)
        self.fast_new_streams = self.client.fast_headers and (
            self.hooks is None or HEADERS not in self.hooks.table()[C2S])

    def _no_push_decoding(self) -> None:
        """The client's first SETTINGS disabled server push: the directions decoded only for pushed streams
        (HookChain.decode_if_push) are not decoded on this connection (no block of theirs came yet)."""
        for d, side in enumerate(self.sides):
            if self.decode_if_push[d]:       # (never a direction some hook needs decoded always: HookChain)
                side.decoding = False
        self._update_fast_path()

    def _tables_of(self, s: Stream) -> Optional[StreamTables]:
        """The hook entries for the frames of the new stream ``s`` (HookChain.stream_tables)."""
        tables = self.stream_tables
        return tables(s) if tables is not None else self.every_stream

    def interest_changed(self) -> None:
        """The hooks' interest changed (rules changed at run time): every open stream takes it now."""
        self.stream_tables, self.every_stream = _stream_tables(self.hooks)
        if self.hooks is not None:
            followed = self.hooks.full_tables()
            for s in self.streams.values():
                if not s.proxy_owned and s.hooks is not followed:
                    s.hooks = self._tables_of(s)
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
        side = self.sides[d]
        peer = side.peer
        t = f.type
        if f.length > peer.settings[_MAX_FRAME] and self._oversized(d, f):
            return
        blk = side.block
        if blk is not None:
            if t == CONTINUATION and f.stream_id == blk[0].stream_id:
                blk.append(f)
                side.block_size += f.length
                if f.flags & END_HEADERS:
                    side.block = None
                    self._header_block(d, blk)
                elif (len(blk) > self.limits.max_continuations
                      or side.block_size > self.limits.max_header_block_size):
                    self._limit(d, "max_continuations" if len(blk) > self.limits.max_continuations
                                else "max_header_block_size",
                                f"header block on stream {f.stream_id}: {len(blk) - 1} CONTINUATION frames, "
                                f"{side.block_size} bytes")
                return
            side.block = None
            if self._violation(d, *checks.inside_block(t, f.stream_id, blk[0].stream_id)):
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
                side.block = [f]
                side.block_size = f.length
        else:
            self._control(d, f)

    def _oversized(self, d: int, f: RawFrame) -> bool:
        """A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE (RFC 9113 4.2).

        Strict mode never gets here (its frame reader stops such a frame: FRAME_SIZE_ERROR);
        transparent mode logs the violation and forwards the frame. A frame that can change
        the connection's state (a header block, SETTINGS, anything on stream 0) is a connection
        error, others a stream error.
        """
        peer = self.sides[1 - d]
        return self._violation(d, *checks.oversized(f, peer.settings[_MAX_FRAME], peer.name), sid=f.stream_id)

    # ---------------------------------------------------------------- DATA

    def _data(self, d: int, f: RawFrame) -> None:
        side = self.sides[d]
        sid = f.stream_id
        if d == S2C and self.push_map:
            sid = self.push_map.get(sid, sid)
        s = self.streams.get(sid)
        if sid == 0:
            if self._violation(d, *checks.on_stream_zero(DATA)):
                return
        elif s is None:
            if self._closed_stream_frame(d, f, sid):
                return
        else:
            new = st.TRANSITIONS.get((s.state, SENDER[d], st.DATA_END if f.flags & END_STREAM else st.DATA))
            if new is None:
                if self._violation(d, *checks.transition(s.state, SENDER[d], "DATA", sid), sid=sid):
                    return
            else:
                s.state = new
        if f.length == 0 and not f.flags & END_STREAM and side.empty_rate.hit(self.now):
            # (On any stream, tracked or not: a flood on closed streams costs as much.)
            self._limit(d, "max_empty_frames_per_second", "DATA frames with empty payloads")
            return
        if self.strict:
            bad = messages.data_check(self, d, s, f, sid)
            if bad is not None and self._violation(d, *bad, sid=sid):
                return
        if side.held_streams and f.length and self._held_past_window(d, s, f.length, sid):
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

    # ---------------------------------------------------------- other frames

    def _closed_stream_frame(self, d: int, f: RawFrame, sid: int) -> bool:
        """A DATA or HEADERS frame for a stream the proxy does not track."""
        owner = CLIENT if sid & 1 else SERVER
        last = self.sides[owner].last_stream if owner == CLIENT else max(self.server.last_stream,
                                                                   self.last_client_push_id)
        if sid > last:
            return self._violation(d, *checks.idle_stream(f.type, sid))
        closer = self.recently_closed.get(sid, "unknown")
        if closer == "refused":
            return True      # strict mode refused the stream: the other side never heard of it
        if isinstance(closer, ProxyReset):
            return bool(self._discard_after_reset(d, f, sid))
        if closer == d or closer == -1:   # -1: both sides had ended it with END_STREAM
            # The sender itself closed the stream with END_STREAM or RST_STREAM and sends again.
            return self._violation(d, *checks.sent_after_close(f.type, sid, SIDE_NAME[d]), sid=sid)
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
        if len(new) >= st.REMEMBER_CLOSED:
            closed.old, closed.new = new, {}
        if self.close_hooks is not None:
            self.close_hooks.stream_closed(self, s)

    # ---------------------------------------------------------------- hooks

    def _hooked(self, d: int, unit: _Unit, hooks: List[HookEntry], verdict: Optional[bool] = None) -> None:
        """Run the hook chain on ``unit``, unless the entries' screens say none will act on it (``verdict``:
        what they said, when the caller asked them already; None: asked here)."""
        side = self.sides[d]
        if verdict is None:
            screens = getattr(hooks, "screens", None)
            if screens is not None:
                frames = unit.frames
                first = frames[0]
                s = unit.stream
                verdict = self._screened(d, screens, first.type,
                                         first.flags if len(frames) == 1 else first.flags | END_HEADERS,
                                         s.id if s is not None else first.stream_id, first.length, s,
                                         unit.headers, hooks)
        if verdict is False:
            # Every entry screened the raw frame and none will act on it: no object, no chain.
            first = unit.frames[0]
            if (first.type == HEADERS and self.sink is None and side.greeting is None
                    and not (d == S2C and self.push_map) and not (d == C2S and self.push_unmap)):
                out = self.out[d]
                if side.encoder is None:
                    for f in unit.frames:
                        out.append(f.wire)
                elif unit.headers is not None:
                    # A re-encoded direction's block, as in _decided_block.
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
        gen = hook_chain(self, d, unit, hooks)
        self._drive(d, gen, lambda result: self._finish_unit(d, unit, result), None, None)

    def _screened(self, d: int, screens: Tuple[Screen, ...], t: int, flags: int, sid: int, length: int,
                  s: Optional[Stream], headers: Optional[HeaderList], hooks: List[HookEntry]) -> bool:
        """Whether one of an entry list's screens says an entry may act on this frame or block (then the
        hook chain runs); False: none will, and it goes on as it came."""
        view = self.view
        for screen in screens:
            if screen(view, d, t, flags, sid, length, s, headers, hooks):
                return True
        return False

    def _drive(self, d: int, gen: HookGen, finish: Finish, value: Any, error: Optional[BaseException]) -> None:
        side = self.sides[d]
        try:
            if error is not None:
                awaitable = gen.throw(error)
            else:
                awaitable = gen.send(value)
        except StopIteration as stop:
            finish(stop.value)
            return
        side.paused = (gen, finish)
        self.commands.append(AwaitHook(d, awaitable))

    def _finish_unit(self, d: int, unit: _Unit, outcome: HookOutcome) -> None:
        side = self.sides[d]
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
                side.owed += ahead
                owe(s, d, ahead)
        for item in result:
            sent_fcl += self._send_item(d, item, origin, [a for a in actions if a["action"] != "passed"], unit)
        if t == DATA and s is not None:
            if ahead > 0:
                # Settled below from what was really sent (splitting a padded frame drops its padding).
                side.owed -= ahead
                assert s.owed is not None     # (made by _owe above)
                s.owed[d] -= ahead
            diff = first.length - sent_fcl
            if diff > 0 and not any(isinstance(item, RawBytes) for item in result):
                # (RawBytes in the result: repairs are off for this frame, no credit.)
                self._credit_sender(d, s, diff, bool(first.flags & END_STREAM))
            elif diff < 0:
                side.owed += -diff
                owe(s, d, -diff)
            if s.state == st.CLOSED:
                self._close_stream(s)

    def _send_item(self, d: int, item: HookItem, origin: Optional[int], actions: Optional[Actions],
                   unit: Optional[_Unit]) -> int:
        """Send one thing a hook produced towards the receiver of d; returns DATA bytes sent."""
        peer = self.sides[1 - d]
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
        max_size = peer.settings[Setting.MAX_FRAME_SIZE]
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
            wires = blocks.split_frame(item, max_size)
            for wire in wires:
                self._out(d, self._map_ids(d, wire), origin, actions)
            return 0
        self._out(d, self._map_ids(d, item.serialize()), origin, actions)
        return 0

    # -------------------------------------------------------- proxy actions

    def inject(self, d: int, item: HookItem, origin: Optional[int] = None, note: str = "injected") -> None:
        """Send a frame, a Headers block or RawBytes towards the receiver of d, with repairs."""
        side = self.sides[d]
        if self.closed:
            return
        acts = [{"hook": note, "action": "injected"}]
        if isinstance(item, fc.DataFrame):
            s = self.streams.get(item.stream_id)
            n = self._send_item(d, item, origin, acts, None)
            side.owed += n
            if s is not None:
                owe(s, d, n)
            return
        self._send_item(d, item, origin, acts, None)

    def reset_stream(self, sid: int, code: int, towards: str, note: str = "h2proxy") -> None:
        """Reset stream ``sid`` (client-leg id) towards one side or both, on a hook's behalf.

        Frames still in flight on it towards a side that was reset are then discarded quietly,
        with their flow-control credit returned (see :meth:`_discard_after_reset`); towards the
        other side the stream goes on. Towards a client with other streams open, the reset goes with
        the next frames towards it, a millisecond later at most (:meth:`_hold_reset`).
        """
        s = self.streams.get(sid)
        told = set()
        for side in sides_towards(towards):
            d = 1 - side    # towards the client = direction S2C
            wire_sid = s.server_id if (s is not None and side == SERVER) else sid
            if side == SERVER and s is not None and s.proxy_owned:
                continue
            wire = fc.RstStreamFrame(wire_sid, error_code=code).serialize()
            actions = [{"hook": note, "action": "injected"}]
            if side == CLIENT and self.server.greeting is None and len(self.streams) > (s is not None):
                self._hold_reset(d, wire, actions)     # (other streams are open: with their next frames)
            else:
                self._out(d, wire, None, actions)
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
        side = self.sides[d]
        mark = self.recently_closed.get(sid)
        if not isinstance(mark, ProxyReset):
            return None
        if (1 - d) not in mark.sides:
            return False
        t = f.type
        if t in (HEADERS, PUSH_PROMISE) and (not side.decoding or side.decoding_broken):
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
        for side in sides_towards(towards):
            d = 1 - side
            last = last_stream_id
            if last is None:
                last = self.client.last_stream if side == CLIENT else self.server.last_stream
            self._send_goaway(d, last, code, debug, note)

    def push(self, parent: Optional[Stream], path: str, headers: Iterable[Tuple[Any, Any]], body: bytes,
             status: int) -> Union[PushRefused, PushStarted]:
        """Push a resource to the client on ``parent``'s stream, as the server would."""
        if parent is None or parent.id % 2 == 0:
            return PushRefused("pushes need a client-initiated stream to be promised on")
        if parent.state not in (st.OPEN, st.HALF_CLOSED_LOCAL):
            return PushRefused(f"stream {parent.id} is {parent.state}; a push must be promised on an open stream")
        if self.client.settings[Setting.ENABLE_PUSH] == 0:
            return PushRefused("the client disabled push (SETTINGS_ENABLE_PUSH = 0)")
        active_pushes = sum(1 for s in self.streams.values() if s.id % 2 == 0 and s.state != st.CLOSED)
        limit = self.client.settings[Setting.MAX_CONCURRENT_STREAMS]
        if active_pushes >= limit:
            return PushRefused(f"the client allows {limit} concurrent pushed streams "
                               f"(SETTINGS_MAX_CONCURRENT_STREAMS) and {active_pushes} are open")
        if self.client.goaway is not None:
            return PushRefused("the client sent GOAWAY")
        promised = max(self.last_client_push_id, self.server.last_stream) + 2
        self.last_client_push_id = promised
        self.renumber_pushes = True
        req = parent.request_headers or []
        authority = messages.pseudo(req, ":authority") or "localhost"
        scheme = messages.pseudo(req, ":scheme") or "https"
        request = [(":method", "GET"), (":scheme", scheme), (":authority", authority), (":path", path)]
        s = Stream(promised, st.RESERVED_LOCAL, self.client.settings[Setting.INITIAL_WINDOW_SIZE],
                   self.server.settings[Setting.INITIAL_WINDOW_SIZE])
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

    def _finish(self, reason: str, close_sides: Tuple[int, ...] = (CLIENT, SERVER)) -> None:
        """The connection ends: nothing more is relayed, and the sockets of ``close_sides`` are to be
        closed (not that of a side that closed its own already: :meth:`eof`)."""
        if self.closed:
            return
        if self.rec is not None:
            self._rec_flush()
        self._release_held(C2S, True)
        self._release_held(S2C, True)
        self._release_resets(S2C)
        self.closed = True
        # Nothing more will be relayed: let go of what the connection held.
        self.recently_closed = RecentlyClosed()
        for each in self.sides:
            each.inbox = []
            each.held_streams.clear()
        for side in close_sides:
            self.commands.append(Close(side, reason))
        if self.sink is not None:
            self.sink.connection_closed(self.id, self.now, reason)
        if self.hooks is not None:
            self.hooks.connection_closed(self)

    def close_side(self, side: int, reason: str, abort: bool = False) -> None:
        """A hook closes the socket of ``side`` (after what the proxy held back for it)."""
        self._release_held(1 - side, True)
        self._release_resets(1 - side)
        self.commands.append(Close(side, reason, abort=abort))

    def close(self, reason: str) -> None:
        """The shell is done with this connection (both sockets gone)."""
        self._finish(reason)

    # ------------------------------------------------- what the shell takes (public boundary)

    def pending_output(self, d: int) -> bool:
        """Whether buffers wait to be written towards the receiver of direction ``d`` (:meth:`take_output`)."""
        return bool(self.out[d])

    def pending_control(self, d: int) -> int:
        """How many of the buffers waiting towards the receiver of ``d`` are not DATA frames: what the
        shell counts against ``max_queued_control_frames`` while that receiver reads nothing."""
        count = 0
        for buf in self.out[d]:       # (a buffer may hold a run of frames forwarded as they came)
            pos, end = 0, len(buf)
            if 0 < end < 9:
                count += 1
            while pos + 9 <= end:
                if buf[pos + 3] != DATA:
                    count += 1
                pos += 9 + (buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2])
        return count

    def pending_commands(self) -> bool:
        """Whether commands wait to be taken (:meth:`take_commands`)."""
        return bool(self.commands)

    def take_commands(self) -> Sequence[Command]:
        """The commands made since the last call, in order (and forget them); the shell carries them
        out after writing the output it took (a :class:`Close` closes a socket once written)."""
        commands = self.commands
        if not commands:
            return ()
        self.commands = []
        return commands

    def inbox_empty(self, side: int) -> bool:
        """Whether no frame read from ``side`` waits unprocessed (behind an awaited hook, or a server's
        frames before the client's preface): the shell may read that side again."""
        return not self.sides[side].inbox

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
        self._out(S2C, EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        self._limit(CLIENT, "preface_timeout", f"no connection preface within {seconds:.1f} s")

    def upstream_failed(self, why: str, now: float) -> None:
        """The upstream could not be reached (or spoke no HTTP/2): the client gets SETTINGS, then GOAWAY
        INTERNAL_ERROR saying why, and the connection ends."""
        if self.closed:
            return
        self.now = now
        self._out(S2C, EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        self._send_goaway(S2C, 0, ErrorCode.INTERNAL_ERROR, f"h2proxy: {why}")
        if self.sink is not None:
            self.sink.error(self.id, self.now, why)
        self._finish(why)
