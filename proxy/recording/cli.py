"""``h2proxy log ...``: work on recorded frame logs (text, pcap, har, stats, replay, web)."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import List, Optional

from ..printable import printable

__all__ = ["log_main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="h2proxy log", description="Work on frame logs written with --record FILE "
                                                               "(format: docs/frame-log.md).")
    sub = p.add_subparsers(dest="cmd", metavar="{text,pcap,har,stats,replay,web}")

    t = sub.add_parser("text", help="print the log in the layout of nghttp -v")
    t.add_argument("file", help="the frame log ('-': standard input)")
    colour = t.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="color", action="store_true", default=None, help="always use colour")
    colour.add_argument("--no-color", dest="color", action="store_false", help="never use colour")
    t.add_argument("-v", "--verbose", action="count", default=0, help="-vv: hex dumps and record numbers")
    t.add_argument("--conn", type=int, action="append", help="only this connection (repeatable)")
    t.add_argument("--stream", type=int, action="append", help="only frames of this stream (repeatable)")
    t.add_argument("--types", metavar="T,T", help="only these frame types, e.g. HEADERS,RST_STREAM")
    t.add_argument("--hexdump-limit", type=int, default=4096, metavar="N",
                   help="bytes of each payload shown by -vv (default 4096; 0: all)")

    c = sub.add_parser("pcap", help="write a pcapng capture that Wireshark/tshark dissect as HTTP/2")
    c.add_argument("file")
    c.add_argument("-o", "--output", required=True, metavar="OUT.pcapng")

    h = sub.add_parser("har", help="write HAR 1.2 (one entry per stream)")
    h.add_argument("file")
    h.add_argument("-o", "--output", required=True, metavar="OUT.har")
    h.add_argument("--leg", choices=["client", "upstream"], default="client",
                   help="whose view: what the client saw (default) or what went to and came from the upstream")
    h.add_argument("--conn", type=int, help="only this connection")

    s = sub.add_parser("stats", help="frames, bytes, resets, GOAWAYs, SETTINGS and PING round trips")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print JSON")

    w = sub.add_parser("web", help="show the log in the web view (docs/web.md), no proxy needed")
    w.add_argument("file")
    w.add_argument("--listen", default="127.0.0.1:8081", metavar="HOST:PORT",
                   help="where to serve the page (loopback only; default 127.0.0.1:8081, port 0: any)")
    w.add_argument("--token", metavar="TOKEN", help="the page's token (default: generated, printed in the URL)")
    w.add_argument("--stall", type=float, default=500.0, metavar="MS",
                   help="a window held at zero this long counts as a stall (default 500)")

    r = sub.add_parser("replay", help="replay a recorded client against a server, or a recorded server to clients")
    r.add_argument("file")
    r.add_argument("--as", dest="role", choices=["client", "server"], required=True)
    r.add_argument("--to", metavar="URL", help="--as client: h2c://HOST:PORT or https://HOST:PORT")
    r.add_argument("--listen", metavar="URL", help="--as server: h2c://HOST:PORT or https://HOST:PORT (port 0: any)")
    r.add_argument("--conn", type=int, help="the recorded connection to replay (default: the first)")
    r.add_argument("--count", type=int, default=1, help="--as server: connections to serve (default 1)")
    r.add_argument("--insecure", action="store_true", help="--as client over https: do not verify the certificate")
    r.add_argument("--cacert", metavar="FILE", help="--as client over https: CA bundle to verify with")
    r.add_argument("--cert", metavar="FILE", help="--as server over https: certificate (default: a throwaway one)")
    r.add_argument("--key", metavar="FILE", help="--as server over https: private key")
    r.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole replay (default 10)")
    r.add_argument("--wait", type=float, default=2.0,
                   help="seconds to wait for the peer's frames that preceded a recorded frame (default 2)")
    r.add_argument("--compare-with", choices=["client", "upstream"], default="client",
                   help="--as client: compare with what the recorded client got (default) or with what the "
                        "upstream sent the proxy")
    r.add_argument("--ignore-header", action="append", default=[], metavar="NAME",
                   help="--as client: a response header not to compare (date-like ones never are)")
    return p


def _type_list(text: Optional[str]):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _cmd_text(args, records) -> int:
    from .decode import frame_type_byte, parse_header, unb64
    from .text import Renderer, use_color

    verbosity = 2 if args.verbose >= 2 else 1
    color = use_color(sys.stdout) if args.color is None else args.color
    renderer = Renderer(color=color, verbosity=verbosity, hexdump_limit=args.hexdump_limit or None)
    types = None
    if args.types:
        types = set()
        for name in _type_list(args.types):
            tb = frame_type_byte(name)
            if tb is None:
                print(f"h2proxy log text: unknown frame type {name!r}", file=sys.stderr)
                return 2
            types.add(tb)
    out = sys.stdout
    for rec in records:
        if args.conn and rec.get("conn") not in args.conn and rec.get("record") not in ("header", "truncated"):
            continue
        if (args.stream or types) and rec.get("record") in ("preface", "raw"):
            continue
        if rec.get("record") == "frame":
            ftype = rec.get("type_byte")
            if ftype is None:
                ftype = parse_header(unb64(rec.get("wire")))[0]
            if types is not None and ftype not in types:
                continue
            if args.stream and rec.get("stream") not in args.stream:
                continue
        lines = renderer.render(rec)
        if lines:
            out.write("\n".join(lines) + "\n")
    out.flush()
    return 0


def _cmd_pcap(args, records) -> int:
    from .pcap import tshark_command, write_pcapng

    result = write_pcapng(records, args.output)
    print(f"wrote {args.output}: {result['packets']} packets in {len(result['flows'])} TCP conversations")
    for flow, ends in result["flows"].items():
        conn, leg = flow.split("/")
        print(f"  connection {conn}, {leg} leg: {ends}")
    print("decode it as HTTP/2 with:")
    print(f"  {tshark_command(args.output, result['ports'])}")
    print("(in Wireshark: Decode As... TCP port " + ", ".join(str(p) for p in result["ports"]) + " -> HTTP2)")
    return 0


def _cmd_har(args, records) -> int:
    from .har import build_har

    har = build_har(records, leg=args.leg, conn=args.conn)
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(har, fh, indent=2)
    print(f"wrote {args.output}: {len(har['log']['entries'])} entries")
    return 0


def _cmd_stats(args, records) -> int:
    from .stats import compute_stats, format_stats

    stats = compute_stats(records)
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        print("\n".join(printable(line) for line in format_stats(stats).split("\n")))
    return 0


def _cmd_replay(args, records) -> int:
    from .replay import replay_client, replay_server

    if args.role == "client":
        if not args.to:
            print("h2proxy log replay: --as client needs --to URL", file=sys.stderr)
            return 2
        coro = replay_client(records, args.to, conn=args.conn, insecure=args.insecure, cacert=args.cacert,
                             timeout=args.timeout, wait=args.wait, compare_leg=args.compare_with,
                             ignore_headers=args.ignore_header)
    else:
        if not args.listen:
            print("h2proxy log replay: --as server needs --listen URL", file=sys.stderr)
            return 2
        coro = replay_server(records, args.listen, conn=args.conn, count=max(1, args.count), cert=args.cert,
                             key=args.key, timeout=args.timeout, wait=args.wait)
    return asyncio.run(coro)


def _cmd_web(args, records) -> int:
    import asyncio
    from ..server import ConfigError
    from ..web.app import serve_log
    try:
        return asyncio.run(serve_log(args.file, args.listen, args.token, args.stall, records=records))
    except ConfigError as exc:
        print(f"h2proxy log web: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def log_main(argv: List[str]) -> int:
    """``h2proxy log <cmd> ...``; returns the exit code (2 on errors)."""
    from .logfile import LogError, read_records
    from .replay import ReplayError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.cmd:
        parser.print_help()
        return 2
    try:
        records = read_records(args.file)
        handler = {"text": _cmd_text, "pcap": _cmd_pcap, "har": _cmd_har, "stats": _cmd_stats,
                   "replay": _cmd_replay, "web": _cmd_web}[args.cmd]
        return handler(args, records)
    except (LogError, ReplayError, ValueError) as exc:
        print(f"h2proxy log {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        try:
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except Exception:
            pass
        return 0
    except OSError as exc:
        print(f"h2proxy log {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main() -> None:  # pragma: no cover - python -m proxy.recording
    sys.exit(log_main(sys.argv[1:]))
