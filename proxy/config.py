"""The TOML configuration: loading, checking every key, and merging command-line flags over it.

Errors name the file and the key (``config/default.toml: limits.max_streams:
expected an integer, got 'many'``), never a traceback.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from .core.limits import Limits, check_limit
from .endpoints import ConfigError


@dataclass
class Config:
    listen: str = "h2c://127.0.0.1:8080"
    upstream: Optional[str] = None
    mode: str = "reverse"
    strict: bool = False
    verbose: int = 0
    workers: int = 1
    decode_headers: bool = False
    altsvc: str = "drop"
    # gRPC message decoding (-v, recordings): a FileDescriptorSet, and the largest message decoded
    proto_descriptor: Optional[str] = None
    grpc_max_message: int = 4 << 20
    # tls
    cert: Optional[str] = None
    key: Optional[str] = None
    ca_dir: Optional[str] = None
    upstream_ca: Optional[str] = None
    insecure: bool = False
    ignore_hosts: List[str] = field(default_factory=list)
    allow_hosts: List[str] = field(default_factory=list)
    # recording
    record: Optional[str] = None
    record_conn: Optional[List[int]] = None
    record_stream: Optional[List[int]] = None
    record_types: Optional[List[str]] = None
    record_max_bytes: Optional[int] = None
    record_rotate: Optional[int] = None
    record_ring: Optional[int] = None
    # hooks and faults: lists of (spec, options)
    hooks: List[tuple] = field(default_factory=list)
    faults: List[dict] = field(default_factory=list)
    fault_lines: List[str] = field(default_factory=list)
    # admin API
    admin_listen: Optional[str] = None
    admin_token: Optional[str] = None
    # web view (--web): where it listens, and how long a zero window must hold data to count as a stall
    web_listen: Optional[str] = None
    web_stall_ms: float = 500.0
    limits: Limits = field(default_factory=Limits)
    source: str = "<defaults>"
    #: Where ``listen`` was given (the flag or the file's key), None for the default: checks name it.
    listen_from: Optional[str] = None


_TOP = {"listen": str, "upstream": str, "mode": str, "strict": bool, "verbose": int, "workers": int,
        "decode_headers": bool, "altsvc": str, "proto_descriptor": str, "grpc_max_message": int}
_TLS = {"cert": str, "key": str, "ca_dir": str, "upstream_ca": str, "insecure": bool,
        "ignore_hosts": list, "allow_hosts": list}
_RECORD = {"file": str, "conn": list, "stream": list, "types": list, "max_bytes": int, "rotate": int, "ring": int}
_ADMIN = {"listen": str, "token": str}


def _check(value: Any, kind, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return value
    return value


#: Fewest characters of an admin API token chosen by the user (a generated one has 32).
MIN_TOKEN_LENGTH = 16


def check_admin_token(token: Optional[str]) -> None:
    """Refuse a token anyone could guess: the admin API can reset, delay and corrupt all traffic."""
    if token is None:
        return
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"admin token: {len(token)} characters is too short to be a secret; use at least "
                          f"{MIN_TOKEN_LENGTH} (or leave it out: the proxy then generates one and prints it)")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError("admin token: it must be printable characters without spaces "
                          "(it travels in an Authorization header)")


def load_config(path: Optional[str]) -> Config:
    """Read a TOML file into a Config; None gives the defaults."""
    cfg = Config()
    if path is None:
        return cfg
    p = Path(path)
    cfg.source = str(p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    apply_table(cfg, data, str(p))
    if cfg.altsvc not in ("drop", "forward"):
        raise ConfigError(f"{p}: altsvc: {cfg.altsvc!r} is not 'drop' or 'forward' "
                          "(use a [[hooks]] table with use = \"altsvc\" to rewrite)")
    if cfg.mode not in ("reverse", "forward"):
        raise ConfigError(f"{p}: mode: {cfg.mode!r} is not 'reverse' or 'forward'")
    if cfg.workers < 1:
        raise ConfigError(f"{p}: workers: {cfg.workers} is not a number of processes; use 1 or more")
    return cfg


def apply_table(cfg: Config, data: Dict[str, Any], source: str) -> None:
    for key, value in data.items():
        where = f"{source}: {key}"
        if key in _TOP:
            setattr(cfg, key, _check(value, _TOP[key], where))
            if key == "listen":
                cfg.listen_from = where
        elif key == "tls":
            for k, v in _table(value, where).items():
                if k not in _TLS:
                    raise ConfigError(f"{source}: tls.{k}: unknown key (known: {', '.join(_TLS)})")
                setattr(cfg, k, _check(v, _TLS[k], f"{source}: tls.{k}"))
        elif key == "record":
            for k, v in _table(value, where).items():
                if k not in _RECORD:
                    raise ConfigError(f"{source}: record.{k}: unknown key (known: {', '.join(_RECORD)})")
                v = _check(v, _RECORD[k], f"{source}: record.{k}")
                setattr(cfg, "record" if k == "file" else f"record_{k}", v)
        elif key == "admin":
            for k, v in _table(value, where).items():
                if k not in _ADMIN:
                    raise ConfigError(f"{source}: admin.{k}: unknown key (known: {', '.join(_ADMIN)})")
                setattr(cfg, f"admin_{k}", _check(v, _ADMIN[k], f"{source}: admin.{k}"))
        elif key == "limits":
            known = {f.name: f.type for f in fields(Limits)}
            for k, v in _table(value, where).items():
                if k not in known:
                    raise ConfigError(f"{source}: limits.{k}: unknown limit (known: {', '.join(known)})")
                kind = float if known[k] in (float, "float") else int
                setattr(cfg.limits, k, _check(v, kind, f"{source}: limits.{k}"))
                problem = check_limit(k, getattr(cfg.limits, k))
                if problem:
                    raise ConfigError(f"{source}: limits.{k}: {problem}")
        elif key == "hooks":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected [[hooks]] tables")
            for i, table in enumerate(value):
                table = dict(_table(table, f"{where}[{i}]"))
                use = table.pop("use", None)
                if not isinstance(use, str):
                    raise ConfigError(f"{source}: hooks[{i}].use: required: a built-in name "
                                      f"(altsvc, push, headers, extension), module:Class or a file path")
                cfg.hooks.append((use, table))
        elif key == "faults":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected [[faults]] tables")
            for i, table in enumerate(value):
                cfg.faults.append(dict(_table(table, f"{where}[{i}]")))
        else:
            all_keys = list(_TOP) + ["tls", "record", "admin", "limits", "hooks", "faults"]
            raise ConfigError(f"{where}: unknown key (known: {', '.join(all_keys)})")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value
