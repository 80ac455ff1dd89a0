"""HPACK encoder (RFC 7541): a list of (name, value) in, header block bytes out.

Why it is shaped this way: a proxy that rewrites headers re-encodes the same
responses over and over. What a header's representation looks like apart
from the dynamic table (its octets, its size, whether it may be indexed, the
static index of its name, its strings already length-prefixed and
Huffman-coded when that is shorter) is worked out once per distinct header
and kept in a bounded module-wide cache, the *plan*. Headers whose
representation never depends on the dynamic table (a static-table match, a
never-indexed literal) have their whole representation as the plan. Encoding
a repeating header is then a dict look-up for the plan and one for the
dynamic table. And a header list whose block added nothing to the table (all
fields indexed: a repeating response) encodes to the same block while the
table is unchanged, so each encoder keeps the last few such lists and blocks.

The dynamic table gives each entry an insertion number; its index is 62 plus
the number of entries inserted after it, so nothing is renumbered when an
entry is added.

Policy: a header is indexed unless it is sensitive or larger than 3/4 of the
table. Sensitive means: marked never-indexed (:class:`NeverIndexed`, or any
tuple with ``indexable = False``, such as those the decoder produced from
never-indexed literals), ``authorization`` and ``proxy-authorization``, and
``cookie`` values under 20 octets (RFC 7541 §7.1.3); they are written as
"literal never indexed", so the next hop keeps them out of its table too.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Iterable, List, Optional, Tuple, Union

from .cache import TwoGenerationCache
from .huffman import huffman_encode, huffman_length
from .static_table import STATIC_FIELD_INDEX, STATIC_LENGTH, STATIC_NAME_INDEX

DEFAULT_TABLE_SIZE = 4096

PLAN_CACHE_ENTRIES = 4096
STRING_CACHE_ENTRIES = 4096
CACHE_MAX_STRING = 256          # longer strings and headers are encoded every time, not cached

#: Per encoder: how many blocks that did not change the table are remembered, up to what size.
BLOCK_CACHE_ENTRIES = 8
BLOCK_CACHE_MAX_OCTETS = 512

_TUPLE_ONLY = frozenset((tuple,))


def _all_plain(headers: tuple) -> bool:
    """True when every header is a plain tuple (none marked never-indexed, which compare equal)."""
    return frozenset(map(type, headers)) == _TUPLE_ONLY


_ALWAYS_SENSITIVE = frozenset((b"authorization", b"proxy-authorization"))


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 §5.1); ``first`` holds the bits above the prefix."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes((first | value,))
    out = bytearray((first | top,))
    value -= top
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Indexed field representation of every index below 512 (RFC 7541 §6.1).
_INDEXED: List[bytes] = [encode_integer(i, 7, 0x80) for i in range(512)]
#: First octets of a literal with incremental indexing and an indexed name, below 512 (§6.2.1).
_WITH_INDEXING: List[bytes] = [encode_integer(i, 6, 0x40) for i in range(512)]


def _encode_string(data: bytes) -> bytes:
    """A string literal (RFC 7541 §5.2): Huffman-coded when that is shorter."""
    if len(data) > 1:
        hlen = huffman_length(data)
        if hlen < len(data):
            return encode_integer(hlen, 7, 0x80) + huffman_encode(data)
    return encode_integer(len(data), 7) + data


string_cache: TwoGenerationCache[bytes] = TwoGenerationCache(STRING_CACHE_ENTRIES)


def encoded_string(data: bytes) -> bytes:
    """``_encode_string``, memoised in a bounded cache."""
    out = string_cache.hot.get(data)
    if out is None:
        out = string_cache.miss(data, lambda: _encode_string(data), len(data) <= CACHE_MAX_STRING)
    return out


def _to_bytes(x) -> bytes:
    """A name or value as octets: str as UTF-8, bytes-like as is, anything else as its ``str()``."""
    t = type(x)
    if t is bytes:
        return x
    if t is str or isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    # (A hook's int, or even None, is written as its str(): what the proxy always did, rather than
    # failing the connection in the middle of writing a block.)
    return str(x).encode("utf-8")


#: The plan of a header whose representation does not depend on the dynamic table: its octets.
#: Otherwise: (key, size, static name index or 0, encoded name, encoded value).
Plan = Union[bytes, Tuple[Tuple[bytes, bytes], int, int, bytes, bytes]]


def make_plan(name, value, never: bool) -> Plan:
    """Work out everything about one header's representation that does not depend on the table."""
    nb = _to_bytes(name)
    vb = _to_bytes(value)
    sensitive = never or nb in _ALWAYS_SENSITIVE or (nb == b"cookie" and len(vb) < 20)
    name_index = STATIC_NAME_INDEX.get(nb, 0)
    if sensitive:                                   # §6.2.3 literal never indexed
        head = encode_integer(name_index, 4, 0x10) if name_index else b"\x10" + encoded_string(nb)
        return head + encoded_string(vb)
    full = STATIC_FIELD_INDEX.get((nb, vb))
    if full:
        return _INDEXED[full]
    return (nb, vb), len(nb) + len(vb) + 32, name_index, encoded_string(nb), encoded_string(vb)


_CACHEABLE = (str, bytes)
#: (name, value) as given -> plan, for plain tuples; the same for headers marked never-indexed.
plans: TwoGenerationCache[Plan] = TwoGenerationCache(PLAN_CACHE_ENTRIES)
never_plans: TwoGenerationCache[Plan] = TwoGenerationCache(PLAN_CACHE_ENTRIES)


def _cached_plan(cache: TwoGenerationCache[Plan], key: tuple, never: bool) -> Plan:
    name, value = key
    keep = (type(name) in _CACHEABLE and type(value) in _CACHEABLE      # (not mutable, nor converted by str())
            and len(name) + len(value) <= CACHE_MAX_STRING)
    return cache.miss(key, lambda: make_plan(name, value, never), keep)


class Encoder:
    """The encoding half of one HPACK context (one direction of one connection).

    Set ``header_table_size`` when the receiver's SETTINGS_HEADER_TABLE_SIZE
    changes (the encoder may use at most that much): the next block starts
    with the dynamic table size update(s) RFC 7541 §4.2 requires, the smallest
    size set since the last block first when it was lower than the final one.
    """

    def __init__(self, table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._max = DEFAULT_TABLE_SIZE
        self._size = 0
        self._entries: Deque[Tuple[Tuple[bytes, bytes], int, int]] = deque()  # (key, number, size), newest first
        self._next = 0                                   # number of the next entry inserted
        self._field_number: Dict[Tuple[bytes, bytes], int] = {}  # (name, value) -> newest entry's number
        self._name_number: Dict[bytes, int] = {}                  # name -> newest entry's number
        self._index_limit = DEFAULT_TABLE_SIZE * 3 // 4
        self._pending: Optional[List[int]] = None        # [smallest, final] size set since the last block
        self._version = 0                                # bumped by every change to the table
        # Lists of plain tuples whose block added nothing to the table encode the same while the
        # table does not change: tuple of the headers -> (version, block).
        self._blocks: Dict[tuple, Tuple[int, bytes]] = {}
        if table_size != DEFAULT_TABLE_SIZE:
            self.header_table_size = table_size

    @property
    def header_table_size(self) -> int:
        """The dynamic table's maximum size the encoder uses."""
        return self._max

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"header table size must be >= 0, not {value}")
        if self._pending is None:
            if value == self._max:
                return
            self._pending = [value, value]
        else:
            self._pending[0] = min(self._pending[0], value)
            self._pending[1] = value
        self._max = value
        self._version += 1
        self._index_limit = value * 3 // 4
        self._evict(value)

    @property
    def table_size(self) -> int:
        """Octets the dynamic table holds now."""
        return self._size

    def _evict(self, limit: int) -> None:
        entries = self._entries
        fields = self._field_number
        names = self._name_number
        while self._size > limit:
            key, number, size = entries.pop()
            self._size -= size
            if fields.get(key) == number:
                del fields[key]
            if names.get(key[0]) == number:
                del names[key[0]]

    def encode(self, headers: Iterable, huffman: bool = True) -> bytes:
        """One header block for ``headers`` (pairs of str or bytes; a dict is taken in its order).

        ``huffman`` is accepted for the ``hpack`` library's signature: strings
        are always written in the shorter of the two forms.
        """
        if isinstance(headers, dict):
            headers = headers.items()
        headers = tuple(headers)
        version = self._version
        try:
            hit = self._blocks.get(headers)
        except TypeError:                                  # a mutable part (bytearray)
            hit = None
        if hit is not None and hit[0] == version and self._pending is None and _all_plain(headers):
            return hit[1]
        plain = True
        parts: List[bytes] = []
        append = parts.append
        if self._pending is not None:
            low, final = self._pending
            self._pending = None
            plain = False                                  # (not remembered: the update is sent once)
            if low < final:
                append(encode_integer(low, 5, 0x20))
            append(encode_integer(final, 5, 0x20))
        plan_cache = plans
        hot = plan_cache.hot
        fields = self._field_number
        names = self._name_number
        entries = self._entries
        indexed = _INDEXED
        with_indexing = _WITH_INDEXING
        for h in headers:
            if type(h) is tuple:
                try:
                    plan = hot.get(h)
                except TypeError:                           # a mutable part (bytearray): not cached
                    plan = make_plan(h[0], h[1], False)
                if plan is None:
                    if len(h) != 2:
                        raise ValueError(f"a header must be a (name, value) pair, not {h!r}")
                    plan = _cached_plan(plan_cache, h, False)
                    hot = plan_cache.hot
            else:
                plain = False
                never = not getattr(h, "indexable", True)
                key = tuple(h)
                if len(key) != 2:
                    raise ValueError(f"a header must be a (name, value) pair, not {h!r}")
                cache = never_plans if never else plan_cache
                try:
                    plan = cache.hot.get(key)
                except TypeError:
                    plan = make_plan(key[0], key[1], never)
                if plan is None:
                    plan = _cached_plan(cache, key, never)
            if type(plan) is bytes:
                append(plan)
                continue
            key, size, name_index, ename, evalue = plan    # type: ignore[misc]
            number = fields.get(key)
            if number is not None:
                index = STATIC_LENGTH + self._next - number
                append(indexed[index] if index < 512 else encode_integer(index, 7, 0x80))
                continue
            if not name_index:
                number = names.get(key[0])
                if number is not None:
                    name_index = STATIC_LENGTH + self._next - number
            if size <= self._index_limit:                 # §6.2.1 with incremental indexing
                if name_index:
                    append(with_indexing[name_index] if name_index < 512 else encode_integer(name_index, 6, 0x40))
                else:
                    append(b"\x40")
                    append(ename)
                append(evalue)
                # Add the entry (RFC 7541 §4.4), inlined: evict first, then insert.
                self._version += 1
                if self._size + size > self._max:
                    self._evict(self._max - size)
                number = self._next
                self._next = number + 1
                entries.appendleft((key, number, size))
                self._size += size
                fields[key] = number
                names[key[0]] = number
            else:                                          # §6.2.2 without indexing
                if name_index:
                    append(encode_integer(name_index, 4))
                else:
                    append(b"\x00")
                    append(ename)
                append(evalue)
        block = b"".join(parts)
        if plain and self._version == version and len(block) <= BLOCK_CACHE_MAX_OCTETS:
            blocks = self._blocks
            if len(blocks) >= BLOCK_CACHE_ENTRIES:
                blocks.clear()
            try:
                blocks[headers] = (version, block)
            except TypeError:
                pass
        return block
