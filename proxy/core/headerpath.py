"""Header blocks through the relay: HEADERS and PUSH_PROMISE with their CONTINUATIONs.

A block is decoded where some hook or check needs it, or to keep the receiver's HPACK table in
step; checked (RFC 9113 section 8, stream states, push rules); handed to the hooks that want it
on its stream, or forwarded as it came; re-encoded in a direction whose table the proxy no
longer mirrors. The fast cases come first: a request opening a stream (:meth:`_open_decoded`),
a later block of a decoded direction (:meth:`_decoded_block`), a block decoded only to keep the
table in step (:meth:`_synced_block`); the rest take :meth:`_header_block`. What is done to a
block as bytes (fragments, splitting, encoding) is in :mod:`.blocks`.

A mixin of :class:`~proxy.core.relay.Relay`, like :mod:`.output`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from framecodec import frame as fc
from framecodec.hpack import Decoder as HpackDecoder
from framecodec.hpack import Encoder as HpackEncoder
from framecodec.hpack import HpackDecodingError, OversizedHeaderListError
from framecodec.reader import Chunk, RawFrame, Wire

from ..hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, HeaderList, Headers
from . import blocks, checks, messages
from . import streams as st
from .hookrun import UNCHANGED, ConnView, HookItem, HookResult
from .interfaces import Actions, Counters, HookEntry, HookRunner, HookTable, Screen, StreamTables
from .limits import Limits
from .output import SIDE_NAME
from .protocol import (
    END_STREAM,
    HEADERS,
    PUSH_PROMISE,
    ErrorCode,
    Setting,
)
from .side import Side
from .streams import HEADERS_NEXT, SENDER, ProxyReset, RecentlyClosed, Stream
from .unit import _Unit

if TYPE_CHECKING:
    from ..recording.sink import FrameSink

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1
CLIENT, SERVER = 0, 1
#: Directions whose "re-encoded from now on" line was logged at info level (once per process).
_REENCODING_LOGGED: Set[int] = set()
DIRECTION_NAME = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)
#: How many request blocks each side remembers the stream tables of (Side.opened_by).
_OPENED_BY = 256
_MAX_CONCURRENT = int(Setting.MAX_CONCURRENT_STREAMS)
_MAX_FRAME = int(Setting.MAX_FRAME_SIZE)
_CLOSED = st.CLOSED
_INITIAL_WINDOW = int(Setting.INITIAL_WINDOW_SIZE)
_OPEN = st.OPEN
_HALF_CLOSED_LOCAL = st.HALF_CLOSED_LOCAL
#: ``predecoded`` default of :meth:`HeaderBlocks._header_block`: the block was not decoded yet.
_UNDECODED = object()
#: What :meth:`HeaderBlocks._open_decoded` returns for a request forwarded as it came within the walk's run.
IN_RUN = object()


def _note_block(s: Stream, d: int, headers: HeaderList) -> None:
    """A later block of stream ``s`` in direction ``d``: its response (or an informational one), or trailers."""
    if d == C2S:
        s.trailers = headers
    elif s.response_headers is None or messages.is_informational(s.response_headers):
        s.response_headers = headers
    else:
        s.trailers = headers


class HeaderBlocks:
    """The relay's handling of header blocks (a mixin of Relay)."""

    id: int
    closed: bool
    strict: bool
    check_all: bool
    limits: Limits
    sides: Tuple[Side, Side]
    client: Side
    server: Side
    streams: Dict[int, Stream]
    recently_closed: RecentlyClosed
    client_streams_open: int
    client_streams_total: int
    last_client_push_id: int
    renumber_pushes: bool
    push_map: Dict[int, int]
    push_unmap: Dict[int, int]
    hooks: Optional[HookRunner]
    open_hooks: Optional[HookRunner]
    hook_table: List[HookTable]
    untracked_table: List[HookTable]
    view: ConnView
    out: List[List[Wire]]
    sink: Optional[FrameSink]
    counters: Counters

    if TYPE_CHECKING:
        def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None: ...

        def _map_ids(self, d: int, wire: Wire) -> Wire: ...

        def _record_block_in(self, d: int, unit: _Unit, actions: Optional[Actions]) -> List[Optional[int]]: ...

        def _problems(self, d: int, problems: List[messages.Problem], sid: Optional[int]) -> bool: ...

        def _violation(self, d: int, section: str, code: int, connection: bool, message: str,
                       sid: Optional[int] = None, forwarded: Optional[bool] = None) -> bool: ...

        def _limit(self, d: int, name: str, detail: str) -> None: ...

        def _log_error(self, message: str) -> None: ...

        def _update_fast_path(self) -> None: ...

        def _tables_of(self, s: Stream) -> Optional[StreamTables]: ...

        def _closed_stream_frame(self, d: int, f: RawFrame, sid: int) -> bool: ...

        def _close_stream(self, s: Stream) -> None: ...

        def _hooked(self, d: int, unit: _Unit, hooks: List[HookEntry], verdict: Optional[bool] = None) -> None: ...

        def _screened(self, d: int, screens: Tuple[Screen, ...], t: int, flags: int, sid: int, length: int,
                      s: Optional[Stream], headers: Optional[HeaderList], hooks: List[HookEntry]) -> bool: ...

        def _send_item(self, d: int, item: HookItem, origin: Optional[int], actions: Optional[Actions],
                       unit: Optional[_Unit]) -> int: ...

    def _open_decoded(self, flags: int, sid: int, length: int, view: memoryview, start: int, pos: int,
                      end: int) -> object:
        """A one-frame HEADERS block with neither padding nor priority that opens client stream ``sid``
        (``view[pos:end]``), in a decoded client-to-server direction, when the proxy may open the stream at
        once. Decoded (or known: ``Side.opened_by``), checked where a hook is handed it, then handed to the
        hooks that want it, or forwarded (re-encoded when the direction is). This runs once per request
        whenever some hook could want requests: what it does is paid by every stream, wanted or not.

        ``view[start:pos]`` is the walk's run of frames forwarded as they came, not handed on yet. Returns
        ``IN_RUN`` when the block is forwarded as it came with nothing else sent (the walk extends its
        run: one buffer for a batch of requests, as with no hooks); True when it was dealt with, the run
        handed on before anything was sent; False, with nothing done, when the block must take the
        general path instead.
        """
        client = self.client
        if not (sid & 1 and sid > client.last_stream
                and self.client_streams_open < client.peer.settings[_MAX_CONCURRENT]
                and len(self.streams) < self.limits.max_streams):
            return False          # (not a new client stream the proxy may open at once: the general path)
        decoder = client.decoder
        if client.decoding_broken or decoder is None:
            return False
        version = decoder.table_version
        block: Chunk = view[pos + 9:end]
        end_stream = flags & END_STREAM
        s = Stream(sid, _HALF_CLOSED_LOCAL if end_stream else _OPEN,
                   client.settings[_INITIAL_WINDOW], client.peer.settings[_INITIAL_WINDOW])
        s.ordinal = self.client_streams_total + 1
        # The same block opening a stream again (same table, limits and rules) decodes the same, is
        # wanted by the same hooks and checks the same: all three are remembered (_remember_opened).
        try:
            seen = client.opened_by.get(block)      # (a view of the read hashes as its bytes: no copy)
        except (TypeError, ValueError):             # (a view of a writable buffer does not hash)
            block = bytes(block)
            seen = client.opened_by.get(block)
        if seen is not None and seen[0] == version and seen[2] == decoder.max_header_list_size \
                and self.hooks is not None and seen[1] == self.hooks.request_tables:
            headers = s.request_headers = list(seen[3])
            h = s.hooks = seen[4]
            verdicts = seen[5]
        else:
            try:
                headers = s.request_headers = decoder.decode(block)
            except Exception as exc:
                self._run_out(C2S, view, start, pos)
                self._undecodable(C2S, flags, sid, length, view[pos:end], exc)
                return True
            # (The stream's hooks are decided on the stream not registered yet.)
            h = s.hooks = self._tables_of(s)
            verdicts = self._remember_opened(client, decoder, block, version, headers, h)
        hooks = h[C2S].get(HEADERS) if h is not None else None
        if self.check_all or hooks is not None:
            # The RFC 9113 section 8 checks run on the blocks hooks see, and on every block with decode_headers.
            ok = verdicts[end_stream] if verdicts is not None else None
            if ok is None:
                ok = messages.check_block(None, C2S, headers, bool(end_stream), "request", False) is None
                if verdicts is not None:
                    verdicts[end_stream] = ok
            if not ok:
                self._run_out(C2S, view, start, pos)
                # (Reports it.)
                self._header_block(C2S, [RawFrame(HEADERS, flags, sid, length, view[pos:end])], headers)
                return True
        client.last_stream = sid
        self.streams[sid] = s
        self.client_streams_open += 1
        self.client_streams_total += 1
        self.counters["streams"] += 1
        open_hooks = self.open_hooks
        ran_out = open_hooks is not None
        if open_hooks is not None:
            self._run_out(C2S, view, start, pos)
            open_hooks.stream_opened(self, s)  # type: ignore[arg-type]  # (self is the Relay this mixes into)
        # None: the general block path (_decided_block) decides; True: forwarded as it came; False: screened
        # in, for the hook chain.
        as_it_came: Optional[bool] = None
        if client.greeting is None and client.encoder is None:
            if hooks is None:
                as_it_came = True
            else:
                # Entries that screen the raw block (a fault hook's rules): asked here, as _decided_block
                # would (the request of every stream such rules want comes this way).
                screens = getattr(hooks, "screens", None)
                if screens is not None and getattr(hooks, "rewrite", None) is None and self.sink is None \
                        and not self.push_unmap:
                    as_it_came = not (
                        screens[0](self.view, C2S, HEADERS, flags, sid, length, s, headers, hooks) if len(screens) == 1
                        else self._screened(C2S, screens, HEADERS, flags, sid, length, s, headers, hooks))
        if as_it_came:
            if not ran_out:
                return IN_RUN
            self.out[C2S].append(view[pos:end])
            return True
        if not ran_out:
            self._run_out(C2S, view, start, pos)
        if as_it_came is None:
            return self._decided_block(C2S, s, None, flags, sid, length, view[pos:end], headers, version, hooks)
        return self._block_unit(C2S, s, flags, sid, length, view[pos:end], headers, version, hooks, True)

    def _run_out(self, d: int, view: memoryview, start: int, pos: int) -> None:
        """The walk's run of frames of direction d forwarded as they came (``view[start:pos]``) goes out,
        before anything a frame behind it makes the relay send."""
        if pos > start:
            self.out[d].append(view[start:pos])

    def _decoded_block(self, d: int, s: Stream, flags: int, sid: int, length: int, wire: Wire) -> bool:
        """A one-frame HEADERS block with neither padding nor priority on stream ``s``, in a direction
        whose blocks are decoded (a response, trailers). Decoded, checked where a hook is handed it, then
        handed to the hooks that want it on this stream, or forwarded (re-encoded when the direction is).

        False, with nothing done, when the block must take the general path instead.
        """
        side = self.sides[d]
        end = flags & END_STREAM
        new = HEADERS_NEXT[d][end].get(s.state)
        if new is None:
            return False
        decoder = side.decoder
        if side.decoding_broken or decoder is None:
            return False
        version = decoder.table_version
        try:
            headers = decoder.decode(wire[9:])
        except Exception as exc:
            self._undecodable(d, flags, sid, length, wire, exc)
            return True
        s.state = new
        h = s.hooks
        hooks = h[d].get(HEADERS) if h is not None else None
        if self.check_all or hooks is not None:
            bad = messages.check_block(s, d, headers, bool(end), "next", False)
            if bad is not None:
                self._violation(d, *bad, sid=sid)
        _note_block(s, d, headers)
        return self._decided_block(d, s, new, flags, sid, length, wire, headers, version, hooks)

    def _decided_block(self, d: int, s: Stream, new: Optional[str], flags: int, sid: int, length: int, wire: Wire,
                       headers: HeaderList, version: int, hooks: Optional[List[HookEntry]]) -> bool:
        """A decoded one-frame block on its stream (``new``: the state it moved the stream to, None when it
        opened it), to the hooks that want it or on: a hook that only rewrites header lists is called
        directly, the entries' screens are asked on the raw block, and only when something may act on
        it is a unit made for the hook chain."""
        side = self.sides[d]
        end = flags & END_STREAM
        verdict: Optional[bool] = None
        if side.greeting is None:
            changed: Optional[HeaderList] = None
            done = hooks is None
            if hooks is not None:
                # One hook that only rewrites header lists (HookChain's RewriteEntries): called directly.
                rewrite = getattr(hooks, "rewrite", None)
                if rewrite is not None:
                    try:
                        changed = rewrite(DIRECTION_NAME[d], headers, s.request_headers)
                        done = True
                    except Exception:
                        pass                   # (it runs again in the chain, which reports what it raises)
                else:
                    screens = getattr(hooks, "screens", None)
                    if screens is not None:
                        # Screened on the raw block and its headers: nothing will act on it (the usual
                        # outcome of rules that act on some streams, or every Nth): forwarded here.
                        verdict = self._screened(d, screens, HEADERS, flags, sid, length, s, headers, hooks)
                        done = not verdict and self.sink is None and not (d == S2C and self.push_map) \
                            and not (d == C2S and self.push_unmap)
            if done:
                if changed is None and side.encoder is None:
                    self.out[d].append(wire)
                else:
                    # Changed, or this direction is re-encoded (a block was dropped or changed before):
                    # the proxy's encoder.
                    out = self.out[d]
                    for w in self._encode_block(d, Headers(sid, headers if changed is None else changed, bool(end))):
                        out.append(w)
                if new is _CLOSED:
                    self._close_stream(s)
                return True
        return self._block_unit(d, s, flags, sid, length, wire, headers, version, hooks, verdict)

    def _block_unit(self, d: int, s: Stream, flags: int, sid: int, length: int, wire: Wire, headers: HeaderList,
                    version: int, hooks: Optional[List[HookEntry]], verdict: Optional[bool]) -> bool:
        """A decoded one-frame block made a unit, for the hook chain (``verdict``: what the entries' screens
        said, None when not asked) or, with no hooks, to be forwarded (re-encoded where the direction is)."""
        side = self.sides[d]
        unit = _Unit(d, [RawFrame(HEADERS, flags, sid, length, wire)], s)
        unit.headers = headers
        unit.neutral = side.decoder is not None and side.decoder.table_version == version
        if hooks is None:
            self._forward_block(d, unit, UNCHANGED)
        else:
            self._hooked(d, unit, hooks, verdict)
        return True

    def _remember_opened(self, side: Side, decoder: HpackDecoder, block: Chunk, version: int, headers: HeaderList,
                         tables: Optional[StreamTables]) -> Optional[List[Optional[bool]]]:
        """Note what ``block`` opened a stream with, when the hooks' interest depends on the request
        alone and the block left the table as it was (sent again, it decodes the same). Returns the
        entry's place for the section 8 verdicts (per END_STREAM flag), or None when not remembered."""
        rules = self.hooks.request_tables if self.hooks is not None else None
        if rules is not None and decoder.table_version == version:
            opened = side.opened_by
            if len(opened) >= _OPENED_BY:
                opened.clear()
            verdicts: List[Optional[bool]] = [None, None]
            opened[bytes(block)] = (version, rules, decoder.max_header_list_size, tuple(headers), tables, verdicts)
            return verdicts
        return None

    def _synced_block(self, d: int, s: Stream, flags: int, sid: int, length: int, view: memoryview, start: int,
                      pos: int, end: int) -> bool:
        """A one-frame block no hook wants on stream ``s`` (``view[pos:end]``), in a ``fast_synced``
        direction: decoded (the table kept in step, the stream's headers noted), and True: the walk
        forwards it in its run (``view[start:pos]``, not handed on yet). False when it did not decode:
        then the run went out, and the block was dealt with."""
        decoder = self.sides[d].decoder
        assert decoder is not None     # (fast_synced: decoding)
        try:
            headers = decoder.decode(view[pos + 9:end])
        except Exception as exc:
            self._run_out(d, view, start, pos)
            self._undecodable(d, flags, sid, length, view[pos:end], exc)
            return False
        _note_block(s, d, headers)
        return True

    def _undecodable(self, d: int, flags: int, sid: int, length: int, wire: Wire, exc: Exception) -> None:
        """A one-frame HEADERS block that did not decode: reported, then the general path with what there is."""
        f = RawFrame(HEADERS, flags, sid, length, wire)
        self._decode_failed(d, [f], exc)
        if not self.closed:
            self._header_block(d, [f], None)

    def _header_block(self, d: int, frames: List[RawFrame], predecoded: Any = _UNDECODED) -> None:
        side = self.sides[d]
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
        elif side.decoding and not side.decoding_broken and not malformed:
            version = side.decoder.table_version if side.decoder is not None else -1
            unit.headers = self._decode(d, frames)
            unit.neutral = unit.headers is not None and side.decoder is not None \
                and side.decoder.table_version == version
            if self.closed:
                return
        if bad is not None and self._violation(d, *bad, sid=sid):
            self._block_dropped(d, unit)
            return
        if t == HEADERS:
            if self._check_headers(d, unit, sid):
                self._block_dropped(d, unit)
                return
        else:
            if self._check_push_promise(d, unit, sid):
                self._block_dropped(d, unit)
                return
        s = unit.stream
        if s is None:
            hooks = (self.hook_table if sid == 0 else self.untracked_table)[d].get(t)
        else:
            hooks = s.hooks[d].get(t) if s.hooks is not None else None
        if hooks is None:
            if self.sink is None and side.encoder is None and not (d == S2C and self.push_map):
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
            return self._violation(d, *checks.on_stream_zero(HEADERS))
        s = self.streams.get(sid)
        if s is None:
            client = self.client
            if d == C2S and sid > client.last_stream:
                if self._problems(d, checks.client_stream(sid, self.client_streams_open,
                                                          client.peer.settings[_MAX_CONCURRENT]), sid):
                    return True
                if len(self.streams) >= self.limits.max_streams:
                    self._limit(d, "max_streams", f"{len(self.streams)} streams tracked")
                    return True
                if unit.headers is not None:
                    bad = messages.check_block(None, d, unit.headers, bool(end), "request", self.strict)
                    if bad is not None and self._violation(d, *bad, sid=sid):
                        client.last_stream = sid
                        self._refused(sid)
                        return True
                client.last_stream = sid
                s = Stream(sid, st.HALF_CLOSED_LOCAL if end else st.OPEN, client.settings[_INITIAL_WINDOW],
                           client.peer.settings[_INITIAL_WINDOW])
                self.streams[sid] = s
                self.client_streams_open += 1
                self.client_streams_total += 1
                s.ordinal = self.client_streams_total
                self.counters["streams"] += 1
                s.request_headers = unit.headers
                s.hooks = self._tables_of(s)
                unit.stream = s
                if self.open_hooks is not None:
                    self.open_hooks.stream_opened(self, s)  # type: ignore[arg-type]  # (self: the Relay)
                return False
            if d == C2S and sid not in self.recently_closed:
                return self._violation(d, *checks.stream_not_above(sid, client.last_stream))
            return self._closed_stream_frame(d, unit.frames[0], sid)
        unit.stream = s
        new = st.TRANSITIONS.get((s.state, SENDER[d], st.HEADERS_END if end else st.HEADERS))
        if new is None:
            return self._violation(d, *checks.transition(s.state, SENDER[d], "HEADERS", sid), sid=sid)
        s.state = new
        if unit.headers is not None:
            bad = messages.check_block(s, d, unit.headers, bool(end), "next", self.strict)
            if bad is not None and self._violation(d, *bad, sid=sid):
                return True
            if d == C2S:
                s.trailers = unit.headers
            elif s.response_headers is None or messages.is_informational(s.response_headers):
                s.response_headers = unit.headers
            else:
                s.trailers = unit.headers
        return False

    def _check_push_promise(self, d: int, unit: _Unit, sid: int) -> bool:
        """State and rules for a PUSH_PROMISE block; True when the block is dropped. Registers the
        promised stream (renumbered when the proxy pushes on this connection too)."""
        first = unit.frames[0]
        if d == C2S:
            return self._violation(d, *checks.client_push_promise())
        parent = self.streams.get(sid)
        client = self.client
        closer = self.recently_closed.get(sid) if parent is None and sid else None
        if isinstance(closer, ProxyReset) and CLIENT in closer.sides and unit.headers is not None:
            return self._promise_after_reset(unit)
        if self._problems(d, checks.push_promise_parent(
                sid, parent.state if parent is not None else None, closer == CLIENT,
                client.settings[Setting.ENABLE_PUSH] != 0), None):
            return True
        bad = checks.promised_room(first)
        if bad is not None:
            return self._violation(d, *bad)
        promised = blocks.promised_id(first)
        if sid in self.push_map:
            sid = self.push_map[sid]
        server = self.server
        bad = checks.promised_stream(promised, server.last_stream)
        if bad is not None and self._violation(d, *bad):
            return True
        server.last_stream = max(server.last_stream, promised)
        if unit.headers is not None:
            bad = messages.push_problem(unit.headers)
            if bad is not None and self._violation(d, *bad, sid=promised):
                self._refused(promised)
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
        unit.stream = self.streams.get(sid)
        s = Stream(client_id, st.RESERVED_REMOTE, client.settings[_INITIAL_WINDOW], server.settings[_INITIAL_WINDOW])
        s.server_id = promised
        s.request_headers = unit.headers
        s.hooks = self._tables_of(s)
        self.streams[client_id] = s
        self.counters["streams"] += 1
        return False

    def _refused(self, sid: int) -> None:
        """Strict mode refused stream ``sid`` (a malformed request or push) before the other side saw it:
        later frames on it are dropped instead of reaching a peer that never heard of the stream."""
        self.recently_closed[sid] = "refused"     # (remembers a bounded number of streams itself)

    def _block_dropped(self, d: int, unit: _Unit) -> None:
        """A header block was decoded but not forwarded (strict mode refused its stream).

        The sender's HPACK encoder went on as if the receiver had it, so the receiver's
        dynamic table no longer follows: from now on the proxy re-encodes this direction's
        blocks (the first one empties the receiver's table).
        """
        if self.closed or self.sides[d].encoder is not None or unit.headers is None or unit.neutral:
            return       # (a block that changed no HPACK table leaves the receiver in step when dropped)
        self._start_reencoding(d)

    def _promise_after_reset(self, unit: _Unit) -> bool:
        """A PUSH_PROMISE in flight on a stream the proxy had reset towards the client (RFC 9113 6.6).

        The server did nothing wrong, and the client must not see a promise on a stream it was told
        was reset: the promise is dropped (its decoded block: later blocks are re-encoded), the
        promised stream is cancelled towards the server, and what the server still sends on it is
        discarded like any frame in flight on a stream the proxy reset. Returns True (dropped).
        """
        promised = blocks.promised_id(unit.frames[0])
        self.server.last_stream = max(self.server.last_stream, promised)
        self._out(C2S, fc.RstStreamFrame(promised, error_code=ErrorCode.CANCEL).serialize(), None,
                  [{"hook": "h2proxy", "action": "injected"}])
        self.recently_closed[promised] = ProxyReset((CLIENT, SERVER))
        log.debug("c%d: PUSH_PROMISE of stream %d on stream %d, which the proxy reset towards the client: "
                  "dropped, the promised stream cancelled", self.id, promised, unit.frames[0].stream_id)
        return True

    def _forward_block(self, d: int, unit: _Unit, result: HookResult, actions: Optional[Actions] = None) -> None:
        """Send a header block on: unchanged (byte for byte, unless re-encoding), or as changed."""
        side = self.sides[d]
        frames = unit.frames
        if result is UNCHANGED and (side.encoder is None or unit.headers is None):
            if side.encoder is not None and (side.decoding_broken or not side.decoding):
                # (A malformed frame has its violation logged already.)
                self._log_error(f"cannot re-encode the header block on stream {frames[0].stream_id}: the "
                                f"{SIDE_NAME[d]}'s header blocks are not decoded "
                                f"({'COMPRESSION_ERROR earlier' if side.decoding else 'decoding is off'}); "
                                "forwarded as received")
            seqs = self._record_block_in(d, unit, actions)
            mapping = d == S2C and self.push_map
            for i, f in enumerate(frames):
                w = f.wire
                if mapping:
                    w = self._map_ids(d, w)
                    if i == 0 and f.type == PUSH_PROMISE:
                        w = blocks.map_promised(w, f.flags, self.push_map)
                self._out(d, w, seqs[i], None)
            self._after_block(unit)
            return
        seqs = self._record_block_in(d, unit, actions)
        origin = seqs[0]
        acts: Optional[Actions]
        if result is UNCHANGED:
            promised = None
            if frames[0].type == PUSH_PROMISE:
                promised = blocks.promised_id(frames[0])
                promised = self.push_map.get(promised, promised)
            assert unit.headers is not None     # (blocks not decoded were forwarded as received above)
            result = [Headers(frames[0].stream_id, unit.headers, bool(frames[0].flags & END_STREAM), promised)]
            acts = [{"hook": "h2proxy", "action": "reencoded"}]
        else:
            acts = actions
        for item in result:
            self._send_item(d, item, origin, acts, unit)
        if side.encoder is None and unit.headers is not None and not blocks.block_intact(frames, result) \
                and not (unit.neutral and blocks.neutral_kept(frames, result)):
            # The receiver did not get the sender's block as it was (dropped, duplicated, replaced):
            # its HPACK table no longer follows the sender's, so later blocks are re-encoded. (Not when
            # the block changed no table and was only dropped or repeated as it was.)
            self._start_reencoding(d)
        self._after_block(unit)

    def _after_block(self, unit: _Unit) -> None:
        s = unit.stream
        if s is not None and s.state == st.CLOSED and unit.frames[0].type == HEADERS:
            self._close_stream(s)

    def _decode(self, d: int, frames: List[RawFrame], block: Optional[Chunk] = None) -> Optional[HeaderList]:
        """The decoded header list of a block (``block``: its bytes when known), or None when it does not
        decode (reported; the direction's later blocks are not decoded) or is over a limit (connection closed)."""
        side = self.sides[d]
        decoder = side.decoder
        assert decoder is not None     # (called only when decoding)
        try:
            if block is None:
                block = blocks.joined(frames)
            return decoder.decode(block)      # never-indexed fields stay marked (NeverIndexed)
        except (HpackDecodingError, ValueError) as exc:   # (ValueError: padding that leaves no fragment)
            self._decode_failed(d, frames, exc)
            return None

    def _decode_failed(self, d: int, frames: List[RawFrame], exc: Exception) -> None:
        """A block over the header list limit (the connection closes), or one that does not decode."""
        side = self.sides[d]
        if isinstance(exc, OversizedHeaderListError):
            self._limit(d, "max_header_list_size", str(exc))
            return
        if not isinstance(exc, (HpackDecodingError, ValueError)):
            raise exc
        side.decoding_broken = True
        self._update_fast_path()
        self._violation(d, *checks.undecodable(frames[0].stream_id, exc), forwarded=not self.strict)

    def _start_reencoding(self, d: int) -> HpackEncoder:
        side = self.sides[d]
        peer = side.peer
        enc = side.encoder = blocks.new_encoder(peer.settings[Setting.HEADER_TABLE_SIZE])
        self._update_fast_path()
        # Once per process and direction at info: the same line for every connection tells nothing new.
        log.log(logging.DEBUG if d in _REENCODING_LOGGED else logging.INFO,
                "c%d: %s header blocks are re-encoded by the proxy from now on%s", self.id, DIRECTION_NAME[d],
                "" if d in _REENCODING_LOGGED else " (said once; other connections follow at debug level)")
        _REENCODING_LOGGED.add(d)
        return enc

    def _encode_block(self, d: int, item: Headers) -> List[bytes]:
        """HPACK-encode with the proxy's own encoder for direction d and split to the receiver's frame size."""
        side = self.sides[d]
        peer = side.peer
        enc = side.encoder
        if enc is None:
            enc = self._start_reencoding(d)
        return blocks.encode(enc, side.decoder, item, peer.settings[_MAX_FRAME])

