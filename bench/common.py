"""Shared helpers for the benchmarks: processes, ports, /proc sampling, h2load runs, certificates.

Everything here runs on loopback (127.0.0.1) only. Every process started is
stopped by :class:`Service.stop` (the benchmarks keep a list and stop them all in
a ``finally``). Readiness is waited for on the port (and, for h2proxy, on its
"listening on" line), never by sleeping a fixed time.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
H2PROXY = str(VENV_BIN / "h2proxy") if (VENV_BIN / "h2proxy").exists() else "h2proxy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- small utilities ----------------------------------------------------------

def tool(name: str) -> Optional[str]:
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def require(*names: str) -> None:
    missing = [n for n in names if tool(n) is None]
    if missing:
        sys.exit(f"bench: missing tools: {', '.join(missing)} (apt-get install nghttp2-client nghttp2-server "
                 f"nghttp2-proxy)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: Optional[subprocess.Popen] = None,
              what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.02)


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) to ``want``; children inherit it. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    target = want if hard == resource.RLIM_INFINITY or hard >= want else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target) if hard != resource.RLIM_INFINITY
                                                    else hard))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- /proc ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields_ = raw[raw.rindex(b")") + 2:].split()
    # after "pid (comm) ": state=0, ppid=1, ..., utime=11, stime=12
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def children(pid: int) -> List[int]:
    """Direct children of ``pid`` (Linux 3.5+ /proc/PID/task/TID/children)."""
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


# -- certificates ---------------------------------------------------------------

def make_cert(directory: Path, name: str = "bench") -> Dict[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost (EC P-256). Returns {"cert", "key"}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile = directory / f"{name}.crt"
    keyfile = directory / f"{name}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    os.chmod(keyfile, 0o600)
    return {"cert": str(certfile), "key": str(keyfile)}


def make_docroot(directory: Path) -> Path:
    """nghttpd's docroot: /1k (1 KiB) and /1m (1 MiB)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "1k").write_bytes(b"x" * 1024)
    (directory / "1m").write_bytes(os.urandom(1 << 20))
    (directory / "index.html").write_bytes(b"<html><body>bench</body></html>\n")
    return directory


# -- services -------------------------------------------------------------------

@dataclass
class Service:
    """A started process with its logs; ``pids()`` are the processes whose CPU and memory count."""

    name: str
    proc: subprocess.Popen
    port: int
    url: str
    logs: List[Path] = field(default_factory=list)
    measured: Optional[List[int]] = None

    def pids(self) -> List[int]:
        return self.measured if self.measured else [self.proc.pid]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += rss_bytes(pid)
            except OSError:
                pass
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, n: int = 15) -> str:
        out = []
        for path in self.logs:
            try:
                lines = path.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            if lines:
                out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)


def _spawn(cmd: List[str], workdir: Path, name: str, env: Optional[dict] = None,
           cwd: Optional[Path] = None) -> tuple:
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name}.stdout"
    err = workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(cwd) if cwd else None)
    return proc, [out, err]


def start_nghttpd(docroot: Path, workdir: Path, tls: Optional[Dict[str, str]] = None,
                  name: str = "nghttpd") -> Service:
    port = free_port()
    cmd = [tool("nghttpd") or "nghttpd", "-d", str(docroot)]
    if tls:
        cmd += [str(port), tls["key"], tls["cert"]]
    else:
        cmd += ["--no-tls", str(port)]
    proc, logs = _spawn(cmd, workdir, name)
    svc = Service(name, proc, port, f"{'https' if tls else 'http'}://127.0.0.1:{port}", logs)
    wait_port(port, proc=proc, what=name)
    return svc


def start_h2proxy(upstream_url: str, workdir: Path, tls: bool = False, extra: Sequence[str] = (),
                  name: str = "h2proxy", timeout: float = 30.0, tree: Optional[Path] = None) -> Service:
    """Start ``h2proxy`` as a subprocess and wait for its "listening on" line.

    ``tree``: run the h2proxy of that source tree instead (e.g. a checkout of an earlier commit, for
    before/after figures in one run), with this virtualenv's Python.
    """
    port = free_port()
    listen = f"{'https' if tls else 'h2c'}://127.0.0.1:{port}"
    exe = [H2PROXY] if tree is None else [
        PYTHON, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); from proxy.cli import main; sys.exit(main())"]
    cmd = [*exe, "--listen", listen, "--upstream", upstream_url, "-q", *extra]
    proc, logs = _spawn(cmd, workdir, name, cwd=ROOT)
    deadline = time.monotonic() + timeout
    err = logs[1]
    while True:
        text = err.read_text(errors="replace") if err.exists() else ""
        if "listening on" in text:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            tail = "\n".join(text.splitlines()[-12:])
            raise RuntimeError(f"{name} did not start (exit {proc.returncode}):\n{tail}")
        time.sleep(0.02)
    wait_port(port, proc=proc, what=name)
    svc = Service(name, proc, port, f"{'https' if tls else 'http'}://127.0.0.1:{port}", logs)
    if "--workers" in extra:
        # The parent only waits; the workers do the work: count them.
        deadline = time.monotonic() + 5
        want = int(list(extra)[list(extra).index("--workers") + 1])
        while len(children(proc.pid)) < want and time.monotonic() < deadline:
            time.sleep(0.02)
        svc.measured = [proc.pid, *children(proc.pid)]
    return svc


def start_nghttpx(origin_port: int, workdir: Path, name: str = "nghttpx", extra: Sequence[str] = (),
                  tls: Optional[Dict[str, str]] = None) -> Service:
    """nghttpx as a reverse proxy (one worker thread, single process so its CPU is one PID).

    Without ``tls``: h2c on both legs. With ``tls`` ({"cert", "key"}, as for :func:`start_nghttpd`): TLS on
    both legs, like h2proxy ``https://`` to ``https://``: a TLS frontend with that key and certificate (h2
    by ALPN) and an h2-over-TLS backend to a TLS origin (``origin_port``), its certificate not verified
    (``--insecure``: the bench's origin certificate is self-made, and h2proxy runs ``--insecure`` too).
    """
    port = free_port()
    frontend = f"--frontend=127.0.0.1,{port}" + ("" if tls else ";no-tls")
    backend = f"--backend=127.0.0.1,{origin_port};;proto=h2" + (";tls" if tls else "")
    cmd = [tool("nghttpx") or "nghttpx", "--conf=/dev/null", frontend, backend, "--workers=1", "--single-process",
           f"--errorlog-file={workdir / (name + '.errorlog')}", "--no-ocsp", *extra]
    if tls:
        cmd += ["--insecure", tls["key"], tls["cert"]]
    proc, logs = _spawn(cmd, workdir, name)
    logs.append(workdir / (name + ".errorlog"))
    wait_port(port, proc=proc, what=name)
    return Service(name, proc, port, f"{'https' if tls else 'http'}://127.0.0.1:{port}", logs)


def start_relay_floor(origin_port: int, workdir: Path, name: str = "relay") -> Service:
    port = free_port()
    cmd = [PYTHON, str(ROOT / "bench" / "relay_floor.py"), "--listen", str(port), "--upstream",
           f"127.0.0.1:{origin_port}"]
    proc, logs = _spawn(cmd, workdir, name)
    wait_port(port, proc=proc, what=name)
    return Service(name, proc, port, f"http://127.0.0.1:{port}", logs)


# -- h2load -----------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE = {"B/s": 1.0, "KB/s": 1024.0, "MB/s": 1024.0 ** 2, "GB/s": 1024.0 ** 3}


def _dur(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errored: int = 0
    rps: float = 0.0
    bytes_per_s: float = 0.0
    mean_s: float = float("nan")        # h2load's "time for request" mean
    latencies: Optional[List[float]] = None  # per-request seconds from --log-file, sorted
    cpu: Dict[str, float] = field(default_factory=dict)  # service name -> CPU seconds in the measured period
    output: str = ""

    @property
    def mib_s(self) -> float:
        return self.bytes_per_s / 2 ** 20

    def pct(self, p: float) -> float:
        return percentile(self.latencies or [], p)


def h2load(url: str, *, clients: int = 10, streams: int = 10, duration: Optional[float] = None,
           warmup: float = 0.0, requests: Optional[int] = None, log_file: Optional[Path] = None,
           measure: Sequence[Service] = (), extra: Sequence[str] = (), timeout: float = 120.0) -> LoadResult:
    """Run h2load once; with ``measure``, sample those services' CPU over exactly the measured period.

    Timing-based runs (``duration``) sample CPU when h2load says the main duration starts and
    ends (its stdout is line-buffered through ``stdbuf``); count-based runs sample around the run.
    """
    cmd = ["h2load", "-c", str(clients), "-m", str(streams), "-t", "1"]
    if duration:
        cmd += ["-D", f"{int(round(duration * 1000))}ms"]  # h2load takes whole numbers with a unit
        if warmup:
            cmd += ["--warm-up-time", f"{int(round(warmup * 1000))}ms"]
    else:
        cmd += ["-n", str(requests or 10000)]
    if log_file is not None:
        log_file = Path(log_file)
        if log_file.exists():
            log_file.unlink()  # h2load appends to an existing log file
        cmd += ["--log-file", str(log_file)]
    cmd += [*extra, url]
    if tool("stdbuf"):
        cmd = ["stdbuf", "-oL", *cmd]
    res = LoadResult()
    before: Dict[str, float] = {}
    after: Dict[str, float] = {}
    lines: List[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killer = _Deadline(proc, timeout)
    try:
        if not duration:
            before = {s.name: s.cpu() for s in measure}
        for line in proc.stdout:
            lines.append(line)
            if duration and "Main benchmark duration is started" in line and not before:
                before = {s.name: s.cpu() for s in measure}
            elif duration and "Main benchmark duration is over" in line and not after:
                after = {s.name: s.cpu() for s in measure}
        proc.wait()
        if not duration:
            after = {s.name: s.cpu() for s in measure}
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res.output = "".join(lines)
    if killer.fired:
        raise RuntimeError(f"h2load did not finish within {timeout} s:\n{res.output[-2000:]}")
    for name in before:
        if name in after:
            res.cpu[name] = after[name] - before[name]
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)(B/s|KB/s|MB/s|GB/s)", res.output)
    if m:
        res.rps = float(m.group(1))
        res.bytes_per_s = float(m.group(2)) * _RATE[m.group(3)]
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  res.output)
    if m:
        res.ok, res.failed, res.errored = (int(x) for x in m.groups())
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", res.output)
    if m:
        res.mean_s = _dur(m.group(3))
    if log_file is not None and log_file.exists():
        lat = []
        with open(log_file) as f:
            for row in f:
                parts = row.split("\t")
                if len(parts) >= 3 and parts[1] != "-1":
                    lat.append(int(parts[2]) / 1e6)
        lat.sort()
        res.latencies = lat
        log_file.unlink()
    return res


class _Deadline:
    """Kill a process after ``timeout`` seconds (bounds every load run in time)."""

    def __init__(self, proc: subprocess.Popen, timeout: float) -> None:
        import threading
        self.fired = False
        self._proc = proc
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        if self._proc.poll() is None:
            self.fired = True
            self._proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


# -- HTTP/2 bytes for raw clients --------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


SETTINGS = frame(0x4, 0, 0)
SETTINGS_ACK = frame(0x4, 0x1, 0)


def fmt(value: float, digits: int = 1) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


# -- raw asyncio HTTP/2 clients (memory and soak benchmarks) ------------------------

def request_headers(port: int, path: str = "/1k") -> bytes:
    """A HEADERS frame (stream 1, END_STREAM|END_HEADERS) for GET ``path``, HPACK-encoded."""
    from framecodec import hpack
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                    (":path", path), ("user-agent", "h2proxy-bench")])
    return frame(0x1, 0x5, 1, block)


async def read_frame(reader) -> tuple:
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    payload = await reader.readexactly(length) if length else b""
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload


async def open_h2(port: int, timeout: float = 10.0):
    """Connect, send the preface and SETTINGS, wait for the server's SETTINGS and ACK it. Returns (reader, writer)."""
    import asyncio
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    writer.write(PREFACE + SETTINGS)
    try:
        async def handshake():
            while True:
                ftype, flags, _, _ = await read_frame(reader)
                if ftype == 0x4 and not flags & 0x1:
                    writer.write(SETTINGS_ACK)
                    return
        await asyncio.wait_for(handshake(), timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def read_response(reader, stream: int = 1, timeout: float = 10.0) -> int:
    """Read frames until ``stream`` ends (END_STREAM or RST_STREAM); returns the DATA bytes read."""
    import asyncio

    async def run() -> int:
        got = 0
        while True:
            ftype, flags, sid, payload = await read_frame(reader)
            if sid != stream:
                if ftype == 0x7:  # GOAWAY
                    raise ConnectionError("GOAWAY")
                continue
            if ftype == 0x0:
                got += len(payload)
            if ftype == 0x3 or (ftype in (0x0, 0x1) and flags & 0x1):
                return got
    return await asyncio.wait_for(run(), timeout)


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def slope_per_minute(samples: Sequence[tuple]) -> float:
    """Least-squares slope of (seconds, value) samples, in value units per minute."""
    n = len(samples)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return (sum((t - mx) * (v - my) for t, v in samples) / den) * 60.0 if den else float("nan")
