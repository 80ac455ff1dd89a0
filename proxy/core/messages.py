"""HTTP message rules (RFC 9113 section 8) and the frame checks the relay's fast path leaves out.

The relay calls these with what it already has at hand: a raw frame, or a
decoded header list and what kind of header block it is (request, response,
trailers, pushed request). Each function returns ``None`` when all is well, or
a :data:`Problem` the relay hands to ``Relay._violation``: transparent mode
logs it and forwards, strict mode answers the sender (RST_STREAM for a
malformed message, a stream error of type PROTOCOL_ERROR by RFC 9113 8.1.1)
and forwards nothing.

Nothing here touches sockets or the relay's state, so every rule can be tested
on its own.
"""
from __future__ import annotations

import re
import struct
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from framecodec.reader import RawFrame

from .protocol import DATA, END_STREAM, HEADERS, PADDED, PRIORITY_FLAG, PUSH_PROMISE, ErrorCode

if TYPE_CHECKING:
    from .relay import Relay
    from .side import Side
    from .streams import RecentlyClosed, Stream

#: (RFC 9113 section, error code, connection error?, message)
Problem = Tuple[str, int, bool, str]
#: A decoded header list: (name, value) pairs.
Fields = Sequence[Tuple[str, str]]

_u32 = struct.Struct(">L")

REQUEST_PSEUDO = frozenset((":method", ":scheme", ":authority", ":path", ":protocol"))
RESPONSE_PSEUDO = frozenset((":status",))
#: Fields that only mean something on one HTTP/1.1 hop (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = frozenset(("connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"))
#: Methods a server may push (safe and cacheable, RFC 9113 8.4 and RFC 9110 9.2.1 / 9.2.3).
PUSHABLE_METHODS = frozenset(("GET", "HEAD"))

# A field name is made of 0x21-0x40 and 0x5B-0x7E, no colon but a pseudo-header's first (RFC 9113 8.2.1).
_NAME = re.compile(r"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_UPPER = re.compile(r"[A-Z]")


def _malformed(message: str, section: str = "8.1.1") -> Problem:
    return (section, ErrorCode.PROTOCOL_ERROR, False, f"malformed message: {message}")


# --------------------------------------------------------------- frames

def frame_problem(f: RawFrame) -> Optional[Problem]:
    """Padding longer than the frame (6.1, 6.2, 6.6), a PUSH_PROMISE with no room for its promised
    stream id (6.6) and a HEADERS priority on itself (5.3.1).

    ``f`` is a :class:`framecodec.reader.RawFrame` of type DATA, HEADERS or PUSH_PROMISE.
    """
    t = f.type
    payload = f.payload
    n = len(payload)
    start = 0
    if f.flags & PADDED:
        section = "6.1" if t == DATA else "6.2" if t == HEADERS else "6.6"
        if not n:
            return (section, ErrorCode.PROTOCOL_ERROR, True,
                    f"{_name(t)} on stream {f.stream_id} has the PADDED flag but no Pad Length")
        pad = payload[0]
        start = 1
        fixed = 5 if t == HEADERS and f.flags & PRIORITY_FLAG else 4 if t == PUSH_PROMISE else 0
        if pad > n - 1 - fixed:
            return (section, ErrorCode.PROTOCOL_ERROR, True,
                    f"{_name(t)} on stream {f.stream_id}: padding of {pad} bytes does not fit in a body of "
                    f"{n} bytes")
    if t == PUSH_PROMISE and n < start + 4:
        return ("6.6", ErrorCode.FRAME_SIZE_ERROR, True,
                f"PUSH_PROMISE on stream {f.stream_id}: body of {n} bytes has no promised stream id")
    if t == HEADERS and f.flags & PRIORITY_FLAG:
        if n < start + 5:
            return ("6.2", ErrorCode.FRAME_SIZE_ERROR, True,
                    f"HEADERS on stream {f.stream_id} with the PRIORITY flag is too short ({n} bytes)")
        if (_u32.unpack_from(payload, start)[0] & 0x7FFFFFFF) == f.stream_id:
            return ("5.3.1", ErrorCode.PROTOCOL_ERROR, False, f"HEADERS: stream {f.stream_id} depends on itself")
    return None


def _name(t: int) -> str:
    return {DATA: "DATA", HEADERS: "HEADERS", PUSH_PROMISE: "PUSH_PROMISE"}.get(t, str(t))


def data_length(f: RawFrame) -> int:
    """The content bytes a DATA frame carries (its length less the padding)."""
    if f.flags & PADDED and f.length:
        return max(0, f.length - 1 - f.payload[0])
    return f.length


# --------------------------------------------------------- header lists

def field_problem(headers: Fields, allowed_pseudo: Collection[str], what: str) -> Optional[Problem]:
    """The rules every header list follows: names, values, pseudo-header placement, hop-by-hop fields."""
    regular_seen = False
    seen_pseudo = set()
    for name, value in headers:
        if not name:
            return _malformed(f"{what} has an empty field name", "8.2.1")
        if name[0] == ":":
            if regular_seen:
                return _malformed(f"{what}: pseudo-header {name} after a regular field", "8.3")
            if name not in allowed_pseudo:
                if allowed_pseudo:
                    return _malformed(f"{what}: pseudo-header {name} is not allowed here", "8.3")
                return _malformed(f"{what}: pseudo-header {name} in trailers", "8.1")
            if name in seen_pseudo:
                return _malformed(f"{what}: pseudo-header {name} appears twice", "8.3")
            seen_pseudo.add(name)
            check = name[1:]
        else:
            regular_seen = True
            check = name
        if not _NAME.fullmatch(check):
            if _UPPER.search(check):
                return _malformed(f"{what}: field name {name!r} has uppercase letters", "8.2.1")
            return _malformed(f"{what}: field name {name!r} has a character not allowed in names", "8.2.1")
        if value:
            if "\x00" in value or "\r" in value or "\n" in value:
                return _malformed(f"{what}: value of {name} contains NUL, CR or LF", "8.2.1")
            if value[0] in " \t" or value[-1] in " \t":
                return _malformed(f"{what}: value of {name} starts or ends with whitespace", "8.2.1")
        if name in CONNECTION_SPECIFIC:
            return _malformed(f"{what} carries the connection-specific field {name}", "8.2.2")
        if name == "te" and value.strip().lower() != "trailers":
            return _malformed(f"{what}: TE is {value!r}; only \"trailers\" is allowed", "8.2.2")
    return None


def pseudo(headers: Iterable[Tuple[str, str]], name: str) -> Optional[str]:
    """The value of pseudo-header ``name`` (they come first: the search stops at the first regular field)."""
    for k, v in headers:
        if k == name:
            return v
        if not k.startswith(":"):
            return None
    return None


def content_length(headers: Iterable[Tuple[str, str]]) -> Tuple[Optional[int], Optional[Problem]]:
    """The content-length of a header list (None without one), or the problem with its value."""
    value = None
    for k, v in headers:
        if k != "content-length":
            continue
        for part in v.split(","):
            part = part.strip()
            if not part.isdigit() or not part.isascii():
                return None, _malformed(f"content-length {v!r} is not a number", "8.1.1")
            n = int(part)
            if value is not None and n != value:
                return None, _malformed(f"content-length given as both {value} and {n}", "8.1.1")
            value = n
    return value, None


def request_problem(headers: Fields, end_stream: bool) -> Optional[Problem]:
    """A request header list (HEADERS opening a client stream)."""
    bad = field_problem(headers, REQUEST_PSEUDO, "request")
    if bad is not None:
        return bad
    method = pseudo(headers, ":method")
    scheme = pseudo(headers, ":scheme")
    path = pseudo(headers, ":path")
    authority = pseudo(headers, ":authority")
    protocol = pseudo(headers, ":protocol")
    if method is None:
        return _malformed("request without :method", "8.3.1")
    if method == "CONNECT" and protocol is None:
        if scheme is not None or path is not None:
            return _malformed("CONNECT request with :scheme or :path", "8.5")
        if not authority:
            return _malformed("CONNECT request without :authority", "8.5")
        return None
    if protocol is not None and method != "CONNECT":
        return _malformed(f":protocol in a {method} request (only extended CONNECT has it)", "8.3.1")
    if scheme is None:
        return _malformed("request without :scheme", "8.3.1")
    if path is None:
        return _malformed("request without :path", "8.3.1")
    if path == "":
        return _malformed("request with an empty :path", "8.3.1")
    if scheme in ("http", "https") and not (path.startswith("/") or (path == "*" and method == "OPTIONS")):
        return _malformed(f":path {path!r} is neither an absolute path nor * for OPTIONS", "8.3.1")
    length, bad = content_length(headers)
    if bad is not None:
        return bad
    if end_stream and length:
        return _malformed(f"request declares content-length {length} but ends with its headers", "8.1.1")
    return None


def response_problem(headers: Fields, end_stream: bool, request_method: Optional[str]) -> Optional[Problem]:
    """A response header list (the server's HEADERS on a stream whose final response has not come)."""
    bad = field_problem(headers, RESPONSE_PSEUDO, "response")
    if bad is not None:
        return bad
    status = pseudo(headers, ":status")
    if status is None:
        return _malformed("response without :status", "8.3.2")
    if len(status) != 3 or not status.isdigit() or not status.isascii():
        return _malformed(f":status {status!r} is not a three-digit code", "8.3.2")
    if status[0] == "1":
        if end_stream:
            return _malformed(f"informational response {status} with END_STREAM", "8.1")
        return None
    length, bad = content_length(headers)
    if bad is not None:
        return bad
    if end_stream and length and request_method != "HEAD" and status not in ("204", "304"):
        return _malformed(f"response declares content-length {length} but ends with its headers", "8.1.1")
    return None


def trailers_problem(headers: Fields, end_stream: bool) -> Optional[Problem]:
    """A header block after the message's (final) header section: trailers, which end the stream."""
    if not end_stream:
        return _malformed("a second header block (trailers) without END_STREAM", "8.1")
    return field_problem(headers, (), "trailers")


def push_problem(headers: Fields) -> Optional[Problem]:
    """The request a PUSH_PROMISE carries (RFC 9113 8.4): complete, and safe and cacheable."""
    bad = request_problem(headers, True)
    if bad is not None:
        return bad
    method = pseudo(headers, ":method")
    if method not in PUSHABLE_METHODS:
        return _malformed(f"pushed request with method {method}, which is not safe and cacheable", "8.4")
    if pseudo(headers, ":authority") is None:
        return _malformed("pushed request without :authority", "8.4")
    return None


def expects_body(status_or_method: Optional[str], request_method: Optional[str]) -> bool:
    """Whether a response with this status to this request method has content to count."""
    if request_method == "HEAD":
        return False
    return status_or_method not in ("204", "304") and not (status_or_method or "").startswith("1")


# ----------------------------------------------------------- the relay's entry points

def check_block(s: Optional[Stream], d: int, headers: Fields, end_stream: bool, kind: str,
                count_body: bool) -> Optional[Problem]:
    """Check one decoded header block sent in direction ``d`` (0: by the client) on stream ``s``.

    ``kind``: ``"request"`` (the block opens a client stream; ``s`` is None, the stream is not
    registered yet), or ``"next"``: any later block on stream ``s``, a response (informational
    or final) or trailers, told apart here from what the stream has seen. With ``count_body``
    (strict mode, where every DATA frame is counted) the content-length of a final response is
    remembered for :func:`data_check`.
    """
    if kind == "request":
        if len(headers) <= _MEMO_FIELDS:
            try:
                key = (tuple(headers), end_stream)
                return _REQUESTS[key]
            except KeyError:
                bad = _REQUESTS[key] = request_problem(headers, end_stream)
                if len(_REQUESTS) > _MEMO_MAX:
                    _REQUESTS.clear()
                return bad
            except TypeError:
                pass
        return request_problem(headers, end_stream)
    assert s is not None     # (only a request's block comes before its stream is registered)
    if d == 0:
        bad = trailers_problem(headers, end_stream)
        if bad is None and count_body:
            left = body_state(s)[0]
            if left:
                bad = _malformed(f"request content is {left} bytes short of its content-length", "8.1.1")
        return bad
    prev = s.response_headers
    if prev is None or is_informational(prev):
        req = s.request_headers
        method = req[0][1] if req and req[0][0] == ":method" else pseudo(req or (), ":method")
        bad = _memo(response_problem, headers, end_stream, method)
        if bad is None and count_body and not end_stream:
            status = pseudo(headers, ":status")
            length, _ = content_length(headers)
            if length is not None and expects_body(status, method):
                body_state(s)[1] = length
        return bad
    bad = trailers_problem(headers, end_stream)
    if bad is None and count_body and s.body is not None and s.body[1]:
        bad = _malformed(f"response content is {s.body[1]} bytes short of its content-length", "8.1.1")
    return bad


#: Outcomes of the header-list rules for lists seen before (real traffic repeats its requests and
#: responses: the rules then cost one look-up). Bounded: cleared when full.
_MEMO: Dict[Tuple[Any, ...], Optional[Problem]] = {}
_REQUESTS: Dict[Tuple[Any, ...], Optional[Problem]] = {}
_MEMO_MAX = 2048
#: Lists longer than this are checked every time (not worth keeping).
_MEMO_FIELDS = 24


def _memo(rule: Callable[..., Optional[Problem]], headers: Sequence[Tuple[str, str]], *args: Any) -> Optional[Problem]:
    """``rule(headers, *args)``, remembered for header lists seen before (the rules are pure functions)."""
    if len(headers) > _MEMO_FIELDS:
        return rule(headers, *args)
    key = (rule, tuple(headers), *args)
    try:
        return _MEMO[key]
    except KeyError:
        pass
    except TypeError:          # (a value that cannot be hashed: a hook's odd header list)
        return rule(headers, *args)
    bad = rule(headers, *args)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = bad
    return bad


def body_state(s: Stream) -> List[Optional[int]]:
    """``[request bytes still due, response bytes still due]`` (None: no content-length to hold to)."""
    if s.body is None:
        declared = None
        if s.request_headers is not None and s.id & 1:
            declared, _ = content_length(s.request_headers)
        s.body = [declared, None]
    return s.body


def data_check(relay: Relay, d: int, s: Optional[Stream], f: RawFrame, sid: int) -> Optional[Problem]:
    """Strict mode, for each DATA frame: padding, the sender's flow-control windows, content-length."""
    if f.flags & PADDED:
        bad = frame_problem(f)
        if bad is not None:
            return bad
    n = f.length
    if n:
        stream_window = None
        stream_owed = 0
        # While the receiver's SETTINGS are unacknowledged the sender may still use an older
        # initial window size: the stream window is only held against it once they are.
        if s is not None and not relay.sides[1 - d].unacked_settings:
            stream_window = s.window[d]
            stream_owed = s.owed[d] if s.owed is not None else 0
        bad = window_problem(relay.sides[d].window, relay.sides[d].owed, stream_window, stream_owed, n, sid)
        if bad is not None:
            return bad
    if s is None:
        return None
    body = body_state(s)
    left = body[d]
    if left is None:
        return None
    left -= data_length(f)
    body[d] = left
    if left < 0:
        return _malformed(f"DATA on stream {sid} goes {-left} bytes past the content-length", "8.1.1")
    if f.flags & END_STREAM and left:
        return _malformed(f"stream {sid} ended {left} bytes short of its content-length", "8.1.1")
    return None


def window_problem(window: int, owed: int, stream_window: Optional[int], stream_owed: int,
                   length: int, sid: int) -> Optional[Problem]:
    """DATA longer than what the sender may send (the receiver's window plus what the proxy owes it)."""
    if length > window + owed:
        return ("6.9.1", ErrorCode.FLOW_CONTROL_ERROR, True,
                f"DATA of {length} bytes on stream {sid} exceeds the connection flow-control window "
                f"({window + owed})")
    if stream_window is not None and length > stream_window + stream_owed:
        return ("6.9.1", ErrorCode.FLOW_CONTROL_ERROR, False,
                f"DATA of {length} bytes on stream {sid} exceeds the stream's flow-control window "
                f"({stream_window + stream_owed})")
    return None


class StreamIds(Protocol):
    """What :func:`unknown_stream` reads of the relay (the relay, or one of its mixins)."""

    @property
    def recently_closed(self) -> RecentlyClosed: ...

    @property
    def sides(self) -> Tuple[Side, Side]: ...

    @property
    def last_client_push_id(self) -> int: ...


def unknown_stream(relay: StreamIds, sid: int) -> str:
    """What a stream id the relay does not track is: ``"idle"``, ``"refused"`` or ``"closed"``."""
    if relay.recently_closed.get(sid) == "refused":
        return "refused"
    if sid & 1:
        idle = sid > relay.sides[0].last_stream
    else:
        idle = sid > relay.sides[1].last_stream and sid > relay.last_client_push_id
    return "idle" if idle else "closed"


def is_informational(headers: Iterable[Tuple[str, str]]) -> bool:
    """Whether a response header list is a 1xx (informational) response, with more to follow."""
    status = pseudo(headers, ":status")
    return status is not None and status.startswith("1")
