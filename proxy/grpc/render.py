"""gRPC records as text, for ``-v`` and ``h2proxy log text`` (called by the frame renderer)."""
from __future__ import annotations

import base64
import json
from typing import List

from .framing import DEFAULT_MAX_MESSAGE, DecompressError, decompress
from .protowire import describe
from .status import status_name


def message_lines(rec: dict, ind: str, max_lines: int = 200) -> List[str]:
    """A ``grpc_message`` record: one head line, then the message decoded (named JSON, else raw tree)."""
    arrow = "request" if rec.get("direction") == "client->server" else "response"
    size = f"{rec.get('length')} bytes"
    if rec.get("compressed"):
        size += f", compressed ({rec.get('encoding') or 'no grpc-encoding'}"
        if rec.get("decompressed_length") is not None:
            size += f", {rec['decompressed_length']} bytes inflated"
        size += ")"
    lines = [f"{ind}; gRPC {rec.get('path')} {arrow} message #{rec.get('index')} ({size})"]
    pre = ind + "  "
    if rec.get("oversized"):
        lines.append(f"{pre}({rec.get('note')})")
        return lines
    if rec.get("decoded") is not None:
        text = json.dumps(rec["decoded"], indent=2, ensure_ascii=False)
        body = text.splitlines()
    elif rec.get("decode_error") and rec.get("compressed") and rec.get("decompressed_length") is None:
        body = [f"({rec['decode_error']})"]
    else:
        data = base64.b64decode(rec.get("data") or "")
        if rec.get("compressed"):
            try:
                data = decompress(data, rec.get("encoding"), max(DEFAULT_MAX_MESSAGE, len(data) * 64))
            except DecompressError as exc:
                return lines + [f"{pre}({exc})"]
        body = describe(data, limit=max_lines)
        if rec.get("decode_error"):
            body.insert(0, f"(schema: {rec['decode_error']}; shown raw)")
    if len(body) > max_lines:
        body = body[:max_lines] + [f"... {len(body) - max_lines} more lines"]
    lines.extend(pre + line for line in body)
    return lines


def call_lines(rec: dict, ind: str) -> List[str]:
    """A ``grpc_call`` record: one line with the method, status and message counts."""
    msgs = rec.get("messages") or {}
    status = rec.get("status")
    text = f"{ind}; gRPC call {rec.get('path')} ended: " + (
        f"grpc-status {status} ({status_name(status)})" if status is not None else "no grpc-status")
    if rec.get("message"):
        text += f", grpc-message {rec['message']!r}"
    text += (f"; messages {msgs.get('client->server', 0)} sent, {msgs.get('server->client', 0)} received")
    if rec.get("duration_ms") is not None:
        text += f"; {rec['duration_ms']:.3f} ms"
    lines = [text]
    for p in rec.get("problems") or ():
        lines.append(f"{ind}  ! {p}")
    return lines


def header_note(name: str, value: str) -> str:
    """What to add after a ``grpc-status`` or ``grpc-message`` header line ("" for others)."""
    if name == "grpc-status":
        return f"  ({status_name(value)})"
    if name == "grpc-message":
        from .status import percent_decode
        decoded = percent_decode(value)
        return f"  ({decoded!r})" if decoded != value else ""
    return ""
