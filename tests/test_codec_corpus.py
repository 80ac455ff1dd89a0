"""The http2jp frame test corpus (github.com/http2jp/http2-frame-test-case).

Normal cases: the wire bytes decode to the JSON's fields and the decoded frame
encodes back to the very same wire bytes. Error cases: decoding raises a
framecodec exception. Decoding goes through the streaming reader with the
default settings (SETTINGS_MAX_FRAME_SIZE 16384), as the corpus README asks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from framecodec.exceptions import FrameCodecError, FrameTooLargeError
from framecodec.frame import Frame
from framecodec.reader import FrameReader
from tests.conftest import data_dir

CORPUS = data_dir("http2-frame-test-case")
CASES = sorted(CORPUS.glob("*/*.json"))
NORMAL = [p for p in CASES if json.loads(p.read_text())["error"] is None]
ERRORS = [p for p in CASES if json.loads(p.read_text())["error"] is not None]


def case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def decode(wire: bytes) -> Frame:
    """Decode exactly one frame from ``wire`` with the streaming reader."""
    reader = FrameReader()
    raws = reader.feed(wire)
    assert len(raws) == 1 and reader.buffered == 0, "the wire holds exactly one whole frame"
    assert bytes(raws[0].wire) == wire
    return raws[0].parse()


def flag_byte(frame: Frame) -> int:
    bits = 0
    for name, bit in frame.defined_flags:
        if name in frame.flags:
            bits |= bit
    return bits | frame.undefined_flags


def text(value) -> bytes:
    return value.encode("ascii") if value is not None else b""


def test_corpus_is_complete():
    assert len(NORMAL) >= 12 and len(ERRORS) >= 20


@pytest.mark.parametrize("path", NORMAL, ids=case_id)
def test_normal_case(path: Path):
    case = json.loads(path.read_text())
    wire = bytes.fromhex(case["wire"])
    expected = case["frame"]
    payload = expected["frame_payload"]

    frame = decode(wire)
    assert frame.type == expected["type"]
    assert frame.stream_id == expected["stream_identifier"]
    assert frame.body_len == expected["length"]
    assert flag_byte(frame) == expected["flags"]

    padded = "padding_length" in payload and payload["padding_length"] is not None
    if "padding_length" in payload and hasattr(frame, "pad_length"):
        assert frame.pad_length == (payload["padding_length"] or 0)
        assert frame.padding == text(payload.get("padding"))
        assert ("PADDED" in frame.flags) == padded
    if "weight" in payload:
        if payload["weight"] is None:  # no priority information on the wire
            assert frame.type == 0x2 or "PRIORITY" not in frame.flags
        else:
            # The JSON gives the weight (1..256); stream_weight is the wire byte (weight - 1).
            assert frame.stream_weight == payload["weight"] - 1
            assert frame.depends_on == payload["stream_dependency"]
            assert frame.exclusive == payload["exclusive"]
    if "data" in payload:
        assert frame.data == text(payload["data"])
    if "header_block_fragment" in payload:
        assert frame.data == text(payload["header_block_fragment"])
    if "promised_stream_id" in payload:
        assert frame.promised_stream_id == payload["promised_stream_id"]
    if "error_code" in payload:
        assert frame.error_code == payload["error_code"]
    if "last_stream_id" in payload:
        assert frame.last_stream_id == payload["last_stream_id"]
    if "additional_debug_data" in payload:
        assert frame.additional_data == text(payload["additional_debug_data"])
    if "opaque_data" in payload:
        assert frame.opaque_data == text(payload["opaque_data"])
    if "window_size_increment" in payload:
        assert frame.window_increment == payload["window_size_increment"]
    if "settings" in payload:
        assert frame.settings_pairs == [tuple(p) for p in payload["settings"]]
        assert frame.settings == dict(tuple(p) for p in payload["settings"])

    assert frame.serialize() == wire


@pytest.mark.parametrize("path", ERRORS, ids=case_id)
def test_error_case(path: Path):
    case = json.loads(path.read_text())
    wire = bytes.fromhex(case["wire"])
    with pytest.raises(FrameCodecError) as e:
        decode(wire)
    # FRAME_SIZE_ERROR (6) cases that exceed the maximum frame size are caught by the reader.
    if isinstance(e.value, FrameTooLargeError):
        assert 6 in case["error"]
    # Every message says which frame it is about.
    assert "frame" in str(e.value) and "stream" in str(e.value)


@pytest.mark.parametrize("path", NORMAL, ids=case_id)
def test_normal_case_through_parse_frame_header(path: Path):
    """The same wire bytes through the hyperframe-style two-step API."""
    wire = bytes.fromhex(json.loads(path.read_text())["wire"])
    frame, length = Frame.parse_frame_header(wire[:9])
    frame.parse_body(memoryview(wire)[9:9 + length])
    assert frame.serialize() == wire
