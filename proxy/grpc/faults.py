"""Fault rules on gRPC messages: match by service, method and message number; break the call.

A rule is a gRPC rule when its action is ``grpc_status`` or ``cut``, or it has
a ``service``, ``message`` or ``grpc`` key (so ``drop message=2`` drops the
second message, while ``drop type=data`` stays a frame rule). It is written
like any fault rule (one line, TOML, admin API, pytest plugin) and kept by the
same :class:`~proxy.faults.hook.FaultHook`, which hands gRPC messages to
:func:`apply_rules`. The "how often" keys (``after``, ``first``, ``every``,
``probability``, ``limit``, ``seed``) count matching messages.

Actions, each on the matched message:

* ``grpc_status``: end the call with ``code`` (a gRPC status name or number,
  default UNAVAILABLE) and ``details``: trailers-only when the server has not
  answered yet, else trailers after the responses already sent; the server's
  stream is cancelled. The message is not forwarded.
* ``delay``: hold the message ``ms`` (plus or minus ``jitter``) milliseconds.
* ``drop``: do not forward it. ``duplicate``: forward it and ``copies`` more.
* ``corrupt``: flip bytes of the message (``offsets``, or ``count`` random
  ones, XOR ``xor``); its length prefix stays valid.
* ``cut``: forward the message, then reset the stream (``code``, an HTTP/2
  error code, default INTERNAL_ERROR, towards the receiver; CANCEL towards the sender).
"""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from typing import Any, Dict, List, Optional

from ..faults.rules import (
    ACTION_ALIASES,
    C2S,
    S2C,
    FaultError,
    Key,
    Rule,
    _Bad,
    _bool,
    _code,
    _direction,
    _for,
    _glob,
    _int_min,
    _int_value,
    _ms,
    _name,
    _offsets,
    _pos_list,
    _probability,
    _text,
    _where,
    check_keys,
    did_you_mean,
)
from ..hooks.api import CLIENT_TO_SERVER
from .status import parse_status, status_name

log = logging.getLogger("h2proxy")

GRPC_ACTIONS: Dict[str, str] = {
    "grpc_status": "end the call with a gRPC status (code, details): trailers-only, or after the messages so far",
    "delay": "hold the message ms milliseconds (plus or minus jitter)",
    "drop": "do not forward the message",
    "duplicate": "forward the message and copies more of it",
    "corrupt": "flip bytes of the message (offsets, or count random ones); the length prefix stays valid",
    "cut": "forward the message, then reset the stream (code, default INTERNAL_ERROR)",
}
#: Keys that make a rule a gRPC rule (besides the gRPC-only actions).
GRPC_MARKERS = ("service", "message", "grpc")
_GRPC_ONLY_ACTIONS = ("grpc_status", "cut")


def _grpc_code(v) -> int:
    try:
        return parse_status(v)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


GRPC_KEYS: Dict[str, Key] = {
    "name": Key(_name, "rule", None, "the rule's name (default: ACTION-N)"),
    "action": Key(_text, "rule", None, "what the rule does: " + ", ".join(GRPC_ACTIONS)),
    "enabled": Key(_bool, "rule", None, "false keeps the rule but makes it match nothing (default true)"),
    "comment": Key(_text, "rule", None, "free text, ignored"),
    "grpc": Key(_bool, "rule", None, "true: a gRPC rule (acts on messages) even without service or message"),
    "direction": Key(_direction, "match", None, "client->server (requests), server->client (responses) or both"),
    "service": Key(_glob, "match", None, "glob on the service: package.Service"),
    "method": Key(_glob, "match", None, "glob on the method name (Method), or on /package.Service/Method "
                                        "when it starts with /"),
    "path": Key(_glob, "match", None, "glob on the call's path /package.Service/Method"),
    "authority": Key(_glob, "match", None, "glob on the request's :authority"),
    "message": Key(_pos_list, "match", None, "the Nth message of its direction on the call (1 = first)"),
    "conn": Key(_pos_list, "match", None, "connection numbers (the proxy counts from 1)"),
    "probability": Key(_probability, "how often", None, "chance that a match fires (0..1 or 10%)"),
    "seed": Key(_int_value, "how often", None, "seed of the rule's random numbers"),
    "after": Key(_int_min(0), "how often", None, "skip the first N matching messages"),
    "first": Key(_int_min(1), "how often", None, "only the first N matches (after 'after') may fire"),
    "every": Key(_int_min(1), "how often", None, "only every Nth matching message may fire"),
    "limit": Key(_int_min(1), "how often", None, "fire at most N times in all"),
    "code": Key(_text, "action", _for("grpc_status", "cut"),
                "grpc_status: a gRPC status (UNAVAILABLE, 14, ...; default UNAVAILABLE); cut: an HTTP/2 error "
                "code (default INTERNAL_ERROR)"),
    "details": Key(_text, "action", _for("grpc_status"), "the grpc-message text"),
    "ms": Key(_ms, "action", _for("delay"), "how long to hold the message: 500, 500ms, 2s"),
    "jitter": Key(_ms, "action", _for("delay"), "plus or minus up to this many ms (seeded)"),
    "copies": Key(_int_min(1, 100), "action", _for("duplicate"), "extra copies to send (default 1)"),
    "offsets": Key(_offsets, "action", _for("corrupt"), "message byte offsets to flip (negative: from the end)"),
    "count": Key(_int_min(0, 65536), "action", _for("corrupt"), "random message bytes to flip (default 1)"),
    "xor": Key(_int_min(1, 255), "action", _for("corrupt"), "what flipped bytes are XORed with (default 0xFF)"),
}


def is_grpc_spec(spec: Dict[str, Any]) -> bool:
    """Whether a rule spec is a gRPC (message) rule."""
    if not isinstance(spec, dict):
        return False
    action = str(spec.get("action", "")).strip().lower().replace("-", "_")
    if action in _GRPC_ONLY_ACTIONS:
        return True
    keys = {str(k).strip().lower() for k in spec}
    return any(k in keys for k in GRPC_MARKERS)


class GrpcRule(Rule):
    """A checked gRPC fault rule (counters, seeded random numbers and listing as :class:`Rule`)."""

    grpc = True

    def __init__(self, spec: Dict[str, Any], source: str = "fault", default_name: Optional[str] = None,
                 default_seed: Optional[int] = None) -> None:
        if not isinstance(spec, dict):
            raise FaultError(f"{source}: expected a table of keys, got {spec!r}")
        spec = dict(spec)
        raw_action = str(spec.get("action", "")).strip().lower().replace("-", "_")
        action = ACTION_ALIASES.get(raw_action, raw_action)
        if action not in GRPC_ACTIONS:
            raise FaultError(f"{source}: action = {spec.get('action')!r}: not an action for gRPC messages"
                             f"{did_you_mean(action, GRPC_ACTIONS)}; gRPC actions: {', '.join(GRPC_ACTIONS)}")
        self.action = action
        spec["action"] = action
        values = check_keys(spec, action, GRPC_KEYS, source, " for a gRPC rule")
        try:
            if action == "grpc_status":
                values["code"] = _grpc_code(values.get("code", "UNAVAILABLE"))
            elif action == "cut":
                values["code"] = _code(values.get("code", "INTERNAL_ERROR"))
        except _Bad as exc:
            raise FaultError(f"{_where(source, 'code', spec.get('code'))}: {exc}") from None
        if action == "delay" and "ms" not in values:
            raise FaultError(f"{source}: ms: missing; delay needs ms = how long to hold the message")
        self._take_common(spec, values, GRPC_KEYS, source, default_name, default_seed)
        self.service = values.get("service")
        self.method = values.get("method")
        self.path = values.get("path")
        self.authority = values.get("authority")
        self.messages = values.get("message")

    def wants(self, d: int, t: int) -> bool:
        return False          # no frames: messages come through apply_rules

    def matches_message(self, ctx, message) -> bool:
        if not self.enabled:
            return False
        d = C2S if message.direction == CLIENT_TO_SERVER else S2C
        if d not in self.directions:
            return False
        if self.messages is not None and message.index not in self.messages:
            return False
        if self.conns is not None and getattr(ctx.conn, "id", None) not in self.conns:
            return False
        if self.service is not None and not fnmatch.fnmatchcase(message.service, self.service):
            return False
        if self.method is not None:
            target = message.path if self.method.startswith("/") else message.method
            if not fnmatch.fnmatchcase(target, self.method):
                return False
        if self.path is not None and not fnmatch.fnmatchcase(message.path, self.path):
            return False
        if self.authority is not None:
            req = ctx.request_headers or ()
            value = next((v for n, v in req if n == ":authority"), None)
            if value is None or not fnmatch.fnmatchcase(value, self.authority):
                return False
        return True


def _flip(rule: GrpcRule, data: bytes) -> bytes:
    p = rule.params
    buf = bytearray(data)
    if not buf:
        return data
    xor = p.get("xor", 0xFF)
    offsets = [o if o >= 0 else len(buf) + o for o in p.get("offsets", ())]
    count = p.get("count", 0 if offsets else 1)
    offsets += [rule.rng.randrange(len(buf)) for _ in range(count)]
    for o in offsets:
        if 0 <= o < len(buf):
            buf[o] ^= xor
    return bytes(buf)


def apply_rules(owner, rules: List[Rule], ctx, message):
    """Run the gRPC rules on one message: None (unchanged), a list of message bytes, or an awaitable of those."""
    current: Optional[List[bytes]] = None
    delay = 0.0
    for rule in rules:
        if not isinstance(rule, GrpcRule) or not rule.matches_message(ctx, message) or not rule.fires():
            continue
        p = rule.params
        a = rule.action
        detail = ""
        if a == "grpc_status":
            detail = f"grpc-status {p['code']} ({status_name(p['code'])})"
            _record(owner, rule, ctx, message, detail)
            ctx.grpc_abort(p["code"], p.get("details", ""))
            return []
        if a == "delay":
            ms = p["ms"]
            if p.get("jitter"):
                ms = max(0.0, ms + rule.rng.uniform(-p["jitter"], p["jitter"]))
            delay += ms / 1000.0
            detail = f"{ms:.1f} ms"
        elif a == "drop":
            current = []
        elif a == "duplicate":
            base = current if current is not None else [message.data]
            current = base * (1 + p.get("copies", 1))
            detail = f"{p.get('copies', 1)} copies"
        elif a == "corrupt":
            base = current if current is not None else [message.data]
            current = [_flip(rule, m) for m in base]
        elif a == "cut":
            ctx.cut_after(p["code"])
            from ..core.protocol import error_name
            detail = f"reset {error_name(p['code'])} after this message"
        _record(owner, rule, ctx, message, detail)
    if delay:
        return _later(delay, current)
    return current


async def _later(seconds: float, result):
    await asyncio.sleep(seconds)
    return result


def _record(owner, rule: GrpcRule, ctx, message, detail: str) -> None:
    relay = ctx.conn
    event = {"time": time.time(), "rule": rule.name, "action": rule.action, "conn": relay.id,
             "stream": message.stream_id, "direction": message.direction, "frame": "grpc message",
             "path": message.path, "message": message.index, "detail": detail}
    events = getattr(owner, "events", None)
    if events is not None:
        events.append(event)
    sink = getattr(relay, "sink", None)
    if sink is not None:
        try:
            sink.hook_action(relay.id, time.time(), f"fault:{rule.name}", rule.action,
                             {k: event[k] for k in ("stream", "direction", "path", "message", "detail")})
        except Exception as exc:  # a sink's trouble is not the fault's
            log.debug("sink.hook_action failed: %r", exc)
    log.info("c%d: fault %s: %s on gRPC %s %s message %d (stream %d)%s", relay.id, rule.name, rule.action,
             message.path, message.direction, message.index, message.stream_id, f": {detail}" if detail else "")
