"""A frame log as a pcapng capture that Wireshark and tshark dissect as HTTP/2.

Each leg of each connection becomes a TCP conversation over IPv4 in Ethernet
frames: the client leg from the client's address to the proxy's listening
address, the upstream leg from the proxy to the upstream server (made-up
127.0.0.x addresses and ports where the log has none). Every preface, frame and
raw record is one TCP segment (split only above 65000 bytes) carrying exactly
the record's bytes, with a packet comment ``seq=N conn=C leg=L dir=D`` linking it
to its record. Sequence and acknowledgement numbers are consistent, each
conversation starts with SYN, SYN-ACK, ACK and ends with FIN exchanges when the
connection closed, and the IPv4 and TCP checksums are correct.

The bytes of TLS legs are the decrypted HTTP/2 frames, so the capture shows
plain HTTP/2 whatever the original transport was.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import struct
from typing import Dict, Iterable, List, Optional, Tuple

from .. import __version__
from .decode import unb64
from .logfile import BYTE_RECORDS

__all__ = ["write_pcapng", "tshark_command"]

LINKTYPE_ETHERNET = 1
_MAX_SEGMENT = 65000

_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _parse_addr(text) -> Optional[Tuple[str, int]]:
    """("1.2.3.4", port) from "1.2.3.4:port", or None when it is not an IPv4 address with a port."""
    if not isinstance(text, str) or ":" not in text:
        return None
    host, _, port = text.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        p = int(port)
    except ValueError:
        return None
    if ip.version != 4 or not 0 < p < 65536:
        return None
    return str(ip), p


def _port_of(text) -> Optional[int]:
    if not isinstance(text, str) or ":" not in text:
        return None
    try:
        p = int(text.rpartition(":")[2])
    except ValueError:
        return None
    return p if 0 < p < 65536 else None


class _Flow:
    """One TCP conversation: the initiator (client side) and the responder."""

    def __init__(self, src: Tuple[str, int], dst: Tuple[str, int], index: int) -> None:
        self.ends = (src, dst)
        self.macs = (bytes([2, 0, 0, 0, index >> 8 & 0xFF, (2 * index) & 0xFF]),
                     bytes([2, 0, 0, 1, index >> 8 & 0xFF, (2 * index + 1) & 0xFF]))
        self.isn = (0x10000000 + index * 7919, 0x60000000 + index * 104729)
        self.next = [self.isn[0] + 1, self.isn[1] + 1]
        self.started = False
        self.finished = False


class _Writer:
    def __init__(self, fh) -> None:
        self.fh = fh
        self.ip_id = 1
        self.packets = 0

    def _block(self, btype: int, body: bytes) -> None:
        total = 12 + len(body)
        self.fh.write(struct.pack("<II", btype, total) + body + struct.pack("<I", total))

    @staticmethod
    def _options(opts: List[Tuple[int, bytes]]) -> bytes:
        out = b""
        for code, value in opts:
            pad = (-len(value)) % 4
            out += struct.pack("<HH", code, len(value)) + value + b"\0" * pad
        return out + struct.pack("<HH", 0, 0)

    def header(self) -> None:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + self._options(
            [(4, f"h2proxy {__version__} (log pcap)".encode())])
        self._block(0x0A0D0D0A, shb)
        idb = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) + self._options(
            [(2, b"h2proxy-frame-log"), (9, b"\x06")])
        self._block(0x00000001, idb)

    def packet(self, ts: float, flow: _Flow, from_initiator: bool, flags: int, payload: bytes,
               comment: Optional[str]) -> None:
        i = 0 if from_initiator else 1
        (sip, sport), (dip, dport) = flow.ends if from_initiator else flow.ends[::-1]
        seq = flow.next[i]
        ack = flow.next[1 - i] if flags & _ACK else 0
        tcp_len = 20 + len(payload)
        src = ipaddress.IPv4Address(sip).packed
        dst = ipaddress.IPv4Address(dip).packed
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                          65535, 0, 0) + payload
        pseudo = src + dst + struct.pack("!BBH", 0, 6, tcp_len)
        csum = _checksum(pseudo + tcp)
        tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, self.ip_id & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        self.ip_id += 1
        eth = (flow.macs[1 - i] + flow.macs[i]) + b"\x08\x00"
        data = eth + ip + tcp
        advance = len(payload) + (1 if flags & (_SYN | _FIN) else 0)
        flow.next[i] = (seq + advance) & 0xFFFFFFFF
        usec = int(round(max(ts, 0.0) * 1_000_000))
        opts = self._options([(1, comment.encode("utf-8"))]) if comment else b""
        body = struct.pack("<IIIII", 0, usec >> 32, usec & 0xFFFFFFFF, len(data), len(data))
        body += data + b"\0" * ((-len(data)) % 4) + opts
        self._block(0x00000006, body)
        self.packets += 1


def _handshake(w: _Writer, flow: _Flow, ts: float) -> None:
    flow.started = True
    w.packet(ts, flow, True, _SYN, b"", None)
    w.packet(ts, flow, False, _SYN | _ACK, b"", None)
    w.packet(ts, flow, True, _ACK, b"", None)


def _teardown(w: _Writer, flow: _Flow, ts: float) -> None:
    flow.finished = True
    w.packet(ts, flow, True, _FIN | _ACK, b"", None)
    w.packet(ts, flow, False, _FIN | _ACK, b"", None)
    w.packet(ts, flow, True, _ACK, b"", None)


def write_pcapng(records: Iterable[dict], out) -> dict:
    """Write the capture to ``out`` (a path, or a binary file object); returns {"packets", "ports"
    (server-side ports to decode as HTTP/2), "flows"}. Reads the records once, in order."""
    # (Keyed by the records' connection id: None for a record that lacks one.)
    flows: Dict[Tuple[Optional[int], str], _Flow] = {}
    infos: Dict[Optional[int], dict] = {}
    used = set()
    server_ports = set()

    def flow_for(conn: Optional[int], leg: str) -> _Flow:
        key = (conn, leg)
        f = flows.get(key)
        if f is not None:
            return f
        info = infos.get(conn) or {}
        n = len(flows) + 1
        if leg == "client":
            src = _parse_addr(info.get("client_addr")) or \
                ("127.0.0.2", _port_of(info.get("client_addr")) or 40000 + (n % 20000))
            dst = _parse_addr(info.get("listen_addr")) or ("127.0.0.1", _port_of(info.get("listen_addr")) or 18080)
        else:
            up = info.get("upstream_addr")
            src = ("127.0.0.3", 30000 + (n % 20000))
            dst = _parse_addr(up) or ("127.0.0.4", _port_of(up) or 19090)
        while (src, dst) in used:
            src = (src[0], 1024 + (src[1] + 1 - 1024) % 64000)
        used.add((src, dst))
        server_ports.add(dst[1])
        f = flows[key] = _Flow(src, dst, n)
        return f

    with (open(out, "wb") if isinstance(out, (str, bytes, os.PathLike)) else contextlib.nullcontext(out)) as fh:
        w = _Writer(fh)
        w.header()
        for rec in records:
            kind = rec.get("record")
            conn = rec.get("conn")
            ts = rec.get("ts") or 0.0
            if kind in ("connection_opened", "connection_state"):
                infos[conn] = dict(rec.get("info") or {})
                _handshake(w, flow_for(conn, "client"), ts)
            elif kind in BYTE_RECORDS:
                leg = rec.get("leg")
                if leg not in ("client", "upstream") or rec.get("dir") not in ("recv", "send"):
                    continue
                flow = flow_for(conn, leg)
                if not flow.started:
                    _handshake(w, flow, ts)
                data = unb64(rec.get("wire"))
                from_initiator = (leg == "client") == (rec.get("dir") == "recv")
                comment = f"seq={rec.get('seq')} conn={conn} leg={leg} dir={rec.get('dir')}"
                if kind == "frame":
                    comment += f" type={rec.get('type')} stream={rec.get('stream')}"
                elif kind == "raw" and rec.get("note"):
                    comment += f" raw: {rec.get('note')}"
                if len(data) <= _MAX_SEGMENT:
                    w.packet(ts, flow, from_initiator, _ACK | _PSH, data, comment)
                else:
                    parts = (len(data) + _MAX_SEGMENT - 1) // _MAX_SEGMENT
                    for i in range(parts):
                        chunk = data[i * _MAX_SEGMENT:(i + 1) * _MAX_SEGMENT]
                        w.packet(ts, flow, from_initiator, _ACK | (_PSH if i == parts - 1 else 0), chunk,
                                 f"{comment} (part {i + 1}/{parts})")
            elif kind == "connection_closed":
                for leg in ("client", "upstream"):
                    f = flows.get((conn, leg))
                    if f is not None and f.started and not f.finished:
                        _teardown(w, f, ts)
                infos.pop(conn, None)
    return {"packets": w.packets, "ports": sorted(server_ports),
            "flows": {f"{c}/{leg}": f"{f.ends[0][0]}:{f.ends[0][1]} -> {f.ends[1][0]}:{f.ends[1][1]}"
                      for (c, leg), f in flows.items()}}


def tshark_command(out_path: str, ports) -> str:
    """The tshark command line that dissects the capture as HTTP/2."""
    decode = " ".join(f"-d tcp.port=={p},http2" for p in ports)
    return f"tshark -r {out_path} {decode} -V".replace("  ", " ")
