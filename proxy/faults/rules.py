"""Fault rules: the keys a rule may have, their checking, matching and "how often".

A rule is a *spec* (a flat dict, from a ``[[faults]]`` TOML table, a ``--fault``
line or the admin API) checked into a :class:`Rule`: every key is known,
applies to the rule's action and has a valid value, else :class:`FaultError`
names the key and the value. :data:`KEYS` is the single list of keys (docs and
tests are checked against it).
"""
from __future__ import annotations

import difflib
import fnmatch
import random
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from ..core.protocol import FRAME_NAMES, ErrorCode, Setting, error_name, parse_error_code
from ..endpoints import ConfigError
from ..hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, header_value

C2S, S2C = 0, 1
UNKNOWN = -1                       # "any frame type the codec does not know" (the relay's extension key)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION, \
    ALTSVC = range(11)


class FaultError(ConfigError):
    """A fault rule is wrong; the message names the rule, the key and the value."""


# ---------------------------------------------------------------- actions

#: Every action, with a one-line description (docs/faults.md has the long form).
ACTIONS: Dict[str, str] = {
    "delay": "hold the frame (and those behind it in its direction) for ms, plus or minus jitter",
    "drop": "do not forward the frame (dropped DATA is credited back to its sender unless raw)",
    "duplicate": "forward the frame and copies more of it",
    "corrupt": "flip payload bytes (offsets, or count random ones) and/or make the length field lie",
    "split": "DATA into parts frames; HEADERS/PUSH_PROMISE into the frame plus CONTINUATIONs",
    "rst_stream": "reset the frame's stream with code, towards client, server or both",
    "goaway": "send GOAWAY (code, last_stream_id, debug) towards client, server or both",
    "close": "close the connection: FIN, or a TCP reset with reset = true",
    "stall": "withhold WINDOW_UPDATEs towards one side for ms (or for good), then release them as one",
    "throttle": "let DATA through at rate bytes per second per connection and direction",
    "inject": "send a frame (by type and fields, or raw hex) before or after the matched frame",
    "settings": "change, add or remove SETTINGS parameters in flight",
}

ACTION_ALIASES = {"reset": "rst_stream", "rst": "rst_stream", "dup": "duplicate", "slow": "throttle",
                  "change_settings": "settings", "fin": "close"}

#: Frame types an action applies to when the rule names none (None: every type).
DEFAULT_TYPES: Dict[str, Optional[FrozenSet[int]]] = {
    "throttle": frozenset({DATA}),
    "settings": frozenset({SETTINGS}),
    "split": frozenset({DATA, HEADERS, PUSH_PROMISE}),
}

TYPE_NAMES = {n.lower(): t for t, n in FRAME_NAMES.items()}
TYPE_NAMES.update({"unknown": UNKNOWN, "extension": UNKNOWN, "rst": RST_STREAM, "window": WINDOW_UPDATE,
                   "wu": WINDOW_UPDATE})

FLAG_BITS = {"END_STREAM": 0x01, "ACK": 0x01, "END_HEADERS": 0x04, "PADDED": 0x08, "PRIORITY": 0x20}

DIRECTION_ALIASES = {
    CLIENT_TO_SERVER: C2S, "c2s": C2S, "to_server": C2S, "upstream": C2S, "request": C2S,
    "client-to-server": C2S, "client_to_server": C2S,
    SERVER_TO_CLIENT: S2C, "s2c": S2C, "to_client": S2C, "downstream": S2C, "response": S2C,
    "server-to-client": S2C, "server_to_client": S2C,
}


# ---------------------------------------------------------------- value converters

class _Bad(Exception):
    """A value is wrong: the converter says why (the caller adds rule, key and value)."""


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise _Bad("expected true or false")


def _int_value(v, what="an integer") -> int:
    if isinstance(v, bool):
        raise _Bad(f"expected {what}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip().replace("_", ""), 0)
        except ValueError:
            pass
    raise _Bad(f"expected {what}")


def _int_min(low: int, high: Optional[int] = None):
    def conv(v) -> int:
        n = _int_value(v)
        if n < low or (high is not None and n > high):
            raise _Bad(f"expected an integer in {low}..{high}" if high is not None
                       else f"expected an integer >= {low}")
        return n
    return conv


def _signed(v) -> int:
    return _int_value(v, "an integer (may be negative)")


def _number(v) -> float:
    if isinstance(v, bool):
        raise _Bad("expected a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise _Bad("expected a number")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10 ** 6, "mb": 10 ** 6,
               "mib": 1 << 20, "g": 10 ** 9, "gb": 10 ** 9, "gib": 1 << 30}


def _size(v) -> int:
    """Bytes: an integer, or a number with a unit (1MiB, 64KiB, 100k, 1.5MB)."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", v)
        if m and m.group(2).lower() in _SIZE_UNITS:
            n = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
            if n < 0:
                raise _Bad("expected a size >= 0")
            return int(n)
        raise _Bad("expected a byte count such as 1048576, 64KiB, 1MiB or 100k")
    n = _int_value(v, "a byte count")
    if n < 0:
        raise _Bad("expected a size >= 0")
    return n


def _positive_size(v) -> int:
    n = _size(v)
    if n <= 0:
        raise _Bad("expected a size > 0")
    return n


def _ms(v) -> float:
    """Milliseconds: a number, or text with a unit (500ms, 2s, 1.5s)."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|)\s*", v)
        if not m:
            raise _Bad("expected milliseconds such as 500, 500ms or 2s")
        n = float(m.group(1))
        return n * 1000.0 if m.group(2) == "s" else n
    n = _number(v)
    if n < 0:
        raise _Bad("expected milliseconds >= 0")
    return n


def _probability(v) -> float:
    if isinstance(v, str) and v.strip().endswith("%"):
        p = _number(v.strip()[:-1]) / 100.0
    else:
        p = _number(v)
    if not 0.0 <= p <= 1.0:
        raise _Bad("expected a probability between 0 and 1 (or a percentage such as 10%)")
    return p


def _text(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise _Bad("expected text")


def _name(v) -> str:
    s = _text(v).strip()
    if not s or not re.fullmatch(r"[A-Za-z0-9_.:@+-]+", s):
        raise _Bad("expected a name of letters, digits and _ . : @ + -")
    return s


def _items(v) -> list:
    """A list from a TOML array or comma-separated text."""
    if isinstance(v, (list, tuple, set, frozenset)):
        return list(v)
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return [v]


def _int_list(v) -> FrozenSet[int]:
    out = set()
    for item in _items(v):
        n = _int_value(item, "an integer or a list of integers")
        if n < 0:
            raise _Bad("expected integers >= 0")
        out.add(n)
    if not out:
        raise _Bad("expected at least one integer")
    return frozenset(out)


def _pos_list(v) -> FrozenSet[int]:
    out = _int_list(v)
    if 0 in out:
        raise _Bad("counts start at 1")
    return out


def _types(v) -> FrozenSet[int]:
    out = set()
    for item in _items(v):
        if isinstance(item, str) and item.strip().lower() in TYPE_NAMES:
            out.add(TYPE_NAMES[item.strip().lower()])
            continue
        try:
            n = _int_value(item)
        except _Bad:
            raise _Bad(f"unknown frame type {item!r}; use {', '.join(sorted(TYPE_NAMES))} or a number 0..255") \
                from None
        if not 0 <= n <= 255:
            raise _Bad("frame type numbers are 0..255")
        out.add(n)
    if not out:
        raise _Bad("expected at least one frame type")
    return frozenset(out)


def _frame_kind(v) -> int:
    kinds = _types(v)
    if len(kinds) != 1 or UNKNOWN in kinds:
        raise _Bad("expected one frame type (a name such as ping or a number such as 0xfa)")
    return next(iter(kinds))


def _direction(v) -> FrozenSet[int]:
    text = _text(v).strip().lower()
    if text in ("both", "any", "*"):
        return frozenset({C2S, S2C})
    if text in DIRECTION_ALIASES:
        return frozenset({DIRECTION_ALIASES[text]})
    raise _Bad(f"expected {CLIENT_TO_SERVER} (c2s), {SERVER_TO_CLIENT} (s2c) or both")


def _towards(v) -> str:
    text = _text(v).strip().lower()
    aliases = {"client": "client", "downstream": "client", "server": "server", "upstream": "server",
               "both": "both"}
    if text not in aliases:
        raise _Bad("expected client, server or both")
    return aliases[text]


def _side(v) -> str:
    t = _towards(v)
    if t == "both":
        raise _Bad("expected client or server")
    return t


def _code(v) -> int:
    try:
        n = parse_error_code(v)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise _Bad("error codes are 0..2^32-1")
    return n


def _offsets(v) -> Tuple[int, ...]:
    out = tuple(sorted({_signed(x) for x in _items(v)}))
    if not out:
        raise _Bad("expected at least one offset")
    return out


def _flags(v) -> Tuple[int, int]:
    """(bits that must be set, bits that must be clear) from names such as END_STREAM or !ACK."""
    need = avoid = 0
    for item in _items(v):
        text = str(item).strip()
        neg = text.startswith("!") or text.startswith("-")
        if neg:
            text = text[1:].strip()
        key = text.upper()
        if key in FLAG_BITS:
            bit = FLAG_BITS[key]
        else:
            try:
                bit = _int_value(text)
            except _Bad:
                raise _Bad(f"unknown flag {text!r}; use {', '.join(FLAG_BITS)} or a bit value such as 0x1, "
                           f"with ! in front for 'not set'") from None
            if not 0 < bit <= 0xFF:
                raise _Bad("flag bit values are 1..255")
        if neg:
            avoid |= bit
        else:
            need |= bit
    return need, avoid


def _flag_byte(v) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v <= 0xFF:
            raise _Bad("a flags byte is 0..255")
        return v
    need, avoid = _flags(v)
    if avoid:
        raise _Bad("! makes no sense for flags to send")
    return need


def _glob(v) -> str:
    return _text(v)


def _header_table(v) -> Dict[str, str]:
    if not isinstance(v, dict) or not v:
        raise _Bad("expected a table of header name = glob (request_header.NAME=GLOB on one line)")
    return {str(k).strip().lower(): _glob(g) for k, g in v.items()}


def _header_values(v) -> List[Tuple[str, str]]:
    if not isinstance(v, dict) or not v:
        raise _Bad("expected a table of header name = value (headers.NAME=VALUE on one line)")
    return [(str(k).strip().lower(), _text(x)) for k, x in v.items()]


def setting_id(name) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        n = name
    else:
        text = str(name).strip().upper()
        if text.startswith("SETTINGS_"):
            text = text[len("SETTINGS_"):]
        if text in Setting.__members__:
            return int(Setting[text])
        try:
            n = int(text, 0)
        except ValueError:
            raise _Bad(f"unknown setting {name!r}; use {', '.join(Setting.__members__)} or a number") from None
    if not 0 <= n <= 0xFFFF:
        raise _Bad("setting ids are 0..65535")
    return n


def _settings_table(v) -> Dict[int, int]:
    if not isinstance(v, dict) or not v:
        raise _Bad("expected a table of SETTING = value (set.NAME=VALUE on one line)")
    out = {}
    for k, x in v.items():
        ident = setting_id(k)
        value = _int_value(x)
        if not 0 <= value <= 0xFFFFFFFF:
            raise _Bad(f"setting {k} = {value}: values are 0..2^32-1")
        out[ident] = value
    return out


def _setting_list(v) -> FrozenSet[int]:
    out = frozenset(setting_id(x) for x in _items(v))
    if not out:
        raise _Bad("expected at least one setting name")
    return out


def _hex(v) -> bytes:
    text = re.sub(r"[\s:_]", "", _text(v))
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Bad("expected hex digits (spaces allowed), such as 000008060000000000") from None


def _choice(*options):
    def conv(v) -> str:
        text = _text(v).strip().lower()
        if text not in options:
            raise _Bad(f"expected {' or '.join(options)}")
        return text
    return conv


# ---------------------------------------------------------------- the keys

@dataclass(frozen=True)
class Key:
    convert: Callable[[Any], Any]
    group: str                      # "rule", "match", "how often" or "action"
    actions: Optional[FrozenSet[str]]   # None: every action
    doc: str
    table: bool = False             # a table: NAME=VALUE pairs (one-line form: key.NAME=VALUE)


def _for(*names: str) -> FrozenSet[str]:
    return frozenset(names)


KEYS: Dict[str, Key] = {
    # the rule itself
    "name": Key(_name, "rule", None, "the rule's name (default: ACTION-N); the frame log shows fault:NAME"),
    "action": Key(_text, "rule", None, "what the rule does (first word of a --fault line)"),
    "enabled": Key(_bool, "rule", None, "false keeps the rule but makes it match nothing (default true)"),
    "raw": Key(_bool, "rule", None, "true: send what the fault makes as raw bytes, every repair off "
                                    "(default false)"),
    "comment": Key(_text, "rule", None, "free text, ignored"),
    # match
    "direction": Key(_direction, "match", None, "client->server (c2s), server->client (s2c) or both"),
    "type": Key(_types, "match", None, "frame types: data, headers, priority, rst_stream, settings, "
                                       "push_promise, ping, goaway, window_update, continuation, altsvc, "
                                       "unknown, or numbers"),
    "flags": Key(_flags, "match", None, "flags that must be set (END_STREAM, ACK, END_HEADERS, PADDED, "
                                        "PRIORITY or a bit value); !NAME: must not be set"),
    "stream": Key(_int_list, "match", None, "stream ids (client-side numbering); 0 is the connection"),
    "nth": Key(_pos_list, "match", None, "the Nth frame of its type on its stream in its direction "
                                         "(1 = first; a header block counts once)"),
    "nth_stream": Key(_pos_list, "match", None, "frames of the Nth stream the client opened on the "
                                                "connection (1 = first)"),
    "conn": Key(_pos_list, "match", None, "connection numbers (the proxy counts from 1)"),
    "method": Key(_glob, "match", None, "glob on the request's :method"),
    "authority": Key(_glob, "match", None, "glob on the request's :authority"),
    "path": Key(_glob, "match", None, "glob on the request's :path (query string included)"),
    "status": Key(_glob, "match", None, "glob on the response :status (on HEADERS: that block's own "
                                        ":status, so trailers and requests do not match)"),
    "request_header": Key(_header_table, "match", None, "request header NAME matches GLOB", table=True),
    "response_header": Key(_header_table, "match", None, "response header NAME matches GLOB", table=True),
    "after_bytes": Key(_size, "match", None, "only once this many DATA bytes went by on the frame's stream "
                                             "in its direction (connection-wide for stream 0 frames)"),
    # how often
    "probability": Key(_probability, "how often", None, "chance that a match fires (0..1 or 10%; "
                                                        "default 1)"),
    "seed": Key(_int_value, "how often", None, "seed of the rule's random numbers (same seed, same faults); "
                                               "default: chosen at random and shown in listings"),
    "after": Key(_int_min(0), "how often", None, "skip the first N matches"),
    "first": Key(_int_min(1), "how often", None, "only the first N matches (after 'after') may fire"),
    "every": Key(_int_min(1), "how often", None, "only every Nth match (after 'after') may fire"),
    "limit": Key(_int_min(1), "how often", None, "fire at most N times in all"),
    # action parameters
    "ms": Key(_ms, "action", _for("delay", "stall"), "delay: how long to hold the frame; stall: how long "
                                                       "to withhold (absent: for good). 500, 500ms, 2s"),
    "jitter": Key(_ms, "action", _for("delay"), "delay: plus or minus up to this many ms (seeded)"),
    "copies": Key(_int_min(1, 100), "action", _for("duplicate"), "extra copies to send (default 1)"),
    "offsets": Key(_offsets, "action", _for("corrupt"), "payload byte offsets to flip (negative: from the "
                                                        "end)"),
    "count": Key(_int_min(0, 65536), "action", _for("corrupt"),
                 "random payload bytes to flip (seeded; default 1 unless offsets or a length lie is given)"),
    "xor": Key(_int_min(1, 255), "action", _for("corrupt"), "what flipped bytes are XORed with "
                                                            "(default 0xFF)"),
    "length": Key(_int_min(0, 2 ** 24 - 1), "action", _for("corrupt"), "the length field claims this "
                                                                         "many bytes"),
    "length_delta": Key(_signed, "action", _for("corrupt"), "the length field claims this many bytes more "
                                                            "(or fewer, when negative)"),
    "parts": Key(_int_min(2, 1000), "action", _for("split"), "how many frames to make (default 2)"),
    "code": Key(_code, "action", _for("rst_stream", "goaway", "inject"),
                "error code: a name (REFUSED_STREAM, ...) or a number"),
    "towards": Key(_towards, "action", _for("rst_stream", "goaway", "close", "stall", "inject"),
                   "client, server or both (stall and inject: client or server)"),
    "last_stream_id": Key(_int_min(0, 2 ** 31 - 1), "action", _for("goaway", "inject"),
                          "GOAWAY's last stream id (default: the last stream the receiver's peer opened)"),
    "debug": Key(_text, "action", _for("goaway", "inject"), "GOAWAY debug data (text)"),
    "keep": Key(_bool, "action", _for("goaway", "close"), "also forward the matched frame (default: goaway "
                                                          "true, close false)"),
    "reset": Key(_bool, "action", _for("close"), "true: TCP reset (RST) instead of FIN"),
    "scope": Key(_choice("connection", "stream"), "action", _for("stall"),
                 "connection: withhold every WINDOW_UPDATE towards that side (default); stream: only those "
                 "of the matched frame's stream"),
    "rate": Key(_positive_size, "action", _for("throttle"), "bytes per second (1MiB, 64KiB, 100k, ...)"),
    "frame": Key(_frame_kind, "action", _for("inject"), "the type to inject: a name or a number such as "
                                                        "0xfa"),
    "hex": Key(_hex, "action", _for("inject"), "inject these bytes as they are (whole frames; raw)"),
    "stream_id": Key(_int_min(0, 2 ** 31 - 1), "action", _for("inject"),
                     "stream of the injected frame (default: the matched frame's stream for stream "
                     "frames, else 0)"),
    "frame_flags": Key(_flag_byte, "action", _for("inject"), "flags of the injected frame (names or a "
                                                             "byte)"),
    "payload": Key(_hex, "action", _for("inject"), "the injected frame's body in hex (any type)"),
    "data": Key(_text, "action", _for("inject"), "body of an injected DATA frame (text)"),
    "opaque": Key(_hex, "action", _for("inject"), "PING opaque data, 8 bytes in hex (default: seeded "
                                                  "random)"),
    "increment": Key(_int_min(1, 2 ** 31 - 1), "action", _for("inject"), "WINDOW_UPDATE increment"),
    "headers": Key(_header_values, "action", _for("inject"), "header block to inject (HEADERS): NAME = "
                                                             "VALUE", table=True),
    "position": Key(_choice("before", "after"), "action", _for("inject", "goaway"),
                    "before (default) or after the matched frame"),
    "set": Key(_settings_table, "action", _for("settings", "inject"),
               "SETTINGS parameters: NAME = VALUE (e.g. INITIAL_WINDOW_SIZE = 1000)", table=True),
    "remove": Key(_setting_list, "action", _for("settings"), "SETTINGS parameters to take out"),
}

TABLE_KEYS = frozenset(k for k, v in KEYS.items() if v.table)


def _where(source: str, key: str, value) -> str:
    shown = value if not isinstance(value, (bytes, bytearray)) else value.hex()
    return f"{source}: {key} = {shown!r}"


def canonical_action(value, source: str = "fault") -> str:
    text = str(value).strip().lower().replace("-", "_")
    text = ACTION_ALIASES.get(text, text)
    if text not in ACTIONS:
        raise FaultError(f"{source}: action = {value!r}: unknown action{did_you_mean(text, ACTIONS)}; "
                         f"actions: {', '.join(ACTIONS)}")
    return text


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the choice closest to a misspelt word, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_keys(spec: Dict[str, Any], action: str, keys: Dict[str, Key], source: str,
               kind: str = "") -> Dict[str, Any]:
    """The converted values of a rule spec's keys (keys given as None left out), checked against a key table.

    Shared by every kind of rule (frame rules with :data:`KEYS`, gRPC message rules with theirs), so a
    wrong key or value reads the same everywhere: an unknown key with the nearest known one, a key for
    another action, or the converter's reason with the rule, key and value. ``kind`` follows "unknown
    key" in the message (" for a gRPC rule").
    """
    values: Dict[str, Any] = {}
    for key, raw in spec.items():
        k = key.strip().lower() if isinstance(key, str) else key
        if k not in keys:
            raise FaultError(f"{source}: {key}: unknown key{kind}{did_you_mean(str(k), keys)}; "
                             f"keys: {', '.join(keys)}")
        meta = keys[k]
        if meta.actions is not None and action not in meta.actions:
            raise FaultError(f"{_where(source, key, raw)}: key {key} does not apply to action {action} "
                             f"(it is for {', '.join(sorted(meta.actions))})")
        if raw is None:
            continue
        try:
            values[k] = meta.convert(raw)
        except _Bad as exc:
            raise FaultError(f"{_where(source, key, raw)}: {exc}") from None
    return values


# ---------------------------------------------------------------- the rule

class Rule:
    """One checked fault rule, with its counters and its random numbers."""

    #: :meth:`stream_condition`, made on first use.
    _stream_cond: Optional[Callable[[Any], bool]] = None
    _stream_cond_made = False

    def __init__(self, spec: Dict[str, Any], source: str = "fault", default_name: Optional[str] = None,
                 default_seed: Optional[int] = None) -> None:
        if not isinstance(spec, dict):
            raise FaultError(f"{source}: expected a table of keys, got {spec!r}")
        spec = dict(spec)
        if "action" not in spec:
            raise FaultError(f"{source}: action: missing; actions: {', '.join(ACTIONS)}")
        self.action = canonical_action(spec["action"], source)
        spec["action"] = self.action
        values = check_keys(spec, self.action, KEYS, source)
        self._take_common(spec, values, KEYS, source, default_name, default_seed)
        # match
        self.types: Optional[FrozenSet[int]] = values.get("type", DEFAULT_TYPES.get(self.action))
        need, avoid = values.get("flags", (0, 0))
        if self.action == "settings" and "flags" not in values:
            avoid = 0x01     # not the ACKs
        self.flags_need, self.flags_avoid = need, avoid
        self.streams = values.get("stream")
        self.nth = values.get("nth")
        self.nth_stream = values.get("nth_stream")
        self.method = values.get("method")
        self.authority = values.get("authority")
        self.path = values.get("path")
        self.status = values.get("status")
        self.request_header = values.get("request_header")
        self.response_header = values.get("response_header")
        self.after_bytes = values.get("after_bytes")
        self.needs_stream = self.action == "rst_stream"
        self._check_action(source)

    def _take_common(self, spec: Dict[str, Any], values: Dict[str, Any], keys: Dict[str, Key], source: str,
                     default_name: Optional[str], default_seed: Optional[int]) -> None:
        """The keys every kind of rule has (the rule's own, direction, conn, how often, action parameters)
        from checked ``values``, and fresh counters."""
        self.spec = {k: v for k, v in spec.items() if v is not None}
        self.source = source
        self.name: str = values.get("name") or default_name or self.action
        self.spec["name"] = self.name
        self.enabled: bool = values.get("enabled", True)
        self.raw: bool = values.get("raw", False)
        self.directions: FrozenSet[int] = values.get("direction", frozenset({C2S, S2C}))
        self.conns: Optional[FrozenSet[int]] = values.get("conn")
        # how often
        self.probability: float = values.get("probability", 1.0)
        if "seed" in values:
            self.seed = values["seed"]
        elif default_seed is not None:
            self.seed = default_seed
        else:
            self.seed = secrets.randbelow(2 ** 31)
        self.after: int = values.get("after", 0)
        self.first: Optional[int] = values.get("first")
        self.every: Optional[int] = values.get("every")
        self.limit: Optional[int] = values.get("limit")
        self.params = {k: v for k, v in values.items() if keys[k].group == "action"}
        self.reset_counters()

    def _check_action(self, source: str) -> None:
        p = self.params
        a = self.action
        if a == "delay" and "ms" not in p:
            raise FaultError(f"{source}: ms: missing; delay needs ms = how long to hold the frame")
        if a == "throttle" and "rate" not in p:
            raise FaultError(f"{source}: rate: missing; throttle needs rate = bytes per second")
        if a == "settings" and "set" not in p and "remove" not in p:
            raise FaultError(f"{source}: set: missing; settings needs set.NAME=VALUE or remove = NAMES")
        if a == "inject":
            if "frame" not in p and "hex" not in p:
                raise FaultError(f"{source}: frame: missing; inject needs frame = TYPE or hex = BYTES")
            if "frame" in p and "hex" in p:
                raise FaultError(f"{source}: hex = {p['hex'].hex()!r}: give frame or hex, not both")
            if p.get("towards") == "both":
                raise FaultError(f"{source}: towards = 'both': inject sends towards client or server")
            if "opaque" in p and len(p["opaque"]) != 8:
                raise FaultError(f"{source}: opaque = {p['opaque'].hex()!r}: PING opaque data is 8 bytes")
        if a == "stall" and p.get("towards") == "both":
            raise FaultError(f"{source}: towards = 'both': a stall starves one side: client or server")
        if a == "corrupt" and "length" in p and "length_delta" in p:
            raise FaultError(f"{source}: length_delta = {p['length_delta']!r}: give length or length_delta, "
                             "not both")

    # -- describing

    def to_dict(self) -> Dict[str, Any]:
        """The rule as JSON: its spec (as given), the effective seed and the counters."""
        out: Dict[str, Any] = {"name": self.name, "action": self.action}
        for k, v in self.spec.items():
            if k not in out:
                out[k] = v if not isinstance(v, (bytes, bytearray)) else v.hex()
        out["seed"] = self.seed
        out["enabled"] = self.enabled
        out["matches"] = self.matches
        out["hits"] = self.hits
        return out

    def describe(self) -> str:
        parts = [self.action] + [f"{k}={v}" for k, v in self.spec.items() if k not in ("action", "name")]
        return f"{self.name}: " + " ".join(parts)

    def reset_counters(self) -> None:
        self.matches = 0
        self.hits = 0
        self.rng = random.Random(self.seed)

    def carry_over(self, old: "Rule") -> None:
        """Keep the counters and random state of the rule this one replaces."""
        self.matches = old.matches
        self.hits = old.hits
        if old.seed == self.seed:
            self.rng = old.rng

    # -- matching

    def wants(self, d: int, t: int) -> bool:
        """Whether frames of type ``t`` (UNKNOWN for unknown types) in direction ``d`` can match."""
        if d not in self.directions:
            return False
        if self.types is None:
            return True
        if t == UNKNOWN:
            return UNKNOWN in self.types or any(x > ALTSVC for x in self.types)
        return t in self.types

    def stream_condition(self) -> Optional[Callable[[Any], bool]]:
        """The match keys decided once per stream, as a condition on the relay's stream (its
        ``request_headers``, ``id`` and ``ordinal``); None when the rule has none of them.

        A stream for which it is false never has a frame this rule matches (:meth:`matches_frame`
        checks the same keys on each frame), so the relay keeps such streams on its fast path.
        """
        if self._stream_cond_made:
            return self._stream_cond
        self._stream_cond_made = True
        method, authority, path, headers = self.method, self.authority, self.path, self.request_header
        ids = self.streams if self.streams is not None and 0 not in self.streams else None
        ordinals = self.nth_stream
        if method is None and authority is None and path is None and not headers and ids is None \
                and ordinals is None:
            self._stream_cond = None
            return None

        # (The globs compiled once: fnmatch's own cache costs a look-up per call.)
        method_rx = _compiled(method)
        authority_rx = _compiled(authority)
        path_rx = _compiled(path)
        header_rx = [(name, _compiled(pattern)) for name, pattern in (headers or {}).items()]

        def condition(stream) -> bool:
            if ids is not None and stream.id not in ids:
                return False
            if ordinals is not None and stream.ordinal not in ordinals:
                return False
            req = stream.request_headers
            if req is None:
                return False
            if path_rx is not None:
                value = header_value(req, ":path")
                if value is None or path_rx(value) is None:
                    return False
            if method_rx is not None:
                value = header_value(req, ":method")
                if value is None or method_rx(value) is None:
                    return False
            if authority_rx is not None:
                value = header_value(req, ":authority") or header_value(req, "host")
                if value is None or authority_rx(value) is None:
                    return False
            for name, rx in header_rx:
                value = header_value(req, name)
                if value is None or rx(value) is None:
                    return False
            return True

        # (Without stream ids or ordinals the outcome depends on the request headers alone.)
        condition.request_only = ids is None and ordinals is None       # type: ignore[attr-defined]
        self._stream_cond = condition
        return condition

    def by_type_alone(self) -> bool:
        """Whether :meth:`matches_frame` asks nothing of a frame but its direction, its type and (a stream
        action) a stream id: the fault hook then screens the frame without building a FrameInfo for it."""
        return not (self.flags_need or self.flags_avoid or self.streams is not None or self.conns is not None
                    or self.nth is not None or self.nth_stream is not None or self.after_bytes is not None
                    or self.method is not None or self.authority is not None or self.path is not None
                    or self.status is not None or self.request_header or self.response_header)

    def matches_frame(self, m: "FrameInfo") -> bool:
        """Every match key against one frame (the counters are not touched)."""
        if not self.enabled or m.d not in self.directions:
            return False
        t = m.type
        if self.types is not None and t not in self.types and not (t > ALTSVC and UNKNOWN in self.types):
            return False
        if self.flags_need and (m.flag_byte & self.flags_need) != self.flags_need:
            return False
        if self.flags_avoid and m.flag_byte & self.flags_avoid:
            return False
        if self.needs_stream and not m.stream_id:
            return False
        if self.streams is not None and m.stream_id not in self.streams:
            return False
        if self.conns is not None and m.conn not in self.conns:
            return False
        if self.nth is not None and m.nth not in self.nth:
            return False
        if self.nth_stream is not None and m.stream_ordinal not in self.nth_stream:
            return False
        if self.after_bytes is not None and m.bytes_before < self.after_bytes:
            return False
        req = m.request
        if self.method is not None and not _glob_match(header_value(req, ":method"), self.method):
            return False
        if self.authority is not None and not _glob_match(header_value(req, ":authority") or header_value(req, "host"),
                                                          self.authority):
            return False
        if self.path is not None and not _glob_match(header_value(req, ":path"), self.path):
            return False
        if self.status is not None and not _glob_match(m.status, self.status):
            return False
        if self.request_header:
            for name, pattern in self.request_header.items():
                if not _glob_match(header_value(req, name), pattern):
                    return False
        if self.response_header:
            for name, pattern in self.response_header.items():
                if not _glob_match(header_value(m.response, name), pattern):
                    return False
        return True

    def fires(self) -> bool:
        """Count one match; whether the rule acts on it (after, first, every, probability, limit)."""
        k = self.matches = self.matches + 1
        k -= self.after
        if k <= 0:
            return False
        if self.every is not None and k % self.every:
            return False          # (the usual no, before the rarer keys)
        if self.first is not None and k > self.first:
            return False
        if self.probability < 1.0 and self.rng.random() >= self.probability:
            return False
        if self.limit is not None and self.hits >= self.limit:
            return False
        self.hits += 1
        return True


@dataclass(slots=True)
class FrameInfo:
    """What the rules look at for one frame."""

    d: int
    type: int
    flag_byte: int
    stream_id: int
    conn: int
    nth: int = 1
    stream_ordinal: Optional[int] = None
    bytes_before: int = 0
    request: Optional[list] = None
    response: Optional[list] = None
    status: Optional[str] = None



def _compiled(pattern: Optional[str]):
    """A glob as the ``match`` method of its regular expression (None for None)."""
    return None if pattern is None else re.compile(fnmatch.translate(pattern)).match


def _glob_match(value: Optional[str], pattern: str) -> bool:
    return value is not None and fnmatch.fnmatchcase(value, pattern)


def code_name(code: int) -> str:
    return error_name(code)


__all__ = ["ACTIONS", "KEYS", "Rule", "FrameInfo", "FaultError", "canonical_action", "setting_id",
           "ErrorCode"]
