"""The one-line form of a fault rule (``--fault``, ``add_fault("...")``, the admin API's ``line``).

``ACTION key=value key=value ...`` -- the words are split like a shell does
(quote a value with spaces: ``debug="going away"``); ``key.NAME=value`` fills
a table key (``set.INITIAL_WINDOW_SIZE=1000``, ``request_header.user-agent=curl*``);
a bare ``key`` means ``key=true`` (``raw``, ``reset``). Lists are
comma-separated (``type=data,headers``). Values are checked by
:class:`proxy.faults.rules.Rule`, so the errors are the same as in TOML.
"""
from __future__ import annotations

import shlex
from typing import Any, Dict, Optional

from .rules import KEYS, TABLE_KEYS, FaultError, Rule


def parse_line(line: str, source: Optional[str] = None) -> Dict[str, Any]:
    """Turn one line into a spec dict (values still text); raise FaultError naming the bad word."""
    where = source or f"fault {line!r}"
    try:
        words = shlex.split(line, comments=False, posix=True)
    except ValueError as exc:
        raise FaultError(f"{where}: cannot split into words: {exc}") from None
    if not words:
        raise FaultError(f"{where}: empty rule; write ACTION key=value ...")
    spec: Dict[str, Any] = {}
    if "=" not in words[0]:
        spec["action"] = words[0]
        words = words[1:]
    for word in words:
        key, eq, value = word.partition("=")
        key = key.strip()
        if not key:
            raise FaultError(f"{where}: {word!r}: a key is missing before '='")
        if not eq:
            value = "true"
        base, dot, sub = key.partition(".")
        base = base.lower()
        if dot:
            if base not in TABLE_KEYS:
                if base in KEYS:
                    raise FaultError(f"{where}: {key} = {value!r}: {base} is not a table; write {base}=VALUE")
                raise FaultError(f"{where}: {key}: unknown key {base!r}")
            if not sub:
                raise FaultError(f"{where}: {key} = {value!r}: write {base}.NAME=VALUE")
            table = spec.setdefault(base, {})
            if not isinstance(table, dict):
                raise FaultError(f"{where}: {key}: {base} given twice")
            if sub in table:
                raise FaultError(f"{where}: {key} = {value!r}: given twice")
            table[sub] = value
            continue
        if key.lower() in spec:
            raise FaultError(f"{where}: {key} = {value!r}: {key} given twice")
        spec[key.lower()] = value
    if "action" not in spec:
        raise FaultError(f"{where}: action: missing; start the line with the action (e.g. drop, delay, "
                         f"rst_stream)")
    return spec


def rule_from_line(line: str, default_name: Optional[str] = None, source: Optional[str] = None) -> Rule:
    where = source or f"fault {line!r}"
    return Rule(parse_line(line, where), where, default_name=default_name)


def to_line(rule: Rule) -> str:
    """A one-line form of a rule's spec (for listings)."""
    words = [rule.action]
    for key, value in rule.spec.items():
        if key == "action":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                words.append(f"{key}.{sub}={_word(v)}")
        elif isinstance(value, (list, tuple)):
            words.append(f"{key}={_word(','.join(str(x) for x in value))}")
        elif isinstance(value, bool):
            words.append(f"{key}={'true' if value else 'false'}")
        else:
            words.append(f"{key}={_word(value)}")
    return " ".join(words)


def _word(value: Any) -> str:
    return shlex.quote(str(value))
