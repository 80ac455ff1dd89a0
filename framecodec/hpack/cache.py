"""A bounded memo for the codec's look-ups (Huffman strings, encoder plans).

Two generations of plain dicts: look-ups go to ``hot``; a miss is looked up in
``cold`` and moved back to ``hot`` when found there, else computed. When
``hot`` is full it becomes ``cold`` (the previous ``cold`` is dropped). So at
most 2 x ``entries`` keys are kept, what is used keeps being found, and
evicting costs nothing per entry (a dict with ``del`` of its oldest key would
scan the holes left by earlier deletions).

The hit path is the caller's own ``cache.hot.get(key)``; only misses call
:meth:`miss`.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Hashable, TypeVar

V = TypeVar("V")


class TwoGenerationCache(Generic[V]):
    """Bounded memo: ``hot.get(key)`` first, :meth:`miss` when it returns None."""

    __slots__ = ("hot", "cold", "entries")

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.hot: Dict[Hashable, V] = {}
        self.cold: Dict[Hashable, V] = {}

    def miss(self, key: Hashable, compute: Callable[[], V], keep: bool = True) -> V:
        """The value for ``key`` not in ``hot``: from ``cold``, or ``compute()`` (kept if ``keep``)."""
        value = self.cold.get(key)
        if value is None:
            value = compute()
            if not keep:
                return value
        if len(self.hot) >= self.entries:
            self.cold = self.hot
            self.hot = {}
        self.hot[key] = value
        return value

    def clear(self) -> None:
        self.hot = {}
        self.cold = {}

    def __len__(self) -> int:
        return len(self.hot) + len(self.cold)
