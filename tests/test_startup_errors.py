"""Start-up errors through the real command line: one line on stderr, exit status 2, no traceback
(docs/proxy.md; issue 13, item 6). Each run would otherwise start a proxy and keep running: the
timeout makes such a run fail rather than hang."""
from __future__ import annotations

import subprocess
import sys

import pytest


def h2proxy(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"h2proxy {' '.join(args)} started instead of refusing: {exc.stderr!r}")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    from proxy.certs import make_test_pki
    d = tmp_path_factory.mktemp("startup")
    pki = make_test_pki(d / "pki")
    (d / "a-file").write_text("not a directory\n")
    missing_cert = d / "tls-missing.toml"
    missing_cert.write_text(f'listen = "https://127.0.0.1:0"\n[tls]\ncert = "{d}/nope.pem"\nkey = "{pki["key"]}"\n')
    workers0 = d / "workers0.toml"
    workers0.write_text("workers = 0\n")
    return {"cert": pki["cert"], "key": pki["key"], "dir": str(d), "missing_cert": str(missing_cert),
            "workers0": str(workers0)}


CASES = {
    "cert missing": (["--listen", "https://127.0.0.1:0", "--cert", "{dir}/nope.pem", "--key", "{key}"],
                     "nope.pem"),
    "key missing": (["--listen", "https://127.0.0.1:0", "--cert", "{cert}", "--key", "{dir}/nope-key.pem"],
                    "nope-key.pem"),
    "cert and key swapped": (["--listen", "https://127.0.0.1:0", "--cert", "{key}", "--key", "{cert}"], "swapped"),
    "upstream-ca missing": (["--upstream", "https://127.0.0.1:9", "--upstream-ca", "{dir}/nope-ca.pem"],
                            "nope-ca.pem"),
    "[tls] cert missing in a config": (["--config", "{missing_cert}"], "nope.pem"),
    "ca-dir not usable": (["--listen", "https://127.0.0.1:0", "--ca-dir", "{dir}/a-file/ca"], "a-file/ca"),
    "ca-dir not usable, forward mode": (["--mode", "forward", "--listen", "http://127.0.0.1:0",
                                         "--ca-dir", "{dir}/a-file/ca"], "a-file/ca"),
    "cert without key": (["--listen", "https://127.0.0.1:0", "--cert", "{cert}"], "--key"),
    "key without cert": (["--listen", "https://127.0.0.1:0", "--key", "{key}"], "--cert"),
    "listen without a port": (["--listen", "h2c://127.0.0.1"], "no port"),
    "workers 0": (["--workers", "0", "--upstream", "h2c://127.0.0.1:9"], "--workers 0"),
    "workers 0 in a config": (["--config", "{workers0}", "--upstream", "h2c://127.0.0.1:9"], "workers"),
    "http listen in reverse mode": (["--listen", "http://127.0.0.1:0"], "h2c://"),
    "h2c listen in forward mode": (["--mode", "forward", "--listen", "h2c://127.0.0.1:0"], "http://"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_startup_error_is_one_line_and_exit_2(files, case):
    args, fragment = CASES[case]
    out = h2proxy(*(a.format(**files) for a in args))
    lines = out.stderr.splitlines()
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert len(lines) == 1 and lines[0].startswith("h2proxy: error: "), out.stderr
    assert fragment in lines[0], lines[0]


def test_forward_mode_default_listen_is_http(files):
    """Without --listen, forward mode takes its http:// default (no error about h2c)."""
    from proxy.cli import settings_from
    from proxy.config import Config
    settings = settings_from(Config(mode="forward"))
    assert (settings.listen.host, settings.listen.port) == ("127.0.0.1", 8080)
