"""Keep glibc malloc from handing freed heap back to the kernel after every burst.

The proxy's traffic is a stream of short-lived buffers of a few to a few tens
of KiB (joined writes, recorded batches, frames spanning reads). glibc serves
them from the heap's top; by default, whenever more than 128 KiB at the top is
free it gives that memory back, and the next burst takes it again, a page
fault per 4 KiB touched. On a relay that is a measurable share of CPU (the
recorder's batches cost about a microsecond per request in page faults alone).
Raising the trim threshold and the top pad keeps a few MiB of heap ready
instead. Everything beyond that is still returned, so memory after a load
spike still goes back near its baseline.

Setting either one also freezes glibc's mmap threshold, which otherwise rises
by itself after the first large buffers are freed. Left where it happened to
be at start-up, buffers of a few hundred KiB (a TLS read of 1 MiB responses,
the bytes the TLS layer encrypted for one write) could each get their own
mmap: hundreds of page faults per response, a third of the proxy's CPU in
that case. The threshold is therefore set too, to a size above any buffer one
read makes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: Free heap at the top kept rather than returned, and the extra asked for when the heap grows.
TRIM_THRESHOLD = 16 << 20
TOP_PAD = 4 << 20
#: Buffers from this size up get their own mapping (a read is at most 256 KiB; its output about as much).
MMAP_THRESHOLD = 4 << 20


def tune_malloc(trim_threshold: int = TRIM_THRESHOLD, top_pad: int = TOP_PAD,
                mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's trim threshold, top pad and mmap threshold; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(mallopt(_M_TOP_PAD, top_pad))
            and bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)))
