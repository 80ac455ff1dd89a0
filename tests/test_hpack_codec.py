"""framecodec.hpack against RFC 7541: its examples (Appendix C), size updates, never-indexed fields,
limits and the error for every kind of malformed block. The `hpack` library is the oracle where a
second decoder is needed."""
from __future__ import annotations

import hpack
import pytest

from framecodec.hpack import (
    Decoder,
    Encoder,
    HpackDecodingError,
    NeverIndexed,
    OversizedHeaderListError,
    is_never_indexed,
    mark_never_indexed,
)
from framecodec.hpack.encoder import encode_integer
from framecodec.hpack.huffman import CODE_LENGTHS, CODES, huffman_decode, huffman_encode, huffman_length

REQUESTS = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
     ("cache-control", "no-cache")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
     ("custom-key", "custom-value")],
]


# ------------------------------------------------------------- RFC 7541 Appendix C

def test_integer_examples_c1():
    assert encode_integer(10, 5) == bytes([0b01010])
    assert encode_integer(1337, 5) == bytes([0b11111, 0b10011010, 0b00001010])
    assert encode_integer(42, 8) == bytes([42])


@pytest.mark.parametrize("blocks", [
    # C.3: requests without Huffman coding
    ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
     "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"],
    # C.4: the same requests with Huffman coding
    ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
     "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"],
], ids=["C.3", "C.4"])
def test_request_examples(blocks):
    dec = Decoder()
    for block, expected in zip(blocks, REQUESTS, strict=True):
        assert dec.decode(bytes.fromhex(block)) == expected
    # C.3.3 / C.4.3: the dynamic table after the third request
    assert dec.table_entries == [(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"),
                                 (b":authority", b"www.example.com")]
    assert dec.table_size == 164


def test_response_example_c6_with_a_256_octet_table():
    dec = Decoder()
    dec.header_table_size = 256
    block = bytes.fromhex("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad17"
                          "1863c78f0b97c8e9ae82ae43d3")
    assert dec.decode(block) == [(":status", "302"), ("cache-control", "private"),
                                 ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com")]
    assert dec.table_size == 222


def test_never_indexed_example_c23_comes_out_marked_and_stays_out_of_the_table():
    dec = Decoder()
    [field] = dec.decode(bytes.fromhex("100870617373776f726406736563726574"))
    assert field == ("password", "secret") and type(field) is NeverIndexed and is_never_indexed(field)
    assert dec.table_entries == [] and field in dec.never_indexed_seen


# ------------------------------------------------------------- Huffman

def test_huffman_codes_are_appendix_b():
    # Spot checks against Appendix B, then the whole code against the oracle's table.
    assert (CODES[ord("0")], CODE_LENGTHS[ord("0")]) == (0x0, 5)
    assert (CODES[ord("a")], CODE_LENGTHS[ord("a")]) == (0x3, 5)
    assert (CODES[0], CODE_LENGTHS[0]) == (0x1FF8, 13)
    assert (CODES[256], CODE_LENGTHS[256]) == (0x3FFFFFFF, 30)
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    assert CODES == list(REQUEST_CODES) and list(CODE_LENGTHS) == list(REQUEST_CODES_LENGTH)


def test_huffman_round_trip_of_every_octet():
    data = bytes(range(256)) * 3
    coded = huffman_encode(data)
    assert len(coded) == huffman_length(data)
    assert huffman_decode(coded) == data
    assert huffman_encode(b"www.example.com") == bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")


@pytest.mark.parametrize("coded, why", [
    (b"\xff\xff\xff\xff", "EOS"),               # 30 one bits: EOS itself
    (b"\x00", "padded"),                        # '0' then three zero bits of padding
    (b"\x1f\xff", "padded"),                    # 'a' then 11 bits of ones: padding longer than 7 bits
])
def test_bad_huffman_strings(coded, why):
    with pytest.raises(HpackDecodingError, match=why):
        huffman_decode(coded)


# ------------------------------------------------------------- dynamic table size

def _oracle_pair():
    """Our encoder, and the oracle decoder that must follow it."""
    return Encoder(), hpack.Decoder()


def test_size_update_to_zero_is_sent_at_the_start_of_the_next_block():
    enc, oracle = _oracle_pair()
    ours = Decoder()
    hs = [(":status", "200"), ("server", "test"), ("x-a", "1")]
    block = enc.encode(hs)
    assert oracle.decode(block) == hs and ours.decode(block) == hs
    assert len(oracle.header_table.dynamic_entries) == 2
    # The receiver announces SETTINGS_HEADER_TABLE_SIZE = 0.
    enc.header_table_size = 0
    oracle.max_allowed_table_size = ours.max_allowed_table_size = 0
    block = enc.encode(hs)
    assert block[0] == 0x20                       # size update to 0, first thing in the block
    assert oracle.decode(block) == hs and ours.decode(block) == hs
    assert oracle.header_table_size == 0 and len(oracle.header_table.dynamic_entries) == 0
    # Nothing is indexed any more: the next blocks hold no size update and no indexed literal.
    block = enc.encode(hs)
    assert block[0] == 0x88
    assert oracle.decode(block) == hs and ours.decode(block) == hs
    assert len(oracle.header_table.dynamic_entries) == 0 and ours.table_entries == []


def test_smallest_size_then_final_size_are_both_signalled():
    enc = Encoder()
    enc.encode([("x-a", "1")])
    enc.header_table_size = 0
    enc.header_table_size = 100
    block = enc.encode([("x-a", "1")])
    assert block.startswith(b"\x20\x3f\x45")      # 0, then 100 (31 + 69)
    oracle = hpack.Decoder()
    oracle.decode(Encoder().encode([("x-a", "1")]))
    assert oracle.decode(block) == [("x-a", "1")] and oracle.header_table_size == 100


def test_no_size_update_when_the_size_does_not_change():
    enc = Encoder()
    enc.header_table_size = 4096
    assert enc.encode([(":method", "GET")]) == b"\x82"


def test_decoder_refuses_a_size_update_above_the_setting_and_a_table_left_too_large():
    dec = Decoder()
    dec.max_allowed_table_size = 100
    with pytest.raises(HpackDecodingError, match="above the SETTINGS_HEADER_TABLE_SIZE of 100"):
        dec.decode(b"\x3f\x46")                    # update to 101
    dec = Decoder()
    dec.max_allowed_table_size = 0                 # the encoder must shrink in its next block
    with pytest.raises(HpackDecodingError, match="did not shrink"):
        dec.decode(b"\x82")
    assert Decoder().decode(b"\x82") == [(":method", "GET")]
    dec = Decoder()
    dec.max_allowed_table_size = 0
    assert dec.decode(b"\x20\x82") == [(":method", "GET")]


def test_entry_larger_than_the_table_empties_it():
    dec = Decoder()
    dec.decode(b"\x3f\x21" + b"\x40\x03abc\x03def")     # table size 64: one entry of 38 octets
    assert dec.table_entries == [(b"abc", b"def")]
    dec.decode(b"\x40\x03abc\x20" + b"x" * 32)          # 3 + 32 + 32 > 64: the table is emptied
    assert dec.table_entries == [] and dec.table_size == 0


def test_encoder_tracks_evictions():
    enc, oracle = _oracle_pair()
    enc.header_table_size = 200
    oracle.max_allowed_table_size = 200
    ours = Decoder()
    ours.max_allowed_table_size = 200
    for i in range(50):
        hs = [("x-n", str(i)), ("x-n", str(i - 1)), ("x-long", "v" * (i % 7) * 10), ("x-n", str(i - 3))]
        block = enc.encode(hs)
        assert oracle.decode(block) == hs and ours.decode(block) == hs
        assert ours.table_size <= 200


# ------------------------------------------------------------- never indexed

def test_never_indexed_fields_are_reencoded_never_indexed():
    src = hpack.Encoder()
    block = src.encode([(":status", "200"), hpack.NeverIndexedHeaderTuple("authorization", "Bearer x"),
                        hpack.NeverIndexedHeaderTuple("set-cookie", "id=1234567890abcdefghijklmnop"),
                        ("x-plain", "1")])
    decoded = Decoder().decode(block)
    assert [is_never_indexed(h) for h in decoded] == [False, True, True, False]
    enc = Encoder()
    oracle = hpack.Decoder()
    for _ in range(3):                              # and on every later block too
        again = oracle.decode(enc.encode(decoded))
        assert again == decoded
        assert [type(h).__name__ for h in again] == ["HeaderTuple", "NeverIndexedHeaderTuple",
                                                     "NeverIndexedHeaderTuple", "HeaderTuple"]
    assert [e for e in oracle.header_table.dynamic_entries] == [(b"x-plain", b"1")]


def test_sensitive_headers_stay_out_of_the_table_even_unmarked():
    enc = Encoder()
    oracle = hpack.Decoder()
    hs = [("authorization", "Basic dXNlcjpwYXNz"), ("proxy-authorization", "x"), ("cookie", "short=1"),
          ("cookie", "a-long-cookie=" + "z" * 40)]
    got = oracle.decode(enc.encode(hs))
    assert [type(h).__name__ for h in got] == ["NeverIndexedHeaderTuple"] * 3 + ["HeaderTuple"]
    assert list(oracle.header_table.dynamic_entries) == [(b"cookie", b"a-long-cookie=" + b"z" * 40)]


def test_mark_never_indexed_restores_the_mark_on_rebuilt_pairs():
    seen = {NeverIndexed("cookie", "a=1")}
    out = mark_never_indexed([("cookie", "a=1"), ("cookie", "b=2"), (":status", "200")], seen)
    assert [is_never_indexed(h) for h in out] == [True, False, False]


def test_encoder_takes_bytes_str_and_header_tuples():
    enc = Encoder()
    oracle = hpack.Decoder()
    hs = [(b":method", b"GET"), (":path", "/caf\u00e9"), hpack.HeaderTuple("x-a", "1"), ["x-list", "2"],
          ("content-length", 10)]
    assert oracle.decode(enc.encode(hs), raw=True) == [(b":method", b"GET"), (b":path", "/café".encode()),
                                                       (b"x-a", b"1"), (b"x-list", b"2"),
                                                       (b"content-length", b"10")]
    assert enc.encode({":status": "200"}) == b"\x88"
    assert oracle.decode(enc.encode([("x-none", None)])) == [("x-none", "None")]   # (str(), as the proxy did)
    with pytest.raises(ValueError):
        enc.encode([("a", "b", "c")])


# ------------------------------------------------------------- limits and malformed blocks

def test_header_list_limit():
    block = Encoder().encode([("x-a", "v" * 50), ("x-b", "w" * 50)])
    assert len(Decoder(max_header_list_size=200).decode(block)) == 2
    with pytest.raises(OversizedHeaderListError, match="field 2 .*larger than the limit, 150"):
        Decoder(max_header_list_size=150).decode(block)
    with pytest.raises(OversizedHeaderListError):   # indexed fields count too
        dec = Decoder(max_header_list_size=100)
        dec.decode(b"\x82" * 3)
        dec.decode(b"\x82" * 4)


def test_string_length_limit_is_checked_before_reading_the_string():
    # A length prefix of 10^6 octets with none of them there: refused on the length, not read.
    with pytest.raises(OversizedHeaderListError, match="value string of 1000000 octets is longer"):
        Decoder().decode(b"\x00\x01a" + encode_integer(1000000, 7))
    dec = Decoder(max_string_length=10)
    assert dec.decode(b"\x00\x01a\x0a" + b"x" * 10) == [("a", "x" * 10)]
    with pytest.raises(OversizedHeaderListError, match="value string of 11 octets"):
        dec.decode(b"\x00\x01a\x0b" + b"x" * 11)


@pytest.mark.parametrize("block, what", [
    (b"\x80", "index 0"),
    (b"\xff\x80\x01", "index 255 is past the tables"),
    (b"\xbe", "index 62 is past the tables: 61 static \\+ 0 dynamic"),
    (b"\x0f\x80\x01\x01x", "index 143 is past the tables"),
    (b"\x82\x20", "size update after a header field"),
    (b"\x00\x85\xff\xff", "name string of 5 octets runs 3 octets past the end"),
    (b"\x00\x01a", "ends before the value string"),
    (b"\x00\x01a\x05abc", "value string of 5 octets runs 2 octets past"),
    (b"\x00\x01a\x7f", "ends inside an integer"),
    (b"\xff", "ends inside an integer"),
    (b"\xff\xff\xff\xff\xff\xff\x01", "integer longer than 5 octets"),
    (b"\x00\x01a\x84\xff\xff\xff\xff", "EOS"),
    (b"\x00\x01a\x81\x00", "padded"),
    (b"\x00\x01a\x01\xff", "not UTF-8"),
    (b"\x40\x01a\x01\xff", "not UTF-8"),
])
def test_malformed_blocks_raise_one_error_naming_field_and_offset(block, what):
    with pytest.raises(HpackDecodingError, match=what) as info:
        Decoder().decode(block)
    assert "header block field" in str(info.value) and "at offset" in str(info.value)


def test_raw_mode_takes_octets_that_are_not_utf8():
    assert Decoder().decode(b"\x40\x01a\x01\xff", raw=True) == [(b"a", b"\xff")]


def test_decoded_lists_are_fresh_and_plain():
    dec = Decoder()
    first = dec.decode(b"\x82\x86")
    first.append(("x", "y"))
    assert dec.decode(b"\x82\x86") == [(":method", "GET"), (":scheme", "http")]
    assert all(type(h) is tuple for h in dec.decode(b"\x82\x86"))


# ------------------------------------------------------------- the block memos

def test_a_repeated_block_is_decoded_again_after_the_table_changed():
    dec = Decoder()
    dec.decode(b"\x40\x01a\x011")                    # a: 1 at index 62
    assert dec.decode(b"\xbe") == [("a", "1")]
    assert dec.decode(b"\xbe") == [("a", "1")]          # (memo)
    assert dec.decode(b"\xbe", raw=True) == [(b"a", b"1")]
    dec.decode(b"\x40\x01b\x012")                    # b: 2 is index 62 now
    assert dec.decode(b"\xbe") == [("b", "2")]
    dec.header_table_size = 0
    with pytest.raises(HpackDecodingError, match="index 62 is past"):
        dec.decode(b"\xbe")


def test_a_repeated_block_still_meets_a_lowered_limit():
    dec = Decoder()
    block = b"\x82\x86"
    assert len(dec.decode(block)) == 2 and len(dec.decode(block)) == 2
    dec.max_header_list_size = 40
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block)
    dec.max_header_list_size = 1 << 16
    version = dec.table_version
    dec.max_allowed_table_size = 8192                   # raised: no size update is due
    assert dec.table_version == version and len(dec.decode(block)) == 2
    dec.max_allowed_table_size = 0                      # below the table's size: one is (and blocks decode anew)
    assert dec.table_version != version
    with pytest.raises(HpackDecodingError, match="did not shrink"):
        dec.decode(block)
    assert dec.decode(b"\x20" + block) == [(":method", "GET"), (":scheme", "http")]


def test_repeated_lists_encode_alike_and_marks_are_not_mixed_up():
    enc, oracle = _oracle_pair()
    plain = [(":status", "200"), ("x-a", "1")]
    for _ in range(3):
        assert oracle.decode(enc.encode(list(plain))) == plain
    marked = [(":status", "200"), NeverIndexed("x-a", "1")]     # equal to `plain` as tuples
    got = oracle.decode(enc.encode(marked))
    assert got == plain and [type(h).__name__ for h in got] == ["HeaderTuple", "NeverIndexedHeaderTuple"]
    # A size change between two identical lists: the update is sent once, then the memo is right again.
    enc.header_table_size = 0
    oracle.max_allowed_table_size = 0
    first, second = enc.encode(plain), enc.encode(plain)
    assert first[0] == 0x20 and second[0] != 0x20
    assert oracle.decode(first) == plain and oracle.decode(second) == plain


def test_restore_table_lets_a_fresh_decoder_continue_mid_connection():
    """A rotated frame log saves each context's table (table_entries, header_table_size) at the top of the
    next file; a decoder restored from them decodes the blocks that refer to it, as the original does."""
    enc, dec = Encoder(), Decoder()
    for n in range(5):
        dec.decode(enc.encode([(":method", "GET"), (":path", f"/p{n}"), ("x-big", "v" * 40 * n)]))
    block = enc.encode([(":method", "GET"), (":path", "/p4"), ("x-big", "v" * 160)])   # indexed references
    fresh = Decoder()
    fresh.restore_table(dec.table_entries, dec.header_table_size)
    assert fresh.table_entries == dec.table_entries and fresh.table_size == dec.table_size
    assert fresh.decode(block) == dec.decode(block) == [(":method", "GET"), (":path", "/p4"), ("x-big", "v" * 160)]
    # A smaller maximum keeps only the newest entries that fit, as inserting them would.
    small = Decoder()
    small.restore_table(dec.table_entries, 250)
    assert small.table_size <= 250 and small.table_entries == dec.table_entries[:len(small.table_entries)]
    assert small.header_table_size == 250
    with pytest.raises(HpackDecodingError, match="past the tables"):
        small.decode(bytes([0x80 | (61 + len(dec.table_entries))]))
