"""The flow-control ledger: DATA sent within the receivers' windows, held when it does not fit.

The relay forwards DATA as it comes while the receiver's windows allow; where the proxy
changed DATA (a hook dropped, split or grew it; the proxy pushed a body) the two legs'
windows differ, and the difference is kept here: ``owed`` (window the proxy used up on a
sender's behalf, taken back from its receiver's WINDOW_UPDATEs), DATA held per stream until
the receiver's windows open (``Side.held_streams``, in order), window credited back to a
sender for DATA that never reached its receiver, and the check that a sender does not send
past what it may (its receiver's window plus what the proxy owes it, less what it holds).

A mixin of :class:`~proxy.core.relay.Relay`, like :mod:`.output`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

from framecodec import frame as fc
from framecodec.reader import Wire

from . import checks
from . import streams as st
from .interfaces import Actions
from .protocol import ErrorCode, Setting
from .side import Side

if TYPE_CHECKING:
    from .streams import Stream

C2S, S2C = 0, 1
SIDE_NAME = ("client", "server")
#: Per direction, the stream states in which its sender may still send DATA.
SENDING = ((st.OPEN, st.HALF_CLOSED_REMOTE), (st.OPEN, st.HALF_CLOSED_LOCAL))


class FlowControl:
    """The relay's flow-control ledger (a mixin of Relay)."""

    sides: Tuple[Side, Side]
    client: Side
    server: Side
    streams: Dict[int, Stream]
    push_map: Dict[int, int]

    if TYPE_CHECKING:
        def _out(self, d: int, wire: Wire, origin: Optional[int], actions: Optional[Actions]) -> None: ...

        def _map_ids(self, d: int, wire: Wire) -> Wire: ...

        def _violation(self, d: int, section: str, code: int, connection: bool, message: str,
                       sid: Optional[int] = None, forwarded: Optional[bool] = None) -> bool: ...

        def _connection_error(self, d: int, section: str, code: int, message: str, forced: bool,
                              logged: bool = False) -> None: ...

        def _close_stream(self, s: Stream) -> None: ...

    def _send_data(self, d: int, s: Optional[Stream], wire: Wire, fcl: int, sid: int, origin: Optional[int],
                   actions: Optional[Actions]) -> None:
        """Send one DATA frame towards the receiver of ``d``, inside its flow-control windows."""
        side = self.sides[d]
        if d == S2C and self.push_map:
            wire = self._map_ids(d, wire)
        if s is not None:
            held = s.held
            if (held is not None and held[d]) or ((fcl > side.window or fcl > s.window[d])
                                                 and (side.owed or (s.owed is not None and s.owed[d]))):
                if held is None:
                    held = s.held = [[], []]
                    s.held_fcl = [0, 0]
                held[d].append((wire, fcl, origin, actions))
                side.held_fcl += fcl
                s.held_fcl[d] += fcl
                side.held_streams[s.id] = s
                return
            s.window[d] -= fcl
        side.window -= fcl
        if fcl and (side.window < 0 or (s is not None and s.window[d] < 0)):
            bad = checks.data_past_window(fcl, sid, side.window, s.window[d] if s is not None else None)
            if bad is not None:
                self._violation(d, *bad, sid=sid, forwarded=True)
        self._out(d, wire, origin, actions)

    def _flush_held(self, d: int) -> None:
        """Send held DATA (and what queued behind it) as far as the receiver's windows allow."""
        side = self.sides[d]
        held = side.held_streams
        for sid in list(held):
            s = held[sid]
            # (A proxy push waiting for window is in held_streams with no frames held.)
            queue = s.held[d] if s.held is not None else ()
            while queue:
                wire, fcl, origin, actions = queue[0]
                if fcl and (fcl > side.window or fcl > s.window[d]):
                    break
                queue.pop(0)
                side.held_fcl -= fcl
                s.held_fcl[d] -= fcl
                s.window[d] -= fcl
                side.window -= fcl
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
        side = self.sides[d]
        peer = side.peer
        if n <= side.window + side.owed - side.held_fcl:
            if s is None or s.held is None or not s.held[d] or peer.unacked_settings:
                return False
            if n <= s.window[d] + (s.owed[d] if s.owed is not None else 0) - s.held_fcl[d]:
                return False
        # Exact sums (the running totals may overstate after a reset cleared a queue).
        total = 0
        for hs in side.held_streams.values():
            if hs.held is not None:
                for item in hs.held[d]:
                    total += item[1]
        side.held_fcl = total
        room = side.window + side.owed - total
        which = "connection"
        if n <= room:
            # The stream's window too, once the receiver's SETTINGS (its initial window) are acknowledged.
            if s is None or s.held is None or not s.held[d] or peer.unacked_settings:
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

    def _window_closed(self, d: int) -> bool:
        """Whether the receiver of d keeps a window at zero that a stream still sending in d waits on."""
        side = self.sides[d]
        sending = SENDING[d]
        if side.window <= 0:
            return any(s.state in sending for s in self.streams.values())
        return any(s.window[d] <= 0 and s.state in sending for s in self.streams.values())

    def _credit_sender(self, d: int, s: Stream, amount: int, ended: bool) -> None:
        """DATA the sender spent window on never reached the receiver: give the window back."""
        back = 1 - d
        self._out(back, fc.WindowUpdateFrame(0, window_increment=amount).serialize(), None,
                  [{"hook": "h2proxy", "action": "window-credit"}])
        if not ended and s.id in self.streams:
            sid = s.server_id if d == S2C else s.id
            self._out(back, fc.WindowUpdateFrame(sid, window_increment=amount).serialize(), None,
                      [{"hook": "h2proxy", "action": "window-credit"}])

    def _drop_held(self, s: Stream) -> None:
        """A reset stream's DATA held for flow control, and a proxy push's body, will never be sent."""
        for dd in (0, 1):
            if s.held is not None:
                s.held[dd].clear()
            self.sides[dd].held_streams.pop(s.id, None)
        s.push_body = None

    def _continue_push(self, s: Stream) -> None:
        """Send as much of a proxy-pushed body as the client's windows allow."""
        body = s.push_body
        max_size = self.client.settings[Setting.MAX_FRAME_SIZE]
        while body is not None and len(body):
            room = min(self.server.window, s.window[S2C], max_size)
            if room <= 0:
                s.push_body = body        # the rest, sent when the client's window opens
                self.server.held_streams[s.id] = s
                return
            chunk = body[:room]
            body = body[room:]
            frame = fc.DataFrame(s.id, data=bytes(chunk))
            if not len(body):
                frame.flags.add("END_STREAM")
            self.server.window -= len(chunk)
            s.window[S2C] -= len(chunk)
            self.server.owed += len(chunk)
            self._out(S2C, frame.serialize(), None, [{"hook": "push", "action": "injected"}])
        s.push_body = None
        self.server.held_streams.pop(s.id, None)
        s.state = st.CLOSED
        self._close_stream(s)


def owe(s: Stream, d: int, amount: int) -> None:
    """The proxy sent ``amount`` more DATA on this stream than the sender did."""
    if s.owed is None:
        s.owed = [0, 0]
    s.owed[d] += amount
