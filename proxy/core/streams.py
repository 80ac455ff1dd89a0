"""Stream states (RFC 9113 section 5.1) as an explicit transition table, and what the proxy keeps per stream.

The proxy watches both endpoints, so the table is written from the client's
point of view: "local" is the client, "remote" the server. Each transition is
keyed by (state, sender, event); a frame that has no entry for its state is a
protocol violation, and the table says which error code a conformant endpoint
would answer with.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from .protocol import ErrorCode

if TYPE_CHECKING:
    from ..hooks.api import HeaderList
    from .interfaces import HeldData, StreamTables

# States.
IDLE = "idle"
RESERVED_REMOTE = "reserved (remote)"   # the server promised the stream (PUSH_PROMISE)
RESERVED_LOCAL = "reserved (local)"     # the proxy promised it to the client on the server's behalf
OPEN = "open"
HALF_CLOSED_LOCAL = "half-closed (local)"    # the client has ended its side
HALF_CLOSED_REMOTE = "half-closed (remote)"  # the server has ended its side
CLOSED = "closed"

# Senders.
CLIENT = "client"
SERVER = "server"

# Events (what a frame means for the stream).
HEADERS = "headers"          # HEADERS without END_STREAM
HEADERS_END = "headers+end"  # HEADERS with END_STREAM
DATA = "data"
DATA_END = "data+end"
PROMISED = "promised"        # the stream id appears as a PUSH_PROMISE's promised id
RESET = "rst"

Transition = Tuple[str, str, str]
TRANSITIONS: Dict[Transition, str] = {}


def _add(states: List[str], sender: str, events: List[str], new_state: str) -> None:
    for s in states:
        for e in events:
            TRANSITIONS[(s, sender, e)] = new_state if new_state != "same" else s


_both = (CLIENT, SERVER)
# idle
_add([IDLE], CLIENT, [HEADERS], OPEN)
_add([IDLE], CLIENT, [HEADERS_END], HALF_CLOSED_LOCAL)
_add([IDLE], SERVER, [PROMISED], RESERVED_REMOTE)
# reserved: the server opens it with HEADERS, the client may only reset it
_add([RESERVED_REMOTE], SERVER, [HEADERS], HALF_CLOSED_LOCAL)
_add([RESERVED_REMOTE], SERVER, [HEADERS_END], CLOSED)
# open
_add([OPEN], CLIENT, [DATA, HEADERS], "same")
_add([OPEN], SERVER, [DATA, HEADERS], "same")
_add([OPEN], CLIENT, [DATA_END, HEADERS_END], HALF_CLOSED_LOCAL)
_add([OPEN], SERVER, [DATA_END, HEADERS_END], HALF_CLOSED_REMOTE)
# half-closed
_add([HALF_CLOSED_LOCAL], SERVER, [DATA, HEADERS], "same")
_add([HALF_CLOSED_LOCAL], SERVER, [DATA_END, HEADERS_END], CLOSED)
_add([HALF_CLOSED_REMOTE], CLIENT, [DATA, HEADERS], "same")
_add([HALF_CLOSED_REMOTE], CLIENT, [DATA_END, HEADERS_END], CLOSED)
# RST_STREAM closes any stream that is not idle
for _sender in _both:
    _add([RESERVED_REMOTE, RESERVED_LOCAL, OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED],
         _sender, [RESET], CLOSED)
# The proxy's own pushes, seen from the client.
_add([RESERVED_LOCAL], SERVER, [HEADERS], HALF_CLOSED_LOCAL)
_add([RESERVED_LOCAL], SERVER, [HEADERS_END], CLOSED)


def by_state(sender: str, event: str) -> Dict[str, str]:
    """The table's rows for one (sender, event), keyed by state alone: a lookup with no tuple to build."""
    return {state: new for (state, snd, ev), new in TRANSITIONS.items() if snd == sender and ev == event}


#: The sender of each direction (0: client to server, 1: server to client).
SENDER = (CLIENT, SERVER)
#: The transitions of the relay's fast paths, per direction and END_STREAM flag: {state: new state}.
DATA_NEXT = tuple((by_state(sender, DATA), by_state(sender, DATA_END)) for sender in SENDER)
HEADERS_NEXT = tuple((by_state(sender, HEADERS), by_state(sender, HEADERS_END)) for sender in SENDER)


def violation_code(state: str, sender: str, event: str) -> Tuple[ErrorCode, bool, str]:
    """The error a conformant receiver would raise for an event with no transition.

    Returns (code, is_connection_error, reason).
    """
    if state == IDLE:
        return ErrorCode.PROTOCOL_ERROR, True, f"{event} on an idle stream (RFC 9113 5.1)"
    if state == CLOSED:
        return ErrorCode.STREAM_CLOSED, False, f"{event} on a closed stream (RFC 9113 5.1)"
    if state in (HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE):
        return ErrorCode.STREAM_CLOSED, False, f"{event} from the {sender} after it ended the stream (RFC 9113 5.1)"
    if state in (RESERVED_REMOTE, RESERVED_LOCAL):
        return ErrorCode.PROTOCOL_ERROR, True, f"{event} from the {sender} on a reserved stream (RFC 9113 5.1)"
    return ErrorCode.PROTOCOL_ERROR, True, f"{event} not allowed in state {state} (RFC 9113 5.1)"


def next_state(state: str, sender: str, event: str) -> Optional[str]:
    """The state after the event, or None when the table has no such transition."""
    return TRANSITIONS.get((state, sender, event))


# ---------------------------------------------------------------- what the relay keeps per stream

#: Closed streams remembered (between this many and twice as many) to tell late frames from bad ones.
REMEMBER_CLOSED = 256


class Stream:
    """What the proxy knows of one stream (ids are those of the client leg)."""

    # A stream is made per request: what most streams need is a slot set here (hooks and the
    # request's header list are read on every hooked request; a slot costs no dict per stream); the
    # rest keep these class-level defaults until first assigned (then they live in the instance dict).
    __slots__ = ("id", "state", "window", "server_id", "ordinal", "hooks", "request_headers", "response_headers",
                 "counts", "__dict__")

    #: owed/held only matter once the proxy changed DATA on this stream: made on first use.
    owed: Optional[List[int]] = None
    held: Optional[List[List[HeldData]]] = None
    #: Flow-controlled bytes in ``held`` per direction (may overstate after a queue was cleared); set with ``held``.
    held_fcl: List[int]
    trailers: Optional[HeaderList] = None
    proxy_owned = False
    push_body: Optional[memoryview] = None
    #: The direction whose sender reset the stream, or the proxy's own reset (see ProxyReset).
    reset_by: Union[int, ProxyReset, None] = None
    #: Strict mode: content-length still due per direction.
    body: Optional[List[Optional[int]]] = None

    def __init__(self, sid: int, state: str, client_window: int, server_window: int) -> None:
        self.id = sid
        self.state = state
        # window[d]: what the receiver of direction d still accepts on this stream.
        self.window = [server_window, client_window]
        self.server_id = sid
        #: The how-manieth stream the client opened on the connection (1 = first); None for pushes.
        self.ordinal: Optional[int] = None
        #: The hook entries for this stream's frames, per direction (type -> entries), decided when its
        #: request was read (:meth:`HookChain.stream_tables`); None: no hook wants any frame of it.
        self.hooks: Optional[StreamTables] = None
        self.request_headers: Optional[HeaderList] = None
        self.response_headers: Optional[HeaderList] = None
        #: Frames of this stream counted by type and direction (key ``type * 2 + direction``), kept by
        #: a hook that matches on them (the fault rules' ``nth``); None until it counts one.
        self.counts: Optional[Dict[int, int]] = None

    def __repr__(self) -> str:
        return f"Stream(id={self.id}, state={self.state!r})"


class RecentlyClosed:
    """Who closed the streams closed last (a dict-like map: stream id -> side, -1 or a mark).

    Two generations of at most ``REMEMBER_CLOSED`` entries each: when the newer
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
        if len(new) >= REMEMBER_CLOSED:
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
