"""The header field type the decoder hands out for never-indexed literals.

A decoded header list holds plain ``(name, value)`` tuples, except for fields
that arrived as "literal never indexed" (RFC 7541 §6.2.3): those are
:class:`NeverIndexed`, a tuple subclass, so that code which rebuilds or passes
the list on keeps the mark and the encoder writes them never-indexed again
(§7.1.3: an intermediary must keep the representation). It compares equal to
the plain tuple, so hooks that look for ``("cookie", "a=b")`` still match.

The encoder honours any tuple with ``indexable = False`` (the ``hpack``
library's NeverIndexedHeaderTuple included).
"""
from __future__ import annotations

from typing import AbstractSet, Iterable, List


class NeverIndexed(tuple):
    """A ``(name, value)`` pair that must never enter an HPACK dynamic table."""

    __slots__ = ()
    indexable = False

    def __new__(cls, name, value) -> "NeverIndexed":
        return tuple.__new__(cls, (name, value))

    def __getnewargs__(self):
        return tuple(self)

    def __repr__(self) -> str:
        return f"NeverIndexed({self[0]!r}, {self[1]!r})"


def is_never_indexed(field) -> bool:
    """True for a header field marked never-indexed (ours or the ``hpack`` library's)."""
    return type(field) is not tuple and not getattr(field, "indexable", True)


def mark_never_indexed(headers: Iterable, sensitive: AbstractSet) -> List:
    """``headers`` with every field whose (name, value) is in ``sensitive`` marked :class:`NeverIndexed`."""
    return [h if type(h) is NeverIndexed or tuple(h) not in sensitive else NeverIndexed(h[0], h[1])
            for h in headers]
