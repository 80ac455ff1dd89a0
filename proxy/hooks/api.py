"""The hook API: what a hook class may define and what it is given.

A hook is a plain class. For each frame the proxy calls, on every hook in
order, ``on_<type>(ctx, frame)`` when the hook defines it, else
``on_frame(ctx, frame)`` when it defines that. ``<type>`` is one of ``data``,
``headers``, ``priority``, ``rst_stream``, ``settings``, ``push_promise``,
``ping``, ``goaway``, ``window_update``, ``altsvc``, ``extension`` (unknown
types) and ``continuation`` (only for a CONTINUATION outside a header block:
inside one, the block is handed over whole). ``on_headers`` and
``on_push_promise`` get a third argument, the decoded header list, and receive
the whole header block as one frame (HEADERS or PUSH_PROMISE with END_HEADERS
set and ``data`` holding the complete block).

What the method returns decides the frame's fate:

* ``None``: forward it unchanged (byte for byte);
* a frame: forward that frame instead;
* a list of frames: forward those, in order (an empty list drops the frame);
* from ``on_headers``/``on_push_promise`` also a list of ``(name, value)``
  tuples: the header block with those headers (the proxy HPACK-encodes it).

Any method may be ``async``: awaiting holds that frame, and the frames behind it
in the same direction, back. Lifecycle methods: ``connection_opened(ctx)``,
``connection_closed(ctx)``, ``stream_opened(ctx, stream)``,
``stream_closed(ctx, stream)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

CLIENT_TO_SERVER = "client->server"
SERVER_TO_CLIENT = "server->client"
DIRECTIONS = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)

HeaderList = List[Tuple[str, str]]


class HookLoadError(Exception):
    """A hook named in the config or on the command line could not be loaded."""


class HookOptionError(HookLoadError, ValueError):
    """A hook was given an option it cannot use (raised by its constructor).

    It is a :class:`HookLoadError`, so the command line reports it as a clean error, and a
    :class:`ValueError` for code that builds hooks itself.
    """


def header_value(headers: Optional[Sequence[Tuple[str, str]]], name: str) -> Optional[str]:
    """The first value of header ``name`` (lower case) in a decoded header list, or None."""
    if headers:
        for k, v in headers:
            if k == name:
                return v
    return None


class Hook:
    """Base class for hooks (optional: any class with the right methods works).

    ``name`` labels the hook in logs and frame records; it defaults to the
    class name. Options from the config arrive as keyword arguments.
    """

    name: str = ""

    def __init__(self, **options: Any) -> None:
        self.options = options


@dataclass
class Headers:
    """A header block to send, given as decoded headers; the proxy encodes it.

    Return it from a hook or pass it to :meth:`HookContext.inject`. With
    ``promised_stream_id`` set it becomes a PUSH_PROMISE.
    """

    stream_id: int
    headers: Sequence[Tuple[Any, Any]]
    end_stream: bool = False
    promised_stream_id: Optional[int] = None


@dataclass
class RawBytes:
    """Bytes sent exactly as given, with every repair switched off.

    For deliberate protocol violations: a corrupted frame, a lying length
    field, garbage. The frame log marks them as ``raw``.
    """

    data: bytes
    note: str = "raw bytes from a hook"


@dataclass
class PushRefused:
    """Why a push the hook asked for was not sent."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass
class PushStarted:
    """A push that was sent; ``stream_id`` is its id on the client leg."""

    stream_id: int

    def __bool__(self) -> bool:
        return True


class HookContext:
    """What a hook method is given besides the frame (implemented by the relay).

    Attributes: ``direction`` (:data:`CLIENT_TO_SERVER` or
    :data:`SERVER_TO_CLIENT`), ``conn`` (the connection: ``id``,
    ``settings`` of each side, ``window`` (per direction), ``counters``, ``info``), ``stream``
    (the frame's stream with ``id``, ``state``, ``request_headers``,
    ``response_headers``, or None on stream 0), ``hook`` (the hook's name).
    """

    @property
    def direction(self) -> str:
        """:data:`CLIENT_TO_SERVER` or :data:`SERVER_TO_CLIENT`: the way the frame goes."""
        raise NotImplementedError

    def inject(self, frame, direction: Optional[str] = None) -> None:
        """Send a frame (or :class:`Headers`, :class:`RawBytes`) towards one side (default: this frame's way)."""
        raise NotImplementedError

    def reset_stream(self, stream_id: Optional[int] = None, code: Any = "CANCEL", towards: str = "both") -> None:
        """Reset a stream towards ``client``, ``server`` or ``both``."""
        raise NotImplementedError

    def goaway(self, code: Any = "NO_ERROR", last_stream_id: Optional[int] = None, debug: bytes = b"",
               towards: str = "both") -> None:
        """Send GOAWAY towards ``client``, ``server`` or ``both``."""
        raise NotImplementedError

    def push(self, path: str, headers: Iterable[Tuple[str, str]] = (), body: bytes = b"",
             status: int = 200):
        """Push a resource to the client on this frame's stream. Returns PushStarted or PushRefused."""
        raise NotImplementedError

    def close(self, towards: str = "both", reset: bool = False) -> None:
        """Close the TCP connection(s): FIN, or a TCP reset with ``reset=True``."""
        raise NotImplementedError
