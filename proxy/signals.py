"""The stop signals of a foreground command (proxy, demo origin, log web view).

One place that turns SIGINT and SIGTERM into an :class:`asyncio.Event`, so every command that
serves until interrupted stops the same way: the event is set and the command shuts down in order.
"""
from __future__ import annotations

import asyncio
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_event() -> asyncio.Event:
    """An event the running loop sets on SIGINT or SIGTERM.

    Where the loop cannot handle signals (Windows, or not the main thread), the handlers are left
    out and Ctrl-C raises KeyboardInterrupt as usual.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    return stop
