"""Shared fixtures: real peers (nghttpd, the demo origin) on loopback and in-process proxies.

Every server binds 127.0.0.1 on a free port and is stopped by its fixture;
readiness is waited for by connecting to the port, never by sleeping.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
            time.sleep(0.02)


async def await_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
            await asyncio.sleep(0.02)


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    return path


async def run(*cmd: str, timeout: float = 60.0, input: Optional[bytes] = None):
    """Run a command; return (returncode, stdout+stderr as text)."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{cmd[0]} did not finish within {timeout} s; output:\n"
                             f"{out.decode(errors='replace')[-3000:]}")
    return proc.returncode, out.decode(errors="replace")


class Nghttpd:
    """A real nghttpd (nghttp2's server) serving a directory on loopback."""

    def __init__(self, docroot: Path, tls: Optional[dict] = None, extra: Optional[List[str]] = None) -> None:
        self.docroot = docroot
        self.tls = tls
        self.port = free_port()
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Nghttpd":
        cmd = [need("nghttpd"), "-d", str(self.docroot), *self.extra]
        if self.tls:
            cmd += [str(self.port), self.tls["key"], self.tls["cert"]]
        else:
            cmd += ["--no-tls", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'h2c'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
    servers = []

    def start(tls: Optional[dict] = None, extra=None) -> Nghttpd:
        s = Nghttpd(docroot, tls, extra).start()
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


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


def http_url(proxy) -> str:
    """The URL nghttp and curl want for an in-process proxy."""
    return proxy.url.replace("h2c://", "http://")
