"""Every fault action against real peers: what nghttp -v prints, curl's exit code, what an
h2-library client or server saw, and what nghttpd -v logged on the server side."""
from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from proxy.demo_origin import body_bytes
from proxy.testing import H2Client, h2proxy_running
from tests.conftest import await_port, free_port, need, run

pytestmark = pytest.mark.peers

DATA, HEADERS, CONTINUATION = 0, 1, 9


class VerboseNghttpd:
    """nghttpd -v on loopback, its log in a file the test can wait on."""

    def __init__(self, docroot: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.fh = open(log, "w")
        self.proc = subprocess.Popen([need("nghttpd"), "-v", "--no-tls", "-d", str(docroot), str(self.port)],
                                     stdout=self.fh, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"h2c://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, pattern: str, timeout: float = 5.0) -> str:
        """Wait until the log has a line matching ``pattern``; return the log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"nghttpd never logged {pattern!r}; log tail:\n{text[-2000:]}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.fh.close()


@pytest.fixture
async def nghttpd_v(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "f40k").write_bytes(os.urandom(40000))
    servers = []

    async def start() -> VerboseNghttpd:
        s = VerboseNghttpd(www, tmp_path / f"nghttpd{len(servers)}.log")
        servers.append(s)
        await await_port(s.port)
        return s
    yield start
    for s in servers:
        s.stop()


async def nghttp(url: str, *extra: str, timeout: float = 20.0):
    # (Through tests.peers.nghttp: the shared check that no peer that behaved is blamed.)
    from tests.peers import nghttp as checked_nghttp
    return await checked_nghttp("-nv", *extra, url, timeout=timeout)


async def curl(url: str, *extra: str):
    return await run(need("curl"), "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-m", "10", *extra, url)


def recv_data_lengths(out: str):
    return [int(m) for m in re.findall(r"recv DATA frame <length=(\d+)", out)]


# ---------------------------------------------------------------- delay, throttle

async def test_delay_the_servers_settings_reach_nghttp_late(origin):
    rule = "delay ms=400 type=settings flags=!ACK direction=server->client nth=1 name=late"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/10")
        assert rc == 0, out
        first = re.search(r"\[\s*([\d.]+)\] recv SETTINGS frame", out)
        assert first and float(first.group(1)) >= 0.4, out
        assert proxy.hits("late") == 1


async def test_throttle_slows_curl_down_to_the_rate(origin):
    async with h2proxy_running(origin.url, ["throttle rate=512KiB direction=s2c name=slow"]) as proxy:
        rc, out = await curl(proxy.url + "/size/262144", "-w", "%{size_download} %{time_total}")
        assert rc == 0, out
        size, took = out.split()
        assert int(size) == 262144
        assert float(took) >= 0.4          # 256 KiB at 512 KiB/s, less the first frame that goes at once
        assert proxy.hits("slow") >= 16


# ---------------------------------------------------------------- drop, duplicate, corrupt, split

async def test_drop_first_data_frame_nghttp_sees_the_body_short(nghttpd_v):
    server = await nghttpd_v()
    async with h2proxy_running(server.url, ["drop type=data direction=s2c nth=1"]) as proxy:
        rc, out = await nghttp(proxy.url + "/f40k")
        # nghttp gets 16384 + 7232 of 40000 bytes and resets the stream (content-length mismatch)
        assert re.search(r"send RST_STREAM frame .*\n\s*\(error_code=PROTOCOL_ERROR", out), out
        assert sum(recv_data_lengths(out)) < 40000
        log = await server.wait_for(r"send DATA frame <length=7232, flags=0x01")
        assert "send DATA frame <length=16384" in log        # the server sent it all


async def test_dropped_data_is_credited_back_unless_raw(origin):
    async with h2proxy_running(origin.url, ["drop type=data direction=s2c stream=1 name=d"]) as proxy:
        async with H2Client(proxy.url) as c:
            c.start_request("/size/300000")            # more than the client's 64 KiB windows
            r = await c.get("/size/100000", timeout=5)
            assert r.ok and len(r.body) == 100000      # the connection window came back
        assert proxy.hits("d") >= 4
        proxy.change_fault("d", raw=True)
        async with H2Client(proxy.url) as c:
            c.start_request("/size/300000")
            r = await c.get("/size/100000", timeout=1)
            assert r.timed_out and len(r.body) == 0    # no credit: the server's window is used up


async def test_duplicate_data_curl_sees_a_protocol_error(origin):
    async with h2proxy_running(origin.url, ["duplicate type=data direction=s2c nth=1"]) as proxy:
        rc, out = await curl(proxy.url + "/size/40000")
        assert rc == 92 and "PROTOCOL_ERROR" in out, (rc, out)      # more body than content-length
        rc, out = await nghttp(proxy.url + "/size/40000")
        assert recv_data_lengths(out)[:2] == [16384, 16384], out


async def test_corrupt_data_payload_h2_client_gets_flipped_bytes_and_the_connection_lives(origin):
    async with h2proxy_running(origin.url, ["corrupt offsets=0,5 type=data direction=s2c nth=1 stream=1"]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/size/40000")
            expected = bytearray(body_bytes(40000))
            expected[0] ^= 0xFF
            expected[5] ^= 0xFF
            assert r.ok and r.body == expected
            r2 = await c.get("/size/40000")
            assert r2.ok and r2.body == body_bytes(40000)


async def test_corrupt_length_lie_nghttp_answers_frame_size_error(origin):
    async with h2proxy_running(origin.url, ["corrupt length_delta=5 type=data direction=s2c nth=1"]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/40000")
        assert re.search(r"send GOAWAY frame .*\n\s*\(last_stream_id=\d+, error_code=FRAME_SIZE_ERROR", out), out


async def test_split_data_nghttp_sees_smaller_frames(origin):
    async with h2proxy_running(origin.url, ["split parts=4 type=data direction=s2c nth=1"]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/40000")
        assert rc == 0, out
        assert recv_data_lengths(out) == [4096] * 4 + [16384, 7232], out


async def test_split_headers_into_continuations_h2_client_decodes_them(origin):
    async with h2proxy_running(origin.url, ["split parts=3 type=headers direction=s2c"]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/size/10")
            assert r.ok and r.status == 200 and r.header("server") == "h2proxy-demo-origin"
            kinds = [f[0] for f in c.frames if f[2] == 1]
            assert kinds[:3] == [HEADERS, CONTINUATION, CONTINUATION], c.frames
            assert [bool(f[1] & 0x4) for f in c.frames if f[2] == 1][:3] == [False, False, True]


# ---------------------------------------------------------------- rst_stream, goaway, close

async def test_rst_stream_refused_reaches_nghttp_and_curl(origin):
    rule = "rst_stream code=REFUSED_STREAM type=headers direction=s2c towards=client name=r"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/10")
        assert re.search(r"recv RST_STREAM frame .*\n\s*\(error_code=REFUSED_STREAM\(0x07\)\)", out), out
        proxy.change_fault("r", code="INTERNAL_ERROR")
        rc, out = await curl(proxy.url + "/size/10")
        assert rc == 92 and "INTERNAL_ERROR" in out, (rc, out)


async def test_a_reset_held_for_other_streams_reaches_the_h2_client_while_they_stay_open(origin):
    # The reset towards the client waits for other streams' next frames, a millisecond at most: here
    # none come (the POST on stream 1 never ends), and the proxy's wake-up sends it on its own.
    rule = "rst_stream code=REFUSED_STREAM path=/size/* towards=client type=headers direction=c2s name=r"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            held_open = c.start_request("/echo", method="POST", body=b"part", keep_open=True)
            refused = await c.response(c.start_request("/size/10"), timeout=5)
            assert refused.reset == "REFUSED_STREAM" and not refused.timed_out
            assert refused.elapsed < 0.5, refused.elapsed     # (its Wake, not the once-a-second tick)
            assert not c.responses[held_open].ended and c.responses[held_open].reset is None
        assert proxy.hits("r") == 1


async def test_rst_stream_towards_server_nghttpd_logs_it(nghttpd_v):
    server = await nghttpd_v()
    rule = "rst_stream code=ENHANCE_YOUR_CALM type=data direction=s2c nth=2 towards=server"
    async with h2proxy_running(server.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/f40k", timeout=3)
            assert not r.ok
        log = await server.wait_for(r"recv RST_STREAM frame")
        assert re.search(r"recv RST_STREAM frame .*\n\s*\(error_code=ENHANCE_YOUR_CALM", log)


async def test_goaway_towards_client_nghttp_prints_it(origin):
    rule = "goaway code=ENHANCE_YOUR_CALM debug=bye type=headers direction=s2c"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/10")
        assert re.search(r"recv GOAWAY frame .*\n\s*\(last_stream_id=13, error_code=ENHANCE_YOUR_CALM\(0x0b\), "
                         r"opaque_data\(3\)=\[bye\]\)", out), out
        assert ":status: 200" in out        # the response the GOAWAY covers still arrives


async def test_goaway_towards_server_nghttpd_logs_it(nghttpd_v):
    server = await nghttpd_v()
    rule = "goaway code=NO_ERROR last_stream_id=1 debug=proxy-says-bye towards=server type=headers direction=c2s"
    async with h2proxy_running(server.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            await c.get("/f40k", timeout=3)
        log = await server.wait_for(r"opaque_data\(\d+\)=\[proxy-says-bye\]")
        assert re.search(r"recv GOAWAY frame .*\n\s*\(last_stream_id=1, error_code=NO_ERROR", log)


async def test_close_with_fin_and_with_tcp_reset(origin):
    # on the second stream: nothing of the client is in flight then, so the kernel sends FIN, not RST
    async with h2proxy_running(origin.url, ["close type=headers direction=s2c nth_stream=2 name=c"]) as proxy:
        async with H2Client(proxy.url) as c:
            assert (await c.get("/size/10")).ok
            r = await c.get("/size/10", timeout=5)
            assert r.error and c.error == "the connection was closed (EOF)"
        proxy.change_fault("c", nth_stream=None)
        rc, out = await curl(proxy.url + "/size/10")
        assert rc in (18, 52), (rc, out)        # curl: empty reply / stream not closed cleanly (timing)
        proxy.change_fault("c", reset=True, nth_stream=2)
        async with H2Client(proxy.url) as c:
            assert (await c.get("/size/10")).ok
            r = await c.get("/size/10", timeout=5)
            assert r.error and "reset" in (c.error or "").lower(), c.error


# ---------------------------------------------------------------- stall

async def test_stall_after_1_mib_for_a_time_then_the_download_finishes(origin):
    rule = "stall towards=server ms=700 type=data direction=s2c after_bytes=1MiB name=st"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            sid = c.start_request("/big")
            body = c.responses[sid].body
            assert await c.wait_for(lambda: len(body) >= 1 << 20)
            # during the stall at most the window the client had granted comes in, then nothing
            assert not await c.wait_for(lambda: len(body) >= (1 << 20) + 3 * 65536, timeout=0.3)
            assert (1 << 20) <= len(body)
            r = await c.response(sid, timeout=15)
            assert r.ok and len(r.body) == 10 * 1024 * 1024
            assert r.elapsed >= 0.7
        details = [e["detail"] for e in proxy.events("st")]
        assert details[0].startswith("WINDOW_UPDATEs towards the server withheld")
        assert re.match(r"stall over: \d+ bytes of window released", details[1])


async def test_stall_for_good_nghttp_never_finishes(origin):
    rule = "stall towards=server type=data direction=s2c after_bytes=256KiB"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        started = time.monotonic()
        rc, out = await nghttp(proxy.url + "/big", "-t", "1")
        total = sum(recv_data_lengths(out))
        assert (256 << 10) <= total < (256 << 10) + 3 * 65536, (rc, total)
        assert not re.search(r"recv DATA frame <length=\d+, flags=0x01", out)     # never ended
        assert time.monotonic() - started >= 1.0                                   # nghttp gave up


# ---------------------------------------------------------------- inject, settings

async def test_inject_ping_nghttp_answers_it_and_the_ack_stays_with_the_proxy(origin):
    rule = "inject frame=ping opaque=68326661756c7421 type=headers direction=s2c"     # "h2fault!"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/10")
        assert rc == 0, out
        assert re.search(r"recv PING frame <length=8, flags=0x00, stream_id=0>\n\s*\(opaque_data=68326661756c7421\)",
                         out), out
        assert ":status: 200" in out


async def test_inject_ping_towards_nghttpd_its_ack_does_not_reach_the_client(nghttpd_v):
    server = await nghttpd_v()
    rule = "inject frame=ping opaque=0102030405060708 type=headers direction=c2s towards=server"
    async with h2proxy_running(server.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/f40k")
            assert r.ok
            await server.wait_for(r"send PING frame <length=8, flags=0x01")
            await c.ping(b"after!!!")                  # its ACK comes after any stray one would
            assert await c.wait_for(lambda: any(type(e).__name__ == "PingAckReceived" for e in c.events))
            acks = [bytes(e.ping_data) for e in c.events if type(e).__name__ == "PingAckReceived"]
            assert acks == [b"after!!!"]
        assert "(opaque_data=0102030405060708)" in server.text()


async def test_injected_settings_ack_swallowed_else_nghttpd_fails_the_connection(nghttpd_v):
    server = await nghttpd_v()
    rule = ("inject frame=settings set.MAX_HEADER_LIST_SIZE=50000 type=headers direction=c2s towards=client "
            "nth_stream=1 name=s")
    async with h2proxy_running(server.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            assert (await c.get("/f40k")).ok
            assert c.settings.get(6) == 50000         # the client applied the injected SETTINGS
            assert (await c.get("/f40k")).ok and c.goaway is None
        proxy.change_fault("s", raw=True)             # repairs off: the client's ACK reaches nghttpd
        async with H2Client(proxy.url) as c:
            await c.get("/f40k")
            ok = await c.wait_for(lambda: c.goaway is not None, timeout=5)
            assert ok, (c.error, c.closed, c.events[-8:], server.text()[-3000:])
            assert c.goaway.error_code == "PROTOCOL_ERROR" and b"unexpected ACK" in c.goaway.debug


async def test_inject_unknown_frame_type_reaches_the_h2_client(origin):
    rule = "inject frame=0xfa payload=c0ffee frame_flags=0x3 type=headers direction=s2c"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/size/10")
            assert r.ok
            assert c.unknown_frames == [(0xFA, 0, 0x3, bytes.fromhex("c0ffee"))]


async def test_inject_raw_hex_and_data_after_the_frame(origin):
    ping = "0000080600000000006869676868696869"      # PING "highhihi"
    rules = [f"inject hex={ping} type=headers direction=s2c name=h",
             "inject frame=data data=EXTRA position=after type=data flags=!END_STREAM direction=s2c nth=1 name=d"]
    async with h2proxy_running(origin.url, rules) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/size/40000", timeout=5)
            assert c.frames_of(6) == [(6, 0, 0, 8)]     # the PING (h2 drops events of a batch it rejects)
            # the injected DATA makes the body 5 bytes longer than content-length: h2 refuses it
            assert not r.ok and "InvalidBodyLength" in (c.error or r.error or ""), (c.error, r.error)
        assert proxy.hits("d") == 1


async def test_settings_change_in_flight_both_ways(origin, nghttpd_v):
    async with h2proxy_running(origin.url, ["settings set.MAX_CONCURRENT_STREAMS=7 direction=s2c"]) as proxy:
        rc, out = await nghttp(proxy.url + "/size/10")
        assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]" in out, out
    server = await nghttpd_v()
    rule = "settings set.INITIAL_WINDOW_SIZE=12345 remove=ENABLE_PUSH direction=c2s"
    async with h2proxy_running(server.url, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            r = await c.get("/f40k", timeout=1)
            # nghttpd believes the client's stream window is 12345 bytes: that much comes, then it waits
            # for a WINDOW_UPDATE the client (which announced 65535) has no reason to send yet
            assert r.timed_out and r.data_frames == [12345]
        log = await server.wait_for(r"\[SETTINGS_INITIAL_WINDOW_SIZE\(0x04\):12345\]")
        assert "SETTINGS_ENABLE_PUSH" not in log.split("SETTINGS_INITIAL_WINDOW_SIZE(0x04):12345")[0] \
            .rsplit("recv SETTINGS", 1)[-1]


# ---------------------------------------------------------------- matching by request, how often, run time

async def test_path_glob_picks_the_requests_curl_sees(origin):
    rule = "rst_stream code=INTERNAL_ERROR path=/size/1* method=GET type=headers direction=s2c"
    async with h2proxy_running(origin.url, [rule]) as proxy:
        rc1, _ = await curl(proxy.url + "/size/10")
        rc2, _ = await curl(proxy.url + "/size/20")
        assert (rc1, rc2) == (92, 0)


async def _reset_pattern(upstream: str, seed: int, n: int = 30):
    rule = (f"rst_stream code=REFUSED_STREAM probability=0.3 seed={seed} towards=client type=headers "
            f"direction=s2c name=flaky")
    async with h2proxy_running(upstream, [rule]) as proxy:
        async with H2Client(proxy.url) as c:
            pattern = [(await c.get(f"/size/{i + 1}")).reset == "REFUSED_STREAM" for i in range(n)]
        assert proxy.hits("flaky") == sum(pattern)
        return pattern


async def test_the_same_seed_gives_the_same_faults_on_a_rerun(origin):
    first = await _reset_pattern(origin.url, seed=11)
    second = await _reset_pattern(origin.url, seed=11)
    rng = random.Random(11)
    assert first == second == [rng.random() < 0.3 for _ in range(30)]
    assert 0 < sum(first) < 30
    assert await _reset_pattern(origin.url, seed=12) != first


async def test_rules_added_at_run_time_apply_to_the_open_connection_at_once(origin):
    async with h2proxy_running(origin.url) as proxy:
        async with H2Client(proxy.url) as c:
            assert (await c.get("/size/10")).ok
            name = proxy.add_fault("rst_stream code=REFUSED_STREAM type=headers direction=s2c towards=client")
            assert (await c.get("/size/10")).reset == "REFUSED_STREAM"
            proxy.remove_fault(name)
            assert (await c.get("/size/10")).ok
        assert [e["rule"] for e in proxy.injected] == [name]


async def test_the_frame_log_names_each_rule(origin, tmp_path):
    import json

    from proxy.recording.recorder import JsonlRecorder
    path = tmp_path / "log.jsonl"
    sink = JsonlRecorder(str(path))
    rules = ["split parts=2 type=data direction=s2c name=halves",
             "inject frame=ping type=headers direction=s2c name=pinger"]
    try:
        async with h2proxy_running(origin.url, rules, sink=sink) as proxy:
            rc, out = await nghttp(proxy.url + "/size/100")
            assert rc == 0 and recv_data_lengths(out) == [50, 50], out
    finally:
        sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    acted = {(a.get("hook"), a.get("action")) for r in records for a in (r.get("actions") or [])}
    assert ("fault:halves", "split") in acted and ("fault:pinger", "injected") in acted, acted
    hook_actions = [(r["hook"], r["action"]) for r in records if r.get("record") == "hook_action"]
    assert ("fault:halves", "split") in hook_actions and ("fault:pinger", "inject") in hook_actions
