"""``h2proxy log ...``: work on recorded frame logs (text, pcap, har, stats, replay, web)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import textwrap
from typing import IO, BinaryIO, Callable, Iterator, List, Optional, TextIO

from ..printable import printable

__all__ = ["log_main", "build_parser"]

_FILES_HELP = ("the frame log ('-': standard input; .gz and .zst are read compressed); several files, or the "
               "first file NAME-000001.jsonl of a rotated log, are read in order as one log")


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    """The text file to write (``-``: standard output, left open)."""
    if path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as fh:
        yield fh


@contextlib.contextmanager
def _binary_output(path: str) -> Iterator[BinaryIO]:
    """The binary file to write (``-``: standard output's bytes, left open)."""
    if path == "-":
        yield sys.stdout.buffer
        return
    with open(path, "wb") as fh:
        yield fh


def _note(args) -> IO:
    """Where to say what was written: standard error when the output itself goes to standard output."""
    return sys.stderr if getattr(args, "output", None) == "-" else sys.stdout


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="h2proxy log", description="Work on frame logs written with --record FILE "
                                                               "(format: docs/frame-log.md).")
    sub = p.add_subparsers(dest="cmd", metavar="{text,pcap,har,stats,replay,convert,web}")

    t = sub.add_parser("text", help="print the log in the layout of nghttp -v")
    t.add_argument("file", nargs="+", help=_FILES_HELP)
    t.add_argument("-o", "--output", default="-", metavar="OUT", help="write here ('-': standard output, the default)")
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
    c.add_argument("file", nargs="+", help=_FILES_HELP)
    c.add_argument("-o", "--output", required=True, metavar="OUT.pcapng", help="'-': standard output")

    h = sub.add_parser("har", help="write HAR 1.2 (one entry per stream)")
    h.add_argument("file", nargs="+", help=_FILES_HELP)
    h.add_argument("-o", "--output", required=True, metavar="OUT.har", help="'-': standard output")
    h.add_argument("--leg", choices=["client", "upstream"], default="client",
                   help="whose view: what the client saw (default) or what went to and came from the upstream")
    h.add_argument("--conn", type=int, help="only this connection")

    s = sub.add_parser("stats", help="frames, bytes, resets, GOAWAYs, SETTINGS and PING round trips")
    s.add_argument("file", nargs="+", help=_FILES_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("-o", "--output", default="-", metavar="OUT", help="write here ('-': standard output, the default)")

    v = sub.add_parser("convert", help="write the log of a recording journal (FILE.journal) the proxy's "
                                       "converter did not finish")
    v.add_argument("journal", metavar="FILE.journal")
    v.add_argument("-o", "--output", help="the log to write (default: the file the proxy was recording to)")
    v.add_argument("--keep", action="store_true", help="keep the journal afterwards")

    w = sub.add_parser("web", help="show the log in the web view (docs/web.md), no proxy needed")
    w.add_argument("file", nargs="+", help=_FILES_HELP)
    w.add_argument("--listen", default="127.0.0.1:8081", metavar="HOST:PORT",
                   help="where to serve the page (loopback only; default 127.0.0.1:8081, port 0: any)")
    w.add_argument("--token", metavar="TOKEN", help="the page's token (default: generated, printed in the URL)")
    w.add_argument("--stall", type=float, default=500.0, metavar="MS",
                   help="a window held at zero this long counts as a stall (default 500)")

    r = sub.add_parser("replay", help="replay a recorded client against a server, or a recorded server to clients")
    r.add_argument("file", nargs="+", help=_FILES_HELP)
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


def _cmd_text(args, open_log) -> int:
    from .decode import frame_name, frame_type_byte, parse_header, unb64
    from .reader import all_of, conn_filter, frame_type_filter
    from .text import Renderer, use_color

    verbosity = 2 if args.verbose >= 2 else 1
    types = None
    if args.types:
        types = set()
        for name in _type_list(args.types):
            tb = frame_type_byte(name)
            if tb is None:
                print(f"h2proxy log text: unknown frame type {name!r}", file=sys.stderr)
                return 2
            types.add(tb)
    # Byte tests that skip most lines of a large log unparsed when only a few connections or types are asked.
    line_filter = all_of(conn_filter(args.conn) if args.conn else None,
                         frame_type_filter([frame_name(t) for t in types]) if types else None)
    conns = set(args.conn) if args.conn else None
    with _output(args.output) as out:
        color = use_color(out) if args.color is None else args.color
        renderer = Renderer(color=color, verbosity=verbosity, hexdump_limit=args.hexdump_limit or None)
        # Lines are written in batches: one write per record cost more than rendering it.
        batch: List[str] = []
        # (The reader escapes the records, copying only those with something to escape.)
        for rec in open_log(line_filter=line_filter, printable=True):
            kind = rec.get("record")
            if conns and rec.get("conn") not in conns and kind not in ("header", "truncated"):
                continue
            if (args.stream or types) and kind in ("preface", "raw"):
                continue
            if kind == "frame":
                ftype = rec.get("type_byte")
                if ftype is None:
                    ftype = parse_header(unb64(rec.get("wire")))[0]
                if types is not None and ftype not in types:
                    continue
                if args.stream and rec.get("stream") not in args.stream:
                    continue
            lines = renderer.render(rec, escaped=True)
            if lines:
                batch.extend(lines)
                if len(batch) >= 4096:
                    batch.append("")
                    out.write("\n".join(batch))
                    batch.clear()
        if batch:
            batch.append("")
            out.write("\n".join(batch))
        out.flush()
    return 0


def _cmd_pcap(args, open_log) -> int:
    from .pcap import tshark_command, write_pcapng

    with _binary_output(args.output) as fh:
        result = write_pcapng(open_log(), fh)
    note = _note(args)
    print(f"wrote {args.output}: {result['packets']} packets in {len(result['flows'])} TCP conversations", file=note)
    for flow, ends in result["flows"].items():
        conn, leg = flow.split("/")
        print(f"  connection {conn}, {leg} leg: {ends}", file=note)
    print("decode it as HTTP/2 with:", file=note)
    print(f"  {tshark_command(args.output, result['ports'])}", file=note)
    print("(in Wireshark: Decode As... TCP port " + ", ".join(str(p) for p in result["ports"]) + " -> HTTP2)",
          file=note)
    return 0


def _cmd_har(args, open_log) -> int:
    from .har import write_har
    from .reader import conn_filter

    with _output(args.output) as fh:
        n = write_har(open_log(line_filter=conn_filter([args.conn]) if args.conn is not None else None), fh,
                      leg=args.leg, conn=args.conn)
    print(f"wrote {args.output}: {n} entries", file=_note(args))
    return 0


def _cmd_stats(args, open_log) -> int:
    from .stats import StatsBuilder, format_end

    builder = StatsBuilder()
    try:
        with _output(args.output) as out:
            if args.json:
                out.write('{\n  "connections": [')
            first = True

            def write(conns) -> None:
                nonlocal first
                for c in conns:
                    _write_stats_connection(out, c, args.json, first)
                    first = False
                    builder.release(c)

            for rec in open_log():
                if builder.add(rec):
                    write(builder.ready())
            write(builder.finish())
            totals = builder.totals()
            if args.json:
                out.write(("\n  " if not first else "") + "],\n" +
                          textwrap.indent(json.dumps(totals, indent=2)[2:], "  ") + "\n")
            else:
                for line in format_end(builder.connections, totals):
                    out.write(printable(line) + "\n")
    finally:
        builder.close()
    return 0


def _write_stats_connection(out: IO, c: dict, as_json: bool, first: bool) -> None:
    """One connection of ``log stats``: its lines, or its JSON object with the streams read from the spool."""
    from .stats import format_connection

    if not as_json:
        for line in format_connection(c):
            out.write(printable(line) + "\n")     # (header values and paths come from the peers)
        return
    streams = c["streams"]
    head, _, tail = json.dumps({**c, "streams": "@"}, indent=2, default=str).partition('"@"')
    out.write(("," if not first else "") + "\n" + textwrap.indent(head, "    ").rstrip(" "))
    out.write("{")
    for i, (leg, sts) in enumerate(streams.items()):
        out.write(("," if i else "") + f"\n        {json.dumps(leg)}: {{")
        for j, (sid, st) in enumerate(sts.items()):
            out.write(("," if j else "") + f"\n          {json.dumps(sid)}: " + json.dumps(st, default=str))
        out.write("\n        }")
    out.write(("\n      " if streams else "") + "}" + textwrap.indent(tail, "    ").strip(" ").rstrip())


def _replay_records(open_log, conn: Optional[int], leg: str, sides) -> List[dict]:
    """The records of the connection to replay: ``conn``, or the first with frames received on ``leg``.

    Only that connection is kept (and, until it is chosen, the records of the
    connections open at that point), and of its byte records only those of the
    (leg, direction) ``sides`` the replay reads; reading stops at its end.
    """
    from .reader import conn_filter
    from .replay import ReplayError

    held: dict = {}
    seen: List[int] = []
    chosen = conn
    for rec in open_log(line_filter=conn_filter([conn]) if conn is not None else None):
        c = rec.get("conn")
        kind = rec.get("record")
        if c is None or kind in ("header", "truncated"):
            continue
        if kind in ("preface", "frame", "raw") and (rec.get("leg"), rec.get("dir")) not in sides:
            continue
        if c not in held:
            if len(seen) < 50 and c not in seen:
                seen.append(c)
            if chosen is not None and c != chosen:
                continue
            held[c] = []
        held[c].append(rec)
        if chosen is None and kind == "frame" and rec.get("leg") == leg and rec.get("dir") == "recv":
            chosen = c
            held = {c: held[c]}
        if kind == "connection_closed":
            if c == chosen:
                break
            if chosen is None:
                del held[c]
    if conn is not None and conn not in held:
        raise ReplayError(f"connection {conn} is not in the log (there are: "
                          f"{', '.join(str(c) for c in seen) or 'none'})")
    if chosen is None:
        raise ReplayError(f"no connection in the log has frames received on the {leg} leg")
    return held[chosen]


def _cmd_replay(args, open_log) -> int:
    from .replay import replay_client, replay_server

    if args.role == "client":
        if not args.to:
            print("h2proxy log replay: --as client needs --to URL", file=sys.stderr)
            return 2
        records = _replay_records(open_log, args.conn, "client",
                                  {("client", "recv"), (args.compare_with, "send" if args.compare_with == "client"
                                                        else "recv")})
        coro = replay_client(records, args.to, conn=args.conn, insecure=args.insecure, cacert=args.cacert,
                             timeout=args.timeout, wait=args.wait, compare_leg=args.compare_with,
                             ignore_headers=args.ignore_header)
    else:
        if not args.listen:
            print("h2proxy log replay: --as server needs --listen URL", file=sys.stderr)
            return 2
        records = _replay_records(open_log, args.conn, "upstream", {("upstream", "recv"), ("upstream", "send")})
        coro = replay_server(records, args.listen, conn=args.conn, count=max(1, args.count), cert=args.cert,
                             key=args.key, timeout=args.timeout, wait=args.wait)
    return asyncio.run(coro)


def _cmd_web(args, open_log) -> int:
    from ..server import ConfigError
    from ..web.app import serve_log
    try:
        return asyncio.run(serve_log(", ".join(args.file), args.listen, args.token, args.stall,
                                     records=open_log()))
    except ConfigError as exc:
        print(f"h2proxy log web: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def log_main(argv: List[str]) -> int:
    """``h2proxy log <cmd> ...``; returns the exit code (2 on errors)."""
    from .reader import LogError, LogReader
    from .replay import ReplayError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.cmd:
        parser.print_help()
        return 2
    if args.cmd == "convert":
        from .journal import convert
        if not os.path.exists(args.journal):
            print(f"h2proxy log convert: {args.journal}: no such file", file=sys.stderr)
            return 2
        return convert(args.journal, args.output, keep=args.keep)
    try:
        def open_log(line_filter: Optional[Callable[[bytes], bool]] = None, printable: bool = False) -> LogReader:
            return LogReader(args.file, line_filter=line_filter, label=f"log {args.cmd}", printable=printable)

        handler = {"text": _cmd_text, "pcap": _cmd_pcap, "har": _cmd_har, "stats": _cmd_stats,
                   "replay": _cmd_replay, "web": _cmd_web}[args.cmd]
        # The objects that exist now (the modules imported so far) outlive the command: out of the garbage
        # collector's sight while it runs, its full passes (frequent while a large log is read: streams and
        # windows come and go by the hundred thousand) no longer walk them every time. Measured: `log stats`
        # of a 171 MB log took 3.04 s of CPU, 2.48 s with this. (Unfrozen after: a caller in the same
        # process, a test, gets its collector back as it was.)
        gc.freeze()
        try:
            return handler(args, open_log)
        finally:
            gc.unfreeze()
    except (LogError, ReplayError, ValueError) as exc:
        print(f"h2proxy log {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        try:
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
