"""What the proxy writes over TLS: one batch of frames is one buffer for the TLS layer, so DATA frames
fill whole records instead of each leaving a 9-byte record of its own.

The client here does its own TLS (ssl.MemoryBIO) under an h2 connection, so that it sees the records as
they came off the socket: their lengths are in the clear (RFC 8446 section 5.1).
"""
from __future__ import annotations

import asyncio
import hashlib
import ssl

import h2.config
import h2.connection
import h2.events
import h2.settings

#: TLS 1.3 application data record length for 9 bytes of frame: 9, the inner content type, a 16-byte tag.
NINE_BYTE_RECORD = 9 + 1 + 16


async def test_16k_data_frames_are_not_split_into_records_of_their_own(nghttpd, proxy_factory, pki, docroot):
    origin = nghttpd()
    px = await proxy_factory(origin.url, listen="https://127.0.0.1:0", cert=pki["cert"], key=pki["key"])
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.set_alpn_protocols(["h2"])
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
    raw = b""               # bytes off the socket, not yet cut into records
    records = []            # (content type, length) of every record the proxy sent

    async def pump() -> None:
        nonlocal raw
        if outgoing.pending:
            writer.write(outgoing.read())
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, "the proxy closed the connection"
        raw += chunk
        while len(raw) >= 5 and len(raw) >= 5 + int.from_bytes(raw[3:5], "big"):
            n = int.from_bytes(raw[3:5], "big")
            records.append((raw[0], n))
            raw = raw[5 + n:]
        incoming.write(chunk)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await pump()
    assert tls.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # Windows large enough for the whole body: the proxy then reads and writes it in large batches.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
    conn.increment_flow_control_window(1 << 24)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"),
                            (":path", "/1m.bin")], end_stream=True)
    tls.write(conn.data_to_send())
    body, ended = b"", False
    after_handshake = len(records)
    while not ended:
        await pump()
        while True:
            try:
                data = tls.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
        out = conn.data_to_send()
        if out:
            tls.write(out)
    writer.close()
    assert hashlib.sha256(body).digest() == hashlib.sha256((docroot / "1m.bin").read_bytes()).digest()
    data_records = [n for kind, n in records[after_handshake:] if kind == 23]
    # 64 DATA frames of 16,384 bytes went by. Each alone makes a 16 KiB record and a 9-byte one; batched,
    # records are full, and a 9-byte record stands alone only where a read brought a single DATA frame
    # (or for the SETTINGS ACKs): a few at most.
    assert sum(1 for n in data_records if n >= 16384) >= 60
    assert sum(1 for n in data_records if n == NINE_BYTE_RECORD) < 16, data_records


def test_a_large_batch_is_regrouped_at_record_boundaries_without_copying_its_bulk():
    """The buffers handed to the TLS layer for a large batch: the same bytes in the same order, every
    buffer but the last a whole number of 16 KiB records, and each long buffer's middle a view of it."""
    import random

    from proxy.server import _record_aligned

    rnd = random.Random(16)
    for _ in range(500):
        bufs = [bytes([rnd.randrange(256)]) * rnd.choice([5, 9, 100, 16393, 70000, 200000])
                for _ in range(rnd.randrange(2, 8))]
        if max(map(len, bufs)) < 65536:
            bufs.append(b"\x00" * 65536)
        out = _record_aligned(bufs)
        assert b"".join(out) == b"".join(bufs)
        assert all(len(buf) % 16384 == 0 and len(buf) for buf in out[:-1]), [len(buf) for buf in out]
        longest = max(bufs, key=len)
        assert any(isinstance(buf, memoryview) and buf.obj is longest and len(buf) >= len(longest) - 32768
                   for buf in out)
