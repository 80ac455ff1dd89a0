"""CPU per request of the sans-I/O core alone: no sockets, no event loop.

Feeds a ``Relay`` the bytes of many small request/response exchanges, in read
batches like those h2load ``-c 10 -m 10`` produces (ten requests, then ten
responses of HEADERS + 1 KiB DATA), and prints the CPU time per exchange. The
socket side of the proxy costs about as much as a bare byte relay; this is the
part on top of it, and the figure to watch while changing the core's hot path.

    .venv/bin/python bench/relay_core.py [--requests N] [--rounds R] [--record] [--hook | --headers-hook]
        [--fault RULE ...] [--push-never] [--profile OUT]

``--record`` adds a recording sink (built in a child process, as with
``--record FILE``) and ``--hook`` a header-rewriting hook (``--headers-hook``: the built-in
``headers`` hook setting one response header), to see what each costs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framecodec import frame as fc  # noqa: E402
from framecodec import hpack  # noqa: E402
from proxy.core.relay import Relay  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BATCH = 10


def _wire(*frames) -> bytes:
    return b"".join(f.serialize() for f in frames)


def exchanges(n: int):
    """Yield (client bytes, server bytes) per batch of BATCH exchanges, stream ids rising."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    first_req = enc_c.encode([(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1:8080"),
                              (":path", "/1k"), ("user-agent", "h2load nghttp2/1.52.0")])
    first_resp = enc_s.encode([(":status", "200"), ("server", "nghttpd nghttp2/1.52.0"),
                               ("content-length", "1024"), ("date", "Wed, 25 Nov 2026 07:00:00 GMT")])
    # Later blocks reference the dynamic table the first ones filled: encode once more for that form.
    req = enc_c.encode([(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1:8080"),
                        (":path", "/1k"), ("user-agent", "h2load nghttp2/1.52.0")])
    resp = enc_s.encode([(":status", "200"), ("server", "nghttpd nghttp2/1.52.0"),
                         ("content-length", "1024"), ("date", "Wed, 25 Nov 2026 07:00:00 GMT")])
    body = b"x" * 1024
    sid = 1
    for _ in range(n // BATCH):
        ids = range(sid, sid + 2 * BATCH, 2)
        sid += 2 * BATCH
        c = _wire(*(fc.HeadersFrame(i, data=first_req if i == 1 else req, flags=["END_HEADERS", "END_STREAM"])
                    for i in ids))
        s = b"".join(_wire(fc.HeadersFrame(i, data=first_resp if i == 1 else resp, flags=["END_HEADERS"]),
                           fc.DataFrame(i, data=body, flags=["END_STREAM"])) for i in ids)
        yield c, s


def run_once(n: int, sink=None, hooks=None) -> Tuple[float, float]:
    """Seconds of CPU per exchange: (the whole process, the relay's own thread)."""
    relay = Relay(1, hooks=hooks, sink=sink)
    settings = _wire(fc.SettingsFrame(0, settings={3: 100, 4: 1 << 30}))
    # (The client's as h2load's: push disabled.)
    client_settings = _wire(fc.SettingsFrame(0, settings={2: 0, 3: 100, 4: 1 << 30}))
    relay.receive(0, PREFACE + client_settings + _wire(fc.WindowUpdateFrame(0, window_increment=(1 << 31) - 1 - 65535)),
                  0.0)
    relay.receive(1, settings + _wire(fc.SettingsFrame(0, flags=["ACK"]),
                                      fc.WindowUpdateFrame(0, window_increment=(1 << 31) - 1 - 65535)), 0.0)
    relay.receive(0, _wire(fc.SettingsFrame(0, flags=["ACK"])), 0.0)
    relay.take_output(0)
    relay.take_output(1)
    batches = list(exchanges(n))
    receive, take = relay.receive, relay.take_output
    t0, th0 = time.process_time(), time.thread_time()
    now = 1.0
    for c, s in batches:
        receive(0, c, now)
        take(0)
        receive(1, s, now)
        take(1)
        now += 0.0001
    spent_thread = time.thread_time() - th0
    if sink is not None and hasattr(sink, "flush"):
        sink.flush()        # the feeder thread's pickling and piping count too
    spent = time.process_time() - t0
    if relay.closed or relay.streams:
        raise SystemExit(f"relay_core: the relay closed or kept streams: {relay.violations[:3]}")
    count = len(batches) * BATCH
    return spent / count, spent_thread / count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="with a recording sink (child process)")
    ap.add_argument("--hook", action="store_true", help="with bench/hooks_rewrite.py's header hook")
    ap.add_argument("--headers-hook", action="store_true",
                    help="with the built-in headers hook setting one response header")
    ap.add_argument("--fault", action="append", default=[], metavar="RULE",
                    help="with this fault rule (one-line form, repeatable), e.g. 'rst_stream path=/never/*'")
    ap.add_argument("--push-never", action="store_true",
                    help="with the built-in push hook, its rule on a path never requested")
    ap.add_argument("--profile", metavar="OUT", help="write a cProfile of one more round to OUT")
    a = ap.parse_args(argv)
    sink = hooks = None
    tmp = None
    if a.record:
        from proxy.recording.offload import ProcessRecorder
        tmp = tempfile.TemporaryDirectory()
        sink = ProcessRecorder(os.path.join(tmp.name, "frames.jsonl"))
    if a.hook:
        from proxy.hooks.chain import HookChain, load_hook
        hooks = HookChain(load_hook(str(ROOT / "bench" / "hooks_rewrite.py")))
    if a.headers_hook:
        from proxy.hooks.builtin.headers import HeadersHook
        from proxy.hooks.chain import HookChain
        hooks = HookChain([HeadersHook(rules=[{"match": {"direction": "response"},
                                                "set": {"x-via-h2proxy": "1"}}])])
    extra = []
    if a.push_never:
        from proxy.hooks.builtin.push import PushHook
        extra.append(PushHook(rules=[{"path": "/never/*", "push": [{"path": "/x.css", "body": "x"}]}]))
    if a.fault:
        from proxy.faults.hook import FaultHook
        fault_hook = FaultHook()
        fault_hook.static = True          # as h2proxy --fault without --admin
        for line in a.fault:
            fault_hook.add(line)
        extra.append(fault_hook)
    if extra:
        from proxy.hooks.chain import HookChain
        hooks = HookChain((hooks.hooks if hooks is not None else []) + extra)
        for h in extra:
            if hasattr(h, "attach"):
                h.attach(hooks)
    runs = [run_once(a.requests, sink, hooks) for _ in range(a.rounds)]
    if a.profile:
        import cProfile
        cProfile.runctx("run_once(a.requests, sink, hooks)", globals(), {"a": a, "sink": sink, "hooks": hooks,
                                                                         "run_once": run_once}, a.profile)
    samples = [r[0] * 1e6 for r in runs]
    print(f"relay core: {statistics.median(samples):.2f} us CPU per request/response exchange "
          f"(median of {a.rounds}; min {min(samples):.2f}, max {max(samples):.2f}); "
          f"the relay's thread alone {statistics.median(r[1] * 1e6 for r in runs):.2f} us")
    if sink is not None:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
