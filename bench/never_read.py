"""A client that reads nothing while the origin sends 1 GB through h2proxy: how much memory does the proxy take?

    .venv/bin/python bench/never_read.py                 # 1 GiB, 30 s without reading, then read it all
    .venv/bin/python bench/never_read.py --stall 10 --size 268435456

The origin is nghttpd serving a sparse file of ``--size`` bytes. The client opens its
HTTP/2 windows to 2^31-1 (so only TCP and the proxy's backpressure hold the data back),
asks for the file and reads nothing for ``--stall`` seconds, then reads all of it. The
proxy's RSS (/proc/PID/status VmRSS) is sampled every 50 ms in both phases; the verdict
is the peak over the baseline taken before the request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PREFACE, frame, require, start_h2proxy, start_nghttpd  # noqa: E402

MiB = 2 ** 20


def vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = vmrss(pid)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, vmrss(self.pid))

    def stop(self) -> int:
        self.halt.set()
        self.join(2)
        return self.peak


async def client(port: int, size: int, stall: float, pid: int) -> dict:
    from framecodec import hpack
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 20)
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                    (":path", "/big.bin")])
    writer.write(PREFACE + frame(0x4, 0, 0, b"\x00\x04\x7f\xff\xff\xff")
                 + frame(0x8, 0, 0, (2 ** 31 - 1 - 65535).to_bytes(4, "big")))
    # The handshake is read (the server's SETTINGS acknowledged: settings_ack_timeout would close a
    # client that never does), then nothing more until the stall is over.
    head = await asyncio.wait_for(reader.readexactly(9), 10)
    assert head[3] == 0x4, head
    await reader.readexactly(int.from_bytes(head[:3], "big"))
    writer.write(frame(0x4, 1, 0) + frame(0x1, 0x5, 1, block))
    base = vmrss(pid)
    sampler = Sampler(pid)
    sampler.start()
    t0 = time.monotonic()
    await asyncio.sleep(stall)
    stall_peak = sampler.peak
    got = 0
    buf = bytearray()
    t1 = time.monotonic()
    done = False
    while not done:
        data = await asyncio.wait_for(reader.read(1 << 20), 30)
        if not data:
            raise ConnectionError(f"closed after {got} bytes")
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            if ftype == 0x4 and not flags & 1:
                writer.write(frame(0x4, 1, 0))
            if ftype == 0x0:
                got += length
                if flags & 1:
                    done = True
            if ftype in (0x3, 0x7):
                raise ConnectionError(f"frame type {ftype} after {got} bytes")
            del buf[:9 + length]
    t2 = time.monotonic()
    peak = sampler.stop()
    writer.close()
    return {"size": size, "received": got, "stall_seconds": stall, "baseline_rss": base,
            "stall_peak_rss": stall_peak, "peak_rss": peak, "read_seconds": t2 - t1,
            "mib_per_s": got / MiB / (t2 - t1), "total_seconds": t2 - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2 ** 30)
    ap.add_argument("--stall", type=float, default=30.0)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    require("nghttpd")
    work = Path(tempfile.mkdtemp(prefix="h2proxy-never-read-"))
    services = []
    try:
        root = work / "root"
        root.mkdir()
        with open(root / "big.bin", "wb") as f:
            f.truncate(args.size)           # sparse: no disk used
        origin = start_nghttpd(root, work)
        services.append(origin)
        px = start_h2proxy(f"h2c://127.0.0.1:{origin.port}", work)
        services.append(px)
        time.sleep(0.5)
        out = asyncio.run(client(px.port, args.size, args.stall, px.proc.pid))
    finally:
        for svc in reversed(services):
            svc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{out['size'] / MiB:,.0f} MiB requested; the client read nothing for {out['stall_seconds']:g} s: "
          f"proxy RSS {out['baseline_rss'] / MiB:.1f} MiB before, peak {out['stall_peak_rss'] / MiB:.1f} MiB "
          f"({(out['stall_peak_rss'] - out['baseline_rss']) / MiB:+.1f} MiB)")
    print(f"then read all {out['received'] / MiB:,.0f} MiB in {out['read_seconds']:.1f} s "
          f"({out['mib_per_s']:,.0f} MiB/s): peak RSS over the whole run {out['peak_rss'] / MiB:.1f} MiB "
          f"({(out['peak_rss'] - out['baseline_rss']) / MiB:+.1f} MiB over the baseline)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if out["received"] == args.size else 1


if __name__ == "__main__":
    sys.exit(main())
