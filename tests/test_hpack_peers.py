"""The proxy's HPACK encoder against real decoders: nghttp, h2load and the h2 library as clients.

The built-in ``headers`` hook sets one response header, so every response block is decoded and
re-encoded by the proxy. The clients announce dynamic table sizes of 0, 64 and 4096 (and the h2
client changes its size mid-connection, which the proxy must follow with a dynamic table size
update, RFC 7541 §4.2); thousands of requests run on one connection and every response must come
back right. A decoder that disagrees with the proxy's encoder fails the connection
(COMPRESSION_ERROR), so "0 failures" is the check.
"""
from __future__ import annotations

import asyncio
import re
from typing import Dict, List, Optional

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import pytest_asyncio
from hpack import NeverIndexedHeaderTuple

from proxy.hooks.builtin.headers import HeadersHook
from tests.peers import LOOPBACK, Nghttpd, h2load, http_url, make_docroot, nghttp

pytestmark = pytest.mark.peers

BODY = b"x" * 1024
ADDED = ("x-via-h2proxy", "1")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = make_docroot(tmp_path_factory.mktemp("hpack-site"), {"index.html": BODY})
    with Nghttpd(root) as server:
        yield server


def _hook() -> HeadersHook:
    return HeadersHook(rules=[{"match": {"direction": "response"}, "set": {ADDED[0]: ADDED[1]}}])


@pytest_asyncio.fixture
async def hooked(site, proxy_factory):
    hook = _hook()
    px = await proxy_factory(site.url, hooks=[hook])
    return hook, http_url(px.url)


@pytest.mark.parametrize("table_size", [None, 0, 64])
async def test_nghttp_gets_every_rewritten_response(hooked, table_size):
    hook, url = hooked
    extra = [] if table_size is None else ["-c", str(table_size)]
    rc, out = await nghttp("-nv", *extra, "-m", "400", f"{url}/index.html", timeout=60)
    assert rc == 0, out[-2000:]
    if table_size is not None:
        assert f"[SETTINGS_HEADER_TABLE_SIZE(0x01):{table_size}]" in out
    assert out.count(f"{ADDED[0]}: {ADDED[1]}") == 400
    assert out.count(":status: 200") == 400 and "recv GOAWAY" not in out
    assert hook.rules[0].applied == 400


@pytest.mark.parametrize("table_size", [0, 64, 4096])
async def test_h2load_thousands_of_requests_on_one_connection(hooked, table_size):
    hook, url = hooked
    res = await h2load(f"{url}/index.html", 5000, 1, 20, f"--header-table-size={table_size}", timeout=120)
    assert res["failed"] == 0 and res["errored"] == 0, res.output[-1500:]
    assert res["succeeded"] == 5000 and res["2xx"] == 5000
    assert hook.rules[0].applied == 5000


# ------------------------------------------------------------- the h2 library as client

class H2Client:
    """A minimal asyncio client on the h2 library: requests in batches, responses collected."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                          header_encoding="utf-8"))
        self.responses: Dict[int, dict] = {}
        self.acked = 0

    @classmethod
    async def connect(cls, port: int) -> "H2Client":
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def batch(self, authority: str, count: int, path: str = "/index.html", extra=()) -> List[int]:
        ids = []
        for _ in range(count):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", authority),
                                         (":path", path), *extra], end_stream=True)
            self.responses[sid] = {"headers": None, "body": b"", "ended": False}
            ids.append(sid)
        await self.flush()
        while not all(self.responses[s]["ended"] for s in ids):
            data = await asyncio.wait_for(self.reader.read(65536), 20)
            assert data, "the proxy closed the connection"
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.responses[ev.stream_id]["headers"] = ev.headers
                elif isinstance(ev, h2.events.DataReceived):
                    self.responses[ev.stream_id]["body"] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.responses[ev.stream_id]["ended"] = True
                elif isinstance(ev, h2.events.SettingsAcknowledged):
                    self.acked += 1
                elif isinstance(ev, (h2.events.ConnectionTerminated, h2.events.StreamReset)):
                    raise AssertionError(f"the connection failed: {ev}")
            await self.flush()
        return ids

    async def close(self) -> None:
        self.conn.close_connection()
        await self.flush()
        self.writer.close()


async def test_h2_client_changing_its_table_size_mid_connection(site, proxy_factory):
    """4096 -> 0 -> 64 -> 4096 -> 0 -> 256, 400 requests in each phase, all on one connection."""
    hook = _hook()
    px = await proxy_factory(site.url, hooks=[hook])
    client = await H2Client.connect(px.port)
    authority = f"{LOOPBACK}:{px.port}"
    total = 0
    try:
        for size in (4096, 0, 64, 4096, 0, 256):
            client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
            await client.flush()
            for _ in range(8):           # no wait for the ACK: blocks cross the SETTINGS on the wire
                for sid in await client.batch(authority, 50):
                    r = client.responses.pop(sid)
                    assert (":status", "200") in r["headers"] and ADDED in r["headers"], r["headers"]
                    assert r["body"] == BODY
                    total += 1
            assert client.conn.decoder.max_allowed_table_size == size      # the client applied it
    finally:
        await client.close()
    assert total == 2400 and hook.rules[0].applied == 2400


# ------------------------------------------------------------- never-indexed fields end to end

class NeverIndexedOrigin:
    """An h2-library origin whose responses carry a never-indexed set-cookie; it records the types
    of the request headers it received."""

    def __init__(self) -> None:
        self.server: Optional[asyncio.base_events.Server] = None
        self.port = 0
        self.request_headers: List[list] = []

    async def start(self) -> "NeverIndexedOrigin":
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"h2c://{LOOPBACK}:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    self.request_headers.append(ev.headers)
                    conn.send_headers(ev.stream_id, [
                        (":status", "200"), ("content-type", "text/plain"),
                        NeverIndexedHeaderTuple("set-cookie", "session=0123456789abcdefghijklmnopqrstuvwxyz"),
                    ])
                    conn.send_data(ev.stream_id, b"ok", end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_never_indexed_fields_stay_never_indexed_through_a_rewriting_proxy(proxy_factory):
    origin = await NeverIndexedOrigin().start()
    hook = HeadersHook(rules=[{"match": {"direction": "response"}, "set": {ADDED[0]: ADDED[1]}},
                              {"match": {"direction": "request"}, "set": {"x-from-proxy": "1"}}])
    try:
        px = await proxy_factory(origin.url, hooks=[hook])
        client = await H2Client.connect(px.port)
        secret = NeverIndexedHeaderTuple("x-api-key", "k-0123456789abcdefghijklmnopqrstuvwxyz")
        try:
            for _ in range(3):
                for sid in await client.batch(f"{LOOPBACK}:{px.port}", 5, path="/", extra=[secret]):
                    headers = client.responses.pop(sid)["headers"]
                    assert ADDED in headers
                    [cookie] = [h for h in headers if h[0] == "set-cookie"]
                    assert isinstance(cookie, NeverIndexedHeaderTuple), headers
                    # ... and never entered the client's dynamic table.
                    assert all(name != b"set-cookie" for name, _ in client.conn.decoder.header_table.dynamic_entries)
        finally:
            await client.close()
        assert len(origin.request_headers) == 15
        for headers in origin.request_headers:
            assert ("x-from-proxy", "1") in headers
            [key] = [h for h in headers if h[0] == "x-api-key"]
            assert isinstance(key, NeverIndexedHeaderTuple)
    finally:
        await origin.stop()


def test_module_finds_its_header_in_nghttp_output_format():
    # (guards the counting above: nghttp -v prints received headers as "name: value")
    line = "[  0.002] recv (stream_id=13) x-via-h2proxy: 1"
    assert re.search(rf"{ADDED[0]}: {ADDED[1]}", line)
