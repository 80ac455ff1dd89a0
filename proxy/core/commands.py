"""What the relay asks of the shell besides writing bytes: the commands, small immutable values.

The sans-I/O core cannot close a socket nor await anything; when it needs either it appends a
command, and the shell takes them with :meth:`Relay.take_commands
<proxy.core.relay.Relay.take_commands>` after each call into the relay and matches on their type
(``match cmd: case Close(side=s): ...``). Values, not callbacks: a test asserts on them as it asserts
on the bytes out, and the core never learns what the shell is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket of ``side`` (0 client, 1 server) once the output already taken for it is written.

    ``abort``: reset it (no FIN, queued bytes dropped) rather than close it cleanly.
    """

    side: int
    reason: str
    abort: bool = False


@dataclass(frozen=True, slots=True)
class AwaitHook:
    """Await ``awaitable`` (what an async hook yielded) and hand its outcome to :meth:`Relay.resume
    <proxy.core.relay.Relay.resume>` for ``direction``; that direction's frames wait until then."""

    direction: int
    awaitable: Any


@dataclass(frozen=True, slots=True)
class Wake:
    """Call :meth:`Relay.tick <proxy.core.relay.Relay.tick>` once the time (the clock the shell passes
    as ``now``) is ``at`` or later: the relay holds something until then (a reset a hook made, see
    :meth:`Relay.reset_stream <proxy.core.relay.Relay.reset_stream>`). Ticking earlier or more often
    is harmless."""

    at: float


#: Every command the relay gives the shell.
Command = Union[Close, AwaitHook, Wake]
