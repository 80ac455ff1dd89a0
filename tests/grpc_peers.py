"""grpcio as a real peer: a test service compiled at test time with grpc_tools.protoc, its server and client.

``compile_protos(dir)`` writes ``echo.proto``, runs protoc (Python code, gRPC
stubs and a FileDescriptorSet) and imports the generated modules.
:class:`EchoServer` serves them on 127.0.0.1 (h2c, or TLS with a key pair).
grpcio's calls block, so async tests run them with ``asyncio.to_thread``.
"""
from __future__ import annotations

import importlib
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Tuple

ECHO_PROTO = """
syntax = "proto3";
package h2proxy.test;

message Inner { string tag = 1; repeated int32 values = 2; }
message Req { string name = 1; int32 n = 2; bytes blob = 3; Inner inner = 4; }
message Reply { string text = 1; int32 n = 2; bytes blob = 3; }

service Echo {
  rpc Unary(Req) returns (Reply);
  rpc ServerStream(Req) returns (stream Reply);
  rpc ClientStream(stream Req) returns (Reply);
  rpc Bidi(stream Req) returns (stream Reply);
}
"""

#: Channel and server options: messages up to 16 MiB (the 8 MiB tests).
BIG = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]


def compile_protos(out: Path) -> SimpleNamespace:
    """Compile echo.proto into ``out``; returns pb2, pb2_grpc and the descriptor set's path."""
    from grpc_tools import protoc
    out.mkdir(parents=True, exist_ok=True)
    (out / "echo.proto").write_text(ECHO_PROTO)
    desc = out / "echo.desc"
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "--include_imports", f"--descriptor_set_out={desc}", str(out / "echo.proto")])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("echo_pb2")
        pb2_grpc = importlib.import_module("echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return SimpleNamespace(pb2=pb2, pb2_grpc=pb2_grpc, descriptor=desc, dir=out)


class EchoServer:
    """The Echo service on a free port; remembers every request it got."""

    def __init__(self, protos: SimpleNamespace, tls: Optional[tuple] = None) -> None:
        import grpc
        self.protos = protos
        self.requests: List = []
        self.metadata: List[dict] = []      # each Unary call's invocation metadata
        self.lock = threading.Lock()
        pb2, pb2_grpc = protos.pb2, protos.pb2_grpc
        outer = self

        class Servicer(pb2_grpc.EchoServicer):
            def Unary(self, request, context):
                outer._got(request)
                outer.metadata.append(dict(context.invocation_metadata()))
                if request.name == "fail":
                    context.abort(grpc.StatusCode.NOT_FOUND, "no such name: caf\u00e9 100%")
                context.set_trailing_metadata([("x-trailer", "t1")])
                return pb2.Reply(text=f"hello {request.name}", n=request.n, blob=request.blob)

            def ServerStream(self, request, context):
                outer._got(request)
                for i in range(request.n):
                    yield pb2.Reply(text=f"{request.name} {i}", n=i)

            def ClientStream(self, request_iterator, context):
                names = []
                for r in request_iterator:
                    outer._got(r)
                    names.append(r.name)
                return pb2.Reply(text=",".join(names), n=len(names))

            def Bidi(self, request_iterator, context):
                for r in request_iterator:
                    outer._got(r)
                    yield pb2.Reply(text=f"echo {r.name}", n=r.n)

        def raw_echo(request: bytes, context) -> bytes:
            outer._got(request)
            return request

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=BIG)
        pb2_grpc.add_EchoServicer_to_server(Servicer(), self.server)
        # /h2proxy.test.Raw/Echo: bytes in, the same bytes out (no protobuf: for 1-byte messages).
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "h2proxy.test.Raw", {"Echo": grpc.unary_unary_rpc_method_handler(raw_echo)})])
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            self.url = f"h2c://127.0.0.1:{self.port}"
        else:
            key, chain = tls
            creds = grpc.ssl_server_credentials([(key, chain)])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
            self.url = f"https://127.0.0.1:{self.port}"
        self.server.start()

    def _got(self, request) -> None:
        with self.lock:
            self.requests.append(request)

    def stop(self) -> None:
        self.server.stop(0).wait(5)


def pem_bytes(pki: dict) -> Tuple[bytes, bytes, bytes]:
    """(key, chain, ca) of a test PKI (the ``pki`` fixture) as PEM bytes: what grpcio's TLS wants."""
    key, chain, ca = (Path(pki[name]).read_bytes() for name in ("key", "cert", "ca"))
    return key, chain, ca


def channel(port: int, compression=None, root_ca: Optional[bytes] = None, host: str = "localhost"):
    """A grpcio channel to 127.0.0.1:port (h2c, or TLS trusting ``root_ca`` for ``host``)."""
    import grpc
    opts = list(BIG)
    if root_ca is None:
        return grpc.insecure_channel(f"127.0.0.1:{port}", options=opts, compression=compression)
    opts.append(("grpc.ssl_target_name_override", host))
    return grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_ca), options=opts,
                               compression=compression)
