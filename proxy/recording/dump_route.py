"""``POST /record/dump`` for the admin API: have the flight recorder (``--record-ring``) write out what it holds.

Kept apart from the admin server so that any HTTP layer can serve it:
:func:`record_dump` takes the proxy's sink and the request body and returns
``(status, JSON payload)``; :func:`add_record_routes` adds the route to an
aiohttp application, and :class:`RecordRoutes` is the admin API extension
(:class:`proxy.faults.admin.AdminServer` ``extensions``) that does so: the
admin server's own guard then applies its token and Host checks to the route.

Body (optional JSON): ``{"reason": "text"}``, written into the dump's header.
Answers: 202 ``{"dumping": true, "files": "frames-dump-NNNN.jsonl", "reason": ...}``;
409 when the proxy runs no flight recorder; 400 for a body that is not a JSON
object.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional, Tuple

__all__ = ["record_dump", "add_record_routes", "flight_recorders", "RecordRoutes"]


def flight_recorders(sink) -> Iterator[Any]:
    """The sinks under ``sink`` (itself, or those of a MultiSink) that have a flight recorder."""
    if sink is None:
        return
    for s in getattr(sink, "sinks", None) or (sink,):
        if getattr(s, "ring", None) and hasattr(s, "request_dump"):
            yield s


def record_dump(sink, body: bytes = b"") -> Tuple[int, Any]:
    """Handle ``POST /record/dump``: (HTTP status, JSON-able payload)."""
    reason = "POST /record/dump"
    if body and body.strip():
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return 400, {"error": f"the body is not JSON: {exc}"}
        if not isinstance(doc, dict):
            return 400, {"error": "the body must be a JSON object, e.g. {\"reason\": \"slow request seen\"}"}
        if doc.get("reason") is not None:
            reason = f"POST /record/dump: {doc['reason']}"
    recorders = list(flight_recorders(sink))
    if not recorders:
        return 409, {"error": "no flight recorder: start the proxy with --record FILE --record-ring SIZE"}
    started = [r for r in recorders if r.request_dump(reason)]
    if not started:
        return 409, {"error": "the flight recorder has stopped"}
    files = []
    for r in started:
        head, base = os.path.split(r.path)
        name, dot, ext = base.partition(".")
        files.append(os.path.join(head, f"{name}-dump-NNNN{dot}{ext}"))
    return 202, {"dumping": True, "reason": reason, "files": files}


def add_record_routes(app, sink, check: Optional[Any] = None) -> None:
    """Add ``POST /record/dump`` to an aiohttp ``web.Application``.

    ``check(request)``, when given, runs first (the admin API's token and Host
    checks) and may raise an aiohttp HTTP exception.
    """
    from aiohttp import web

    async def handle(request):
        if check is not None:
            result = check(request)
            if hasattr(result, "__await__"):
                await result
        status, payload = record_dump(sink, await request.read())
        return web.json_response(payload, status=status)

    app.router.add_post("/record/dump", handle)


class RecordRoutes:
    """An admin API extension serving ``POST /record/dump`` for the flight recorders under ``sink``.

    The admin server runs every request through its guard (Host header, then
    the Bearer token) before any route, so the route needs no check of its own.
    """

    def __init__(self, sink) -> None:
        self.sink = sink

    def setup(self, app, server) -> None:
        add_record_routes(app, self.sink)
