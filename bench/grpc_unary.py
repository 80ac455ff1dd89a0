"""gRPC unary calls through h2proxy with message decoding off and on (h2load sends gRPC-framed -d data).

    .venv/bin/python bench/grpc_unary.py [--rounds 3] [--requests 20000]

The origin is a grpcio server (Echo.Unary, compiled at start with grpc_tools.protoc) in its own
process. h2load POSTs one gRPC-framed request message (``-d``) with ``content-type:
application/grpc`` and ``te: trailers``, ``-c 4 -m 10``. Targets: the origin direct; h2proxy plain;
h2proxy ``-v`` (every frame and message printed, to a file); h2proxy ``--record`` (frame log with
``grpc_message`` records, built in the recorder's process); h2proxy ``-s bench/grpc_passthrough.py``
(an ``on_grpc_message`` hook: messages reassembled in the relay). Figures: req/s and the proxy's
CPU microseconds per call (its process and children), medians of the rounds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PYTHON, ROOT, Service, _spawn, children, free_port, h2load, median, start_h2proxy, wait_port  # noqa: E402

PROTO = """
syntax = "proto3";
package h2proxy.bench;
message Req { string name = 1; int32 n = 2; }
message Reply { string text = 1; int32 n = 2; }
service Echo { rpc Unary(Req) returns (Reply); }
"""

SERVER = """
import sys, time
from concurrent import futures
sys.path.insert(0, sys.argv[2])
import grpc, bench_pb2, bench_pb2_grpc
class S(bench_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        return bench_pb2.Reply(text="hello " + request.name, n=request.n)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
bench_pb2_grpc.add_EchoServicer_to_server(S(), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""


def build(workdir: Path) -> Path:
    from grpc_tools import protoc
    (workdir / "bench.proto").write_text(PROTO)
    rc = protoc.main(["protoc", f"-I{workdir}", f"--python_out={workdir}", f"--grpc_python_out={workdir}",
                      "--include_imports", f"--descriptor_set_out={workdir / 'bench.desc'}",
                      str(workdir / "bench.proto")])
    if rc:
        raise SystemExit(f"grpc_tools.protoc failed ({rc})")
    sys.path.insert(0, str(workdir))
    import bench_pb2
    msg = bench_pb2.Req(name="bench", n=42).SerializeToString()
    body = workdir / "req.bin"
    body.write_bytes(b"\0" + len(msg).to_bytes(4, "big") + msg)
    (workdir / "server.py").write_text(SERVER)
    return body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    services = []
    with tempfile.TemporaryDirectory(prefix="h2proxy-grpc-bench-") as tmp:
        work = Path(tmp)
        body = build(work)
        port = free_port()
        proc, logs = _spawn([PYTHON, str(work / "server.py"), str(port), str(work)], work, "grpc-origin")
        origin = Service("origin", proc, port, f"http://127.0.0.1:{port}", logs)
        services.append(origin)
        wait_port(port, proc=proc, what="grpc origin")
        upstream = f"h2c://127.0.0.1:{port}"
        configs = {
            "h2proxy (decoding off)": [],
            "h2proxy -v (messages printed)": ["-v", "--proto-descriptor", str(work / "bench.desc")],
            "h2proxy --record": ["--record", str(work / "log.jsonl")],
            "h2proxy -s grpc hook": ["-s", str(ROOT / "bench" / "grpc_passthrough.py")],
            # Rules can be added at run time: calls are followed (messages counted), no rule acts.
            "h2proxy --admin, no rules": ["--admin", f"127.0.0.1:{free_port()}"],
        }
        targets = {"origin direct": origin}
        try:
            for name, extra in configs.items():
                svc = start_h2proxy(upstream, work, extra=extra, name=name.split()[0] + str(len(targets)))
                svc.name = name
                services.append(svc)
                targets[name] = svc
            results = {name: {"rps": [], "cpu_us": []} for name in targets}
            headers = ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
            for r in range(args.rounds):
                names = list(targets)
                names = names[r % len(names):] + names[:r % len(names)]
                for name in names:
                    svc = targets[name]
                    if svc is not origin:
                        svc.measured = [svc.proc.pid, *children(svc.proc.pid)]
                    res = h2load(svc.url + "/h2proxy.bench.Echo/Unary", clients=4, streams=10,
                                 requests=args.requests, extra=headers, measure=[svc] if svc is not origin else [])
                    if res.failed or res.errored or res.ok < args.requests:
                        print(f"{name}: {res.ok} succeeded, {res.failed} failed, {res.errored} errored",
                              file=sys.stderr)
                    results[name]["rps"].append(res.rps)
                    if name in res.cpu and res.ok:
                        results[name]["cpu_us"].append(res.cpu[name] / res.ok * 1e6)
        finally:
            for svc in services:
                svc.stop()
    base = median(results["h2proxy (decoding off)"]["cpu_us"])
    print(f"{'target':<32} {'req/s':>9} {'CPU us/call':>12} {'vs off':>8}")
    for name, res in results.items():
        cpu = median(res["cpu_us"]) if res["cpu_us"] else None
        vs = f"{(cpu / base - 1) * 100:+.0f}%" if cpu is not None and name != "h2proxy (decoding off)" else ""
        print(f"{name:<32} {median(res['rps']):>9.0f} {cpu if cpu is not None else float('nan'):>12.1f} {vs:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
