"""The admin HTTP API: list, add, change and remove fault rules, read and reset counters.

HTTP/1.1 with JSON in and out, served on loopback only (any other address is
refused at start). Every request needs ``Authorization: Bearer TOKEN`` (else
401) and a ``Host`` header naming the admin address itself --
``127.0.0.1:PORT`` or ``localhost:PORT`` -- (else 403: a web page that got a
hostile DNS name to point at 127.0.0.1 sends its own name as Host). The token
is generated with :mod:`secrets` and printed unless one is configured.

Routes (docs/faults.md has curl examples)::

    GET    /faults                 the rules, with counters
    POST   /faults                 add: a rule table as JSON, or {"line": "drop type=ping"}
    GET    /faults/NAME            one rule
    PATCH  /faults/NAME            change keys (null removes a key)
    PUT    /faults/NAME            replace the rule's keys
    DELETE /faults/NAME            remove one rule
    DELETE /faults                 remove every rule
    GET    /counters               matches and hits per rule; connections_open, connections_total
    POST   /counters/reset         counters to zero, random numbers back to their seeds
    GET    /events?rule=NAME&limit=N   what the rules did, newest last
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import sys
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..server import ConfigError
from .hook import FaultHook
from .rules import FaultError

log = logging.getLogger("h2proxy")

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


def parse_admin_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` (or ``http://HOST:PORT``, ``[::1]:PORT``) on loopback; ConfigError otherwise."""
    raw = str(text).strip()
    target = raw if "://" in raw else f"http://{raw}"
    try:
        parts = urlsplit(target)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ConfigError(f"admin listen: {raw!r} is not HOST:PORT") from None
    if parts.scheme not in ("http", "") or not host or port is None:
        raise ConfigError(f"admin listen: {raw!r} is not HOST:PORT (e.g. 127.0.0.1:8081)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"admin listen: {raw!r}: give a loopback address (127.0.0.1, ::1 or localhost), "
                          f"not the name {host!r}") from None
    if not ip.is_loopback:
        raise ConfigError(f"admin listen: {raw!r}: the admin API listens on loopback only "
                          f"(127.0.0.1, ::1 or localhost); {host} is not loopback")
    return host, port


def find_fault_hook(hooks) -> FaultHook:
    if isinstance(hooks, FaultHook):
        return hooks
    for h in getattr(hooks, "hooks", None) or ():
        if isinstance(h, FaultHook):
            return h
    raise ConfigError("admin: the hook chain has no fault hook to manage")


class AdminServer:
    """Serves the admin API for the FaultHook in ``hooks`` (a HookChain or the FaultHook itself)."""

    def __init__(self, listen: str, token: Optional[str], hooks, announce: bool = True) -> None:
        self.host, self.requested_port = parse_admin_listen(listen)
        self.faults = find_fault_hook(hooks)
        chain = hooks if hasattr(hooks, "table") else None
        if chain is not None:
            self.faults.attach(chain)
        self.generated = not token
        self.token = token or secrets.token_urlsafe(24)
        self.announce = announce
        self.port: Optional[int] = None
        self.server: Optional[asyncio.AbstractServer] = None
        self._writers: set = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def allowed_hosts(self):
        hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        if ":" in self.host:
            hosts.add(f"[{self.host}]:{self.port}")
        else:
            hosts.add(f"{self.host}:{self.port}")
        return hosts

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.requested_port,
                                                     limit=MAX_HEAD)
        except OSError as exc:
            raise ConfigError(f"admin listen: cannot listen on {self.host}:{self.requested_port}: "
                              f"{exc.strerror or exc}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        if self.announce:
            text = f"h2proxy: admin API on {self.url}"
            if self.generated:
                text += f" (token: {self.token})"
            print(text, file=sys.stderr, flush=True)
        else:
            log.debug("admin API on %s", self.url)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                pass
            self.server = None

    # ------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await self._send(writer, 431, {"error": "request head too large"}, close=True)
                    return
                status, payload, close = await self._request(head, reader)
                await self._send(writer, status, payload, close=close)
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _request(self, head: bytes, reader) -> Tuple[int, Any, bool]:
        try:
            text = head.decode("latin-1")
            lines = text.split("\r\n")
            method, target, version = lines[0].split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
        except ValueError:
            return 400, {"error": "malformed request line"}, True
        headers: Dict[str, list] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return 400, {"error": f"malformed header line {line[:80]!r}"}, True
            headers.setdefault(name.lower(), []).append(value.strip())
        close = (version == "HTTP/1.0" or "close" in ",".join(headers.get("connection", [])).lower())
        if "transfer-encoding" in headers:
            return 501, {"error": "chunked request bodies are not supported; send Content-Length"}, True
        length = 0
        if "content-length" in headers:
            try:
                length = int(headers["content-length"][0])
                if length < 0 or len(set(headers["content-length"])) > 1:
                    raise ValueError
            except ValueError:
                return 400, {"error": "bad Content-Length"}, True
            if length > MAX_BODY:
                return 413, {"error": f"body larger than {MAX_BODY} bytes"}, True
        body = await reader.readexactly(length) if length else b""
        hosts = headers.get("host", [])
        if len(hosts) != 1 or hosts[0].lower() not in self.allowed_hosts():
            log.warning("admin API: refused a request with Host %r (allowed: %s)", hosts,
                        ", ".join(sorted(self.allowed_hosts())))
            return 403, {"error": "wrong Host header: the admin API answers to "
                                  + " or ".join(sorted(self.allowed_hosts())) + " only"}, close
        auth = headers.get("authorization", [""])
        given = auth[0][7:].strip() if len(auth) == 1 and auth[0][:7].lower() == "bearer " else ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return 401, {"error": "missing or wrong token: send Authorization: Bearer TOKEN"}, close
        try:
            status, payload = self._route(method, target, body)
        except FaultError as exc:
            status, payload = 400, {"error": str(exc)}
        except KeyError as exc:
            status, payload = 404, {"error": f"no fault rule named {exc.args[0]!r}"}
        except _HTTPError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # a bug must not take the proxy down
            log.error("admin API: %s %s failed", method, target, exc_info=exc)
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        return status, payload, close

    async def _send(self, writer, status: int, payload: Any, close: bool = False) -> None:
        body = (json.dumps(payload, indent=2, default=_json_default) + "\n").encode("utf-8")
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Cache-Control: no-store",
                f"Connection: {'close' if close else 'keep-alive'}"]
        if status == 401:
            head.append('WWW-Authenticate: Bearer realm="h2proxy admin"')
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    # ------------------------------------------------------------ routes

    def _route(self, method: str, target: str, body: bytes) -> Tuple[int, Any]:
        parts = urlsplit(target)
        path = [unquote(p) for p in parts.path.split("/") if p]
        query = parse_qs(parts.query)
        faults = self.faults
        if not path:
            _allow(method, "GET")
            return 200, {"endpoints": [
                "GET /faults", "POST /faults", "DELETE /faults", "GET /faults/NAME", "PATCH /faults/NAME",
                "PUT /faults/NAME", "DELETE /faults/NAME", "GET /counters", "POST /counters/reset",
                "GET /events?rule=NAME&limit=N"]}
        if path == ["faults"]:
            if method == "GET":
                return 200, {"faults": [r.to_dict() for r in faults.rules]}
            if method == "POST":
                spec = _json_body(body)
                if isinstance(spec, dict) and set(spec) <= {"line", "name"} and "line" in spec:
                    line = spec["line"]
                    if not isinstance(line, str):
                        raise _HTTPError(400, "line: expected a string")
                    if "name" in spec:
                        line += f" name={spec['name']}"
                    rule = faults.add(line, source=f"admin: fault {line!r}")
                elif isinstance(spec, dict):
                    rule = faults.add(spec, source="admin: fault")
                else:
                    raise _HTTPError(400, "expected a JSON object: a rule table or {\"line\": \"...\"}")
                return 201, {"fault": rule.to_dict()}
            if method == "DELETE":
                names = [r.name for r in faults.rules]
                faults.clear()
                return 200, {"removed": names}
            raise _HTTPError(405, f"{method} /faults: use GET, POST or DELETE")
        if len(path) == 2 and path[0] == "faults":
            name = path[1]
            if method == "GET":
                return 200, {"fault": faults.get(name).to_dict()}
            if method in ("PATCH", "PUT"):
                changes = _json_body(body)
                if not isinstance(changes, dict):
                    raise _HTTPError(400, "expected a JSON object of keys to change")
                rule = faults.change(name, changes, replace=(method == "PUT"))
                return 200, {"fault": rule.to_dict()}
            if method == "DELETE":
                faults.remove(name)
                return 200, {"removed": name}
            raise _HTTPError(405, f"{method} /faults/NAME: use GET, PATCH, PUT or DELETE")
        if path == ["counters"]:
            _allow(method, "GET")
            return 200, faults.counters()
        if path == ["counters", "reset"] or (path == ["counters"] and method == "DELETE"):
            _allow(method, "POST", "DELETE")
            faults.reset_counters()
            return 200, faults.counters()
        if path == ["events"]:
            _allow(method, "GET")
            events = faults.injected
            rule = query.get("rule", [None])[0]
            if rule is not None:
                events = [e for e in events if e["rule"] == rule]
            try:
                limit = int(query.get("limit", ["1000"])[0])
            except ValueError:
                raise _HTTPError(400, "limit: expected an integer") from None
            return 200, {"events": events[-limit:] if limit > 0 else []}
        raise _HTTPError(404, f"no such endpoint: {parts.path}")


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _allow(method: str, *methods: str) -> None:
    if method not in methods:
        raise _HTTPError(405, f"method {method} not allowed here; use {' or '.join(methods)}")


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise _HTTPError(400, "expected a JSON body")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _HTTPError(400, f"body is not valid JSON: {exc}") from None


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
