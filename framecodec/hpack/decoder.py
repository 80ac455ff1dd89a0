"""HPACK decoder (RFC 7541): header block bytes in, a list of (name, value) out.

Why it is shaped this way: in a proxy most fields of a block are indexed
(§6.1), so an indexed field must cost one table look-up. Every table entry,
static or dynamic, is stored as ``(bytes pair, str pair or None, size)``: the
decoded header is handed out as it is, with no conversion per block. The
Huffman-coded strings that do arrive as literals repeat across connections
(user agents, content types, server names), so their decoding is memoised in
a bounded module-wide cache. And a block that leaves the table as it was
(all fields indexed: the usual request or response on a busy connection)
decodes to the same list while the table is unchanged, so each decoder keeps
the last few such blocks and their lists (copies are handed out).

Errors: every malformed input raises :class:`HpackDecodingError` whose message
names the field (its number in the block), its byte offset and what is wrong;
a header list or a string over the limits raises
:class:`OversizedHeaderListError` (a subclass).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Literal, Optional, Sequence, Set, Tuple, Union, overload

from .cache import TwoGenerationCache
from .errors import HpackDecodingError, OversizedHeaderListError
from .headers import NeverIndexed
from .huffman import huffman_decode
from .static_table import STATIC_LENGTH, STATIC_TABLE

#: The header list limit when none is given (the same default as the ``hpack`` library).
DEFAULT_MAX_HEADER_LIST_SIZE = 1 << 16
#: SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 §6.5.2).
DEFAULT_TABLE_SIZE = 4096

#: Per decoder: how many blocks that did not change the table are remembered, up to what size.
BLOCK_CACHE_ENTRIES = 8
BLOCK_CACHE_MAX_OCTETS = 512

#: How many distinct never-indexed fields a decoder remembers (see Decoder.never_indexed_seen).
NEVER_INDEXED_REMEMBERED = 64

Entry = Tuple[Tuple[bytes, bytes], Optional[Tuple[str, str]], int]
#: A decoded header: a (name, value) pair of str, or of bytes when the decoder is asked for raw octets.
#: Never-indexed literals are :class:`NeverIndexed` pairs.
Header = Union[Tuple[str, str], Tuple[bytes, bytes]]

#: Huffman-coded string -> its decoding (strings up to HUFFMAN_CACHE_MAX_STRING octets).
HUFFMAN_CACHE_ENTRIES = 4096
HUFFMAN_CACHE_MAX_STRING = 256
huffman_cache: TwoGenerationCache[bytes] = TwoGenerationCache(HUFFMAN_CACHE_ENTRIES)


def _entry(name: bytes, value: bytes) -> Entry:
    """A table entry: both forms of the header, and its size (RFC 7541 §4.1)."""
    try:
        text: Optional[Tuple[str, str]] = (name.decode("utf-8"), value.decode("utf-8"))
    except UnicodeDecodeError:
        text = None       # an error only if it is ever handed out as text
    return (name, value), text, len(name) + len(value) + 32


#: Index -> entry. Index 0 is not valid (RFC 7541 §6.1): every look-up rules it out first, and its
#: slot holds a placeholder that is never handed out.
_STATIC: List[Entry] = [((b"", b""), None, 0)] + [_entry(n, v) for n, v in STATIC_TABLE]


def _read_int(data: bytes, pos: int, value: int) -> Tuple[int, int]:
    """The rest of an integer whose prefix was all ones (RFC 7541 §5.1): (value, position after)."""
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HpackDecodingError("the block ends inside an integer")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackDecodingError("integer longer than 5 octets after its prefix (over 2^35)")


class Decoder:
    """The decoding half of one HPACK context (one direction of one connection).

    ``max_header_list_size`` bounds the decoded list (sum of name + value + 32
    per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts it) and
    ``max_string_length`` each string (default: the list limit);
    ``max_allowed_table_size`` is the SETTINGS_HEADER_TABLE_SIZE this side
    announced: a size update above it is an error, and so is a block that ends
    with the table still larger than it (the encoder did not shrink it).
    """

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE,
                 max_string_length: Optional[int] = None) -> None:
        self.max_header_list_size = max_header_list_size
        self.max_string_length = max_string_length
        self._allowed = DEFAULT_TABLE_SIZE
        #: The never-indexed fields this decoder has handed out (up to NEVER_INDEXED_REMEMBERED), so an
        #: intermediary can keep them never-indexed even when a hook rebuilt the header list.
        self.never_indexed_seen: Set[Union[NeverIndexed[str], NeverIndexed[bytes]]] = set()
        self._table: Deque[Entry] = deque()     # newest first: dynamic index 62 is _table[0]
        #: Changes whenever the dynamic table does (an insertion, an eviction, a size update), and when
        #: the limit drops below its size (a size update is then due): a block decoded with the same
        #: version before and after left the table as it was (a proxy may then drop it without the
        #: receiver's table falling out of step), and a block that decoded at this version decodes the same.
        self.table_version = 0
        # Blocks that left the table as it was (only indexed fields and literals not indexed) decode
        # the same while the table does not change: block -> (version, raw, limits, headers).
        self._blocks: Dict[bytes, Tuple[int, bool, Tuple[int, Optional[int]], List[Header]]] = {}
        self._size = 0
        self._max = DEFAULT_TABLE_SIZE

    # -- table state

    @property
    def header_table_size(self) -> int:
        """The dynamic table's current maximum size, as the last size update set it."""
        return self._max

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._resize(value)

    @property
    def table_size(self) -> int:
        """Octets the dynamic table holds now (RFC 7541 §4.1)."""
        return self._size

    @property
    def max_allowed_table_size(self) -> int:
        """The SETTINGS_HEADER_TABLE_SIZE this side sent (acknowledged): no size update may go above it."""
        return self._allowed

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, value: int) -> None:
        self._allowed = value
        if self._max > value:
            self.table_version += 1      # (a size update is due: no block decodes as it did)

    @property
    def table_entries(self) -> List[Tuple[bytes, bytes]]:
        """The dynamic table, newest entry (index 62) first."""
        return [e[0] for e in self._table]

    def restore_table(self, entries: Sequence[Tuple[bytes, bytes]], max_size: int) -> None:
        """Set the dynamic table to ``entries`` (newest first, as :attr:`table_entries` gives them) with
        the maximum size ``max_size``.

        For a decoder that starts in the middle of a connection: a frame log cut
        into files (``--record-rotate``) saves each context's table at the top
        of the next file, and a reader of that file alone restores it here.
        Entries that do not fit in ``max_size`` are evicted as an insert would.
        """
        self._table.clear()
        self._size = 0
        self._blocks.clear()
        self._resize(max_size)
        for name, value in reversed(entries):
            entry = _entry(bytes(name), bytes(value))
            if entry[2] > self._max:
                self._table.clear()
                self._size = 0
                continue
            self._size += entry[2]
            while self._size > self._max:
                self._size -= self._table.pop()[2]
            self._table.appendleft(entry)
        self.table_version += 1

    def _resize(self, size: int) -> None:
        self._max = size
        self.table_version += 1
        table = self._table
        while self._size > size:
            self._size -= table.pop()[2]

    # -- decoding

    def _string(self, data: bytes, pos: int, what: str) -> Tuple[bytes, int]:
        """A string literal (RFC 7541 §5.2) at ``pos``: (its octets, position after)."""
        if pos >= len(data):
            raise HpackDecodingError(f"the block ends before the {what} string")
        b = data[pos]
        length = b & 0x7F
        pos += 1
        if length == 0x7F:
            length, pos = _read_int(data, pos, 0x7F)
        limit = self.max_string_length
        if limit is None:
            limit = self.max_header_list_size
        if length > limit:
            raise OversizedHeaderListError(f"{what} string of {length} octets is longer than the limit, {limit}")
        stop = pos + length
        if stop > len(data):
            raise HpackDecodingError(f"{what} string of {length} octets runs {stop - len(data)} octets "
                                     "past the end of the block")
        raw = data[pos:stop]
        if not b & 0x80:
            return raw, stop
        text = huffman_cache.hot.get(raw)
        if text is None:
            text = self._huffman_miss(raw)
        return text, stop

    @staticmethod
    def _huffman_miss(raw: bytes) -> bytes:
        return huffman_cache.miss(raw, lambda: huffman_decode(raw), len(raw) <= HUFFMAN_CACHE_MAX_STRING)

    def _lookup(self, index: int) -> Entry:
        if index <= STATIC_LENGTH:
            if index == 0:
                raise HpackDecodingError("index 0 (RFC 7541 §6.1: not a valid index)")
            return _STATIC[index]
        try:
            return self._table[index - STATIC_LENGTH - 1]
        except IndexError:
            raise HpackDecodingError(f"index {index} is past the tables: {STATIC_LENGTH} static + "
                                     f"{len(self._table)} dynamic entries") from None

    @overload
    def decode(self, data: Union[bytes, bytearray, memoryview],
               raw: Literal[False] = False) -> List[Tuple[str, str]]: ...

    @overload
    def decode(self, data: Union[bytes, bytearray, memoryview], raw: Literal[True]) -> List[Tuple[bytes, bytes]]: ...

    @overload
    def decode(self, data: Union[bytes, bytearray, memoryview], raw: bool) -> List[Header]: ...

    def decode(self, data: Union[bytes, bytearray, memoryview], raw: bool = False) -> List[Any]:
        """Decode one complete header block; headers as ``str`` pairs, or ``bytes`` pairs when ``raw``.

        Never-indexed literals come out as :class:`NeverIndexed`. Raises
        HpackDecodingError (OversizedHeaderListError for the limits).

        (The list holds str pairs or bytes pairs as ``raw`` says: the overloads give its type.)
        """
        if type(data) is not bytes:
            # (A relay hands memoryviews of what it read: tobytes is the cheapest copy of one.)
            data = data.tobytes() if type(data) is memoryview else bytes(data)
        version = self.table_version
        hit = self._blocks.get(data)
        if hit is not None and hit[0] == version and hit[1] == raw:
            # (The limits it was decoded under, compared one by one: no tuple made on the hot path.)
            limits = hit[2]
            if limits[0] == self.max_header_list_size and limits[1] == self.max_string_length:
                return list(hit[3])
        limits = (self.max_header_list_size, self.max_string_length)
        k: Literal[0, 1] = 0 if raw else 1
        table = self._table
        static = _STATIC
        out: List[Header] = []
        append = out.append
        pos = 0
        end = len(data)
        total = 0
        limit = self.max_header_list_size
        slimit = self.max_string_length
        if slimit is None:
            slimit = limit
        hot = huffman_cache.hot
        start = 0
        try:
            while pos < end:
                start = pos
                b = data[pos]
                pos += 1
                if b & 0x80:                                    # §6.1 indexed field
                    index = b & 0x7F
                    if index == 0x7F:
                        index, pos = _read_int(data, pos, 0x7F)
                    if 0 < index <= STATIC_LENGTH:
                        e = static[index]
                    elif index > STATIC_LENGTH and index - 62 < len(table):
                        e = table[index - 62]
                    else:
                        e = self._lookup(index)                # raises, naming the index
                    h = e[k]
                    if h is None:
                        raise HpackDecodingError("indexed field is not UTF-8 text")
                    total += e[2]
                    if total > limit:
                        raise OversizedHeaderListError(f"the header list is larger than the limit, {limit}")
                    append(h)
                    continue
                if b & 0x40:                                    # §6.2.1 literal, incremental indexing
                    index = b & 0x3F
                    if index == 0x3F:
                        index, pos = _read_int(data, pos, 0x3F)
                elif b & 0x20:                                  # §6.3 dynamic table size update
                    pos = self._size_update(data, pos, b, bool(out))
                    continue
                else:                                           # §6.2.2 without / §6.2.3 never indexed
                    index = b & 0x0F
                    if index == 0x0F:
                        index, pos = _read_int(data, pos, 0x0F)
                if index:
                    name = (static[index] if 0 < index <= STATIC_LENGTH else self._lookup(index))[0][0]
                else:
                    name, pos = self._string(data, pos, "name")
                # The value string, inlined for its common forms (short, and cached when Huffman-coded).
                b2 = data[pos] if pos < end else 0x7F
                length = b2 & 0x7F
                stop = pos + 1 + length
                if length == 0x7F or stop > end or length > slimit:
                    value, pos = self._string(data, pos, "value")
                else:
                    value = data[pos + 1:stop]
                    pos = stop
                    if b2 & 0x80:
                        decoded = hot.get(value)
                        value = decoded if decoded is not None else self._huffman_miss(value)
                size = len(name) + len(value) + 32
                total += size
                if total > limit:
                    raise OversizedHeaderListError(f"the header list is larger than the limit, {limit}")
                if b & 0x40:
                    append(self._insert(name, value, size, raw))
                else:
                    append(self._not_indexed(name, value, bool(b & 0x10), raw))
        except HpackDecodingError as exc:
            raise type(exc)(f"header block field {len(out) + 1} at offset {start}: {exc}") from None
        if self._max > self._allowed:
            raise HpackDecodingError(f"the dynamic table is still {self._max} octets at the end of the block, "
                                     f"above the SETTINGS_HEADER_TABLE_SIZE of {self._allowed}: "
                                     "the encoder did not shrink it")
        if self.table_version == version and len(data) <= BLOCK_CACHE_MAX_OCTETS:
            blocks = self._blocks
            if len(blocks) >= BLOCK_CACHE_ENTRIES:
                blocks.clear()
            blocks[data] = (version, raw, limits, out)
            return list(out)
        return out

    def _size_update(self, data: bytes, pos: int, b: int, after_field: bool) -> int:
        """A dynamic table size update (§6.3) whose first octet ``b`` was read: position after it."""
        if after_field:
            raise HpackDecodingError("dynamic table size update after a header field "
                                     "(RFC 7541 §4.2: only at the start of a block)")
        size = b & 0x1F
        if size == 0x1F:
            size, pos = _read_int(data, pos, 0x1F)
        if size > self._allowed:
            raise HpackDecodingError(f"dynamic table size update to {size}, above the "
                                     f"SETTINGS_HEADER_TABLE_SIZE of {self._allowed}")
        self._resize(size)
        return pos

    def _insert(self, name: bytes, value: bytes, size: int, raw: bool) -> Header:
        """A literal with incremental indexing (§6.2.1): the header, added to the table (§4.4)."""
        pair = (name, value)
        try:
            text: Optional[Tuple[str, str]] = (name.decode("utf-8"), value.decode("utf-8"))
        except UnicodeDecodeError:
            if not raw:
                raise HpackDecodingError("literal field is not UTF-8 text") from None
            text = None
        self.table_version += 1
        table = self._table
        if size > self._max:
            table.clear()
            self._size = 0
        else:
            self._size += size
            while self._size > self._max:
                self._size -= table.pop()[2]
            table.appendleft((pair, text, size))
        if raw or text is None:
            return pair
        return text

    def _not_indexed(self, name: bytes, value: bytes, never: bool, raw: bool) -> Header:
        """A literal without indexing (§6.2.2), or never indexed (§6.2.3) when ``never``."""
        if raw:
            if not never:
                return name, value
            h: Union[NeverIndexed[str], NeverIndexed[bytes]] = NeverIndexed(name, value)
        else:
            try:
                text = (name.decode("utf-8"), value.decode("utf-8"))
            except UnicodeDecodeError:
                raise HpackDecodingError("literal field is not UTF-8 text") from None
            if not never:
                return text
            h = NeverIndexed(*text)
        if len(self.never_indexed_seen) < NEVER_INDEXED_REMEMBERED:
            self.never_indexed_seen.add(h)
        return h
