"""proxy.memtune: the glibc settings that keep large short-lived buffers from costing page faults."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Allocates and frees a buffer of a few hundred KiB (a TLS read of large responses, or what the TLS
#: layer encrypted for one write) many times, and prints the page faults that cost.
_CHURN = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
from proxy.memtune import tune_malloc
if not tune_malloc():
    print("unsupported")
    raise SystemExit(0)
warm = b"x" * 300_000
del warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    buf = b"x" * 300_000       # (written whole: every page is touched)
    del buf
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_large_short_lived_buffers_reuse_the_heap_instead_of_a_mapping_each():
    # Without an explicit mmap threshold, glibc keeps the one it had when the trim threshold was set
    # (128 KiB in a fresh process): each buffer above it is mapped and unmapped, about 75 page faults
    # per 300 KB buffer (15,000 here).
    got = subprocess.run([sys.executable, "-c", _CHURN], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    if got.stdout.strip() == "unsupported":
        pytest.skip("not glibc: tune_malloc does nothing")
    assert int(got.stdout) < 500
