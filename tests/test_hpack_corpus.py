"""The hpack-test-case interop corpus (tests/data/hpack-test-case, a subset of http2jp/hpack-test-case).

* Every story of the encoder directories (nghttp2, go, node, swift-nio, haskell) decodes, case by
  case in one context, to its recorded headers in order.
* Every raw-data story encoded by our encoder (default table, and after the receiver announced
  256 and 0 octets) decodes back to the same headers with `hpack` and with our decoder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import hpack
import pytest

from framecodec.hpack import Decoder, Encoder

CORPUS = Path(__file__).resolve().parent / "data" / "hpack-test-case"
ENCODED = sorted(p for p in CORPUS.glob("*/story_*.json") if p.parent.name != "raw-data")
RAW = sorted(CORPUS.glob("raw-data/story_*.json"))


def _headers(case: dict) -> List[Tuple[str, str]]:
    return [pair for h in case["headers"] for pair in h.items()]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_the_corpus_is_there():
    implementations = {p.parent.name for p in ENCODED}
    assert {"nghttp2", "go-hpack", "node-http2-hpack", "swift-nio-hpack-huffman",
            "haskell-http2-linear-huffman", "nghttp2-change-table-size"} <= implementations
    assert len(RAW) >= 20 and (CORPUS / "LICENSE").exists()


@pytest.mark.parametrize("path", ENCODED, ids=_id)
def test_story_decodes_to_its_headers(path):
    story = json.loads(path.read_text())
    dec = Decoder()
    for case in story["cases"]:
        if case.get("header_table_size") is not None:      # SETTINGS_HEADER_TABLE_SIZE, acknowledged
            dec.max_allowed_table_size = case["header_table_size"]
        assert dec.decode(bytes.fromhex(case["wire"])) == _headers(case), f"case {case['seqno']}"


@pytest.mark.parametrize("table_size", [4096, 256, 0])
@pytest.mark.parametrize("path", RAW, ids=_id)
def test_raw_story_encoded_by_us_decodes_back(path, table_size):
    story = json.loads(path.read_text())
    enc = Encoder()
    enc.header_table_size = table_size
    theirs, ours = hpack.Decoder(), Decoder()
    theirs.max_allowed_table_size = ours.max_allowed_table_size = table_size
    total = plain = 0
    for case in story["cases"]:
        headers = _headers(case)
        block = enc.encode(headers)
        assert theirs.decode(block) == headers, f"case {case['seqno']}"
        assert ours.decode(block) == headers, f"case {case['seqno']}"
        total += len(block)
        plain += sum(len(n) + len(v) for n, v in headers)
    assert total < plain          # it does compress (Huffman alone does, even with no table)
