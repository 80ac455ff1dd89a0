"""Stream states (RFC 9113 section 5.1) as an explicit transition table.

The proxy watches both endpoints, so the table is written from the client's
point of view: "local" is the client, "remote" the server. Each transition is
keyed by (state, sender, event); a frame that has no entry for its state is a
protocol violation, and the table says which error code a conformant endpoint
would answer with.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .protocol import ErrorCode

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
