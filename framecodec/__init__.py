"""framecodec: h2proxy's HTTP/2 frame codec.

The public API mirrors ``hyperframe`` (``framecodec.frame``, ``framecodec.flags``,
``framecodec.exceptions``); :mod:`framecodec.reader` adds a streaming reader.
"""
__version__ = "0.1.0"
