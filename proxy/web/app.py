"""The web view's routes on the admin API's aiohttp application, and ``h2proxy log web``.

``GET /`` is the page and ``/static/...`` its files: they hold no data and are
served without the token (still with the Host check). Everything else needs
the token like the admin API: ``GET /api/web/snapshot``, ``/api/web/conn/N``,
``/api/web/conn/N/stream/S`` (JSON) and ``/api/web/events`` (server-sent
events: a ``delta`` event whenever the model changed, at most every
``interval`` seconds). The page reads the token from the URL's fragment
(``/#token=...``), which browsers never send to the server.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from aiohttp import web

from ..faults.admin import AdminServer, json_response
from ..recording.recorder import dumps_bytes
from ..signals import stop_event
from .model import WebModel

__all__ = ["WebView", "serve_log", "STATIC"]

log = logging.getLogger("h2proxy")
STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


def _dumps(value: dict) -> str:
    return dumps_bytes(value).decode()      # (orjson: the page's deltas are the bulk of its cost)


class WebView:
    """An extension of :class:`~proxy.faults.admin.AdminServer` that serves the page for ``model``."""

    def __init__(self, model: WebModel, interval: float = 1.0, delta_frames: int = 200) -> None:
        self.model = model
        self.interval = interval
        #: The most frames a delta carries (the page shows the latest 200).
        self.delta_frames = delta_frames
        self.server: Optional[AdminServer] = None
        self._closing = asyncio.Event()

    def setup(self, app: web.Application, server: AdminServer) -> None:
        self.server = server
        static = {f"/static/{p.name}" for p in STATIC.iterdir()}
        server.public_paths.update({"/", "/index.html", "/favicon.ico"} | static)
        r = app.router
        r.add_get("/favicon.ico", self._no_icon)
        r.add_get("/", self._page)
        r.add_get("/index.html", self._page)
        r.add_get("/static/{name}", self._static)
        r.add_get("/api/web/snapshot", self._snapshot)
        r.add_get("/api/web/conn/{cid}", self._conn)
        r.add_get("/api/web/conn/{cid}/stream/{sid}", self._stream)
        r.add_get("/api/web/events", self._events)

    @property
    def page_url(self) -> str:
        """The page's address with the token in the fragment; known once the admin server set the view up."""
        if self.server is None:
            raise RuntimeError("the web view has no admin server yet: pass it in AdminServer(extensions=...)")
        return f"{self.server.url}/#token={self.server.token}"

    async def shutdown(self) -> None:
        self._closing.set()

    # ------------------------------------------------------------ files

    async def _no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.StreamResponse:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return json_response(404, {"error": f"no such file: {name}"})
        return web.Response(body=path.read_bytes(), content_type=_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'"})

    # ------------------------------------------------------------ data

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=_dumps(self.model.snapshot()), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    @staticmethod
    def _int(request: web.Request, name: str) -> Optional[int]:
        try:
            return int(request.match_info[name])
        except ValueError:
            return None

    async def _conn(self, request: web.Request) -> web.StreamResponse:
        cid = self._int(request, "cid")
        if cid is None:
            return json_response(400, {"error": f"connection id: expected an integer, not "
                                                f"{request.match_info['cid']!r}"})
        data = self.model.connection(cid)
        if data is None:
            return json_response(404, {"error": f"no connection {cid} (gone from the bounded window, or never seen)"})
        return web.Response(text=_dumps(data), content_type="application/json", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        cid, sid = self._int(request, "cid"), self._int(request, "sid")
        if cid is None or sid is None:
            return json_response(400, {"error": f"connection and stream ids: expected integers, not "
                                                f"{request.match_info['cid']!r}, {request.match_info['sid']!r}"})
        data = self.model.stream(cid, sid)
        if data is None:
            return json_response(404, {"error": f"no stream {sid} on connection {cid}"})
        return web.Response(text=_dumps(data), content_type="application/json", headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``delta`` with changed connections and new frames; a comment as keep-alive."""
        try:
            version = int(request.query.get("version", "0"))
            cursor = int(request.query.get("cursor", "0"))
        except ValueError:
            return json_response(400, {"error": "version and cursor: expected integers"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        idle = 0
        self.model.readers += 1
        try:
            await resp.write(b": connected\n\n")
            while not self._closing.is_set():
                delta = self.model.delta(version, cursor, max_frames=self.delta_frames)
                if delta is not None:
                    version, cursor = delta["version"], delta["cursor"]
                    await resp.write(f"event: delta\ndata: {_dumps(delta)}\n\n".encode())
                    idle = 0
                else:
                    idle += 1
                    if idle * self.interval >= 10:
                        await resp.write(b": idle\n\n")
                        idle = 0
                try:
                    await asyncio.wait_for(self._closing.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.model.readers -= 1
        return resp


async def serve_log(path: str, listen: str, token: Optional[str], stall_ms: float,
                    records: Optional[Iterable[dict[str, Any]]] = None) -> int:
    """``h2proxy log web FILE``: load the log into a model and serve the page until interrupted."""
    from ..recording.logfile import read_records

    if records is None:
        records = read_records(path)
    model = WebModel(mode="log", title=str(path), stall_threshold=stall_ms / 1000.0)
    model.ingest_many(records)
    view = WebView(model)
    server = AdminServer(listen, token, None, announce=False, extensions=[view])
    await server.start()
    print(f"h2proxy: web view of {path} on {view.page_url}", file=sys.stderr, flush=True)
    stop = stop_event()
    await stop.wait()
    await server.stop()
    return 0
