"""What the command line prints for people (issue 13, item 11): with a fault rule, -v shows only hook
actions that did something; the admin API line, the "re-encoded" line and the ALTSVC drop line come
once, in plain text."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.peers import need


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in path.read_text().splitlines():
            if text in line:
                return line
        assert proc.poll() is None, f"h2proxy exited: {path.read_text()}"
        assert time.monotonic() < deadline, f"no line with {text!r}: {path.read_text()}"
        time.sleep(0.02)


def test_verbose_output_with_faults_admin_and_a_header_hook(tmp_path):
    nghttp = need("nghttp")
    config = tmp_path / "hooks.toml"
    config.write_text('[[hooks]]\nuse = "headers"\nrules = [{ set = { "x-via" = "h2proxy" } }]\n')
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "--listen", "h2c://127.0.0.1:0", "-v",
                                 "--config", str(config), "--fault", "drop type=ping", "--admin", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, stderr=f)
    try:
        line = _wait_for_line(err, "listening on h2c://", proc)
        port = int(line.split("listening on h2c://127.0.0.1:")[1].split(",")[0])
        for _ in range(2):
            out = subprocess.run([nghttp, "-n", f"http://127.0.0.1:{port}/altsvc"], capture_output=True,
                                 text=True, timeout=20)
            assert out.returncode == 0, out.stderr
        _wait_for_line(err, "Connected: client", proc)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    text = err.read_text()
    lines = text.splitlines()
    assert "hook faults: passed" not in text and "passed" not in text
    assert "; hook altsvc: dropped" in text                   # an action that did something still shows
    admin = [line for line in lines if "admin API on" in line]
    assert len(admin) == 1 and "(token: " in admin[0], admin
    reencoded = [line for line in lines if "re-encoded" in line]     # (the rule changes both directions)
    assert len(reencoded) == 2 and all(line.startswith("h2proxy: c1: ") for line in reencoded), reencoded
    altsvc = [line for line in lines if "ALTSVC on stream" in line]
    assert altsvc and all("b'" not in line and 'h2="127.0.0.1:' in line for line in altsvc), altsvc
    assert not any("demo origin listening" in line for line in lines)
