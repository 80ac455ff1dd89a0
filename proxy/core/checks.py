"""RFC 9113's framing and stream rules (sections 4 to 6) that the relay enforces on each frame.

The counterpart of :mod:`messages` (the HTTP message rules of section 8) for
the frame layer: each function gets what it needs of a frame and of the
connection's state, and returns ``None`` (or an empty list) when the rule
holds, or the :data:`~proxy.core.messages.Problem` (section, error code,
connection error?, message) the relay hands to ``Relay._violation``, which logs
and records it and, in strict mode, answers the sender. A function returning a
list checks rules that are all reported (transparent mode goes on after each);
the relay stops at the first one strict mode acts on.

Nothing here changes the connection: the relay applies the frame once its
checks have passed, so every rule can be read, and tested, on its own.
"""
from __future__ import annotations

import struct
from typing import List, Optional

from framecodec.reader import RawFrame

from . import streams as st
from .messages import Problem
from .protocol import (
    ACK,
    CONTINUATION,
    DATA,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PUSH_PROMISE,
    SETTINGS,
    ErrorCode,
    Setting,
    frame_name,
)

_u32 = struct.Struct(">L")


def oversized(f: RawFrame, limit: int, receiver: str) -> Problem:
    """A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE ``limit`` (4.2). One that can change
    the connection's state (a header block, SETTINGS, anything on stream 0) is a connection error."""
    t = f.type
    connection = f.stream_id == 0 or t in (HEADERS, PUSH_PROMISE, CONTINUATION, SETTINGS)
    return ("4.2", ErrorCode.FRAME_SIZE_ERROR, connection,
            f"{frame_name(t)} frame of {f.length} bytes on stream {f.stream_id}, above the "
            f"{receiver}'s SETTINGS_MAX_FRAME_SIZE {limit}")


def transition(state: str, sender: str, event: str, sid: int) -> Problem:
    """A frame its stream's state does not allow (5.1): ``st.TRANSITIONS`` has no entry for it."""
    code, conn, why = st.violation_code(state, sender, event)
    return ("5.1", code, conn, f"stream {sid}: {why}")


def idle_stream(t: int, sid: int) -> Problem:
    """A frame on a stream id nobody opened yet (5.1)."""
    return ("5.1", ErrorCode.PROTOCOL_ERROR, True, f"{frame_name(t)} on idle stream {sid}")


def sent_after_close(t: int, sid: int, sender: str) -> Problem:
    """A frame on a stream its own sender had closed, with END_STREAM or RST_STREAM (5.1)."""
    return ("5.1", ErrorCode.STREAM_CLOSED, False, f"{frame_name(t)} on stream {sid}, which the {sender} had closed")


def continuation_alone(sid: int) -> Problem:
    """A CONTINUATION outside a header block (6.10)."""
    return ("6.10", ErrorCode.PROTOCOL_ERROR, True,
            f"CONTINUATION on stream {sid} without a HEADERS or PUSH_PROMISE before it")


def inside_block(t: int, sid: int, block_sid: int) -> Problem:
    """Another frame between a header block's frames (6.10)."""
    return ("6.10", ErrorCode.PROTOCOL_ERROR, True,
            f"{frame_name(t)} on stream {sid} inside the header block of stream {block_sid} (expected CONTINUATION)")


# ---------------------------------------------------------------- control frames

def ping(f: RawFrame) -> List[Problem]:
    """PING: on stream 0 (6.7), with a body of 8 bytes."""
    found: List[Problem] = []
    if f.stream_id != 0:
        found.append(("6.7", ErrorCode.PROTOCOL_ERROR, True, f"PING on stream {f.stream_id}"))
    if f.length != 8:
        found.append(("6.7", ErrorCode.FRAME_SIZE_ERROR, True, f"PING with a body of {f.length} bytes, not 8"))
    return found


def priority(f: RawFrame) -> List[Problem]:
    """PRIORITY: not on stream 0 (6.3), a body of 5 bytes, no stream depending on itself (5.3.1)."""
    sid = f.stream_id
    found: List[Problem] = []
    if sid == 0:
        found.append(("6.3", ErrorCode.PROTOCOL_ERROR, True, "PRIORITY on stream 0"))
    if f.length != 5:
        found.append(("6.3", ErrorCode.FRAME_SIZE_ERROR, False,
                      f"PRIORITY on stream {sid} with a body of {f.length} bytes, not 5"))
    elif (_u32.unpack_from(f.payload)[0] & 0x7FFFFFFF) == sid:
        found.append(("5.3.1", ErrorCode.PROTOCOL_ERROR, False, f"PRIORITY: stream {sid} depends on itself"))
    return found


def goaway(f: RawFrame) -> List[Problem]:
    """GOAWAY: on stream 0, with a body of at least 8 bytes (6.8)."""
    found: List[Problem] = []
    if f.stream_id != 0:
        found.append(("6.8", ErrorCode.PROTOCOL_ERROR, True, f"GOAWAY on stream {f.stream_id}"))
    if f.length < 8:
        found.append(("6.8", ErrorCode.FRAME_SIZE_ERROR, True,
                      f"GOAWAY with a body of {f.length} bytes, shorter than 8"))
    return found


def settings_stream(f: RawFrame) -> Optional[Problem]:
    """SETTINGS on a stream other than 0 (6.5)."""
    if f.stream_id != 0:
        return ("6.5", ErrorCode.PROTOCOL_ERROR, True, f"SETTINGS on stream {f.stream_id}")
    return None


def settings_length(f: RawFrame) -> Optional[Problem]:
    """A SETTINGS body that is not whole entries (6.5), or an ACK with a body."""
    if f.flags & ACK:
        if f.length:
            return ("6.5", ErrorCode.FRAME_SIZE_ERROR, True, f"SETTINGS ACK with a body of {f.length} bytes")
    elif f.length % 6:
        return ("6.5", ErrorCode.FRAME_SIZE_ERROR, True, f"SETTINGS body of {f.length} bytes is not a multiple of 6")
    return None


def setting(ident: int, value: int, from_server: bool) -> Optional[Problem]:
    """One SETTINGS entry's value (6.5.2). A bad INITIAL_WINDOW_SIZE or MAX_FRAME_SIZE is not applied."""
    if ident == Setting.ENABLE_PUSH and (value > 1 or (value and from_server)):
        return ("6.5.2", ErrorCode.PROTOCOL_ERROR, True,
                f"SETTINGS_ENABLE_PUSH = {value}, must be 0 or 1{' (and 0 from a server)' if value == 1 else ''}")
    if ident == Setting.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
        return ("6.5.2", ErrorCode.FLOW_CONTROL_ERROR, True, f"SETTINGS_INITIAL_WINDOW_SIZE = {value}, above 2^31-1")
    if ident == Setting.MAX_FRAME_SIZE and not 16384 <= value <= 16777215:
        return ("6.5.2", ErrorCode.PROTOCOL_ERROR, True,
                f"SETTINGS_MAX_FRAME_SIZE = {value}, outside 16384..16777215")
    return None


def window_update_length(f: RawFrame) -> Optional[Problem]:
    """WINDOW_UPDATE with a body other than 4 bytes (6.9)."""
    if f.length != 4:
        return ("6.9", ErrorCode.FRAME_SIZE_ERROR, True,
                f"WINDOW_UPDATE on stream {f.stream_id} with a body of {f.length} bytes, not 4")
    return None


def window_increment(sid: int, inc: int) -> Optional[Problem]:
    """A WINDOW_UPDATE increment of 0 (6.9): a connection error on stream 0, else a stream error."""
    if inc == 0:
        return ("6.9", ErrorCode.PROTOCOL_ERROR, sid == 0, f"WINDOW_UPDATE on stream {sid} with an increment of 0")
    return None


def window_overflow(sid: int, window: int) -> Optional[Problem]:
    """A flow-control window raised above 2^31-1 (6.9.1)."""
    if window <= MAX_WINDOW:
        return None
    if sid == 0:
        return ("6.9.1", ErrorCode.FLOW_CONTROL_ERROR, True, f"connection window raised to {window}, above 2^31-1")
    return ("6.9.1", ErrorCode.FLOW_CONTROL_ERROR, False, f"stream {sid} window raised to {window}, above 2^31-1")


def rst_stream(f: RawFrame) -> Optional[Problem]:
    """RST_STREAM: not on stream 0 (6.4), a body of 4 bytes."""
    if f.stream_id == 0:
        return ("6.4", ErrorCode.PROTOCOL_ERROR, True, "RST_STREAM on stream 0")
    if f.length != 4:
        return ("6.4", ErrorCode.FRAME_SIZE_ERROR, True,
                f"RST_STREAM on stream {f.stream_id} with a body of {f.length} bytes, not 4")
    return None


# ---------------------------------------------------------------- header blocks

def client_stream(sid: int, streams_open: int, limit: int) -> List[Problem]:
    """HEADERS opening client stream ``sid``: an odd id (5.1.1), within the server's
    SETTINGS_MAX_CONCURRENT_STREAMS ``limit`` (5.1.2; a stream error, REFUSED_STREAM)."""
    found: List[Problem] = []
    if not sid & 1:
        found.append(("5.1.1", ErrorCode.PROTOCOL_ERROR, True, f"client opened stream {sid} with an even id"))
    if streams_open >= limit:
        found.append(("5.1.2", ErrorCode.REFUSED_STREAM, False,
                      f"stream {sid} exceeds the server's SETTINGS_MAX_CONCURRENT_STREAMS {limit}"))
    return found


def stream_not_above(sid: int, last: int) -> Problem:
    """Client HEADERS on a stream id it may not open (5.1.1): not above its last stream."""
    return ("5.1.1", ErrorCode.PROTOCOL_ERROR, True,
            f"client sent HEADERS on stream {sid}, not above its last stream {last}")


def push_promise_parent(sid: int, parent_state: Optional[str], reset_by_client: bool,
                        push_enabled: bool) -> List[Problem]:
    """PUSH_PROMISE on stream ``sid``: not on stream 0 (6.6); only on a client stream that is open or
    half-closed (local) from the client's view (``parent_state``, None when the stream is not tracked),
    and one the client reset may still get promises sent before the reset arrived (6.6); not when the
    client set SETTINGS_ENABLE_PUSH to 0 (8.4)."""
    found: List[Problem] = []
    if sid == 0:
        found.append(("6.6", ErrorCode.PROTOCOL_ERROR, True, "PUSH_PROMISE on stream 0"))
    if sid and (not sid & 1 or (parent_state not in (st.OPEN, st.HALF_CLOSED_LOCAL) if parent_state is not None
                                else not reset_by_client)):
        found.append(("6.6", ErrorCode.PROTOCOL_ERROR, True,
                      f"PUSH_PROMISE on stream {sid}, which is {parent_state or 'idle or closed'}"))
    if not push_enabled:
        found.append(("8.4", ErrorCode.PROTOCOL_ERROR, True,
                      "PUSH_PROMISE although the client set SETTINGS_ENABLE_PUSH to 0"))
    return found


def promised_room(f: RawFrame) -> Optional[Problem]:
    """A PUSH_PROMISE body with no room for the promised stream id (6.6)."""
    payload = f.payload
    if len(payload) < (5 if f.flags & PADDED else 4):
        return ("6.6", ErrorCode.FRAME_SIZE_ERROR, True,
                f"PUSH_PROMISE on stream {f.stream_id}: body of {len(payload)} bytes has no promised stream id")
    return None


def promised_stream(promised: int, last: int) -> Optional[Problem]:
    """A promised stream id must be even and above the server's last one (5.1.1)."""
    if promised & 1 or promised <= last:
        return ("5.1.1", ErrorCode.PROTOCOL_ERROR, True,
                f"PUSH_PROMISE promises stream {promised}, which is odd or not above {last}")
    return None


def on_stream_zero(t: int) -> Problem:
    """DATA (6.1) or HEADERS (6.2) on stream 0."""
    return ("6.1" if t == DATA else "6.2", ErrorCode.PROTOCOL_ERROR, True, f"{frame_name(t)} on stream 0")


def client_push_promise() -> Problem:
    """A client never sends PUSH_PROMISE (8.4)."""
    return ("8.4", ErrorCode.PROTOCOL_ERROR, True, "the client sent PUSH_PROMISE")


def undecodable(sid: int, exc: Exception) -> Problem:
    """A header block that does not decode (4.3): the HPACK context is lost for the connection."""
    return ("4.3", ErrorCode.COMPRESSION_ERROR, True, f"header block on stream {sid} does not decode: {exc}")


def data_past_window(fcl: int, sid: int, window: int, stream_window: Optional[int]) -> Optional[Problem]:
    """DATA of ``fcl`` flow-controlled bytes that left the connection ``window`` or the stream's
    (None: the stream is not tracked) below zero (6.9.1); a connection error when the connection's."""
    if not fcl or (window >= 0 and (stream_window is None or stream_window >= 0)):
        return None
    which = "connection" if window < 0 else f"stream {sid}"
    now = window if window < 0 or stream_window is None else stream_window
    return ("6.9.1", ErrorCode.FLOW_CONTROL_ERROR, window < 0,
            f"DATA of {fcl} bytes on stream {sid} exceeds the {which} flow-control window (now {now})")
