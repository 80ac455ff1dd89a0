"""Building the proxy's parts from a :class:`~proxy.config.Config`: listener settings, hooks, sinks.

Shared by the command line (``proxy.cli``) and the worker processes (``proxy.workers``), which
both start proxies from the same configuration; neither imports the other for it.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, List, Optional

from .config import Config
from .server import ConfigError, ProxySettings, parse_endpoint

if TYPE_CHECKING:
    from .recording.sink import FrameSink  # (the recording modules load only when a sink is asked for)


def build_hooks(cfg: Config):
    """Load the hooks (config order, then -s, then faults) into a HookChain, or None when there are none."""
    from .hooks.chain import HookChain, load_hook
    hooks = []
    if cfg.altsvc == "drop" and not any(spec == "altsvc" for spec, _ in cfg.hooks):
        # RFC 7838 section 4: an intermediary must not forward ALTSVC frames.
        hooks.extend(load_hook("altsvc", {"mode": "drop"}))
    for spec, options in cfg.hooks:
        hooks.extend(load_hook(spec, options))
    if cfg.faults or cfg.fault_lines or cfg.admin_listen:
        from .faults import build_fault_hook
        # Without the admin API or the web view the rules cannot change: decode only what they need.
        hooks.append(build_fault_hook(cfg.faults, cfg.fault_lines,
                                      static=not (cfg.admin_listen or cfg.web_listen)))
    return HookChain(hooks, grpc=grpc_options(cfg)) if hooks else None


def grpc_options(cfg: Config):
    """How gRPC messages are decoded (-v, recordings, gRPC hooks); a bad descriptor set is a ConfigError."""
    from .grpc.calls import GrpcOptions
    if cfg.proto_descriptor:
        from .grpc.schema import SchemaError, load_schema
        try:
            load_schema(cfg.proto_descriptor)      # a bad file stops the proxy at start, with one line
        except SchemaError as exc:
            raise ConfigError(str(exc)) from None
    return GrpcOptions(max_message=cfg.grpc_max_message, descriptor=cfg.proto_descriptor)


def build_sink(cfg: Config) -> Optional[FrameSink]:
    grpc = grpc_options(cfg)
    sinks: List[FrameSink] = []
    if cfg.record:
        from .recording.offload import ProcessRecorder
        try:
            sinks.append(ProcessRecorder(cfg.record, filter_conn=cfg.record_conn, filter_stream=cfg.record_stream,
                                         filter_types=cfg.record_types, max_bytes=cfg.record_max_bytes,
                                         rotate=cfg.record_rotate, ring=cfg.record_ring, detach=True,
                                         max_header_list_size=cfg.limits.max_header_list_size, grpc=grpc))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--record {cfg.record}: {exc}") from None
    if cfg.verbose:
        from .recording.text import LivePrinter
        sinks.append(LivePrinter(sys.stderr, verbosity=cfg.verbose,
                                 max_header_list_size=cfg.limits.max_header_list_size, grpc=grpc))
    if not sinks:
        return None
    if len(sinks) == 1:
        return sinks[0]
    from .recording.sink import MultiSink
    return MultiSink(sinks)


def settings_from(cfg: Config) -> ProxySettings:
    key = cfg.listen_from or "--listen"
    text = cfg.listen
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if cfg.mode == "forward":
        if cfg.listen_from is None:
            text = "http://127.0.0.1:8080"        # (the default: forward mode takes HTTP/1.1 CONNECT requests)
        elif scheme == "h2c":
            raise ConfigError(f"{key}: {text!r}: forward mode takes HTTP/1.1 CONNECT requests; "
                              f"use http://HOST:PORT")
    elif scheme == "http":
        raise ConfigError(f"{key}: {text!r}: reverse mode takes HTTP/2; use h2c://HOST:PORT (cleartext, prior "
                          f"knowledge) or https://HOST:PORT (http:// is for --mode forward)")
    listen = parse_endpoint(text, key, need_port=True)
    if bool(cfg.cert) != bool(cfg.key):
        given, missing = ("cert", "key") if cfg.cert else ("key", "cert")
        raise ConfigError(f"--{given} (tls.{given}) needs --{missing} (tls.{missing}): the TLS listener "
                          f"presents a certificate with its private key")
    upstream = parse_endpoint(cfg.upstream, "upstream") if cfg.upstream else None
    return ProxySettings(listen=listen, upstream=upstream, strict=cfg.strict, limits=cfg.limits, cert=cfg.cert,
                         key=cfg.key, ca_dir=cfg.ca_dir, upstream_ca=cfg.upstream_ca, insecure=cfg.insecure,
                         decode_headers=cfg.decode_headers)
