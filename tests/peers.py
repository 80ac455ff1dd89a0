"""Helpers for tests with real peers on loopback: ports, nghttpd, nghttp, curl, h2load.

Import what you need (``from tests.peers import free_port, Nghttpd, h2load``).
Everything binds or connects to 127.0.0.1 only; readiness is waited for by
connecting to the port, never by sleeping; every external command runs with a
timeout and is killed when it overruns (the test then fails with the command's
output).

* :func:`free_port`, :func:`wait_port` (blocking), :func:`await_port` (async);
* :func:`need` (a tool's path, or skip the test when it is not installed);
* :func:`run` (async: run a command, return ``(returncode, output)``);
* :class:`Nghttpd` (nghttp2's server on a directory, h2c or TLS; a context
  manager too) and :func:`make_docroot`;
* :func:`nghttp`, :func:`curl`, :func:`h2load` (async wrappers), and
  :func:`parse_h2load` (h2load's summary as a dict);
* :func:`http_url` (``h2c://`` -> ``http://``, the form nghttp, curl and h2load want);
* :class:`HeldUpstream` (a TCP relay in front of an origin that holds the origin's first bytes
  until told: an upstream whose SETTINGS are late, without sleeping);
* :func:`stopped_at_end` (the body of a fixture that starts servers on demand and stops them all);
* :class:`ProxyLog` and :func:`check_behaved`: the check every client helper here runs (nghttp,
  and ``tests.rawpeers.h2_get`` for the h2 library): the first frame the client receives is
  SETTINGS (RFC 9113 3.4), and the in-process proxy logged no violation against a peer that
  behaved (the client itself, or an nghttpd origin).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

__all__ = ["free_port", "wait_port", "await_port", "need", "run", "Nghttpd", "make_docroot", "nghttp", "curl",
           "h2load", "parse_h2load", "H2loadResult", "http_url", "HeldUpstream", "ProxyLog", "check_behaved",
           "first_frame_received", "stopped_at_end"]

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


@contextmanager
def stopped_at_end(make: Callable[..., T]) -> Iterator[Callable[..., T]]:
    """The body of a fixture that starts servers or processes on demand: yields ``make`` wrapped so
    that everything it made is stopped (its ``stop()``) when the test is over."""
    made: List[T] = []

    def start(*args, **kwargs) -> T:
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing
    try:
        yield start
    finally:
        for thing in made:
            thing.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 yourself when you can)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = LOOPBACK, proc: Optional[subprocess.Popen] = None) -> None:
    """Block until something accepts connections on host:port; fail fast if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process meant to listen on {host}:{port} exited with "
                                   f"{proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


async def await_port(port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    """The async form of :func:`wait_port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            await asyncio.sleep(0.02)


def need(tool: str) -> str:
    """The path of ``tool`` (also looked for in /usr/sbin); skips the calling test when it is missing."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        import pytest
        pytest.skip(f"{tool} is not installed")
    return path


async def run(*cmd: str, timeout: float = 60.0, input: Optional[bytes] = None) -> Tuple[int, str]:
    """Run a command; return ``(returncode, stdout and stderr as text)``.

    A command still running after ``timeout`` seconds is killed and the test
    fails with an AssertionError that shows the end of its output.
    """
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} did not finish within {timeout} s; output:\n"
                             f"{out.decode(errors='replace')[-3000:]}") from None
    return proc.returncode, out.decode(errors="replace")


def http_url(url) -> str:
    """``h2c://host:port/...`` -> ``http://host:port/...`` (nghttp, curl and h2load speak h2c to http URLs).

    ``url`` is a string or anything with a ``url`` attribute (an in-process proxy).
    """
    url = getattr(url, "url", url)
    return url.replace("h2c://", "http://", 1) if url.startswith("h2c://") else url


def make_docroot(path: Union[str, Path], files: Dict[str, Union[bytes, str, int]]) -> Path:
    """Create a document root: name -> bytes, text, or an int (that many bytes of a fixed pattern)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            pattern = bytes(range(256))
            content = (pattern * (content // 256 + 1))[:content]
        elif isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
    return root


class Nghttpd:
    """nghttp2's ``nghttpd`` serving ``docroot`` on 127.0.0.1, h2c or (with ``tls``) TLS.

    ``tls`` is a dict with ``key`` and ``cert`` paths (e.g. from
    ``proxy.certs.make_test_pki``). ``extra`` are more nghttpd options
    (``["-p/index.html=/style.css"]`` pushes, ``["--echo-upload"]``, ...).
    ``start()`` returns once the port accepts connections; ``stop()`` ends the
    process. Use as ``with Nghttpd(root) as server:`` to get both.
    """

    def __init__(self, docroot: Union[str, Path], tls: Optional[dict] = None,
                 extra: Optional[Sequence[str]] = None, port: Optional[int] = None) -> None:
        self.docroot = Path(docroot)
        self.tls = tls
        self.extra = list(extra or [])
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 10.0) -> "Nghttpd":
        cmd = [need("nghttpd"), "-a", LOOPBACK, "-d", str(self.docroot), *self.extra]
        if self.tls:
            cmd += [str(self.port), str(self.tls["key"]), str(self.tls["cert"])]
        else:
            cmd += ["--no-tls", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, timeout, proc=self.proc)
        except Exception:
            self.stop()
            raise
        _NGHTTPD_PORTS.add(self.port)
        return self

    @property
    def url(self) -> str:
        """``h2c://127.0.0.1:PORT`` or ``https://127.0.0.1:PORT`` (an upstream for the proxy)."""
        return f"{'https' if self.tls else 'h2c'}://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        """The URL for nghttp, curl and h2load."""
        return http_url(self.url)

    def stop(self) -> None:
        _NGHTTPD_PORTS.discard(self.port)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "Nghttpd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ProxyLog(logging.Handler):
    """The records the in-process proxy logs (logger "h2proxy") while in a ``with`` block.

    The relay tags each violation record with the connection (``h2proxy_conn``), the side
    blamed (``h2proxy_side``) and the connection's client and upstream addresses.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list = []
        self._old_level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "ProxyLog":
        logger = logging.getLogger("h2proxy")
        self._old_level = logger.level
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("h2proxy")
        logger.removeHandler(self)
        logger.setLevel(self._old_level)

    def blamed(self, side: str, client_addr: Optional[str] = None) -> list:
        """Messages of the records that blame ``side`` ("client" or "server") for a violation."""
        return [r.getMessage() for r in self.records if getattr(r, "h2proxy_side", None) == side
                and (client_addr is None or getattr(r, "h2proxy_client", None) == client_addr)]


#: Ports of the nghttpd origins running now (an origin that behaves: no violation may be blamed on it).
_NGHTTPD_PORTS: set = set()


def check_behaved(log: ProxyLog, client_addr: Optional[str] = None, what: str = "the client") -> None:
    """No violation was logged against a peer that behaved: the client (``client_addr``: only its own
    connection; None: any client connection of the run) and any nghttpd origin."""
    bad = log.blamed("client", client_addr)
    bad += [r.getMessage() for r in log.records if getattr(r, "h2proxy_side", None) == "server"
            and str(getattr(r, "h2proxy_upstream", "")).rpartition(":")[2] in {str(p) for p in _NGHTTPD_PORTS}]
    if bad:
        raise AssertionError(f"the proxy blamed a peer that behaved ({what}, nghttpd):\n" + "\n".join(bad[:10]))


_RECV_FRAME = re.compile(r"recv (\w+) frame")


def first_frame_received(nghttp_output: str) -> Optional[str]:
    """The type of the first frame ``nghttp -v`` says it received (None: none)."""
    m = _RECV_FRAME.search(nghttp_output)
    return m.group(1) if m else None


async def nghttp(*args: str, timeout: float = 30.0, check: bool = True) -> Tuple[int, str]:
    """Run ``nghttp ARGS`` (e.g. ``"-nv", url``); ``(returncode, output)``.

    With ``check`` (the default) the run is checked: with ``-v`` the first frame nghttp received
    is SETTINGS, and the in-process proxy blamed neither nghttp nor an nghttpd origin for a
    violation meanwhile. ``check=False`` for a test where another client misbehaves at the same time.
    """
    with ProxyLog() as plog:
        rc, out = await run(need("nghttp"), *args, timeout=timeout)
    if check:
        verbose = any(a in ("-v", "--verbose") or (a.startswith("-") and not a.startswith("--") and "v" in a)
                      for a in args)
        first = first_frame_received(out) if verbose else None
        if first is not None and first != "SETTINGS":
            raise AssertionError(f"nghttp's first frame received is {first}, not SETTINGS (RFC 9113 3.4):\n"
                                 f"{out[-3000:]}")
        check_behaved(plog, what="nghttp")
    return rc, out


async def curl(*args: str, timeout: float = 30.0) -> Tuple[int, str]:
    """Run ``curl -sS ARGS`` (add ``--http2-prior-knowledge`` for h2c); ``(returncode, output)``."""
    return await run(need("curl"), "-sS", *args, timeout=timeout)


class H2loadResult(dict):
    """h2load's summary: ``total``, ``started``, ``done``, ``succeeded``, ``failed``, ``errored``,
    ``timeout`` (the "requests:" line) and ``2xx`` .. ``5xx`` (the "status codes:" line); ``output``
    is the whole text and ``returncode`` h2load's exit status."""

    output: str = ""
    returncode: int = 0


_REQUESTS = re.compile(r"requests:\s*(\d+) total,\s*(\d+) started,\s*(\d+) done,\s*(\d+) succeeded,\s*"
                       r"(\d+) failed,\s*(\d+) errored,\s*(\d+) timeout")
_STATUS = re.compile(r"status codes:\s*(\d+) 2xx,\s*(\d+) 3xx,\s*(\d+) 4xx,\s*(\d+) 5xx")


def parse_h2load(output: str) -> H2loadResult:
    """Parse h2load's "requests: N total, N started, N done, N succeeded, N failed, N errored,
    N timeout" and "status codes: ..." lines; raises ValueError when there is no requests line."""
    m = _REQUESTS.search(output)
    if m is None:
        raise ValueError(f"no 'requests:' line in h2load's output:\n{output[-2000:]}")
    result = H2loadResult(zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"),
                              map(int, m.groups()), strict=True))
    s = _STATUS.search(output)
    if s is not None:
        result.update(zip(("2xx", "3xx", "4xx", "5xx"), map(int, s.groups()), strict=True))
    result.output = output
    return result


async def h2load(url: str, n: int = 1000, c: int = 1, m: int = 1, *extra: str,
                 timeout: float = 60.0) -> H2loadResult:
    """Run ``h2load -n N -c C -m M [extra] URL`` and parse its summary (see :func:`parse_h2load`)."""
    rc, out = await run(need("h2load"), "-n", str(n), "-c", str(c), "-m", str(m), *extra, http_url(url),
                        timeout=timeout)
    result = parse_h2load(out)
    result.returncode = rc
    return result


class HeldUpstream:
    """A TCP relay on 127.0.0.1 in front of ``target_port`` that holds what the origin sends.

    Bytes towards the origin pass at once; the origin's bytes (its SETTINGS first) wait until
    :meth:`release` is called or ``release_when(frames)`` is true of the frames the origin has
    been sent on that connection (a list of ``(type, flags, stream id)``), e.g. "the proxy
    forwarded two requests". An upstream that is late by an event, not by a sleep.
    """

    def __init__(self, target_port: int, release_when=None) -> None:
        self.target_port = target_port
        self.release_when = release_when
        self.released = asyncio.Event()
        self.server: Optional[asyncio.AbstractServer] = None
        self.port = 0
        self.tasks: list = []

    async def start(self) -> "HeldUpstream":
        self.server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"h2c://{LOOPBACK}:{self.port}"

    def release(self) -> None:
        self.released.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from framecodec.reader import FrameReader
        try:
            up_r, up_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        frames: list = []
        parse = FrameReader(expect_preface=True)

        async def to_origin() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    up_w.write(data)
                    for f in parse.feed(data):
                        frames.append((f.type, f.flags, f.stream_id))
                    if self.release_when is not None and self.release_when(frames):
                        self.released.set()
            except Exception:
                pass
            finally:
                up_w.close()

        async def from_origin() -> None:
            try:
                first = await up_r.read(65536)
                await self.released.wait()
                data = first
                while data:
                    writer.write(data)
                    await writer.drain()
                    data = await up_r.read(65536)
            except Exception:
                pass
            finally:
                writer.close()

        self.tasks += [asyncio.ensure_future(to_origin()), asyncio.ensure_future(from_origin())]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def __aenter__(self) -> "HeldUpstream":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
