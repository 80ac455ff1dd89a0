"""Configuration and command line: clear errors naming the file and the key, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.config import load_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def h2proxy(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_shipped_default_config_loads():
    cfg = load_config(str(ROOT / "config" / "default.toml"))
    assert cfg.listen == "h2c://127.0.0.1:8080" and cfg.altsvc == "drop" and cfg.limits.max_streams == 10000


@pytest.mark.parametrize("text, fragment", [
    ("limits = { max_streams = 'many' }", "limits.max_streams: expected an integer, got 'many'"),
    ("strict = 3", "strict: expected true or false"),
    ("nonsense = 1", "nonsense: unknown key"),
    ("[tls]\nbogus = 1", "tls.bogus: unknown key"),
    ("listen = 'ftp://x:1'", "scheme 'ftp'"),
    ("altsvc = 'maybe'", "altsvc: 'maybe'"),
    ("[[hooks]]\nmode = 'drop'", "hooks[0].use: required"),
    ("this is = not toml [", "not valid TOML"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = h2proxy("--config", str(path), "--upstream", "h2c://127.0.0.1:9")
    assert out.returncode == 2
    assert str(path) in out.stderr or "listen" in out.stderr
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_file_and_bad_flags():
    out = h2proxy("--config", "/nonexistent.toml")
    assert out.returncode == 2 and "/nonexistent.toml: no such config file" in out.stderr
    out = h2proxy("--limit", "max_bogus=1", "--upstream", "h2c://127.0.0.1:9")
    assert out.returncode == 2 and "unknown limit 'max_bogus'" in out.stderr
    out = h2proxy("-s", "/nonexistent/hook.py", "--upstream", "h2c://127.0.0.1:9")
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    out = h2proxy("--listen", f"h2c://127.0.0.1:{port}", "--upstream", "h2c://127.0.0.1:9")
    s.close()
    assert out.returncode == 2 and f"cannot listen on h2c://127.0.0.1:{port}" in out.stderr
