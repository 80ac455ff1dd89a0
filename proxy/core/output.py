"""What the relay sends: output buffers, the frame log (recording), and stream ids across the legs.

Every frame the relay sends goes through :meth:`Output._out`: into the buffers
the shell writes to the receiving socket (``out[d]``, taken with
:meth:`Output.take_output`), and, with a sink, into the frame log with the
record of the frame it came from and what the hooks did. The proxy's own frames
towards a peer that has not had SETTINGS yet wait in the sender's ``greeting``
(RFC 9113 3.4). Frames recorded on the fast path are handed to the sink a read
at a time (``rec``), always before any record made one at a time.

Pushes the proxy makes itself renumber the server's pushed streams on the
client leg: :meth:`Output._map_ids` rewrites stream ids between the legs.

A mixin of :class:`~proxy.core.relay.Relay`: the attributes below are the
relay's; the methods keep the relay's names so that its pipeline reads as one.
"""
from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

from framecodec import frame as fc
from framecodec.reader import FrameFields, RawFrame, Wire

from ..hooks.api import HeaderList
from .commands import Command, Wake
from .interfaces import Actions, Counters
from .protocol import ACK, PREFACE, SETTINGS
from .side import Side

if TYPE_CHECKING:
    from ..recording.sink import FrameSink
    from .unit import _Unit

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1
CLIENT, SERVER = 0, 1
SIDE_NAME = ("client", "server")
RECV_LEG = ("client", "upstream")    # the socket a direction's frames arrive on
SEND_LEG = ("upstream", "client")    # the socket they leave on
_u32 = struct.Struct(">L")
#: The proxy's own SETTINGS (all defaults), for when it must speak before the peer it relays.
EMPTY_SETTINGS = bytes((0, 0, 0, SETTINGS, 0, 0, 0, 0, 0))
#: How long a reset a hook made towards the client may wait for the next frames towards it (seconds).
RESET_HOLD = 0.001


class Output:
    """The relay's sending half (a mixin of Relay)."""

    id: int
    now: float
    sides: Tuple[Side, Side]
    client: Side
    server: Side
    #: Per direction, the buffers to write to the receiving socket.
    out: List[List[Wire]]
    commands: List[Command]
    sink: Optional[FrameSink]
    #: Per direction, fast-path frames recorded but not yet handed to the sink (None: no batching sink).
    rec: Optional[List[List[Wire]]]
    counters: Counters
    push_map: Dict[int, int]
    push_unmap: Dict[int, int]
    preface_forwarded: bool
    preface_at: float

    if TYPE_CHECKING:
        def _run(self, d: int, frames: List[FrameFields]) -> None: ...

    def take_output(self, d: int) -> List[Wire]:
        """The buffers to write towards the receiver of direction d, in order (and forget them)."""
        out = self.out[d]
        if out:
            self.out[d] = []
            self.counters["frames_out"][d] += len(out)
        return out

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

    def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None:
        side = self.sides[d]
        greeting = side.greeting
        if greeting is not None:
            if wire[3] != SETTINGS or wire[4] & ACK:
                # The receiver has not had its peer's SETTINGS yet: nothing may come before it.
                greeting.append((wire, origin, actions))
                return
            side.greeting = None
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
        if self.server.inbox and self.server.paused is None:
            held, self.server.inbox = self.server.inbox, []
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
        side = self.sides[d]
        greeting = side.greeting
        if greeting is None:
            return
        side.greeting = None
        if not greeting or (d == C2S and not self.preface_forwarded):
            return
        if speak_first:
            self._out(d, EMPTY_SETTINGS, None, [{"hook": "h2proxy", "action": "injected"}])
        for held in greeting:
            self._out(d, *held)

    def _hold_reset(self, d: int, wire: Wire, actions: Actions) -> None:
        """A RST_STREAM a hook made towards the receiver of d while other streams are open there: held
        to go out with the next frames towards it, RESET_HOLD seconds at most (a :class:`Wake` asks
        for the tick that sends it then).

        Why: a client that keeps N streams in flight (h2load -m, a browser, a gRPC channel) refills them
        as responses come in. A reset sent on its own brings one request on its own, then its response
        on its own, and each reset splits the connection's batches further (with a rule resetting 1% of
        the streams, h2load's reads and writes through the proxy rose by 30-55%). Sent with the next
        responses, it lets the client refill all its streams in one write.
        """
        side = self.sides[d]
        if not side.resets:
            side.resets_due = self.now + RESET_HOLD
            self.commands.append(Wake(side.resets_due))
        side.resets.append((wire, None, actions))

    def _release_resets(self, d: int) -> None:
        """Send the resets held towards the receiver of d (:meth:`_hold_reset`)."""
        side = self.sides[d]
        held = side.resets
        if held:
            side.resets = []
            for each in held:
                self._out(d, *each)

    def _send_goaway(self, d: int, last: int, code: int, debug: Union[str, bytes], note: str = "h2proxy") -> None:
        self._release_resets(d)
        if isinstance(debug, str):
            debug = debug.encode("utf-8", "replace")
        frame = fc.GoAwayFrame(0, last_stream_id=last, error_code=int(code), additional_data=debug[:1024])
        self._out(d, frame.serialize(), None, [{"hook": note, "action": "injected"}])
