"""The static Huffman code of HPACK (RFC 7541 §5.2, Appendix B), both ways.

Appendix B is a canonical Huffman code: the codes of one length are
consecutive and ordered by symbol, and each length starts where the previous
one ended, shifted left. So the table below holds only the code length of
each symbol (transcribed from Appendix B) and the codes are derived from it;
the derivation checks that the lengths make a complete code.

Decoding walks the code tree a whole octet at a time: a transition table
indexed by (tree node, input octet) gives the node reached and the octets
completed on the way. Its 65,536 entries are filled on first use, so only the
(node, octet) pairs real traffic meets are ever computed. Encoding joins the
bit strings of the symbols and converts them to bytes in one ``int(..., 2)``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from .errors import HuffmanDecodingError

#: Code length in bits of each symbol 0..255 and of EOS (256), RFC 7541 Appendix B.
CODE_LENGTHS: Tuple[int, ...] = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,   #   0.. 15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,   #  16.. 31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,           #  32.. 47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,                #  48.. 63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                  #  64.. 79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,               #  80.. 95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                  #  96..111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,              # 112..127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,   # 128..143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,   # 144..159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,   # 160..175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,   # 176..191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,   # 192..207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,   # 208..223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,   # 224..239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,   # 240..255
    30,                                                               # 256 (EOS)
)
EOS = 256


def _canonical_codes(lengths: Tuple[int, ...]) -> List[int]:
    """The code of each symbol, assigned canonically: by length, then by symbol."""
    codes = [0] * len(lengths)
    code = 0
    prev_len = 0
    for sym in sorted(range(len(lengths)), key=lambda s: (lengths[s], s)):
        code <<= lengths[sym] - prev_len
        prev_len = lengths[sym]
        codes[sym] = code
        code += 1
    # A complete prefix code ends exactly at 2**maxlen: otherwise a length was mistyped.
    assert code == 1 << prev_len, "the Huffman code lengths do not make a complete code"
    return codes


CODES: List[int] = _canonical_codes(CODE_LENGTHS)
#: The code of each octet as a string of '0' and '1', for encoding.
_BITS: List[str] = [format(CODES[s], f"0{CODE_LENGTHS[s]}b") for s in range(256)]
_bits_of = _BITS.__getitem__

# --- the code tree: internal nodes are numbered from 0 (the root); a child is
# an internal node number (>= 0) or a leaf, stored as -1 - symbol.
_children: List[List[int]] = [[0, 0]]
_UNSET = 1 << 30


def _build_tree() -> None:
    kids = [[_UNSET, _UNSET]]
    for sym in range(257):
        node = 0
        length = CODE_LENGTHS[sym]
        code = CODES[sym]
        for i in range(length - 1, 0, -1):
            bit = (code >> i) & 1
            nxt = kids[node][bit]
            if nxt == _UNSET:
                kids.append([_UNSET, _UNSET])
                nxt = kids[node][bit] = len(kids) - 1
            node = nxt
        kids[node][code & 1] = -1 - sym
    _children[:] = kids


_build_tree()
assert len(_children) == 256 and all(_UNSET not in k for k in _children)

# Nodes where a string may end: reached from the root by at most 7 one bits,
# i.e. the padding is a prefix of EOS no longer than 7 bits (RFC 7541 §5.2).
_ACCEPTING = bytearray(256)
_node = 0
for _depth in range(8):
    _ACCEPTING[_node] = 1
    _node = _children[_node][1]

#: (node << 8 | octet) -> (node after, octets completed), or _BAD when EOS was decoded.
_TRANSITIONS: List[Optional[Tuple[int, bytes]]] = [None] * (256 * 256)
_BAD = (-1, b"")


def _transition(node: int, octet: int) -> Tuple[int, bytes]:
    """The table entry for ``octet`` read at ``node``: walk its 8 bits down the tree."""
    out = bytearray()
    entry: Tuple[int, bytes]
    for i in range(7, -1, -1):
        nxt = _children[node][(octet >> i) & 1]
        if nxt < 0:
            sym = -1 - nxt
            if sym == EOS:
                entry = _BAD
                break
            out.append(sym)
            node = 0
        else:
            node = nxt
    else:
        entry = (node << 8, bytes(out))
    return entry


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string; HuffmanDecodingError when it holds EOS or is badly padded."""
    table = _TRANSITIONS
    state = 0           # the current node, shifted left by 8
    parts = []
    append = parts.append
    for octet in data:
        entry = table[state | octet]
        if entry is None:
            entry = table[state | octet] = _transition(state >> 8, octet)
        state, done = entry
        if state < 0:
            raise HuffmanDecodingError("Huffman-coded string contains the EOS symbol")
        append(done)
    if not _ACCEPTING[state >> 8]:
        raise HuffmanDecodingError("Huffman-coded string is padded with more than 7 bits or with zero bits")
    return b"".join(parts)


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code ``data``, padded to an octet boundary with the most significant bits of EOS (ones)."""
    if not data:
        return b""
    bits = "".join(map(_bits_of, data))
    n = (len(bits) + 7) >> 3
    return (int(bits, 2) << ((n << 3) - len(bits)) | ((1 << ((n << 3) - len(bits))) - 1)).to_bytes(n, "big")


def huffman_length(data: bytes) -> int:
    """Octets ``data`` takes Huffman-coded."""
    return (sum(map(CODE_LENGTHS.__getitem__, data)) + 7) >> 3
