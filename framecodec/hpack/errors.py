"""Errors raised by the HPACK codec.

A decoder fed untrusted bytes raises only :class:`HpackDecodingError` (and its
subclass :class:`OversizedHeaderListError`, which a proxy reports as a limit
rather than as a broken peer), never an IndexError or a UnicodeDecodeError.
Messages say what was wrong and where: the field number in the block and the
byte offset.
"""
from __future__ import annotations


class HpackError(Exception):
    """Base class of every HPACK error."""


class HpackDecodingError(HpackError):
    """A header block is malformed (RFC 7541): a connection error of type COMPRESSION_ERROR."""


class OversizedHeaderListError(HpackDecodingError):
    """The decoded header list, or one string in it, is larger than the limit the decoder was given."""


class HuffmanDecodingError(HpackDecodingError):
    """A Huffman-coded string holds EOS or is padded with anything but up to 7 one bits (RFC 7541 §5.2)."""
