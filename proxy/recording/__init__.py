"""Frame logs: the sink interface the proxy core reports to, the JSON Lines recorder, the live
printer, and the ``h2proxy log`` commands (text, pcap, har, stats, replay).

Format and commands: docs/frame-log.md.
"""
from .sink import DIRECTIONS, LEG_CLIENT, LEG_UPSTREAM, LEGS, RECV, SEND, FrameSink, MultiSink

__all__ = ["FrameSink", "MultiSink", "LEG_CLIENT", "LEG_UPSTREAM", "RECV", "SEND", "LEGS", "DIRECTIONS",
           "JsonlRecorder", "LivePrinter"]


def __getattr__(name):
    if name == "JsonlRecorder":
        from .recorder import JsonlRecorder
        return JsonlRecorder
    if name == "LivePrinter":
        from .text import LivePrinter
        return LivePrinter
    raise AttributeError(name)
