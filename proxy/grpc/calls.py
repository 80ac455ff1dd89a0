"""What makes a stream a gRPC call, and the names of its parts.

A gRPC request is an HTTP/2 POST whose ``content-type`` is
``application/grpc`` or ``application/grpc+<codec>`` (``+proto``, ``+json``,
...) and whose ``:path`` is ``/<package>.<Service>/<Method>``. gRPC-Web
(``application/grpc-web``) frames messages differently and is not one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .framing import DEFAULT_MAX_MESSAGE

REQUEST, RESPONSE = "client->server", "server->client"


def is_grpc_content_type(value: Optional[str]) -> bool:
    """``application/grpc``, ``application/grpc+proto``, ``application/grpc;...``; not gRPC-Web."""
    if not value:
        return False
    v = value.strip().lower()
    if not v.startswith("application/grpc"):
        return False
    rest = v[len("application/grpc"):]
    return rest == "" or rest[0] in "+;"


def header(headers: Optional[Sequence], name: str) -> Optional[str]:
    """The first value of ``name`` in a header list of pairs (tuples or JSON lists)."""
    if headers:
        for h in headers:
            if h[0] == name:
                return h[1]
    return None


def is_grpc_request(headers: Optional[Sequence]) -> bool:
    return bool(headers) and header(headers, ":method") == "POST" and \
        is_grpc_content_type(header(headers, "content-type"))


def split_path(path: Optional[str]) -> Tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``); odd paths give what there is."""
    if not path:
        return "", ""
    p = path.split("?", 1)[0].lstrip("/")
    service, _, method = p.rpartition("/")
    return service, method


@dataclass
class GrpcOptions:
    """How gRPC messages are decoded for display and recording (picklable: it crosses to the recorder process)."""

    max_message: int = DEFAULT_MAX_MESSAGE
    descriptor: Optional[str] = None     # a FileDescriptorSet file (--proto-descriptor)
