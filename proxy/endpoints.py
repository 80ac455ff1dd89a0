"""Configuration errors and endpoint URLs: what the rule model, the config and the shell share.

Kept apart from :mod:`proxy.server` so that modules that only check configuration (the fault
rules, the config loader) do not import the asyncio shell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key and the value."""


@dataclass
class Endpoint:
    """A parsed ``h2c://host:port`` or ``https://host:port`` URL."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(text: str, key: str = "listen", default_port: Optional[int] = None,
                   need_port: bool = False) -> Endpoint:
    """Parse a listen or upstream URL; raise ConfigError naming ``key`` when it is wrong.

    ``need_port``: a URL without a port is an error (a listener binding port 80 or 443 by
    surprise helps no one)."""
    if "://" not in text:
        raise ConfigError(f"{key}: {text!r} is not a URL; write h2c://HOST:PORT or https://HOST:PORT")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "http":
        scheme = "h2c"
    if scheme not in ("h2c", "https"):
        raise ConfigError(f"{key}: scheme {parts.scheme!r} in {text!r} is not supported; use h2c:// or https://")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{key}: {text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{key}: {text!r} has an invalid port") from None
    if port is None and need_port:
        raise ConfigError(f"{key}: {text!r} has no port; write {scheme if scheme != 'h2c' else parts.scheme}://"
                          f"{parts.netloc}:PORT (0 picks a free one)")
    if port is None:
        port = default_port if default_port is not None else (443 if scheme == "https" else 80)
    return Endpoint(scheme, host, port)
