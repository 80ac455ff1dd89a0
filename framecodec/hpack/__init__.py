"""h2proxy's HPACK codec (RFC 7541): header compression for HTTP/2, in pure Python.

* :class:`Decoder` - header block bytes -> list of (name, value); never-indexed
  literals come out as :class:`NeverIndexed`;
* :class:`Encoder` - list of (name, value) -> header block bytes; honours the
  never-indexed mark and emits dynamic table size updates after
  ``header_table_size`` changes;
* errors: :class:`HpackDecodingError` for any malformed block (a proxy's
  COMPRESSION_ERROR) and its subclass :class:`OversizedHeaderListError` for
  the size limits.

Built for speed on repeating traffic (see decoder.py and encoder.py); it
imports nothing outside the standard library.
"""
from .decoder import DEFAULT_MAX_HEADER_LIST_SIZE, Decoder
from .encoder import Encoder
from .errors import HpackDecodingError, HpackError, HuffmanDecodingError, OversizedHeaderListError
from .headers import NeverIndexed, is_never_indexed, mark_never_indexed

__all__ = ["Decoder", "Encoder", "NeverIndexed", "is_never_indexed", "mark_never_indexed", "HpackError", "HpackDecodingError",
           "HuffmanDecodingError", "OversizedHeaderListError", "DEFAULT_MAX_HEADER_LIST_SIZE"]
