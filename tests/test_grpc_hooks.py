"""on_grpc_message hooks and ctx.grpc_abort, with grpcio as client and server through the proxy."""
from __future__ import annotations

import asyncio

import pytest

from tests.grpc_peers import channel

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")


async def _proxy(proxy_factory, echo, hooks, limits=None, **grpc_opts):
    from proxy.grpc.calls import GrpcOptions
    from proxy.hooks.chain import HookChain
    kw = {"limits": limits} if limits is not None else {}
    return await proxy_factory(echo.url, hooks=HookChain(hooks, grpc=GrpcOptions(**grpc_opts)), **kw)


def _stub(protos, port, compression=None):
    ch = channel(port, compression)
    return ch, protos.pb2_grpc.EchoStub(ch)


async def test_example_hook_rewrites_a_field_the_server_sees_it(protos, echo, proxy_factory):
    from proxy.hooks.chain import load_hook
    hooks = load_hook("docs/examples/grpc_rename.py")
    px = await _proxy(proxy_factory, echo, hooks)
    pb2 = protos.pb2

    def calls():
        ch, stub = _stub(protos, px.port)
        with ch:
            a, call = stub.Unary.with_call(pb2.Req(name="alice", n=5, blob=b"\x01" * (100 << 10)), timeout=20,
                                           metadata=[("x-meta", "m1"), ("x-bin-bin", b"\x00\xff")])
            assert dict(call.trailing_metadata())["x-trailer"] == "t1"
            b = stub.ClientStream(iter([pb2.Req(name=n) for n in "xy"]), timeout=20)
            c = [r.text for r in stub.Bidi(iter([pb2.Req(name="p"), pb2.Req(name="q")]), timeout=20)]
        return a, b, c
    a, b, c = await asyncio.to_thread(calls)
    assert a.text == "hello via-proxy-alice" and a.n == 5 and a.blob == b"\x01" * (100 << 10)
    assert b.text == "via-proxy-x,via-proxy-y"
    assert c == ["echo via-proxy-p", "echo via-proxy-q"]
    assert [r.name for r in echo.requests] == ["via-proxy-alice", "via-proxy-x", "via-proxy-y", "via-proxy-p",
                                               "via-proxy-q"]
    assert hooks[0].changed == 5
    assert echo.metadata[0]["x-meta"] == "m1" and echo.metadata[0]["x-bin-bin"] == b"\x00\xff"


class Shaper:
    """Duplicates client-stream requests, drops server-stream reply #2, splits bidi request "split"."""

    def __init__(self, protos):
        self.pb2 = protos.pb2
        self.seen = []

    def on_grpc_message(self, ctx, message):
        self.seen.append((ctx.method, message.direction, message.index))
        if ctx.method == "ClientStream" and message.is_request:
            return [message.data, message.data]
        if ctx.method == "ServerStream" and not message.is_request and message.index == 2:
            return []
        if ctx.method == "Bidi" and message.is_request:
            req = self.pb2.Req.FromString(message.data)
            if req.name == "split":
                return [self.pb2.Req(name="one"), self.pb2.Req(name="two")]
        return None


async def test_duplicate_drop_and_split_messages(protos, echo, proxy_factory):
    shaper = Shaper(protos)
    px = await _proxy(proxy_factory, echo, [shaper])
    pb2 = protos.pb2

    def calls():
        ch, stub = _stub(protos, px.port)
        with ch:
            a = stub.ClientStream(iter([pb2.Req(name=n) for n in "abc"]), timeout=20)
            b = [r.n for r in stub.ServerStream(pb2.Req(name="s", n=4), timeout=20)]
            c = [r.text for r in stub.Bidi(iter([pb2.Req(name="split"), pb2.Req(name="z")]), timeout=20)]
        return a, b, c
    a, b, c = await asyncio.to_thread(calls)
    assert a.text == "a,a,b,b,c,c" and a.n == 6
    assert b == [0, 2, 3]
    assert c == ["echo one", "echo two", "echo z"]
    assert ("ServerStream", "server->client", 4) in shaper.seen


class Aborter:
    def on_grpc_message(self, ctx, message):
        if message.is_request and ctx.method == "Unary":
            ctx.grpc_abort("UNAVAILABLE", "proxy says no: caf\u00e9")
        elif not message.is_request and ctx.method == "ServerStream" and message.index == 2:
            ctx.grpc_abort(8, "too much")
        return None


async def test_grpc_abort_trailers_only_and_after_messages(protos, echo, proxy_factory):
    px = await _proxy(proxy_factory, echo, [Aborter()])
    pb2 = protos.pb2

    def calls():
        ch, stub = _stub(protos, px.port)
        got = []
        with ch:
            with pytest.raises(grpc.RpcError) as first:
                stub.Unary(pb2.Req(name="never"), timeout=20)
            with pytest.raises(grpc.RpcError) as second:
                for r in stub.ServerStream(pb2.Req(name="s", n=5), timeout=20):
                    got.append(r.n)
            # the connection is still good
            ok = [r.text for r in stub.Bidi(iter([pb2.Req(name="k")]), timeout=20)]
        return first.value, second.value, got, ok
    first, second, got, ok = await asyncio.to_thread(calls)
    assert first.code() == grpc.StatusCode.UNAVAILABLE and first.details() == "proxy says no: caf\u00e9"
    assert second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and second.details() == "too much"
    assert got == [0]
    assert ok == ["echo k"]
    assert "never" not in [r.name for r in echo.requests]


class SlowReplies:
    async def on_grpc_message(self, ctx, message):
        if not message.is_request:
            await asyncio.sleep(0.5)
        return None


async def test_async_hook_delay_gives_deadline_exceeded(protos, echo, proxy_factory):
    px = await _proxy(proxy_factory, echo, [SlowReplies()])
    pb2 = protos.pb2

    def calls():
        ch, stub = _stub(protos, px.port)
        with ch:
            with pytest.raises(grpc.RpcError) as late:
                stub.Unary(pb2.Req(name="late"), timeout=0.2)
            fine = stub.Unary(pb2.Req(name="fine"), timeout=20)
        return late.value, fine
    late, fine = await asyncio.to_thread(calls)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fine.text == "hello fine"


class Upper:
    def __init__(self):
        self.sizes = []

    def on_grpc_message(self, ctx, message):
        self.sizes.append((message.direction, len(message.data), message.compressed))
        if message.is_request:
            return message.data.replace(b"name-", b"NAME-")
        return None


@pytest.mark.parametrize("compression", [None, "gzip"])
async def test_big_and_compressed_messages_reframed(protos, echo, proxy_factory, compression):
    from proxy.core.limits import Limits
    hook = Upper()
    # A message a hook has seen goes out in one burst: the socket may hold more than the default 4 MiB.
    px = await _proxy(proxy_factory, echo, [hook], limits=Limits(max_queued_bytes=64 << 20), max_message=16 << 20)
    pb2 = protos.pb2
    blob = bytes(range(256)) * (8 << 12)      # 8 MiB, many DATA frames each way

    def calls():
        ch, stub = _stub(protos, px.port, grpc.Compression.Gzip if compression else None)
        with ch:
            return stub.Unary(pb2.Req(name="name-x", blob=blob), timeout=60)
    reply = await asyncio.to_thread(calls)
    assert reply.text == "hello NAME-x" and reply.blob == blob
    assert echo.requests[-1].name == "NAME-x"
    assert hook.sizes[0][1] > 8 << 20 and hook.sizes[0][2] == bool(compression)


async def test_oversized_messages_pass_unseen(protos, echo, proxy_factory):
    hook = Upper()
    px = await _proxy(proxy_factory, echo, [hook], max_message=1 << 20)
    pb2 = protos.pb2
    blob = b"\x07" * (2 << 20)

    def calls():
        ch, stub = _stub(protos, px.port)
        with ch:
            big = stub.Unary(pb2.Req(name="name-big", blob=blob), timeout=60)
            small = stub.Unary(pb2.Req(name="name-small"), timeout=20)
        return big, small
    big, small = await asyncio.to_thread(calls)
    assert big.text == "hello name-big" and big.blob == blob      # not seen, not changed
    assert small.text == "hello NAME-small"


async def test_descriptor_hook_returns_named_fields(protos, echo, proxy_factory):
    class Named:
        def on_grpc_message(self, ctx, message):
            if message.is_request:
                fields = message.decoded
                fields["n"] = fields.get("n", 0) + 100
                return fields
            return None
    px = await _proxy(proxy_factory, echo, [Named()], descriptor=str(protos.descriptor))

    def calls():
        ch, stub = _stub(protos, px.port)
        with ch:
            return stub.Unary(protos.pb2.Req(name="d", n=1), timeout=20)
    reply = await asyncio.to_thread(calls)
    assert reply.n == 101
