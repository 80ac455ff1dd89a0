"""The ``headers`` hook: set, add, remove or rewrite request and response headers by rule.

::

    HeadersHook(rules=[
        {"match": {"direction": "response", "path": "/api/*", "status": "2*"},
         "set": {"cache-control": "no-store"}, "remove": ["server", "x-powered-*"]},
        {"match": {"direction": "request", "header": {"user-agent": "curl/*"}},
         "replace": {"user-agent": ["^curl/", "curl-via-h2proxy/"]}},
    ])

Every rule whose ``match`` holds is applied, in order, each to the result of
the ones before. The changed block is handed back to the proxy as a header
list, which it HPACK-encodes (and from then on re-encodes that direction's
blocks, since the receiver's HPACK table no longer follows the sender's).

What a rule matches (every key optional; values are globs, case-sensitive
except header names):

* ``direction``: ``request`` (client to server), ``response`` (server to
  client) or ``both`` (the default);
* ``method``, ``path`` (without the query string), ``authority``, ``scheme``:
  the stream's request, also for responses;
* ``status``: the response status (``"2*"``, ``"404"``); a rule with
  ``status`` only matches responses. Informational (1xx) responses are only
  changed by rules whose ``status`` matches them;
* ``header``: a table of header name -> value glob, all must match a header of
  the block being changed (``"*"``: the header is present);
* ``trailers``: ``true`` makes the rule apply to trailer blocks (header
  blocks without pseudo-headers) instead of request and response heads.

What it does, in this order:

* ``remove``: header names or name globs to delete (``"x-debug-*"``);
* ``replace``: name (or name glob) -> ``[regex, replacement]``, ``re.sub`` on
  each value of those headers (``\\1`` refers to groups);
* ``set``: name -> value (or a list of values): replaces every header of that
  name, or appends it when there is none. Pseudo-headers (``:path``,
  ``:status``, ...) may be set: they are replaced in place or inserted
  before the regular headers;
* ``add``: name -> value (or list): appended, next to any existing ones.
"""
from __future__ import annotations

import fnmatch
import logging
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Headers, Hook, HookOptionError, header_value
from ..interest import Interest

log = logging.getLogger("h2proxy")

DIRECTIONS = {"request": CLIENT_TO_SERVER, "response": SERVER_TO_CLIENT, "both": None,
              CLIENT_TO_SERVER: CLIENT_TO_SERVER, SERVER_TO_CLIENT: SERVER_TO_CLIENT}
_MATCH_KEYS = ("direction", "method", "path", "authority", "scheme", "status", "header", "trailers")
_RULE_KEYS = ("match", "set", "add", "remove", "replace")

HeaderList = List[Tuple[str, str]]

#: Outcomes of :meth:`HeadersHook.rewrite` remembered per hook (a proxy sees the same header lists
#: again and again; the rules are pure functions of the list, its direction and the request).
REWRITE_MEMO_ENTRIES = 512


class HeaderRule:
    """One rule, checked and compiled from its table (see the module docstring)."""

    def __init__(self, table: Dict[str, Any], where: str = "headers: rule") -> None:
        if not isinstance(table, dict):
            raise HookOptionError(f"{where}: expected a table, got {table!r}")
        unknown = set(table) - set(_RULE_KEYS)
        if unknown:
            raise HookOptionError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(_RULE_KEYS)})")
        match = table.get("match", {}) or {}
        if not isinstance(match, dict):
            raise HookOptionError(f"{where}.match: expected a table, got {match!r}")
        unknown = set(match) - set(_MATCH_KEYS)
        if unknown:
            raise HookOptionError(f"{where}.match: unknown keys {sorted(unknown)} (known: {', '.join(_MATCH_KEYS)})")
        direction = match.get("direction", "both")
        if direction not in DIRECTIONS:
            raise HookOptionError(f"{where}.match.direction: {direction!r} is not request, response or both")
        self.direction: Optional[str] = DIRECTIONS[direction]
        self.request_globs: List[Tuple[str, str]] = []
        for key in ("method", "path", "authority", "scheme"):
            if key in match:
                self.request_globs.append((":" + key, _string(match[key], f"{where}.match.{key}")))
        self.status: Optional[str] = None
        if "status" in match:
            self.status = _string(str(match["status"]) if isinstance(match["status"], int)
                                  and not isinstance(match["status"], bool) else match["status"],
                                  f"{where}.match.status")
            if self.direction == CLIENT_TO_SERVER:
                raise HookOptionError(f"{where}.match: status only matches responses, not direction = request")
            self.direction = SERVER_TO_CLIENT
        header = match.get("header", {}) or {}
        if not isinstance(header, dict):
            raise HookOptionError(f"{where}.match.header: expected a table of name = value glob")
        self.header_globs = [(_name(n, f"{where}.match.header"), _string(v, f"{where}.match.header.{n}"))
                             for n, v in header.items()]
        trailers = match.get("trailers", False)
        if not isinstance(trailers, bool):
            raise HookOptionError(f"{where}.match.trailers: expected true or false")
        self.trailers = trailers

        remove = table.get("remove", [])
        if isinstance(remove, str):
            remove = [remove]
        if not isinstance(remove, (list, tuple)):
            raise HookOptionError(f"{where}.remove: expected a list of header names")
        self.remove = [_name(n, f"{where}.remove") for n in remove]
        replace = table.get("replace", {}) or {}
        if not isinstance(replace, dict):
            raise HookOptionError(f"{where}.replace: expected a table of name = [regex, replacement]")
        self.replace = []
        for n, pair in replace.items():
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(p, str) for p in pair)):
                raise HookOptionError(f"{where}.replace.{n}: expected [regex, replacement], got {pair!r}")
            try:
                rx = re.compile(pair[0])
            except re.error as exc:
                raise HookOptionError(f"{where}.replace.{n}: bad regex {pair[0]!r}: {exc}") from None
            self.replace.append((_name(n, f"{where}.replace"), rx, pair[1]))
        self.set = _values(table.get("set", {}), f"{where}.set")
        self.add = _values(table.get("add", {}), f"{where}.add")
        self.applied = 0

    def matches(self, direction: str, headers: HeaderList, request: Optional[HeaderList]) -> bool:
        if self.direction is not None and direction != self.direction:
            return False
        status = header_value(headers, ":status")
        is_trailers = not any(n.startswith(":") for n, _ in headers)
        if is_trailers != self.trailers:
            return False
        if self.status is not None:
            if status is None or not fnmatch.fnmatchcase(status, self.status):
                return False
        elif status is not None and status.startswith("1"):
            return False
        if self.request_globs:
            req = headers if direction == CLIENT_TO_SERVER and not is_trailers else request
            if not req or not self.request_matches(req):
                return False
        for name, glob in self.header_globs:
            if not any(n == name and fnmatch.fnmatchcase(v, glob) for n, v in headers):
                return False
        return True

    def request_matches(self, req: HeaderList) -> bool:
        """Whether the request's method, path, authority and scheme match this rule's globs."""
        for name, glob in self.request_globs:
            value = header_value(req, name)
            if name == ":authority" and value is None:
                value = header_value(req, "host")
            if value is None:
                return False
            if name == ":path":
                value = value.split("?", 1)[0]
            if not fnmatch.fnmatchcase(value, glob):
                return False
        return True

    def apply(self, headers: HeaderList) -> HeaderList:
        out = list(headers)
        if self.remove:
            out = [(n, v) for n, v in out if not any(fnmatch.fnmatchcase(n, g) for g in self.remove)]
        for glob, rx, repl in self.replace:
            out = [(n, rx.sub(repl, v) if fnmatch.fnmatchcase(n, glob) else v) for n, v in out]
        for name, values in self.set:
            positions = [i for i, (n, _) in enumerate(out) if n == name]
            if positions:
                first = positions[0]
                out = [h for i, h in enumerate(out) if i not in positions[1:]]
                out[first:first + 1] = [(name, v) for v in values]
            elif name.startswith(":"):
                at = next((i for i, (n, _) in enumerate(out) if not n.startswith(":")), len(out))
                out[at:at] = [(name, v) for v in values]
            else:
                out.extend((name, v) for v in values)
        for name, values in self.add:
            if name.startswith(":"):
                at = next((i for i, (n, _) in enumerate(out) if not n.startswith(":")), len(out))
                out[at:at] = [(name, v) for v in values]
            else:
                out.extend((name, v) for v in values)
        return out


class HeadersHook(Hook):
    """Options: ``rules``, a list of tables with ``match``, ``set``, ``add``, ``remove`` and
    ``replace`` (see the module docstring).

    Counters: ``changed`` (header blocks changed), and ``applied`` on each of ``rules``.
    """

    name = "headers"

    def __init__(self, rules: Sequence[Dict[str, Any]] = ()) -> None:
        if isinstance(rules, dict) or not isinstance(rules, (list, tuple)):
            raise HookOptionError("headers: rules must be a list of tables ([[hooks.rules]] in TOML)")
        super().__init__(rules=rules)
        self.rules = [HeaderRule(r, f"headers: rules[{i}]") for i, r in enumerate(rules)]
        self.changed = 0
        # (direction, headers, request or None) -> (the rules applied, the new list or None).
        self._memo: Dict[tuple, Tuple[List[HeaderRule], Optional[HeaderList]]] = {}
        self._reads_request = any(rule.request_globs for rule in self.rules)

    def interest(self) -> Interest:
        """HEADERS in the directions the rules name, decoded there; when every rule matches on the
        request (method, path, authority, scheme), only the streams whose request one of them matches
        (requests are then decoded too)."""
        directions = set()
        for rule in self.rules:
            directions |= {rule.direction} if rule.direction is not None else {CLIENT_TO_SERVER, SERVER_TO_CLIENT}
        stream = None
        if self.rules and all(rule.request_globs for rule in self.rules):
            rules = self.rules

            def stream(request) -> bool:
                return request is not None and any(rule.request_matches(request) for rule in rules)
            stream.request_only = True      # type: ignore[attr-defined]  # (a pure function of the request)
        decode = set(directions)
        if stream is not None:
            decode.add(CLIENT_TO_SERVER)
        return Interest(types=("headers",), directions=tuple(directions), stream=stream, decode=tuple(decode))

    def on_headers(self, ctx, frame, headers):
        if headers is None:
            return None        # the block could not be decoded: leave it alone
        new = self.rewrite(ctx.direction, headers, ctx.request_headers)
        if new is None:
            return None
        self.changed += 1
        if not new:
            # An empty list would drop the block; an empty block is sent as such.
            return Headers(frame.stream_id, [], end_stream="END_STREAM" in frame.flags)
        return new

    def rewrite_header_list(self, direction: str, headers: HeaderList,
                            request: Optional[HeaderList] = None) -> Optional[HeaderList]:
        """What :meth:`on_headers` does, for the relay's direct call (no frame, no context): the new
        list, or None when nothing changed."""
        new = self.rewrite(direction, headers, request)
        if new is not None:
            self.changed += 1
        return new

    def rewrite(self, direction: str, headers: HeaderList,
                request: Optional[HeaderList] = None) -> Optional[HeaderList]:
        """The headers after every matching rule, or None when nothing changed.

        Remembered for lists of plain pairs (a never-indexed field's mark is the relay's to keep:
        it re-marks by value what arrived never-indexed); ``applied`` counts every call all the same.
        """
        key: Optional[tuple] = (direction, tuple(headers),
                                tuple(request) if self._reads_request and request is not None else None)
        for h in headers:
            if type(h) is not tuple:
                key = None
                break
        memo = self._memo
        if key is not None:
            try:
                hit = memo.get(key)
            except TypeError:          # (a value that cannot be hashed: a hook's odd list)
                hit = key = None
            if hit is not None:
                for rule in hit[0]:
                    rule.applied += 1
                return None if hit[1] is None else list(hit[1])
        out = list(headers)
        applied = []
        for rule in self.rules:
            if rule.matches(direction, out, request):
                rule.applied += 1
                applied.append(rule)
                out = rule.apply(out)
        result = None if out == list(headers) else out
        if key is not None:
            if len(memo) >= REWRITE_MEMO_ENTRIES:
                memo.clear()
            memo[key] = (applied, None if result is None else list(result))
        return result


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HookOptionError(f"{where}: expected a string, got {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise HookOptionError(f"{where}: {value!r} is not a header name")
    return value.lower()


def _values(table: Any, where: str) -> List[Tuple[str, List[str]]]:
    if not isinstance(table, dict):
        raise HookOptionError(f"{where}: expected a table of name = value")
    out = []
    for name, value in table.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise HookOptionError(f"{where}.{name}: expected a string or a list of strings, got {value!r}")
        out.append((_name(name, where), [str(v) for v in values]))
    return out

