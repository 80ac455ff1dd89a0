"""Frame flags: :class:`Flag` (one named bit) and :class:`Flags` (the set a frame carries).

:class:`Flags` behaves like a ``set`` of flag names, except that it only takes
the names it was built with: adding any other name raises ``ValueError``
listing the valid ones. Iteration follows the order the names were added in
(for a parsed frame: the order of the frame type's defined flags); ``repr``
shows the names sorted, as a list.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Dict, NamedTuple

__all__ = ["Flag", "Flags"]


class Flag(NamedTuple):
    """One flag a frame type defines: its name and its bit in the flags byte."""

    name: str
    bit: int


class Flags(MutableSet[str]):
    """A mutable set of flag names restricted to a frame type's defined flags."""

    __slots__ = ("_valid_flags", "_flags")

    def __init__(self, defined_flags: Iterable[Flag]) -> None:
        #: name -> bit of every flag this set may hold.
        self._valid_flags: Dict[str, int] = {name: bit for name, bit in defined_flags}
        #: the names currently set (a dict used as an insertion-ordered set).
        self._flags: Dict[str, None] = {}

    @classmethod
    def _from_bits(cls, valid: Dict[str, int], bits: int) -> "Flags":
        """Build the set for ``bits`` from a prepared name -> bit map (no copy of ``valid``)."""
        self = cls.__new__(cls)
        self._valid_flags = valid
        self._flags = {name: None for name, bit in valid.items() if bits & bit}
        return self

    def _bits(self) -> int:
        """The flags byte these names stand for."""
        valid = self._valid_flags
        bits = 0
        for name in self._flags:
            bits |= valid[name]
        return bits

    def __repr__(self) -> str:
        return repr(sorted(self._flags))

    def __contains__(self, name: object) -> bool:
        return name in self._flags

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._flags))

    def __len__(self) -> int:
        return len(self._flags)

    def add(self, value: str) -> None:
        """Set the flag ``value``; ``ValueError`` if this frame type does not define it."""
        if value not in self._valid_flags:
            raise ValueError(
                f"Unexpected flag: {value}. Valid flags are: {sorted(self._valid_flags)}")
        self._flags[value] = None

    def discard(self, value: str) -> None:
        """Clear the flag ``value`` if it is set."""
        self._flags.pop(value, None)
