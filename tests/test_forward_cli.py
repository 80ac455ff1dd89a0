"""``h2proxy --mode forward`` and ``h2proxy ca`` as a user runs them: real processes, curl, a temp CA directory.

``HOME`` points at a temporary directory in every child, so the real
``~/.h2proxy`` is never touched (and a forgotten ``--ca-dir`` would show).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import free_port, need, run
from tests.test_forward import TinyOrigin

H2PROXY = Path(sys.executable).parent / "h2proxy"


@pytest.fixture
def env(tmp_path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    e = dict(os.environ, HOME=str(home))
    e.pop("SSLKEYLOGFILE", None)
    return e


def h2proxy(*args: str, env: dict) -> subprocess.CompletedProcess:
    if not H2PROXY.exists():
        pytest.skip(f"{H2PROXY} is not installed (pip install -e .)")
    return subprocess.run([str(H2PROXY), *args], capture_output=True, text=True, env=env, timeout=30)


def test_ca_show_and_export_use_the_given_directory(tmp_path, env):
    ca_dir = tmp_path / "ca"
    shown = h2proxy("ca", "--ca-dir", str(ca_dir), env=env)
    assert shown.returncode == 0, shown.stderr
    pem = ca_dir / "h2proxy-ca.pem"
    key = ca_dir / "h2proxy-ca-key.pem"
    assert f"h2proxy CA certificate: {pem}" in shown.stdout
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert.fingerprint(hashes.SHA256()).hex(":").upper() in shown.stdout
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert "PRIVATE KEY" not in shown.stdout + shown.stderr
    assert not (Path(env["HOME"]) / ".h2proxy").exists()
    # Shown again: the same CA, not a new one.
    again = h2proxy("ca", f"--ca-dir={ca_dir}", env=env)
    assert again.returncode == 0 and again.stdout == shown.stdout

    out = tmp_path / "export"
    exported = h2proxy("ca", "export", str(out), "--ca-dir", str(ca_dir), env=env)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.split() == [str(out / "h2proxy-ca.pem"), str(out / "h2proxy-ca.cer")]
    assert (out / "h2proxy-ca.pem").read_bytes() == pem.read_bytes()
    der = x509.load_der_x509_certificate((out / "h2proxy-ca.cer").read_bytes())
    assert der == x509.load_pem_x509_certificate(pem.read_bytes())
    assert sorted(p.name for p in out.iterdir()) == ["h2proxy-ca.cer", "h2proxy-ca.pem"]
    assert all(b"PRIVATE KEY" not in p.read_bytes() for p in out.iterdir())
    assert not (Path(env["HOME"]) / ".h2proxy").exists()

    bad = h2proxy("ca", "--ca-dir", env=env)
    assert bad.returncode == 2 and "--ca-dir" in bad.stderr and "Traceback" not in bad.stderr


class Running:
    """An h2proxy process; its stderr is collected line by line."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.lines: list = []
        self.url = ""
        self._drain = None

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        async def scan():
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    raise AssertionError("h2proxy exited; output:\n" + "".join(self.lines))
                text = line.decode(errors="replace")
                self.lines.append(text)
                m = re.search(pattern, text)
                if m:
                    return m
        return await asyncio.wait_for(scan(), timeout)

    def drain(self) -> None:
        async def rest():
            async for line in self.proc.stderr:
                self.lines.append(line.decode(errors="replace"))
        self._drain = asyncio.ensure_future(rest())

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), 15)
        except asyncio.TimeoutError:
            self.proc.kill()
            rc = await self.proc.wait()
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 5)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


async def test_forward_mode_from_the_command_line(tmp_path, env, nghttpd, pki):
    if not H2PROXY.exists():
        pytest.skip(f"{H2PROXY} is not installed (pip install -e .)")
    origin = nghttpd(tls=pki)
    ca_dir = tmp_path / "ca"
    record = tmp_path / "frames.jsonl"
    proc = await asyncio.create_subprocess_exec(
        str(H2PROXY), "--mode", "forward", "--listen", "http://127.0.0.1:0", "--ca-dir", str(ca_dir),
        "--upstream-ca", pki["ca"], "--ignore-hosts", r"^127\.0\.0\.1:", "--record", str(record),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    px = Running(proc)
    try:
        m = await px.wait_for(r"listening on (http://127\.0\.0\.1:\d+)")
        px.drain()
        url = m.group(1)
        curl = need("curl")
        # Intercepted: the client trusts the proxy's CA and gets HTTP/2 from nghttpd.
        rc, out = await run(curl, "-sS", "-x", url, "--cacert", str(ca_dir / "h2proxy-ca.pem"), "-o", os.devnull,
                            "-w", "%{http_version} %{http_code}", f"https://localhost:{origin.port}/index.html")
        assert rc == 0 and out.strip() == "2 200", out
        # Ignored: TLS ends at the origin, so only the origin's CA verifies.
        rc, out = await run(curl, "-sS", "-x", url, "--cacert", pki["ca"], "-o", os.devnull,
                            "-w", "%{http_version} %{http_code}", f"https://127.0.0.1:{origin.port}/index.html")
        assert rc == 0 and out.strip() == "2 200", out
        # nghttpd speaks only h2: an http/1.1 client gets a 502 saying why at once, not a hang (uvloop
        # regression) nor a bare close (issue 13, item 9).
        for _ in range(3):
            rc, out = await run(curl, "-sS", "--http1.1", "-m", "8", "-x", url, "--cacert",
                                str(ca_dir / "h2proxy-ca.pem"), "-w", "\n%{http_code}",
                                f"https://localhost:{origin.port}/")
            assert rc == 0 and out.strip().endswith("502") and "speaks only HTTP/2" in out, out
        # Not HTTP/2: an http/1.1 client, relayed as bytes (the origin is asked again for http/1.1).
        tiny = await TinyOrigin(pki, ["h2", "http/1.1"]).start()
        try:
            rc, out = await run(curl, "-sS", "--http1.1", "-x", url, "--cacert", str(ca_dir / "h2proxy-ca.pem"),
                                "-w", "\n%{http_version} %{http_code}", f"https://localhost:{tiny.port}/h1")
            assert "hello over http/1.1 (origin ALPN http/1.1) for /h1" in out, out
            assert out.strip().endswith("1.1 200"), out
            rc, out = await run(curl, "-sS", "-x", url, "--cacert", str(ca_dir / "h2proxy-ca.pem"),
                                "-w", "\n%{http_version} %{http_code}", f"https://localhost:{tiny.port}/h2")
            assert "hello over h2 for /h2" in out and out.strip().endswith("2 200"), out
        finally:
            await tiny.stop()
        # Plain http:// through the proxy: refused with a reason.
        rc, out = await run(curl, "-sS", "-x", url, "-w", "\n%{http_code}", f"http://localhost:{free_port()}/")
        assert "use CONNECT" in out and out.strip().endswith("501"), out
    finally:
        rc = await px.stop()
    assert rc == 0, px.output
    assert "tunnelled without interception" in px.output and "intercepted, HTTP/2" in px.output, px.output
    assert "PRIVATE KEY" not in px.output
    records = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    opened = [r for r in records if r.get("record") == "connection_opened"]
    assert len(opened) == 2 and {o["info"]["mode"] for o in opened} == {"forward"}, opened
    assert "not HTTP/2 (client ALPN http/1.1, origin ALPN http/1.1)" in px.output
    assert any(r.get("record") == "frame" for r in records)
