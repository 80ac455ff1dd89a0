"""The admin HTTP API: list, add, change and remove fault rules, read and reset counters.

HTTP/1.1 with JSON in and out (an aiohttp application), served on loopback only (any other address is
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
from typing import Any, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

from ..server import ConfigError
from .hook import FaultHook
from .rules import FaultError

log = logging.getLogger("h2proxy")

MAX_BODY = 1024 * 1024


def json_response(status: int, payload: Any) -> web.Response:
    """A JSON answer that is never cached (401s name the Bearer scheme)."""
    body = json.dumps(payload, indent=2, default=_json_default) + "\n"
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="h2proxy admin"'
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


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
    """Serves the admin API for the FaultHook in ``hooks`` (a HookChain or the FaultHook itself).

    The HTTP server is an :mod:`aiohttp` application. ``extensions`` are objects
    with a ``setup(app, server)`` method that add routes to it (the web view);
    every route passes the same Host check, and every route but the ones an
    extension lists in ``server.public_paths`` (the page's static files, which
    hold no data) needs the token.
    """

    def __init__(self, listen: str, token: Optional[str], hooks, announce: bool = True,
                 extensions: Sequence[Any] = ()) -> None:
        self.host, self.requested_port = parse_admin_listen(listen)
        # No hooks: a server for a recorded log (``h2proxy log web``), with no rules to manage.
        self.faults = find_fault_hook(hooks) if hooks is not None else None
        chain = hooks if hasattr(hooks, "table") else None
        if chain is not None:
            self.faults.attach(chain)
        self.generated = not token
        self.token = token or secrets.token_urlsafe(24)
        self.announce = announce
        self.port: Optional[int] = None
        self.extensions = list(extensions)
        #: Paths served without the token (still with the Host check).
        self.public_paths: set = set()
        self.app: Optional[web.Application] = None
        self._runner: Optional[web.AppRunner] = None

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

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        for ext in self.extensions:
            ext.setup(app, self)
        app.router.add_route("*", "/{tail:.*}", self._api)
        return app

    async def start(self) -> None:
        self.app = self.build_app()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"admin listen: cannot listen on {self.host}:{self.requested_port}: "
                              f"{exc.strerror or exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]
        if self.announce:
            text = f"h2proxy: admin API on {self.url}"
            if self.generated:
                text += f" (token: {self.token})"
            print(text, file=sys.stderr, flush=True)
        else:
            log.debug("admin API on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            for ext in self.extensions:
                closing = getattr(ext, "shutdown", None)
                if closing is not None:
                    await closing()
            try:
                await asyncio.wait_for(runner.cleanup(), 5.0)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------ HTTP

    def host_ok(self, request: web.Request) -> bool:
        hosts = request.headers.getall("Host", [])
        return len(hosts) == 1 and hosts[0].lower() in self.allowed_hosts()

    def token_ok(self, request: web.Request) -> bool:
        auth = request.headers.getall("Authorization", [""])
        given = auth[0][7:].strip() if len(auth) == 1 and auth[0][:7].lower() == "bearer " else ""
        return secrets.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not self.host_ok(request):
            hosts = request.headers.getall("Host", [])
            log.warning("admin API: refused a request with Host %r (allowed: %s)", hosts,
                        ", ".join(sorted(self.allowed_hosts())))
            return json_response(403, {"error": "wrong Host header: the admin API answers to "
                                                + " or ".join(sorted(self.allowed_hosts())) + " only"})
        if request.path not in self.public_paths and not self.token_ok(request):
            return json_response(401, {"error": "missing or wrong token: send Authorization: Bearer TOKEN"})
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return json_response(413, {"error": f"body larger than {MAX_BODY} bytes"})

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method, target = request.method, request.path_qs
        try:
            body = await request.read()
            status, payload = self._route(method, target, body)
        except web.HTTPRequestEntityTooLarge:
            raise
        except FaultError as exc:
            status, payload = 400, {"error": str(exc)}
        except KeyError as exc:
            status, payload = 404, {"error": f"no fault rule named {exc.args[0]!r}"}
        except _HTTPError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # a bug must not take the proxy down
            log.error("admin API: %s %s failed", method, target, exc_info=exc)
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        return json_response(status, payload)

    # ------------------------------------------------------------ routes

    def _route(self, method: str, target: str, body: bytes) -> Tuple[int, Any]:
        parts = urlsplit(target)
        path = [unquote(p) for p in parts.path.split("/") if p]
        query = parse_qs(parts.query)
        faults = self.faults
        if faults is None and path and path[0] in ("faults", "counters", "events"):
            raise _HTTPError(503, "no fault rules here: they need a running proxy with a fault hook "
                                  "(start h2proxy with --admin or --fault); a recorded log has none")
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
