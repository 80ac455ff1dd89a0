"""The ``push`` hook: the proxy pushes resources of its own (RFC 9113 section 8.4).

Rules say which requests trigger which pushes::

    PushHook(rules=[{"path": "/index.html",
                     "push": [{"path": "/style.css", "headers": {"content-type": "text/css"},
                               "body": "body { color: red }"},
                              {"path": "/app.js", "file": "static/app.js"}]}])

When the pushes happen (``when``):

* ``"response"`` (the default): when the response HEADERS of a matching request
  come back from the server. The PUSH_PROMISEs go out just before those
  response HEADERS, so every promise precedes the response DATA that may
  reference the resource (RFC 9113 section 8.4: the promise should come first),
  and the server has accepted the request. A response that ends the stream
  in its HEADERS (no body: 204, 304, HEAD) leaves no open stream to promise
  on: the push is refused (``stream ... is closed``) and reported.
* ``"request"``: as soon as the request HEADERS arrive from the client, before
  the server has seen the request. The promises reach the client earliest;
  the pushes happen even if the server later fails the request.

The pushed responses come from the proxy (the server never sees them); the
proxy sends their bodies within the client's flow-control windows. A push
the proxy cannot make (the client disabled push, too many pushed streams,
GOAWAY, a closed stream) is refused: the hook logs the reason and keeps it in
``refusals``. Where the client's first SETTINGS disabled push (h2load, most
browsers) responses are not decoded at all, and the refusals are reported at
the request.
"""
from __future__ import annotations

import collections
import fnmatch
import logging
import mimetypes
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...core.protocol import Setting
from ..api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Hook, HookOptionError, header_value
from ..interest import Interest

log = logging.getLogger("h2proxy")

WHEN = ("response", "request")


class PushResource:
    """One resource to push: ``path``, ``status``, response ``headers`` and ``body`` (bytes)."""

    __slots__ = ("path", "status", "headers", "body")

    def __init__(self, path: str, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.path = path
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"PushResource({self.path!r}, status={self.status}, {len(self.body)} bytes)"


class PushRule:
    """A request pattern (``path``, ``authority``, ``method`` globs) and the resources it pushes."""

    __slots__ = ("path", "authority", "method", "resources", "_path_rx", "_authority_rx", "_method_rx")

    def __init__(self, path: str, authority: Optional[str], method: Optional[str],
                 resources: List[PushResource]) -> None:
        self.path = path
        self.authority = authority
        self.method = method
        self.resources = resources
        # The globs compiled once: asked for every request (interest) and again on its response.
        self._path_rx = re.compile(fnmatch.translate(path)).match
        self._authority_rx = re.compile(fnmatch.translate(authority)).match if authority is not None else None
        self._method_rx = re.compile(fnmatch.translate(method)).match if method is not None else None

    def matches(self, request: Sequence[Tuple[str, str]]) -> bool:
        path = header_value(request, ":path")
        if path is None:
            return False
        if self._path_rx(path.split("?", 1)[0]) is None:
            return False
        if self._authority_rx is not None and self._authority_rx(
                header_value(request, ":authority") or header_value(request, "host") or "") is None:
            return False
        if self._method_rx is not None and self._method_rx(header_value(request, ":method") or "") is None:
            return False
        return True


class PushHook(Hook):
    """Options: ``rules`` (a list of tables: ``path`` glob of the triggering request, optional
    ``authority`` and ``method`` globs, and ``push``: a list of resources with ``path``, optional
    ``status`` (200), ``headers`` (a table or a list of pairs; ``content-type`` is guessed from the
    path when absent) and ``body`` (text) or ``file`` (read once, when the hook is made; a relative
    path is relative to ``base_dir``, default the working directory)); ``when`` (``response``, the
    default, or ``request``: see the module docstring).

    Counters: ``pushed`` (pushes started), ``refusals`` (the last 100 ``(path, reason)`` pairs),
    ``refused`` (how many in all).
    """

    name = "push"

    def __init__(self, rules: Sequence[Dict[str, Any]] = (), when: str = "response",
                 base_dir: Optional[str] = None) -> None:
        if when not in WHEN:
            raise HookOptionError(f"push: when {when!r} is not one of {', '.join(WHEN)}")
        if isinstance(rules, dict) or not isinstance(rules, (list, tuple)):
            raise HookOptionError("push: rules must be a list of tables ([[hooks.rules]] in TOML)")
        super().__init__(rules=rules, when=when, base_dir=base_dir)
        self.when = when
        base = Path(base_dir) if base_dir else Path.cwd()
        self.rules: List[PushRule] = [_rule(r, i, base) for i, r in enumerate(rules)]
        self.pushed = 0
        self.refused = 0
        self.refusals: "collections.deque[Tuple[str, str]]" = collections.deque(maxlen=100)
        self._warned: set = set()

    def interest(self) -> Interest:
        """Only streams whose request some rule matches, and only their HEADERS in the direction ``when``
        names; requests are decoded (to match them), responses too with ``when = "response"`` (to read
        their :status), but only where the client allows push: where its first SETTINGS disables it,
        nothing can be pushed, and what was not is reported at the request (``decode_if_push``)."""
        rules = self.rules

        def wanted(request) -> bool:
            if request is not None:
                for rule in rules:
                    if rule.matches(request):
                        return True
            return False
        wanted.request_only = True      # type: ignore[attr-defined]  # (a pure function of the request)
        if self.when == "request":
            return Interest(types=("headers",), directions=(CLIENT_TO_SERVER,), stream=wanted,
                            decode=(CLIENT_TO_SERVER,))
        return Interest(types=("headers",), directions=(CLIENT_TO_SERVER, SERVER_TO_CLIENT), stream=wanted,
                        decode=(CLIENT_TO_SERVER,), decode_if_push=(SERVER_TO_CLIENT,))

    def on_headers(self, ctx, frame, headers):
        if not self.rules or headers is None or ctx.stream is None or ctx.stream.id % 2 == 0:
            return None
        if self.when == "request":
            if ctx.direction != CLIENT_TO_SERVER or header_value(headers, ":method") is None:
                return None
            request = headers
        elif ctx.direction == CLIENT_TO_SERVER:
            # A client that disabled push gets none: the refusals are reported at its request (its
            # responses are not decoded: see interest).
            if header_value(headers, ":method") is None or ctx.conn.settings[0].get(Setting.ENABLE_PUSH, 1) != 0:
                return None
            request = headers
        else:
            status = header_value(headers, ":status")
            if status is None or status.startswith("1"):
                return None          # trailers or an informational response: wait for the final one
            request = ctx.request_headers
            if not request:
                return None
        self.push_for(ctx, request)
        return None

    def push_for(self, ctx, request: Sequence[Tuple[str, str]]) -> List[Any]:
        """Push what the rules say for ``request`` on ctx's stream; returns each PushStarted/PushRefused."""
        own_path = (header_value(request, ":path") or "").split("?", 1)[0]
        results = []
        for rule in self.rules:
            if not rule.matches(request):
                continue
            for res in rule.resources:
                if res.path == own_path:
                    continue        # never push the very resource that was asked for
                result = ctx.push(res.path, res.headers, res.body, res.status)
                results.append(result)
                if result:
                    self.pushed += 1
                else:
                    self.refused += 1
                    self.refusals.append((res.path, result.reason))
                    key = (res.path, result.reason)
                    if key not in self._warned and len(self._warned) < 100:
                        self._warned.add(key)
                        log.warning("push: %s not pushed on stream %d: %s", res.path,
                                    ctx.stream.id if ctx.stream is not None else 0, result.reason)
        return results


def _rule(table: Any, i: int, base: Path) -> PushRule:
    where = f"push: rules[{i}]"
    if not isinstance(table, dict):
        raise HookOptionError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - {"path", "authority", "method", "push"}
    if unknown:
        raise HookOptionError(f"{where}: unknown keys {sorted(unknown)} (known: path, authority, method, push)")
    path = table.get("path")
    if not isinstance(path, str) or not path:
        raise HookOptionError(f"{where}.path: required: a path glob such as '/index.html' or '/*'")
    for key in ("authority", "method"):
        if table.get(key) is not None and not isinstance(table[key], str):
            raise HookOptionError(f"{where}.{key}: expected a string, got {table[key]!r}")
    push = table.get("push")
    if not isinstance(push, (list, tuple)) or not push:
        raise HookOptionError(f"{where}.push: required: a list of resources to push")
    resources = [_resource(r, f"{where}.push[{j}]", base) for j, r in enumerate(push)]
    return PushRule(path, table.get("authority"), table.get("method"), resources)


def _resource(table: Any, where: str, base: Path) -> PushResource:
    if isinstance(table, str):
        table = {"path": table}
    if not isinstance(table, dict):
        raise HookOptionError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - {"path", "status", "headers", "body", "file"}
    if unknown:
        raise HookOptionError(f"{where}: unknown keys {sorted(unknown)} (known: path, status, headers, body, file)")
    path = table.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise HookOptionError(f"{where}.path: required: an absolute path such as '/style.css', got {path!r}")
    status = table.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        # RFC 9113 section 8.4: a pushed response is a complete, final response.
        raise HookOptionError(f"{where}.status: expected a final status code 200..599, got {status!r}")
    if "body" in table and "file" in table:
        raise HookOptionError(f"{where}: give body or file, not both")
    body: bytes = b""
    if "body" in table:
        value = table["body"]
        if isinstance(value, str):
            body = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            body = bytes(value)
        else:
            raise HookOptionError(f"{where}.body: expected text, got {value!r}")
    elif "file" in table:
        if not isinstance(table["file"], str):
            raise HookOptionError(f"{where}.file: expected a path, got {table['file']!r}")
        fpath = Path(table["file"])
        if not fpath.is_absolute():
            fpath = base / fpath
        try:
            body = fpath.read_bytes()
        except OSError as exc:
            raise HookOptionError(f"{where}.file: cannot read {fpath}: {exc.strerror or exc}") from None
    raw_headers = table.get("headers", {})
    if isinstance(raw_headers, dict):
        pairs = list(raw_headers.items())
    elif isinstance(raw_headers, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in raw_headers):
        pairs = [tuple(p) for p in raw_headers]
    else:
        raise HookOptionError(f"{where}.headers: expected a table of name = value, got {raw_headers!r}")
    headers: List[Tuple[str, str]] = []
    for name, value in pairs:
        if not isinstance(name, str) or not name or name.startswith(":"):
            raise HookOptionError(f"{where}.headers: {name!r} is not a header name (the proxy sets :status)")
        headers.append((name.lower(), str(value)))
    if not any(n == "content-type" for n, _ in headers):
        ctype = mimetypes.guess_type(path.split("?", 1)[0])[0] or "application/octet-stream"
        headers.append(("content-type", ctype))
    return PushResource(path, status, headers, body)

