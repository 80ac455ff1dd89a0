"""gRPC through the proxy with grpcio as client and server: seeing, recording and changing messages."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import pytest

from tests.grpc_peers import channel, pem_bytes
from tests.peers import await_port, free_port, run

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")


def _calls(protos, port, compression=None, root_ca=None):
    """Every kind of call once; returns what the client got."""
    pb2, stub_cls = protos.pb2, protos.pb2_grpc.EchoStub
    with channel(port, compression, root_ca) as ch:
        stub = stub_cls(ch)
        out = {}
        reply, call = stub.Unary.with_call(pb2.Req(name="alice", n=7, inner=pb2.Inner(tag="t", values=[1, 2])),
                                           timeout=20, metadata=[("x-meta", "m1"), ("x-id-bin", b"\x00\x01\xfe")])
        out["unary"] = reply
        out["trailers"] = dict(call.trailing_metadata())
        out["stream"] = [r.text for r in stub.ServerStream(pb2.Req(name="s", n=3), timeout=20)]
        out["client"] = stub.ClientStream(iter([pb2.Req(name=n) for n in "abc"]), timeout=20)
        out["bidi"] = [r.text for r in stub.Bidi(iter([pb2.Req(name="x"), pb2.Req(name="y")]), timeout=20)]
        out["empty"] = stub.Unary(pb2.Req(), timeout=20)
        out["one"] = ch.unary_unary("/h2proxy.test.Raw/Echo")(b"\x07", timeout=20)
        out["big"] = stub.Unary(pb2.Req(name="big", blob=b"\x5a" * (100 << 10)), timeout=20)
        out["huge"] = stub.Unary(pb2.Req(name="huge", blob=bytes(range(256)) * (8 << 12)), timeout=60)
        try:
            stub.Unary(pb2.Req(name="fail"), timeout=20)
        except grpc.RpcError as exc:
            out["fail"] = (exc.code(), exc.details())
        return out


def _check_replies(out):
    assert out["unary"].text == "hello alice" and out["unary"].n == 7
    assert out["trailers"]["x-trailer"] == "t1"
    assert out["stream"] == ["s 0", "s 1", "s 2"]
    assert out["client"].text == "a,b,c" and out["client"].n == 3
    assert out["bidi"] == ["echo x", "echo y"]
    assert out["empty"].text == "hello "
    assert out["one"] == b"\x07"
    assert out["big"].blob == b"\x5a" * (100 << 10)
    assert out["huge"].blob == bytes(range(256)) * (8 << 12)
    assert out["fail"] == (grpc.StatusCode.NOT_FOUND, "no such name: caf\u00e9 100%")


async def test_verbose_and_recording_show_messages(protos, echo_server, proxy_factory, tmp_path):
    from proxy.grpc.calls import GrpcOptions
    from proxy.recording.recorder import JsonlRecorder
    from proxy.recording.sink import MultiSink
    from proxy.recording.text import LivePrinter
    server = echo_server()
    text = io.StringIO()
    opts = GrpcOptions(max_message=4 << 20)
    printer = LivePrinter(text, verbosity=1, color=False, grpc=opts)
    log_path = tmp_path / "grpc.jsonl"
    recorder = JsonlRecorder(log_path, grpc=opts)
    px = await proxy_factory(server.url, sink=MultiSink([printer, recorder]))
    out = await asyncio.to_thread(_calls, protos, px.port)
    _check_replies(out)
    await px.stop(grace=0.5)
    printer.close()
    recorder.close()
    shown = text.getvalue()
    # the message under the DATA frame that ended it, raw-decoded
    assert "; gRPC /h2proxy.test.Echo/Unary request message #1 (" in shown
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if "Unary request message #1" in line and "alice" in lines[i + 1])
    assert "DATA frame" in "\n".join(lines[at - 3:at])
    assert lines[at + 1].endswith('1: "alice"') and lines[at + 2].endswith("2: 7")
    assert lines[at + 3].endswith("4 {") and lines[at + 4].endswith('1: "t"')
    assert "ServerStream response message #3" in shown
    assert "Bidi request message #2" in shown
    # statuses by name, grpc-message percent-decoded
    assert "grpc-status: 5  (NOT_FOUND)" in shown
    assert "grpc-message: no such name: caf%C3%A9 100%25  ('no such name: caf\u00e9 100%')" in shown
    assert "grpc-status 0 (OK)" in shown and "grpc-status 5 (NOT_FOUND)" in shown
    # the 8 MiB message is above the maximum: reported, not decoded
    assert "above the maximum message size 4194304: not decoded" in shown
    records = [json.loads(line) for line in open(log_path)]
    msgs = [r for r in records if r["record"] == "grpc_message"]
    calls = [r for r in records if r["record"] == "grpc_call"]
    assert {(c["method"], c["status_name"]) for c in calls} >= {("Unary", "OK"), ("Unary", "NOT_FOUND"),
                                                                ("ServerStream", "OK"), ("Bidi", "OK")}
    zero = [m for m in msgs if m["method"] == "Unary" and m["direction"] == "client->server" and m["length"] == 0]
    assert zero and zero[0]["data"] == ""
    one = [m for m in msgs if m["path"] == "/h2proxy.test.Raw/Echo"]
    assert [(m["direction"], m["length"], m["data"]) for m in one] == [("client->server", 1, "Bw=="),
                                                                        ("server->client", 1, "Bw==")]
    assert "Raw/Echo request message #1 (1 bytes)" in shown
    assert "(not a protobuf message: field number 0 at offset 0 is out of range" in shown
    big = [m for m in msgs if m["length"] > (100 << 10) and not m.get("oversized")]
    assert big and all(not m["compressed"] for m in big)
    huge = [m for m in msgs if m.get("oversized")]
    assert len(huge) == 2           # request and response of the 8 MiB call
    stream = [m for m in msgs if m["method"] == "ServerStream" and m["direction"] == "server->client"]
    assert [m["index"] for m in stream] == [1, 2, 3]
    # log text shows the same
    rc, text_out = await run(sys.executable, "-m", "proxy.cli", "log", "text", str(log_path))
    assert rc == 0 and 'gRPC /h2proxy.test.Echo/ClientStream request message #3' in text_out


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_compressed_and_descriptor_named_fields(protos, echo_server, proxy_factory, tmp_path, compression):
    from proxy.grpc.calls import GrpcOptions
    from proxy.recording.recorder import JsonlRecorder
    server = echo_server()
    log_path = tmp_path / "gz.jsonl"
    recorder = JsonlRecorder(log_path, grpc=GrpcOptions(descriptor=str(protos.descriptor)))
    px = await proxy_factory(server.url, sink=recorder)
    pb2 = protos.pb2

    def call():
        algo = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.Deflate
        with channel(px.port, compression=algo) as ch:
            stub = protos.pb2_grpc.EchoStub(ch)
            return stub.Unary(pb2.Req(name="zip" * 100, n=3), timeout=20)
    reply = await asyncio.to_thread(call)
    assert reply.text == "hello " + "zip" * 100
    await px.stop(grace=0.5)
    recorder.close()
    records = [json.loads(line) for line in open(log_path)]
    (req,) = [r for r in records if r["record"] == "grpc_message" and r["direction"] == "client->server"]
    assert req["compressed"] and req["encoding"] == compression and req["length"] < 300
    assert req["decoded"] == {"name": "zip" * 100, "n": 3}
    (resp,) = [r for r in records if r["record"] == "grpc_message" and r["direction"] == "server->client"]
    assert resp["decoded"]["text"] == "hello " + "zip" * 100
    from proxy.recording.text import Renderer
    lines = Renderer().render(req)
    assert '"name": "' + "zip" * 100 + '",' in "\n".join(lines) and f"compressed ({compression}" in lines[0]


async def test_cli_verbose_with_descriptor_over_tls(protos, echo_server, pki, tmp_path):
    """The real command line: -v --proto-descriptor, TLS on both legs, and log stats per method."""
    key, chain, ca = pem_bytes(pki)
    server = echo_server(tls=(key, chain))
    port = free_port()
    log_path = tmp_path / "cli.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "--listen", f"https://127.0.0.1:{port}", "--upstream", server.url,
        "--cert", pki["cert"], "--key", pki["key"], "--upstream-ca", pki["ca"],
        "--proto-descriptor", str(protos.descriptor), "--record", str(log_path), "-v",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await await_port(port)

        def calls():
            with channel(port, root_ca=ca) as ch:
                stub = protos.pb2_grpc.EchoStub(ch)
                r = stub.Unary(protos.pb2.Req(name="tls", n=2), timeout=20)
                s = [x.n for x in stub.ServerStream(protos.pb2.Req(name="s", n=4), timeout=20)]
                return r, s
        reply, streamed = await asyncio.to_thread(calls)
        assert reply.text == "hello tls" and streamed == [0, 1, 2, 3]
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert '"name": "tls",' in text and '"n": 2' in text, text[-3000:]
    assert "ServerStream response message #4" in text
    rc, out = await run(sys.executable, "-m", "proxy.cli", "log", "stats", str(log_path))
    assert rc == 0, out
    table = out[out.index("gRPC methods:"):]
    unary = next(line for line in table.splitlines() if "/h2proxy.test.Echo/Unary" in line)
    assert unary.split()[1:4] == ["1", "1", "1"] and unary.endswith("OK 1")
    stream = next(line for line in table.splitlines() if "/h2proxy.test.Echo/ServerStream" in line)
    assert stream.split()[1:4] == ["1", "1", "4"]


def test_bad_descriptor_is_one_line(tmp_path):
    bad = tmp_path / "bad.desc"
    bad.write_bytes(b"\xff\xff not protobuf")
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "--proto-descriptor", str(bad), "-v",
                           "--listen", f"h2c://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "bad.desc" in proc.stderr and "Traceback" not in proc.stderr
