"""Fault rules on gRPC messages, seen by a grpcio client as the status it should be."""
from __future__ import annotations

import asyncio
import tomllib

import pytest

from tests.grpc_peers import EchoServer, channel, pem_bytes

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")


def _run(protos, port, fn):
    with channel(port) as ch:
        return fn(protos.pb2_grpc.EchoStub(ch), protos.pb2)


def _error(call):
    try:
        return call(), None
    except grpc.RpcError as exc:
        return None, exc


def _server_stream(stub, pb2, n, got):
    """Read ServerStream (n replies asked) into ``got``; the RpcError that ended it, or None."""
    def consume():
        for r in stub.ServerStream(pb2.Req(name="s", n=n), timeout=20):
            got.append(r.n)
    return _error(consume)[1]


async def test_grpc_status_trailers_only_one_line(protos, echo, h2proxy):
    proxy = await h2proxy(echo.url, faults=["grpc_status code=UNAVAILABLE details='try later, caf\u00e9' "
                                            "service=h2proxy.test.Echo method=Unary"])

    def calls(stub, pb2):
        # (binary metadata: the proxy keeps the peers from sending it as raw bytes, which would not decode)
        _, err = _error(lambda: stub.Unary(pb2.Req(name="x"), timeout=20, metadata=[("x-id-bin", b"\xff\x00")]))
        ok = [r.n for r in stub.ServerStream(pb2.Req(name="s", n=2), timeout=20)]
        return err, ok
    err, ok = await asyncio.to_thread(_run, protos, proxy.port, calls)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "try later, caf\u00e9"
    assert ok == [0, 1]
    assert [r.name for r in echo.requests] == ["s"]        # the server never got the Unary request
    assert proxy.hits("grpc_status-1") == 1


async def test_grpc_status_after_n_messages(protos, echo, h2proxy):
    proxy = await h2proxy(echo.url, faults=[{"action": "grpc_status", "code": "ABORTED", "details": "stop",
                                             "method": "/h2proxy.test.Echo/ServerStream",
                                             "direction": "server->client", "message": 3}])
    got = []

    err = await asyncio.to_thread(_run, protos, proxy.port, lambda stub, pb2: _server_stream(stub, pb2, 6, got))
    assert err.code() == grpc.StatusCode.ABORTED and err.details() == "stop"
    assert got == [0, 1]


async def test_delay_per_message_gives_deadline_exceeded(protos, echo, h2proxy):
    proxy = await h2proxy(echo.url, faults=["delay ms=600 method=Unary direction=s2c grpc"])

    def calls(stub, pb2):
        _, late = _error(lambda: stub.Unary(pb2.Req(name="x"), timeout=0.2))
        fine = stub.Unary(pb2.Req(name="y"), timeout=20)
        return late, fine
    late, fine = await asyncio.to_thread(_run, protos, proxy.port, calls)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fine.text == "hello y"


async def test_drop_and_duplicate_messages(protos, echo, h2proxy):
    proxy = await h2proxy(echo.url, faults=["drop method=ClientStream direction=c2s message=2",
                                            "duplicate method=ServerStream direction=s2c message=1 copies=2"])

    def calls(stub, pb2):
        a = stub.ClientStream(iter([pb2.Req(name=n) for n in "abc"]), timeout=20)
        b = [r.n for r in stub.ServerStream(pb2.Req(name="s", n=3), timeout=20)]
        return a, b
    a, b = await asyncio.to_thread(_run, protos, proxy.port, calls)
    assert a.text == "a,c"
    assert b == [0, 0, 0, 1, 2]
    events = [(e["rule"], e["message"]) for e in proxy.injected]
    assert events == [("drop-1", 2), ("duplicate-2", 1)]


async def test_corrupt_keeps_the_prefix_valid(protos, echo, h2proxy):
    # Reply "s 0" is 0a 03 73 20 30: flipping byte 0 makes a tag whose fixed32 runs past the end.
    proxy = await h2proxy(echo.url, faults=["corrupt method=ServerStream direction=s2c message=1 offsets=0"])
    got = []

    err = await asyncio.to_thread(_run, protos, proxy.port, lambda stub, pb2: _server_stream(stub, pb2, 3, got))
    assert err.code() == grpc.StatusCode.INTERNAL and "deserializ" in err.details().lower()
    assert got == []


async def test_cut_after_message_n(protos, echo, h2proxy, tmp_path):
    from proxy.recording.recorder import JsonlRecorder
    recorder = JsonlRecorder(tmp_path / "cut.jsonl")
    proxy = await h2proxy(echo.url, faults=["cut method=ServerStream direction=s2c message=2"], sink=recorder)
    got = []

    def calls(stub, pb2):
        err = _server_stream(stub, pb2, 5, got)
        ok = stub.Unary(pb2.Req(name="after"), timeout=20)      # the connection survives
        return err, ok
    err, ok = await asyncio.to_thread(_run, protos, proxy.port, calls)
    assert err.code() == grpc.StatusCode.INTERNAL and "RST_STREAM" in err.details()
    # Messages 0 and 1 go out, then the RST_STREAM (the frame log below shows exactly that). grpcio hands
    # over, in order, at most what it had read before the reset: when the reset comes in the same read as
    # the messages (a loaded machine), it may hand over none of them.
    assert got in ([], [0], [0, 1])
    assert ok.text == "hello after"
    assert [(e["action"], e["message"]) for e in proxy.injected] == [("cut", 2)]
    recorder.close()
    import base64

    from proxy.recording.logfile import read_records
    # (Through the reader: a frame forwarded unchanged carries wire_of, the reader gives it its wire.)
    sent = [r for r in read_records(str(tmp_path / "cut.jsonl"))
            if r.get("record") == "frame" and r["leg"] == "client" and r["dir"] == "send" and r["stream"] == 1
            and r["type"] in ("DATA", "RST_STREAM")]
    # the proxy sent both messages, then the reset: nothing after it
    data = b"".join(base64.b64decode(r["wire"])[9:] for r in sent if r["type"] == "DATA")
    assert data == b"\0\0\0\0\x05\x0a\x03s 0" + b"\0\0\0\0\x07\x0a\x03s 1\x10\x01"
    assert sent[-1]["type"] == "RST_STREAM" and sent[-1]["fields"]["error"] == "INTERNAL_ERROR"


async def test_every_and_after_count_messages(protos, echo, h2proxy):
    proxy = await h2proxy(echo.url, faults=["drop service=h2proxy.test.* method=Bidi direction=c2s every=2 after=1"])

    def calls(stub, pb2):
        return [r.text for r in stub.Bidi(iter([pb2.Req(name=str(i)) for i in range(7)]), timeout=20)]
    out = await asyncio.to_thread(_run, protos, proxy.port, calls)
    # matches 1..7; after=1 skips the first; every=2 fires on the 3rd, 5th and 7th
    assert out == ["echo 0", "echo 1", "echo 3", "echo 5"]


async def test_toml_rules_and_admin_api(protos, echo, h2proxy):
    from proxy.faults import build_fault_hook
    tables = tomllib.loads('''
[[faults]]
name = "unavailable"
action = "grpc_status"
code = 14
method = "Unary"
message = 1
''')["faults"]
    hook = build_fault_hook(tables)
    assert hook.rules[0].grpc and hook.rules[0].params["code"] == 14
    proxy = await h2proxy(echo.url, faults=tables, admin=True)
    from tests.test_admin_api import http
    status, _, body = await http(proxy.admin.port, "POST", "/faults",
                                 {"line": "duplicate method=Bidi direction=c2s message=1", "name": "twice"},
                                 token=proxy.admin.token)
    assert status == 201 and body["fault"]["name"] == "twice"

    def calls(stub, pb2):
        _, err = _error(lambda: stub.Unary(pb2.Req(name="x"), timeout=20))
        return err, [r.text for r in stub.Bidi(iter([pb2.Req(name="b")]), timeout=20)]
    err, bidi = await asyncio.to_thread(_run, protos, proxy.port, calls)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert bidi == ["echo b", "echo b"]
    status, _, body = await http(proxy.admin.port, "GET", "/faults", token=proxy.admin.token)
    assert {r["name"]: r["hits"] for r in body["faults"]} == {"unavailable": 1, "twice": 1}


@pytest.mark.parametrize("line, words", [
    ("drop message=0", ["message = '0'", "counts start at 1"]),
    ("grpc_status code=NOPE", ["code = 'NOPE'", "unknown gRPC status"]),
    ("cut code=BOGUS message=1", ["code = 'BOGUS'"]),
    ("cut code=0x100000000 message=1", ["code = '0x100000000'", "error codes are 0..2^32-1"]),
    ("delay grpc", ["ms: missing"]),
    ("rst_stream service=x", ["not an action for gRPC messages"]),
    ("drop message=1 type=data", ["type: unknown key for a gRPC rule"]),
])
def test_bad_grpc_rules_name_the_key(line, words):
    from proxy.faults import FaultError, build_fault_hook
    with pytest.raises(FaultError) as info:
        build_fault_hook(lines=[line])
    for w in words:
        assert w in str(info.value)


def test_frame_rules_stay_frame_rules():
    from proxy.faults import build_fault_hook
    hook = build_fault_hook(lines=["drop type=ping", "delay ms=5 method=POST"])
    assert not hook.grpc_active
    assert not any(getattr(r, "grpc", False) for r in hook.rules)


async def test_grpc_status_over_tls_on_both_legs(protos, h2proxy, pki):
    """TLS between the grpcio client and the proxy, and between the proxy and the grpcio server."""
    key, chain, ca = pem_bytes(pki)
    server = EchoServer(protos, tls=(key, chain))
    try:
        proxy = await h2proxy(server.url, faults=["grpc_status code=RESOURCE_EXHAUSTED details=quota method=Unary"],
                              listen="https://127.0.0.1:0", cert=pki["cert"], key=pki["key"],
                              upstream_ca=pki["ca"])

        def calls():
            with channel(proxy.port, root_ca=ca) as ch:
                stub = protos.pb2_grpc.EchoStub(ch)
                _, err = _error(lambda: stub.Unary(protos.pb2.Req(name="x"), timeout=20))
                return err, [r.n for r in stub.ServerStream(protos.pb2.Req(name="s", n=2), timeout=20)]
        err, ok = await asyncio.to_thread(calls)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and err.details() == "quota"
        assert ok == [0, 1]
    finally:
        server.stop()


async def test_a_rule_added_through_the_admin_api_acts_on_a_call_already_running(protos, echo, h2proxy):
    """With the admin API the rules can change while a call runs: its messages are counted as they go
    by, so a rule added mid-call acts from the next message on, numbered from the start of the call."""
    import queue
    import threading

    from tests.test_admin_api import http
    proxy = await h2proxy(echo.url, admin=True)
    requests: "queue.Queue" = queue.Queue()
    got: list = []
    two_echoed = threading.Event()

    def bidi(stub, pb2):
        def outgoing():
            while (name := requests.get()) is not None:
                yield pb2.Req(name=name)
        for r in stub.Bidi(outgoing(), timeout=20):
            got.append(r.text)
            if len(got) == 2:
                two_echoed.set()
    for name in ("0", "1"):
        requests.put(name)
    call = asyncio.ensure_future(asyncio.to_thread(_run, protos, proxy.port, bidi))
    assert await asyncio.to_thread(two_echoed.wait, 20), got
    status, _, body = await http(proxy.admin.port, "POST", "/faults",
                                 {"line": "drop method=Bidi direction=c2s message=4", "name": "fourth"},
                                 token=proxy.admin.token)
    assert status == 201, body
    for name in ("2", "3", "4", None):
        requests.put(name)
    await asyncio.wait_for(call, 30)
    assert got == ["echo 0", "echo 1", "echo 2", "echo 4"]      # the call's 4th message ("3") was dropped
    assert proxy.hits("fourth") == 1
