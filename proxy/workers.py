"""``h2proxy --workers N``: N worker processes sharing one listening port.

Each worker is a forked copy of the parent running its own event loop (uvloop
when available) and its own :class:`~proxy.server.ProxyServer`, bound to the
same address with ``SO_REUSEPORT``: the kernel spreads incoming connections
over the workers. A connection lives in one worker from start to end, so the
relay needs no shared state.

* The parent loads the configuration and the hooks once (errors are reported
  before anything forks), forks the workers, waits until every one of them
  listens, then prints the usual ``h2proxy VERSION: listening on ...`` line
  (with the workers' pids). Each worker has its own copy of the hooks: hook
  state is per worker.
* With ``--record FILE`` worker *i* writes ``FILE.w<i>`` (``FILE.w0``,
  ``FILE.w1``, ...; before a ``.gz`` or ``.zst`` ending, which keeps the file
  compressed: ``frames.jsonl.w0.gz``): one frame log per worker, connection
  ids are per worker.
* SIGINT/SIGTERM to the parent are forwarded to every worker; each stops the
  usual way (GOAWAY, grace period), prints ``h2proxy: worker I (pid P) stopped:
  served K connections`` and exits; the parent exits 0 once all have exited
  cleanly. A worker that dies on its own stops the others and the parent
  exits 1.
* The embedded demo origin is not supported with workers (``--upstream`` is
  required), nor is the admin API (its fault rules would reach one worker only).
* A listen port of 0 is resolved once in the parent (a bound, non-listening
  ``SO_REUSEPORT`` socket reserves it), so all workers share the same port.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Dict, List, Optional

from . import __version__
from .server import ConfigError, Endpoint

log = logging.getLogger("h2proxy")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
READY_TIMEOUT = 60.0


def worker_record_path(path: str, index: int) -> str:
    """Worker ``index``'s frame log: ``FILE.w<index>``, put before a compression ending so that the
    file is still written compressed and read back as such (``frames.jsonl.gz`` -> ``frames.jsonl.w0.gz``)."""
    for ending in (".gz", ".zst"):
        if path.endswith(ending):
            return f"{path[:-len(ending)]}.w{index}{ending}"
    return f"{path}.w{index}"


def run_workers(cfg, loop_name: str = "asyncio") -> int:
    """Run ``cfg.workers`` worker processes; return the exit code for the command."""
    from .assemble import build_hooks, settings_from

    n = int(cfg.workers)
    if cfg.mode == "reverse" and not cfg.upstream:
        print("h2proxy: error: --workers needs --upstream: the embedded demo origin runs in a single process; "
              "start the demo with plain `h2proxy` (no --workers) or give the origin with --upstream URL",
              file=sys.stderr)
        return 2
    if cfg.admin_listen:
        print("h2proxy: error: --admin cannot be combined with --workers (each worker has its own fault rules, "
              "and only one of them could serve the admin API); drop one of the two", file=sys.stderr)
        return 2
    if not hasattr(socket, "SO_REUSEPORT"):
        print("h2proxy: error: --workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
        return 2

    settings = settings_from(cfg)  # validates listen and upstream
    reservation: Optional[socket.socket] = None
    if settings.listen.port == 0:
        reservation = _reserve_port(settings.listen)
        port = reservation.getsockname()[1]
        settings.listen = Endpoint(settings.listen.scheme, settings.listen.host, port)
        cfg.listen = str(settings.listen)
    if settings.listen.tls and not (cfg.cert and cfg.key):
        _prepare_ca(cfg, settings.listen.host)
    hooks = build_hooks(cfg)  # loaded once, here: a bad hook fails before anything forks

    read_fd, write_fd = os.pipe()
    workers: Dict[int, int] = {}  # pid -> index
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    fork_error: Optional[OSError] = None
    try:
        for index in range(n):
            try:
                pid = os.fork()
            except OSError as exc:
                fork_error = exc
                break
            if pid == 0:  # the worker
                os.close(read_fd)
                if reservation is not None:
                    reservation.close()
                code = _worker_process(cfg, index, hooks, write_fd, loop_name)
                os._exit(code)
            workers[pid] = index
    finally:
        os.close(write_fd)
        state = _Parent(workers)
        for sig in STOP_SIGNALS:
            signal.signal(sig, state.on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if fork_error is not None:
        print(f"h2proxy: error: cannot start worker {len(workers)}: {fork_error.strerror or fork_error}",
              file=sys.stderr, flush=True)
        state.stopping = True
        state.forward(signal.SIGTERM)
        state.reap_all()
        os.close(read_fd)
        return 1

    try:
        ready = _wait_ready(read_fd, state, n)
    finally:
        os.close(read_fd)
    if ready is None:
        if not state.stopping:
            state.forward(signal.SIGTERM)
        state.reap_all()
        if reservation is not None:
            reservation.close()
        return 0 if state.stopping and state.clean else (state.failure_code or 1)

    target = "CONNECT targets (forward mode)" if cfg.mode == "forward" else str(settings.upstream)
    pids = ", ".join(str(pid) for pid, _ in sorted(ready.items(), key=lambda kv: kv[1]))
    print(f"h2proxy {__version__}: listening on {settings.listen}, forwarding to {target}; event loop {loop_name}"
          f"{'; strict' if settings.strict else ''}; {n} workers (pids {pids})", file=sys.stderr, flush=True)
    for pid, index in sorted(ready.items(), key=lambda kv: kv[1]):
        log.info("worker %d pid %d ready%s", index, pid,
                 f"; recording to {worker_record_path(cfg.record, index)}" if cfg.record else "")
    state.reap_all()
    if reservation is not None:
        reservation.close()
    return 0 if state.clean else (state.failure_code or 1)


class _Parent:
    """The parent's bookkeeping: live workers, signal forwarding, exit codes."""

    def __init__(self, workers: Dict[int, int]) -> None:
        self.workers = dict(workers)
        self.stopping = False
        self.clean = True
        self.failure_code = 0

    def on_signal(self, signum, _frame) -> None:
        if not self.stopping:
            self.stopping = True
            print(f"h2proxy: stopping: {signal.Signals(signum).name} forwarded to {len(self.workers)} workers; "
                  f"each sends GOAWAY to its clients and waits for streams in flight", file=sys.stderr, flush=True)
        self.forward(signum)

    def forward(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def exited(self, pid: int, status: int) -> None:
        index = self.workers.pop(pid, None)
        if index is None:
            return
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return  # a clean stop: ours, or someone signalled the worker itself
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            return  # stopped before its loop was up
        self.clean = False
        self.failure_code = code if code > 0 else 1
        how = f"exited with code {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
        print(f"h2proxy: error: worker {index} (pid {pid}) {how}; stopping the other workers", file=sys.stderr,
              flush=True)
        if not self.stopping:
            self.stopping = True
            self.forward(signal.SIGTERM)

    def poll(self) -> None:
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.workers.pop(pid, None)
                continue
            if done:
                self.exited(done, status)

    def reap_all(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.exited(pid, status)


def _wait_ready(read_fd: int, state: _Parent, n: int) -> Optional[Dict[int, int]]:
    """Wait for every worker's "ready" line; None when one fails or the parent is told to stop first."""
    ready: Dict[int, int] = {}
    buf = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while len(ready) < n:
        if state.stopping or not state.clean:
            return None
        if time.monotonic() > deadline:
            print(f"h2proxy: error: only {len(ready)} of {n} workers were ready after {READY_TIMEOUT:.0f} s",
                  file=sys.stderr, flush=True)
            state.clean = False
            return None
        try:
            readable, _, _ = select.select([read_fd], [], [], 0.1)
        except InterruptedError:
            continue
        if readable:
            chunk = os.read(read_fd, 4096)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split()
                if len(parts) >= 2:
                    ready[int(parts[1])] = int(parts[0])
            if not chunk and len(ready) < n:
                state.poll()
                if not state.clean:
                    return None
                time.sleep(0.05)
        state.poll()
        missing = [pid for pid in ready if pid not in state.workers]
        if missing or not state.clean:
            if state.clean:
                state.clean = False
            return None
    return ready


def _reserve_port(listen: Endpoint) -> socket.socket:
    """Pick a free port for all workers: a bound (never listening) SO_REUSEPORT socket holds it."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(listen.host, 0, family, socket.SOCK_STREAM)
        addr = infos[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        raise ConfigError(f"listen: cannot bind {listen}: {exc.strerror or exc}") from None
    return sock


def _prepare_ca(cfg, host: str) -> None:
    """Create the proxy's CA and the listen host's certificate once, before the workers race to do it."""
    try:
        from .certs import CertificateAuthority
        CertificateAuthority(cfg.ca_dir).leaf(host)
    except Exception as exc:  # the workers report the real error when they start
        log.debug("could not prepare the CA before forking: %s", exc)


# -- the worker -------------------------------------------------------------------------

def _worker_process(cfg, index: int, hooks, ready_fd: int, loop_name: str) -> int:
    """Runs in the forked child; returns its exit code. Stop signals stay blocked until the loop handles them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    try:
        # The parent's policy (uvloop or not) was installed before the fork; a fresh loop is made here.
        return asyncio.run(_worker(cfg, index, hooks, ready_fd))
    except ConfigError as exc:
        _say(f"h2proxy: worker {index}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 0
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass


async def _worker(cfg, index: int, hooks, ready_fd: int) -> int:
    from .assemble import build_sink, settings_from
    from .server import ProxyServer

    settings = settings_from(cfg)
    settings.reuse_port = True
    server: ProxyServer
    if cfg.record:
        cfg.record = worker_record_path(cfg.record, index)
    sink = build_sink(cfg)
    if cfg.mode == "forward":
        from .forward import ForwardProxyServer
        server = ForwardProxyServer(settings, cfg, hooks=hooks, sink=sink)
    else:
        server = ProxyServer(settings, hooks=hooks, sink=sink)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    pid = os.getpid()
    os.write(ready_fd, f"{index} {pid} {getattr(server, 'port', '')}\n".encode())
    os.close(ready_fd)
    await stop.wait()
    await server.stop()
    if sink is not None:
        sink.close()
    served = getattr(server, "total_connections", None)
    _say(f"h2proxy: worker {index} (pid {pid}) stopped: "
         f"served {served if served is not None else '?'} connections")
    return 0


def _say(line: str) -> None:
    """One line to stderr in one write, so lines from several workers never interleave."""
    try:
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), (line + "\n").encode())
    except (OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


__all__: List[str] = ["run_workers"]
