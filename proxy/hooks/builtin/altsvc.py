"""The ``altsvc`` hook: what happens to ALTSVC frames (RFC 7838).

RFC 7838 section 4 says an intermediary must not forward ALTSVC frames, since
the alternative it names is the origin's, not the proxy's: ``drop`` (the
default) follows that; ``forward`` passes them on; ``rewrite`` replaces the
field or the origin, sets ``ma``, or adds and removes alternatives.

The ``Alt-Svc`` response *header* (RFC 7838 section 3) is end-to-end and is
left alone unless ``header`` asks otherwise (``drop`` or ``rewrite``, with the
same rules as the frame). Reading headers costs the proxy its fast path for
header blocks, so the hook only asks for them when ``header`` is not ``keep``.
"""
from __future__ import annotations

import fnmatch
import logging
import re
import weakref
from typing import List, Optional, Sequence

from ..api import SERVER_TO_CLIENT, Hook, HookOptionError

__all__ = ["AltSvcHook", "HookOptionError"]

log = logging.getLogger("h2proxy")


def _shown(field: bytes) -> str:
    """An Alt-Svc field value for a log line: the ASCII text it is meant to be, anything else as \\xNN."""
    if not field:
        return "(empty field)"
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in field)


MODES = ("drop", "forward", "rewrite")
HEADER_MODES = ("keep", "drop", "rewrite")


class AltSvcHook(Hook):
    """Options: ``mode`` (drop, forward, rewrite); for rewrite: ``field`` (replaces the whole
    Alt-Svc value), ``origin`` (replaces the origin of connection-level frames), ``ma`` (sets the
    max-age of every alternative), ``add`` (alternatives appended, e.g. ``'h2="alt:443"'``) and
    ``remove`` (globs matched against each alternative's protocol id or whole text, e.g. ``"h3*"``);
    ``header`` (keep, drop, rewrite): what happens to ``alt-svc`` response headers.

    Counters: ``dropped``, ``rewritten``, ``forwarded`` (frames), ``headers_changed``.
    """

    name = "altsvc"

    def __init__(self, mode: str = "drop", field: Optional[str] = None, origin: Optional[str] = None,
                 ma: Optional[int] = None, add: Sequence[str] = (), remove: Sequence[str] = (),
                 header: str = "keep") -> None:
        if mode not in MODES:
            raise HookOptionError(f"altsvc: mode {mode!r} is not one of {', '.join(MODES)}")
        if header not in HEADER_MODES:
            raise HookOptionError(f"altsvc: header {header!r} is not one of {', '.join(HEADER_MODES)}")
        if ma is not None and (isinstance(ma, bool) or not isinstance(ma, int) or ma < 0):
            raise HookOptionError(f"altsvc: ma must be a number of seconds (an integer >= 0), not {ma!r}")
        if isinstance(add, str) or isinstance(remove, str):
            raise HookOptionError("altsvc: add and remove are lists of strings")
        super().__init__(mode=mode, field=field, origin=origin, ma=ma, add=list(add), remove=list(remove),
                         header=header)
        self.mode = mode
        self.field = field
        self.origin = origin
        self.ma = ma
        self.add = list(add)
        self.remove = list(remove)
        self.header = header
        self.dropped = 0
        self.rewritten = 0
        self.forwarded = 0
        # Connections whose first dropped ALTSVC was logged.
        self._told: "weakref.WeakSet" = weakref.WeakSet()
        self.headers_changed = 0
        if header != "keep":
            # Only now does the hook read header blocks (see the module docstring).
            self.on_headers = self._on_headers

    def on_altsvc(self, ctx, frame):
        if self.mode == "forward":
            self.forwarded += 1
            return None
        field = getattr(frame, "field", None)
        if field is None:
            # Malformed (the relay hands it over raw): dropped in drop and rewrite mode alike, since
            # an intermediary forwards no ALTSVC frame (RFC 7838 section 4) and this one cannot be rewritten.
            self.dropped += 1
            log.warning("c%s: malformed ALTSVC frame on stream %d dropped (RFC 7838 section 4): %s", ctx.conn.id,
                        frame.stream_id, getattr(frame, "problem", "its body does not parse"))
            return []
        if self.mode == "drop":
            self.dropped += 1
            conn = ctx.conn
            first = conn not in self._told
            if first:
                self._told.add(conn)
            # The first drop of each connection at info (the rest at debug: a server may send many).
            log.log(logging.INFO if first else logging.DEBUG,
                    "c%s: ALTSVC on stream %d dropped (RFC 7838 section 4): %s%s", conn.id, frame.stream_id,
                    _shown(bytes(frame.field)), "; further ALTSVC frames of this connection are dropped too"
                    if first else "")
            return []
        new_field = self.rewrite_field(bytes(frame.field).decode("latin-1"))
        frame.field = new_field.encode("latin-1")
        if self.origin is not None and frame.stream_id == 0:
            frame.origin = self.origin.encode("latin-1")
        self.rewritten += 1
        return frame

    def _on_headers(self, ctx, frame, headers):
        if ctx.direction != SERVER_TO_CLIENT or not headers:
            return None
        if not any(n == "alt-svc" for n, _ in headers):
            return None
        if self.header == "drop":
            out = [(n, v) for n, v in headers if n != "alt-svc"]
        else:
            out = [(n, self.rewrite_field(v) if n == "alt-svc" else v) for n, v in headers]
        if out == headers:
            return None
        self.headers_changed += 1
        return out

    def rewrite_field(self, value: str) -> str:
        """Apply the rewrite rules to an Alt-Svc field value."""
        if self.field is not None:
            value = self.field
        if value.strip() == "clear":
            alternatives: List[str] = []
        else:
            alternatives = [a.strip() for a in _split_alternatives(value) if a.strip()]
        if self.remove:
            alternatives = [a for a in alternatives if not any(
                fnmatch.fnmatch(_protocol_id(a), pat) or fnmatch.fnmatch(a, pat) for pat in self.remove)]
        alternatives += list(self.add)
        if self.ma is not None:
            alternatives = [_set_param(a, "ma", str(self.ma)) for a in alternatives]
        return ", ".join(alternatives) if alternatives else "clear"


def _split_alternatives(value: str) -> List[str]:
    """Split on commas outside quoted strings."""
    out: List[str] = []
    cur: List[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _protocol_id(alternative: str) -> str:
    return alternative.split("=", 1)[0].strip()


def _set_param(alternative: str, name: str, value: str) -> str:
    parts = [p.strip() for p in alternative.split(";")]
    kept = [parts[0]] + [p for p in parts[1:] if not re.match(rf"{name}\s*=", p)]
    return "; ".join(kept + [f"{name}={value}"])
