"""The ``h2proxy`` command line.

``h2proxy [options]`` runs the proxy; ``h2proxy log ...`` works on recorded
frame logs; ``h2proxy ca [export DIR]`` shows or exports the proxy's CA.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import List, Optional

from . import __version__
from .assemble import build_hooks, build_sink, grpc_options, settings_from  # noqa: F401 (the command's API)
from .config import Config, check_admin_token, load_config
from .core.limits import check_limit
from .memtune import tune_malloc
from .printable import printable
from .server import ConfigError, ProxyServer, parse_endpoint
from .signals import stop_event

log = logging.getLogger("h2proxy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="h2proxy",
        description="A frame-level HTTP/2 man-in-the-middle proxy. Subcommands: "
                    "'h2proxy log {text,pcap,har,stats,replay,web} ...', 'h2proxy ca [export DIR]'.")
    p.add_argument("--version", action="version", version=f"h2proxy {__version__}")
    p.add_argument("--config", metavar="FILE", help="TOML configuration (flags override it)")
    p.add_argument("--listen", metavar="URL", help="h2c://HOST:PORT or https://HOST:PORT "
                                                   "(default h2c://127.0.0.1:8080)")
    p.add_argument("--upstream", metavar="URL", help="the origin; without it an embedded demo origin is started")
    p.add_argument("--mode", choices=["reverse", "forward"], help="reverse (default) or forward (CONNECT)")
    p.add_argument("--altsvc", choices=["drop", "forward"],
                   help="ALTSVC frames: drop (default; RFC 7838 section 4) or forward unchanged")
    p.add_argument("--strict", action="store_true", default=None,
                   help="act as a conformant intermediary: answer violations instead of forwarding them")
    p.add_argument("-v", "--verbose", action="count", default=None, help="print frames live (-vv: with hex dumps)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--record", metavar="FILE", help="write a JSON Lines frame log")
    p.add_argument("--record-conn", metavar="N", type=int, action="append", help="record only these connections")
    p.add_argument("--record-stream", metavar="N", type=int, action="append", help="record only these streams")
    p.add_argument("--record-types", metavar="T,T", help="record only these frame types (e.g. HEADERS,RST_STREAM)")
    p.add_argument("--record-max-bytes", metavar="N", type=int, help="stop recording frames past this file size")
    p.add_argument("--record-rotate", metavar="SIZE", type=_size,
                   help="write the log as numbered files of about SIZE each (e.g. 100M), each readable alone")
    p.add_argument("--record-ring", metavar="SIZE", type=_size,
                   help="flight recorder: keep the last SIZE of frames in memory and write them to "
                        "FILE-dump-NNNN on a violation, a limit, a fault rule hit, SIGUSR1 or POST /record/dump")
    p.add_argument("-s", "--script", metavar="HOOK", action="append", default=[],
                   help="load a hook: a file path, module:Class or a built-in name (repeatable)")
    p.add_argument("--fault", metavar="RULE", action="append", default=[],
                   help="a fault rule in one line, e.g. 'rst_stream code=REFUSED_STREAM path=/api/* every=3'")
    p.add_argument("--admin", metavar="HOST:PORT", help="serve the admin HTTP API here (loopback only)")
    p.add_argument("--admin-token", metavar="TOKEN", help="the admin API token (default: generated, printed)")
    p.add_argument("--web", metavar="HOST:PORT", help="serve the live web view (and the admin API) here "
                                                     "(loopback only; docs/web.md)")
    p.add_argument("--web-stall", metavar="MS", type=float,
                   help="web view: a window held at zero this long counts as a stall (default 500)")
    p.add_argument("--cert", metavar="FILE", help="certificate chain for the TLS listener (PEM)")
    p.add_argument("--key", metavar="FILE", help="private key for --cert (PEM)")
    p.add_argument("--ca-dir", metavar="DIR", help="where the proxy's CA lives (default ~/.h2proxy)")
    p.add_argument("--upstream-ca", metavar="FILE", help="CA bundle to verify the upstream with")
    p.add_argument("--insecure", action="store_true", default=None, help="do not verify the upstream's certificate")
    p.add_argument("--ignore-hosts", metavar="REGEX", action="append", help="forward mode: tunnel these hosts")
    p.add_argument("--allow-hosts", metavar="REGEX", action="append", help="forward mode: intercept only these")
    p.add_argument("--workers", metavar="N", type=int, help="processes sharing the listening port (SO_REUSEPORT)")
    p.add_argument("--proto-descriptor", metavar="FILE",
                   help="a FileDescriptorSet (protoc --descriptor_set_out): gRPC messages shown with named fields")
    p.add_argument("--grpc-max-message", metavar="BYTES", type=int,
                   help="gRPC messages longer than this are reported, not decoded (default 4194304)")
    p.add_argument("--limit", metavar="NAME=VALUE", action="append", default=[],
                   help="override a resource limit, e.g. --limit max_streams=1000")
    return p


def _size(text: str) -> int:
    """An argparse type for sizes such as 100M (see proxy.recording.logwriter.parse_size)."""
    from .recording.logwriter import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    for name in ("listen", "upstream", "mode", "strict", "altsvc", "cert", "key", "ca_dir", "upstream_ca", "insecure",
                 "record", "record_conn", "record_stream", "record_max_bytes", "record_rotate", "record_ring",
                 "workers", "admin_token", "proto_descriptor", "grpc_max_message"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if args.listen is not None:
        cfg.listen_from = "--listen"
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: the number of processes must be 1 or more")
    if args.verbose is not None:
        cfg.verbose = args.verbose
    if args.record_types:
        cfg.record_types = [t.strip().upper() for t in args.record_types.split(",") if t.strip()]
    if args.ignore_hosts:
        cfg.ignore_hosts = args.ignore_hosts
    if args.allow_hosts:
        cfg.allow_hosts = args.allow_hosts
    if args.admin:
        cfg.admin_listen = args.admin
    if args.web:
        cfg.web_listen = args.web
    if args.web_stall is not None:
        cfg.web_stall_ms = args.web_stall
    for spec in args.script:
        cfg.hooks.append((spec, {}))
    cfg.fault_lines.extend(args.fault)
    for item in args.limit:
        name, _, value = item.partition("=")
        if not hasattr(cfg.limits, name.strip()):
            raise ConfigError(f"--limit {item}: unknown limit {name!r}")
        current = getattr(cfg.limits, name.strip())
        try:
            setattr(cfg.limits, name.strip(), type(current)(value))
        except ValueError:
            raise ConfigError(f"--limit {item}: {value!r} is not a {type(current).__name__}") from None
        problem = check_limit(name.strip(), getattr(cfg.limits, name.strip()))
        if problem:
            raise ConfigError(f"--limit {item}: {problem}")
    for problem in cfg.limits.problems():
        raise ConfigError(problem)
    check_admin_token(cfg.admin_token)
    return cfg


class PrintableFormatter(logging.Formatter):
    """Log lines with every control character of the message escaped (messages quote peers' bytes)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("h2proxy: %(message)s"))
    root = logging.getLogger("h2proxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def install_loop() -> str:
    """Use uvloop when it loads; fall back to asyncio's loop otherwise."""
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except Exception:  # not installed, or fails to load on this platform
        return "asyncio"


async def run_proxy(cfg: Config, loop_name: str = "asyncio") -> int:
    settings = settings_from(cfg)
    if cfg.mode != "forward" and settings.listen.host not in ("127.0.0.1", "localhost", "::1") \
            and not settings.listen.host.startswith("127."):   # forward mode warns itself (proxy/forward.py)
        log.warning("listening on %s, which is not a loopback address: anyone who can reach it can use the proxy",
                    settings.listen.host)
    origin = None
    if settings.upstream is None and cfg.mode == "reverse":
        from .demo_origin import DemoOrigin
        origin = DemoOrigin()
        await origin.start()
        settings.upstream = parse_endpoint(origin.url, "upstream")
    if cfg.web_listen:
        from .faults.admin import parse_admin_listen
        parse_admin_listen(cfg.web_listen)      # refuse a bad --web before the proxy starts
    hooks = build_hooks(cfg)
    sink = build_sink(cfg)
    web_model = None
    if cfg.web_listen:
        from .recording.sink import MultiSink
        from .web.model import WebModel
        from .web.sink import WebSink
        web_model = WebModel("live", stall_threshold=cfg.web_stall_ms / 1000.0)
        web_sink = WebSink(web_model)
        # Alone, the web sink detaches the connections busier than its budget (relay_opened gives it the relay).
        sink = web_sink if sink is None else MultiSink([sink, web_sink])
    server: ProxyServer
    if cfg.mode == "forward":
        from .forward import ForwardProxyServer
        server = ForwardProxyServer(settings, cfg, hooks=hooks, sink=sink)
    else:
        server = ProxyServer(settings, hooks=hooks, sink=sink)
    await server.start()
    record_routes = []         # POST /record/dump on the admin API (and the web view) with --record-ring
    if cfg.record_ring:
        from .recording.dump_route import RecordRoutes, flight_recorders
        if any(True for _ in flight_recorders(sink)):
            record_routes.append(RecordRoutes(sink))
    admin = None
    if cfg.admin_listen:
        from .faults.admin import AdminServer
        admin = AdminServer(cfg.admin_listen, cfg.admin_token, hooks, extensions=record_routes)
        await admin.start()
    web_server = None
    if web_model is not None and cfg.web_listen:
        from .faults.admin import AdminServer, find_fault_hook
        from .web.app import WebView
        try:   # --web alone adds no fault hook: it would take every frame off the relay's fast path
            faults = find_fault_hook(hooks) if hooks is not None else None
        except ConfigError:
            faults = None
        view = WebView(web_model)
        web_server = AdminServer(cfg.web_listen, cfg.admin_token or (admin.token if admin else None),
                                 hooks if faults is not None else None, announce=False,
                                 extensions=[view, *record_routes])
        await web_server.start()
        print(f"h2proxy: web view and admin API on {view.page_url}", file=sys.stderr, flush=True)
    target = "CONNECT targets (forward mode)" if cfg.mode == "forward" else str(settings.upstream)
    print(f"h2proxy {__version__}: listening on {server.url}, forwarding to {target}"
          f"{' (embedded demo origin)' if origin else ''}; event loop {loop_name}"
          f"{'; strict' if settings.strict else ''}", file=sys.stderr, flush=True)
    if origin is not None:
        url = server.url.replace("h2c://", "http://")
        curl = "--http2-prior-knowledge" if server.url.startswith("h2c") else "--http2 -k"
        print(f"try:\n  curl {curl} -v {url}/\n  nghttp -nv {url}/push\n  nghttp -nv {url}/altsvc\n"
              f"  h2load -n 1000 -c 4 -m 10 {url}/size/1024", file=sys.stderr, flush=True)
    stop = stop_event()
    await stop.wait()
    print("h2proxy: stopping: GOAWAY sent to every client, waiting for streams in flight", file=sys.stderr,
          flush=True)
    await server.stop()
    if admin is not None:
        await admin.stop()
    if web_server is not None:
        await web_server.stop()
    if origin is not None:
        await origin.stop()
    if sink is not None:
        sink.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "log":
        from .recording.cli import log_main
        return log_main(argv[1:])
    if argv and argv[0] == "ca":
        from .certs import CertificateAuthority, describe_ca
        cp = argparse.ArgumentParser(prog="h2proxy ca", description="Show the proxy's CA certificate and how to "
                                                                    "trust it, or export it (never the key).")
        cp.add_argument("--ca-dir", metavar="DIR", help="the CA directory (default ~/.h2proxy)")
        cp.add_argument("action", nargs="?", choices=["export"], help="export: write the certificate as PEM and DER")
        cp.add_argument("out", nargs="?", default=".", metavar="DIR", help="where to export (default .)")
        ca_args = cp.parse_intermixed_args(argv[1:])
        if ca_args.action is None and ca_args.out != ".":
            cp.error(f"unexpected argument {ca_args.out!r}")
        try:
            ca = CertificateAuthority(ca_args.ca_dir)
            if ca_args.action == "export":
                for path in ca.export(ca_args.out):
                    print(path)
                return 0
        except OSError as exc:
            print(f"h2proxy: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
            return 2
        print(describe_ca(ca))
        return 0
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose or 0, args.quiet)
    try:
        cfg = merge_args(load_config(args.config), args)
        loop_name = install_loop()
        tune_malloc()
        if cfg.workers and cfg.workers > 1 and cfg.web_listen:
            raise ConfigError("--web cannot be combined with --workers (each worker sees only its own "
                              "connections, and only one could serve the page); drop one of the two")
        if cfg.workers and cfg.workers > 1:
            from .workers import run_workers
            return run_workers(cfg, loop_name)
        return asyncio.run(run_proxy(cfg, loop_name))
    except ConfigError as exc:
        print(f"h2proxy: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .hooks.chain import HookLoadError
        if isinstance(exc, HookLoadError):
            print(f"h2proxy: error: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
