"""Shared fixtures: real peers (nghttpd, the demo origin) on loopback and in-process proxies.

Every server binds 127.0.0.1 on a free port and is stopped by its fixture;
readiness is waited for by connecting to the port, never by sleeping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.peers import (  # noqa: F401  (re-exported)
    Nghttpd,
    await_port,
    free_port,
    http_url,
    need,
    run,
    stopped_at_end,
    wait_port,
)

ROOT = Path(__file__).resolve().parents[1]
# Hypothesis profiles. "deterministic" (the default: CI and `make test`) derives every example from
# the test itself, so a run fails the same way every time, and prints the blob that replays a
# failure (`@reproduce_failure`). "fuzz" (`make fuzz`) draws fresh random examples on each run, for
# long hunts. HYPOTHESIS_PROFILE picks one. Set here, before the test modules import: their own
# `settings(...)` inherit what they do not set from the profile loaded.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

#: Everything the tests read lives here, in the repository, each data set with its LICENSE.
DATA = ROOT / "tests" / "data"


def data_dir(name: str) -> Path:
    """The data set ``tests/data/<name>``; a missing or empty one fails the run, it never skips tests.

    A skip would let a clone without the data pass while whole corpora go untested.
    """
    path = DATA / name
    if not path.is_dir() or not any(path.iterdir()):
        raise FileNotFoundError(f"test data {name!r} is missing: expected it at {path}")
    return path


@pytest.fixture(scope="session")
def docroot(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("docroot")
    (d / "index.html").write_bytes(b"<html><body>hello from nghttpd</body></html>\n")
    (d / "small.txt").write_bytes(b"x" * 1024)
    (d / "1m.bin").write_bytes(os.urandom(1 << 20))
    return d


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    from proxy.certs import make_test_pki
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def nghttpd(docroot):
    """Start nghttpd servers on the docroot: ``nghttpd(tls=None, extra=None)``; stopped after the test."""
    with stopped_at_end(lambda tls=None, extra=None: Nghttpd(docroot, tls, extra).start()) as start:
        yield start


@pytest.fixture
def proxy_process(tmp_path):
    """Start h2proxy subprocesses (tests/test_load.py's ProxyProcess): ``proxy_process(upstream, *args,
    quiet=True)``; stopped after the test."""
    from tests.test_load import ProxyProcess
    with stopped_at_end(lambda upstream, *extra, quiet=True: ProxyProcess(upstream, tmp_path, *extra,
                                                                         quiet=quiet)) as start:
        yield start


@pytest.fixture
async def origin():
    """h2proxy's demo origin (proxy/demo_origin.py) on loopback (h2c, a free port), stopped after the test."""
    from proxy.demo_origin import DemoOrigin
    o = DemoOrigin()
    await o.start()
    yield o
    await o.stop()


@pytest.fixture
async def proxy_factory():
    """Start in-process proxies: ``await proxy_factory(upstream_url, hooks=..., sink=..., **settings)``."""
    from proxy.hooks.chain import HookChain
    from proxy.server import ProxyServer, ProxySettings, parse_endpoint
    started = []

    async def start(upstream: str, listen: str = "h2c://127.0.0.1:0", hooks=None, sink=None, **kw):
        settings = ProxySettings(listen=parse_endpoint(listen), upstream=parse_endpoint(upstream), **kw)
        if isinstance(hooks, list):
            hooks = HookChain(hooks)
        srv = ProxyServer(settings, hooks=hooks, sink=sink)
        await srv.start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        await srv.stop(grace=0.5)


@pytest.fixture
async def grpc_echo():
    """A grpcio server on 127.0.0.1 answering /demo.Echo/Say with b"hello " + the request (raw bytes)."""
    grpc = pytest.importorskip("grpc")
    port = free_port()
    server = grpc.aio.server()

    async def say(request, context):
        return b"hello " + request

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "demo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield f"h2c://127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
def protos(tmp_path_factory):
    """The gRPC test service (tests/grpc_peers.py's echo.proto) compiled once a session: pb2, pb2_grpc, descriptor."""
    pytest.importorskip("grpc")
    pytest.importorskip("grpc_tools")
    from tests.grpc_peers import compile_protos
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture
def echo_server(protos):
    """Start grpcio Echo servers on loopback: ``echo_server(tls=None)`` (tls: (key, chain) PEM bytes)."""
    from tests.grpc_peers import EchoServer
    with stopped_at_end(lambda tls=None: EchoServer(protos, tls)) as start:
        yield start


@pytest.fixture
def echo(echo_server):
    """One grpcio Echo server (h2c) on loopback, stopped after the test."""
    return echo_server()
