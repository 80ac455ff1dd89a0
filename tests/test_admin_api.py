"""The admin HTTP API: loopback only, token and Host checks, rule CRUD, counters, and rules that
take effect on open connections at once; also through the command line with curl."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time

import pytest

from proxy.demo_origin import DemoOrigin
from proxy.faults import FaultHook
from proxy.faults.admin import AdminServer
from proxy.hooks.chain import HookChain
from proxy.server import ConfigError
from proxy.testing import H2Client, h2proxy_running
from tests.conftest import await_port, free_port, need, run
from tests.peers import nghttp as checked_nghttp  # (runs the shared SETTINGS-first / blame check)


async def http(port: int, method: str, path: str, body=None, token=None, host=None, raw_headers=()):
    """One HTTP/1.1 request; returns (status, headers dict, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close",
             f"Content-Length: {len(data)}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.extend(raw_headers)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if payload and headers.get("content-type", "").startswith("application/json"):
        return int(status_line.split()[1]), headers, json.loads(payload)
    return int(status_line.split()[1]), headers, payload.decode(errors="replace") or None


@pytest.fixture
async def admin():
    hook = FaultHook(["drop type=ping name=first"])
    server = AdminServer("127.0.0.1:0", "s3cret", HookChain([hook]), announce=False)
    await server.start()
    yield server
    await server.stop()


# ---------------------------------------------------------------- where it listens, the token

@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.168.1.5:8081", "example.com:8081", "[::]:0", "8081"])
def test_refuses_to_listen_off_loopback(listen):
    with pytest.raises(ConfigError, match="admin listen"):
        AdminServer(listen, None, FaultHook())


async def test_listens_on_localhost_and_generates_and_prints_a_token(capsys):
    server = AdminServer("localhost:0", None, FaultHook())
    await server.start()
    try:
        err = capsys.readouterr().err
        assert server.generated and len(server.token) >= 32
        assert f"admin API on http://127.0.0.1:{server.port} (token: {server.token})" in err
        status, _, _ = await http(server.port, "GET", "/faults", token=server.token,
                                  host=f"localhost:{server.port}")
        assert status == 200
    finally:
        await server.stop()
    other = AdminServer("127.0.0.1:0", None, FaultHook(), announce=False)
    assert other.token != server.token
    configured = AdminServer("127.0.0.1:0", "mine", FaultHook())
    await configured.start()
    try:
        assert "mine" not in capsys.readouterr().err and not configured.generated
    finally:
        await configured.stop()


async def test_wrong_or_missing_token_gets_401(admin):
    status, headers, body = await http(admin.port, "GET", "/faults", token="wrong")
    assert status == 401 and "token" in body["error"]
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, _ = await http(admin.port, "GET", "/faults")
    assert status == 401
    status, _, _ = await http(admin.port, "POST", "/faults", {"line": "drop"}, token="s3cre")
    assert status == 401
    assert [r.name for r in admin.faults.rules] == ["first"]       # nothing was added


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1", "127.0.0.1:1", "localhost",
                                  "attacker.test"])
async def test_wrong_host_gets_403_even_with_the_token(admin, host):
    status, _, body = await http(admin.port, "GET", "/faults", token="s3cret", host=host.format(port=admin.port))
    assert status == 403 and "Host" in body["error"]


async def test_two_host_headers_are_refused(admin):
    # aiohttp's parser refuses a second Host header (400) before the Host check (403) could.
    status, _, body = await http(admin.port, "GET", "/faults", token="s3cret",
                                 raw_headers=[f"Host: evil.example:{admin.port}"])
    assert status in (400, 403) and "Host" in str(body)


# ---------------------------------------------------------------- rules and counters

async def test_list_add_change_remove_rules(admin):
    p, t = admin.port, "s3cret"
    status, _, body = await http(p, "GET", "/faults", token=t)
    assert status == 200 and [r["name"] for r in body["faults"]] == ["first"]
    status, _, body = await http(p, "POST", "/faults", {"line": "rst_stream code=REFUSED_STREAM every=3",
                                                        "name": "refuse"}, token=t)
    assert status == 201 and body["fault"]["name"] == "refuse" and body["fault"]["every"] == "3"
    status, _, body = await http(p, "POST", "/faults", {"name": "late", "action": "delay", "ms": 2000,
                                                        "type": "settings", "nth": 1}, token=t)
    assert status == 201 and body["fault"]["ms"] == 2000
    status, _, body = await http(p, "PATCH", "/faults/refuse", {"every": 2, "enabled": False}, token=t)
    assert status == 200 and body["fault"]["every"] == 2 and body["fault"]["enabled"] is False
    assert admin.faults.get("refuse").every == 2 and not admin.faults.get("refuse").enabled
    status, _, body = await http(p, "PUT", "/faults/late", {"action": "drop", "type": "ping"}, token=t)
    assert status == 200 and body["fault"] == {**body["fault"], "name": "late", "action": "drop", "type": "ping"}
    assert "ms" not in body["fault"]
    status, _, body = await http(p, "GET", "/faults/late", token=t)
    assert status == 200 and body["fault"]["action"] == "drop"
    status, _, body = await http(p, "DELETE", "/faults/first", token=t)
    assert status == 200 and body == {"removed": "first"}
    status, _, body = await http(p, "GET", "/faults", token=t)
    assert [r["name"] for r in body["faults"]] == ["refuse", "late"]
    status, _, body = await http(p, "DELETE", "/faults", token=t)
    assert status == 200 and body["removed"] == ["refuse", "late"] and admin.faults.rules == []


async def test_errors_name_the_key_and_value(admin):
    p, t = admin.port, "s3cret"
    status, _, body = await http(p, "POST", "/faults", {"line": "rst_stream code=NOPE"}, token=t)
    assert status == 400 and "code = 'NOPE'" in body["error"]
    status, _, body = await http(p, "POST", "/faults", {"action": "delay", "ms": "soon"}, token=t)
    assert status == 400 and "ms = 'soon'" in body["error"]
    status, _, body = await http(p, "PATCH", "/faults/first", {"copies": 3}, token=t)
    assert status == 400 and "copies" in body["error"] and "does not apply to action drop" in body["error"]
    status, _, body = await http(p, "POST", "/faults", {"line": "drop name=first"}, token=t)
    assert status == 400 and "exists already" in body["error"]
    status, _, body = await http(p, "GET", "/faults/nope", token=t)
    assert status == 404 and "nope" in body["error"]
    status, _, body = await http(p, "POST", "/faults", b"{not json", token=t)
    assert status == 400 and "JSON" in body["error"]
    status, _, body = await http(p, "PATCH", "/faults", {}, token=t)
    assert status == 405
    status, _, body = await http(p, "GET", "/nowhere", token=t)
    assert status == 404


async def test_counters_events_and_reset_through_a_real_connection():
    origin = DemoOrigin()
    await origin.start()
    try:
        rule = "rst_stream code=REFUSED_STREAM type=headers direction=s2c every=2 towards=client name=half"
        async with h2proxy_running(origin.url, [rule], admin=True) as proxy:
            p, t = proxy.admin.port, proxy.admin.token
            async with H2Client(proxy.url) as c:
                results = [(await c.get("/size/10")).reset for _ in range(4)]
            assert results == [None, "REFUSED_STREAM", None, "REFUSED_STREAM"]
            status, _, body = await http(p, "GET", "/counters", token=t)
            assert status == 200 and body["rules"]["half"] == {"matches": 4, "hits": 2}
            status, _, body = await http(p, "GET", "/events?rule=half&limit=1", token=t)
            assert [e["stream"] for e in body["events"]] == [7]
            assert body["events"][0]["detail"] == "RST_STREAM REFUSED_STREAM towards client"
            status, _, body = await http(p, "POST", "/counters/reset", token=t)
            assert status == 200 and body["rules"]["half"] == {"matches": 0, "hits": 0} and body["events"] == 0
            assert proxy.hits("half") == 0
    finally:
        await origin.stop()


async def test_a_rule_added_through_the_api_applies_to_the_open_connection_at_once():
    origin = DemoOrigin()
    await origin.start()
    try:
        async with h2proxy_running(origin.url, admin=True) as proxy:
            p, t = proxy.admin.port, proxy.admin.token
            async with H2Client(proxy.url) as c:
                assert (await c.get("/size/10")).ok
                status, _, _ = await http(p, "POST", "/faults", {"line": "rst_stream code=CANCEL type=headers "
                                                                         "direction=s2c towards=client",
                                                                 "name": "now"}, token=t)
                assert status == 201
                assert (await c.get("/size/10")).reset == "CANCEL"
                status, _, _ = await http(p, "PATCH", "/faults/now", {"code": "REFUSED_STREAM"}, token=t)
                assert (await c.get("/size/10")).reset == "REFUSED_STREAM"
                status, _, _ = await http(p, "DELETE", "/faults/now", token=t)
                assert (await c.get("/size/10")).ok
    finally:
        await origin.stop()


# ---------------------------------------------------------------- the command line, driven with curl

async def _start_cli(*args):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return proc


async def _read_until(stream, pattern: str, timeout: float = 15.0) -> re.Match:
    text = ""
    deadline = time.monotonic() + timeout
    while True:
        line = await asyncio.wait_for(stream.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            raise AssertionError(f"the proxy exited; its output:\n{text}")
        text += line.decode(errors="replace")
        m = re.search(pattern, text)
        if m:
            return m


async def test_cli_with_admin_api_and_curl_as_in_the_docs():
    origin = DemoOrigin()
    await origin.start()
    port, admin_port = free_port(), free_port()
    proc = await _start_cli("--listen", f"h2c://127.0.0.1:{port}", "--upstream", origin.url,
                            "--admin", f"127.0.0.1:{admin_port}",
                            "--fault", "goaway code=ENHANCE_YOUR_CALM debug=cli type=headers direction=s2c name=g")
    try:
        m = await _read_until(proc.stderr, r"admin API on http://127\.0\.0\.1:(\d+) \(token: (\S+)\)")
        assert int(m.group(1)) == admin_port
        token = m.group(2)
        await await_port(port)
        api = f"http://127.0.0.1:{admin_port}"
        auth = f"Authorization: Bearer {token}"
        rc, out = await run(need("curl"), "-s", "-H", auth, f"{api}/faults")
        assert rc == 0 and json.loads(out)["faults"][0]["name"] == "g"
        rc, out = await checked_nghttp("-nv", f"http://127.0.0.1:{port}/size/10")
        assert "error_code=ENHANCE_YOUR_CALM(0x0b), opaque_data(3)=[cli]" in out, out
        rc, out = await run(need("curl"), "-s", "-H", auth, "-X", "POST", f"{api}/faults", "-d",
                            '{"line": "rst_stream code=REFUSED_STREAM type=headers direction=s2c towards=client", '
                            '"name": "refuse"}')
        assert rc == 0 and json.loads(out)["fault"]["name"] == "refuse"
        rc, out = await checked_nghttp("-nv", f"http://127.0.0.1:{port}/size/10")
        assert "error_code=REFUSED_STREAM(0x07)" in out, out
        rc, out = await run(need("curl"), "-s", "-H", auth, f"{api}/counters")
        assert json.loads(out)["rules"]["refuse"]["hits"] == 1
        rc, out = await run(need("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{api}/faults")
        assert out == "401"
        rc, out = await run(need("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", auth, "-H",
                            f"Host: evil.example:{admin_port}", f"{api}/faults")
        assert out == "403"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        await origin.stop()


@pytest.mark.parametrize("args, words", [
    (["--fault", "rst_stream code=NOPE"], ["--fault 'rst_stream code=NOPE'", "code = 'NOPE'"]),
    (["--fault", "delay type=data"], ["ms: missing"]),
    (["--admin", "0.0.0.0:0"], ["admin listen", "loopback only"]),
])
async def test_cli_errors_name_the_key_and_value_and_exit_2(args, words):
    origin = DemoOrigin()
    await origin.start()
    try:
        proc = await _start_cli("--listen", f"h2c://127.0.0.1:{free_port()}", "--upstream", origin.url, *args)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        text = err.decode()
        assert proc.returncode == 2, text
        for w in words:
            assert w in text, text
    finally:
        await origin.stop()


async def test_connection_counts_are_named_open_and_total_in_the_api_and_the_plugin():
    """One closed connection and one open: open 1, total 2, the same in both (issue 13, item 8)."""
    origin = DemoOrigin()
    await origin.start()
    try:
        async with h2proxy_running(origin.url, ["drop type=ping name=noop"], admin=True) as proxy:
            p, t = proxy.admin.port, proxy.admin.token
            async with H2Client(proxy.url) as c:
                assert (await c.get("/")).status == 200
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while proxy.connections_open:              # (the proxy sees the close a moment later)
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            async with H2Client(proxy.url) as c:
                assert (await c.get("/")).status == 200
                status, _, body = await http(p, "GET", "/counters", token=t)
                assert status == 200 and "connections" not in body
                assert (body["connections_open"], body["connections_total"]) == (1, 2)
                assert (proxy.connections_open, proxy.connections_total) == (1, 2)
                assert not hasattr(proxy, "connections")
    finally:
        await origin.stop()
