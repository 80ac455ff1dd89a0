"""Fault injection: rules that delay, drop, duplicate, corrupt, split, reset, stall, throttle
and inject frames in flight (see docs/faults.md).

``build_fault_hook(tables, lines)`` makes the :class:`FaultHook` the command
line adds to the hook chain, from ``[[faults]]`` TOML tables and ``--fault``
lines; :mod:`proxy.faults.admin` serves its rules over HTTP.
"""
from __future__ import annotations

from typing import Iterable, Optional

from .hook import FaultHook, load_fault_file
from .parse import parse_line, rule_from_line, to_line
from .rules import ACTIONS, KEYS, FaultError, Rule


def build_fault_hook(tables: Optional[Iterable[dict]] = None, lines: Optional[Iterable[str]] = None,
                     static: bool = False) -> FaultHook:
    """A FaultHook with the rules of ``[[faults]]`` tables, then of ``--fault`` lines.

    ``static``: the rules will not change once the proxy runs (no admin API): header blocks are then
    decoded only where the rules need them (see :attr:`FaultHook.static`).

    Raises :class:`FaultError` (a ConfigError) naming the rule, the key and the value.
    """
    hook = FaultHook()
    hook.static = static
    for i, table in enumerate(tables or ()):
        name = table.get("name") if isinstance(table, dict) else None
        hook.add(table, source=f"faults[{i}]{f' ({name})' if name else ''}")
    for line in lines or ():
        hook.add(line, source=f"--fault {line!r}")
    return hook


__all__ = ["FaultHook", "FaultError", "Rule", "ACTIONS", "KEYS", "build_fault_hook", "parse_line",
           "rule_from_line", "to_line", "load_fault_file"]
