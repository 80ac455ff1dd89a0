"""Build the seed corpus for the fuzz harnesses.

    .venv/bin/python bench/fuzz/make_corpus.py OUT_DIR [--log frames.jsonl ...] [--no-synth]

Writes two directories:

* ``OUT_DIR/frames/``: runs of frames, for ``fuzz_codec.py`` and ``fuzz_reader.py``: every
  frame of the http2jp corpus (``tests/data/http2-frame-test-case``, the hex ``wire``
  decoded), the frames each side sent in conversations made with the ``h2`` library, and the
  bytes each side sent on each connection of the frame logs given (``--log``, the JSON Lines
  logs ``h2proxy --record`` writes: base64 ``wire`` of ``preface``/``frame``/``raw`` records,
  ``dir`` ``recv``; see docs/frame-log.md), cut to 64 KiB;
* ``OUT_DIR/relay/``: conversations for ``fuzz_relay.py``, in its input format (a config byte,
  then records ``op, length (2 bytes), bytes`` with the direction in ``op``; see
  ``fuzz_relay.py``).

File names are content hashes, so running it twice into one directory adds nothing twice.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HTTP2JP = ROOT / "tests" / "data" / "http2-frame-test-case"
MAX_SEED = 1 << 16
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Conversation = List[Tuple[int, bytes]]   # (direction: 0 client->server, 1 server->client, bytes)


def http2jp_frames(corpus: Path = HTTP2JP) -> List[bytes]:
    """The ``wire`` of every case of the http2jp corpus (normal and error cases)."""
    out = []
    for path in sorted(corpus.glob("*/*.json")):
        try:
            out.append(bytes.fromhex(json.loads(path.read_text())["wire"]))
        except (ValueError, KeyError):
            print(f"skipped {path}: no hex wire", file=sys.stderr)
    return out


def log_conversations(path: Path) -> List[Conversation]:
    """Per connection of a frame log, the bytes the proxy read from each side, in order."""
    convs: Dict[int, Conversation] = {}
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("record") not in ("preface", "frame", "raw"):
                continue
            if rec.get("dir") != "recv" or not rec.get("wire"):
                continue
            try:
                wire = base64.b64decode(rec["wire"])
            except ValueError:
                continue
            d = 0 if rec.get("leg") == "client" else 1
            convs.setdefault(rec.get("conn", 0), []).append((d, wire))
    return list(convs.values())


class _Talk:
    """One scripted conversation between an h2 client and an h2 server (``variant`` picks the script)."""

    def __init__(self, variant: int) -> None:
        import h2.config
        import h2.connection
        self.variant = variant
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.conv: Conversation = []

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to send (at most 10 rounds)."""
        import h2.events
        client, server = self.client, self.server
        for _ in range(10):
            moved = False
            data = client.data_to_send()
            if data:
                self.conv.append((0, data))
                moved = True
                for ev in server.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.answer(ev.stream_id)
                    elif isinstance(ev, h2.events.DataReceived):
                        server.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            data = server.data_to_send()
            if data:
                self.conv.append((1, data))
                moved = True
                for ev in client.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if not moved:
                return

    def answer(self, sid: int) -> None:
        """The server's side of one request: maybe a push, a reset, or a response with a body."""
        server, variant = self.server, self.variant
        if variant == 3 and server.remote_settings.enable_push:
            pid = server.get_next_available_stream_id()
            server.push_stream(sid, pid, [(":method", "GET"), (":scheme", "http"),
                                          (":authority", "example"), (":path", "/p.css")])
            server.send_headers(pid, [(":status", "200")], end_stream=False)
            server.send_data(pid, b"pushed" * 10, end_stream=True)
        if variant == 4 and sid == 3:
            server.reset_stream(sid, 8)
            return
        server.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"),
                                  ("x-variant", str(variant))])
        body = b"b" * (100 if variant != 2 else 40000)
        body = body[:server.local_flow_control_window(sid)]
        step = server.max_outbound_frame_size
        for pos in range(0, len(body), step):
            last = pos + step >= len(body)
            server.send_data(sid, body[pos:pos + step], end_stream=last and variant != 5)
        if variant == 5:
            server.send_headers(sid, [("x-trailer", "t")], end_stream=True)

    def run(self) -> Conversation:
        client, variant = self.client, self.variant
        client.initiate_connection()
        self.server.initiate_connection()
        self.pump()
        for i in range(3 if variant != 1 else 1):
            sid = client.get_next_available_stream_id()
            headers = [(":method", "POST" if variant == 1 else "GET"), (":scheme", "http"),
                       (":authority", "example"), (":path", f"/r{i}"), ("user-agent", "fuzz-seed"),
                       ("x-big", "v" * (20000 if variant == 2 and i == 0 else 10))]
            client.send_headers(sid, headers, end_stream=variant != 1)
            if variant == 1:
                client.send_data(sid, b"upload" * 500, end_stream=True)
            if variant == 0:
                client.ping(b"12345678")
                client.increment_flow_control_window(1000)
                client.prioritize(sid, weight=42)
            self.pump()
        if variant == 4:
            client.close_connection()
            self.pump()
        return self.conv


def synth_conversations() -> List[Conversation]:
    """Conversations between an h2 client and an h2 server: requests, bodies, trailers, push, resets."""
    try:
        import h2.connection  # noqa: F401  (only to know whether the h2 library is there)
    except ImportError:
        return []
    return [_Talk(variant).run() for variant in range(6)]


def relay_input(conv: Conversation, config: int) -> bytes:
    """A conversation in fuzz_relay.py's format (records of at most 65535 bytes)."""
    out = bytearray([config])
    for d, data in conv:
        for pos in range(0, len(data), 0xFFFF):
            chunk = data[pos:pos + 0xFFFF]
            out += bytes([d]) + len(chunk).to_bytes(2, "big") + chunk
    return bytes(out[:MAX_SEED])


def write(directory: Path, data: bytes) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(data).hexdigest()[:16]
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def build(out: Path, logs=(), synth: bool = True, corpus: Optional[Path] = HTTP2JP) -> Dict[str, int]:
    """Write the seeds; ``corpus=None`` leaves the http2jp frames out, a missing ``corpus`` is an error."""
    frames_dir, relay_dir = out / "frames", out / "relay"
    counts = {"frames": 0, "relay": 0}
    if corpus is not None and not corpus.is_dir():
        # A seed corpus silently without the http2jp frames would fuzz less and still pass.
        raise FileNotFoundError(f"the http2jp corpus is missing: expected it at {corpus}")
    jp = http2jp_frames(corpus) if corpus is not None else []
    for wire in jp:
        counts["frames"] += write(frames_dir, wire)
    if jp:
        counts["frames"] += write(frames_dir, b"".join(jp))
    convs: List[Conversation] = synth_conversations() if synth else []
    for path in logs:
        convs += log_conversations(Path(path))
    for conv in convs:
        for d in (0, 1):
            data = b"".join(b for dd, b in conv if dd == d)
            if d == 0 and data.startswith(PREFACE):
                data = data[len(PREFACE):]
            if data:
                counts["frames"] += write(frames_dir, data[:MAX_SEED])
        for config in (0x00, 0x01, 0x0A):   # transparent, strict, hooks (see fuzz_relay.CONFIGS)
            counts["relay"] += write(relay_dir, relay_input(conv, config))
    # The single http2jp frames as the client's and the server's next frame after a valid start.
    for wire in jp:
        for d in (0, 1):
            counts["relay"] += write(relay_dir, relay_input([(d, wire)], 0x10 | d))
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the corpus directory to fill (frames/ and relay/ in it)")
    ap.add_argument("--log", action="append", default=[], help="a JSON Lines frame log (repeatable)")
    ap.add_argument("--no-synth", action="store_true", help="leave out the h2-library conversations")
    ap.add_argument("--http2jp", type=Path, default=HTTP2JP, help=f"the http2jp corpus (default {HTTP2JP})")
    args = ap.parse_args(argv)
    counts = build(args.out, args.log, not args.no_synth, args.http2jp)
    print(f"{args.out}: {counts['frames']} new inputs in frames/, {counts['relay']} in relay/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
