"""Control frames: SETTINGS (and their acknowledgement), WINDOW_UPDATE, PING, PRIORITY, RST_STREAM, GOAWAY.

Each frame of these types goes through :meth:`ControlFrames._control`: the RFC 9113 checks and the
flood limits for its type, then what it changes in the passive state (a side's settings and
HPACK table sizes, the windows, a stream's end, a GOAWAY's last stream id), then on to the hooks
that ask for it or straight to the other side as the very bytes that arrived. The proxy's own
repairs happen here too: WINDOW_UPDATEs shrunk or consumed by what the proxy owes
(:mod:`.flow`), and the client's frames about streams the proxy pushed itself, which never
reach the server.

A mixin of :class:`~proxy.core.relay.Relay`, like :mod:`.output`.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from framecodec import frame as fc
from framecodec.reader import RawFrame, Wire

from ..hooks.api import HeaderList
from . import checks, messages
from . import streams as st
from .interfaces import Actions, Counters, HookEntry, HookTable
from .limits import Limits
from .protocol import (
    ACK,
    ALTSVC,
    CONTINUATION,
    GOAWAY,
    PING,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Setting,
)
from .side import Side
from .unit import _Unit

if TYPE_CHECKING:
    from .streams import RecentlyClosed, Stream

C2S, S2C = 0, 1
CLIENT, SERVER = 0, 1
_u32 = struct.Struct(">L")
_settings_entry = struct.Struct(">HL")
_goaway_head = struct.Struct(">LL")


class ControlFrames:
    """The relay's handling of control frames (a mixin of Relay)."""

    now: float
    strict: bool
    limits: Limits
    sides: Tuple[Side, Side]
    client: Side
    server: Side
    streams: Dict[int, Stream]
    recently_closed: RecentlyClosed
    last_client_push_id: int
    proxy_ids: Set[int]
    hook_table: List[HookTable]
    untracked_table: List[HookTable]
    push_map: Dict[int, int]
    push_unmap: Dict[int, int]
    counters: Counters
    decode_if_push: Tuple[bool, bool]

    if TYPE_CHECKING:
        def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None: ...

        def _record_in(self, d: int, f: RawFrame, actions: Optional[Actions] = None,
                       headers: Optional[HeaderList] = None) -> Optional[int]: ...

        def _map_ids(self, d: int, wire: Wire) -> Wire: ...

        def _flush_held(self, d: int) -> None: ...

        def _hooked(self, d: int, unit: _Unit, hooks: List[HookEntry]) -> None: ...

        def _close_stream(self, s: Stream) -> None: ...

        def _discard_after_reset(self, d: int, f: RawFrame, sid: int) -> Optional[bool]: ...

        def _problems(self, d: int, problems: List[messages.Problem], sid: Optional[int]) -> bool: ...

        def _violation(self, d: int, section: str, code: int, connection: bool, message: str,
                       sid: Optional[int] = None, forwarded: Optional[bool] = None) -> bool: ...

        def _limit(self, d: int, name: str, detail: str) -> None: ...

        def _no_push_decoding(self) -> None: ...

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
            if self._violation(d, *checks.continuation_alone(sid)):
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
        side = self.sides[d]
        if self._problems(d, checks.ping(f), f.stream_id):
            return True
        if side.control_rate.hit(self.now):
            self._limit(d, "max_control_frames_per_second", "PING flood")
            return True
        return False

    def _priority(self, d: int, f: RawFrame) -> bool:
        """The checks and the churn limit for a PRIORITY; True when the frame is dropped (or consumed)."""
        side = self.sides[d]
        sid = f.stream_id
        if side.control_rate.hit(self.now):
            # (Before the checks: a PRIORITY that is a stream error counts too.)
            self._limit(d, "max_control_frames_per_second", "PRIORITY churn")
            return True
        if self._problems(d, checks.priority(f), sid):
            return True
        if d == C2S and sid in self.streams and self.streams[sid].proxy_owned:
            self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
            return True
        return False

    def _goaway_frame(self, d: int, f: RawFrame) -> bool:
        """The checks for a GOAWAY, and what it says (``goaway_from``); True when the frame is dropped."""
        side = self.sides[d]
        if self._problems(d, checks.goaway(f), f.stream_id):
            return True
        if f.length >= 8:
            last, code = _goaway_head.unpack_from(f.payload)
            side.goaway = (last & 0x7FFFFFFF, code)
        return False

    def _proxy_stream_frame(self, f: RawFrame) -> None:
        """The client's WINDOW_UPDATE, RST_STREAM or PRIORITY on a stream the proxy pushed: handled here."""
        s = self.streams.get(f.stream_id)
        if s is not None:
            if f.type == WINDOW_UPDATE and f.length == 4:
                s.window[S2C] += _u32.unpack_from(f.payload)[0] & 0x7FFFFFFF
                if self.server.held_streams:
                    self._flush_held(S2C)
            elif f.type == RST_STREAM:
                s.state = st.CLOSED
                s.reset_by = C2S
                s.push_body = None
                if s.held is not None:
                    s.held[S2C].clear()
                self.server.held_streams.pop(s.id, None)
                self._close_stream(s)
        self._record_in(C2S, f, [{"hook": "h2proxy", "action": "consumed"}])

    def _settings(self, d: int, f: RawFrame) -> bool:
        side = self.sides[d]
        peer = side.peer
        bad = checks.settings_stream(f)
        if bad is not None and self._violation(d, *bad):
            return True
        if f.flags & ACK:
            return self._settings_ack(d, f)
        bad = checks.settings_length(f)
        if bad is not None:
            return self._violation(d, *bad)
        if f.length // 6 > self.limits.max_settings_entries:
            self._limit(d, "max_settings_entries", f"SETTINGS with {f.length // 6} entries")
            return True
        if side.control_rate.hit(self.now):
            self._limit(d, "max_control_frames_per_second", "SETTINGS flood")
            return True
        mine = side.settings
        receiving = 1 - d        # the direction in which this side receives
        table_size = None
        for ident, value in _settings_entry.iter_unpack(f.payload):
            bad = checks.setting(ident, value, d == SERVER)
            if bad is not None:
                if self._violation(d, *bad):
                    return True
                if ident != Setting.ENABLE_PUSH:
                    continue          # (a window or frame size out of range is not applied)
            if ident == Setting.INITIAL_WINDOW_SIZE:
                delta = value - mine[Setting.INITIAL_WINDOW_SIZE]
                if delta:
                    for s in self.streams.values():
                        s.window[receiving] += delta
            elif ident == Setting.HEADER_TABLE_SIZE:
                table_size = value
                dec = peer.decoder
                if dec is not None:
                    # A larger table is allowed at once; a smaller one binds the other side's encoder only
                    # once it acknowledged these SETTINGS (see the ACK above): blocks it sent before
                    # may still use the old size.
                    dec.max_allowed_table_size = max(dec.max_allowed_table_size, value)
                enc = peer.encoder
                if enc is not None:
                    # RFC 7541 §4.2: the next block re-encoded for this side starts with a size update.
                    enc.header_table_size = min(4096, value)
            mine[ident] = value
        if self.strict:
            peer.reader.max_frame_size = min(self.limits.max_frame_size, mine[Setting.MAX_FRAME_SIZE])
        if d == CLIENT and not side.settings_seen and mine[Setting.ENABLE_PUSH] == 0 and any(self.decode_if_push):
            self._no_push_decoding()
        side.settings_seen = True
        side.unacked_settings += 1
        if len(side.table_sizes_due) < 64:
            side.table_sizes_due.append(table_size)
        if len(side.settings_sent_at) < 64:
            side.settings_sent_at.append(self.now)
        if peer.held_streams:
            self._flush_held(receiving)
        return False

    def _settings_ack(self, d: int, f: RawFrame) -> bool:
        """Side d acknowledged the other side's SETTINGS; True when the frame is dropped."""
        side = self.sides[d]
        peer = side.peer
        bad = checks.settings_length(f)
        if bad is not None and self._violation(d, *bad):
            return True
        if peer.unacked_settings:
            peer.unacked_settings -= 1
        pending = peer.table_sizes_due
        if pending:
            size = pending.pop(0)
            if size is not None and side.decoder is not None:
                # From now on side d's encoder is held to the size (RFC 7541 4.2: the update
                # follows the SETTINGS acknowledgement); a larger one still unacknowledged stays allowed.
                later = [v for v in pending if v is not None]
                side.decoder.max_allowed_table_size = max([size] + later)
        if peer.settings_sent_at:
            peer.settings_sent_at.pop(0)
        if side.control_rate.hit(self.now):
            self._limit(d, "max_control_frames_per_second", "SETTINGS flood")
            return True
        return False

    def _window_update(self, d: int, f: RawFrame) -> bool:
        side = self.sides[d]
        peer = side.peer
        sid = f.stream_id
        bad = checks.window_update_length(f)
        if bad is not None:
            return self._violation(d, *bad)
        inc = _u32.unpack_from(f.payload)[0] & 0x7FFFFFFF
        if inc < 1024 and side.control_rate.hit(self.now):
            # (Only small increments count, 0 too: big ones are what a receiver reading DATA sends.)
            self._limit(d, "max_control_frames_per_second", "WINDOW_UPDATE churn")
            return True
        bad = checks.window_increment(sid, inc)
        if bad is not None:
            return self._violation(d, *bad, sid=sid)
        other = 1 - d            # the direction whose receiver this side is
        peer.stalled_since = None       # (progress: zero_window_timeout starts again)
        if sid == 0:
            peer.window += inc
            bad = checks.window_overflow(0, peer.window)
            if bad is not None and self._violation(d, *bad):
                return True
            owed = peer.owed
            if owed:
                take = min(owed, inc)
                peer.owed -= take
                if peer.held_streams:
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
                    return self._violation(d, *checks.idle_stream(WINDOW_UPDATE, sid))
                if gone == "refused" or self._discard_after_reset(d, f, sid):
                    return True
            if s is not None:
                s.window[other] += inc
                bad = checks.window_overflow(sid, s.window[other])
                if bad is not None and self._violation(d, *bad, sid=sid):
                    return True
                owed_s = s.owed
                if s.proxy_owned or (owed_s is not None and owed_s[other]):
                    take = inc if s.proxy_owned or owed_s is None else min(owed_s[other], inc)
                    if not s.proxy_owned and owed_s is not None:
                        owed_s[other] -= take
                    if peer.held_streams:
                        self._flush_held(other)
                    if take == inc:
                        self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
                        return True
                    self._out(d, fc.WindowUpdateFrame(s.server_id if d == C2S else sid,
                                                      window_increment=inc - take).serialize(),
                              self._record_in(d, f, [{"hook": "h2proxy", "action": "changed"}]),
                              [{"hook": "h2proxy", "action": "window-repair"}])
                    return True
        if peer.held_streams:
            self._flush_held(other)
        return False

    def _rst_stream(self, d: int, f: RawFrame) -> bool:
        sid = f.stream_id
        bad = checks.rst_stream(f)
        if bad is not None:
            return self._violation(d, *bad)
        if d == S2C and self.push_map:
            sid = self.push_map.get(sid, sid)
        self.counters["resets"][d] += 1
        if d == C2S and self.client.reset_rate.hit(self.now):
            self._limit(d, "max_resets_per_second", "stream resets (rapid reset, CVE-2023-44487)")
            return True
        s = self.streams.get(sid)
        if s is None:
            gone = messages.unknown_stream(self, sid)
            if gone == "idle":
                return self._violation(d, *checks.idle_stream(RST_STREAM, sid))
            return gone == "refused" or bool(self._discard_after_reset(d, f, sid))
        s.state = st.CLOSED
        s.reset_by = d
        if s.proxy_owned and d == C2S:
            s.push_body = None
            if s.held is not None:
                s.held[S2C].clear()
            self.server.held_streams.pop(sid, None)
            self._close_stream(s)
            self._record_in(d, f, [{"hook": "h2proxy", "action": "consumed"}])
            return True
        # DATA held for a reset stream will never be wanted.
        for dd in (0, 1):
            if s.held is not None and s.held[dd]:
                s.held[dd].clear()
                self.sides[dd].held_streams.pop(sid, None)
        self._close_stream(s)
        return False
