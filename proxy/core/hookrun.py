"""Running hooks on a frame, and what a hook is given: its context and a view of the connection.

The relay hands a frame (or a whole header block) that some hook wants to
:func:`hook_chain`, a generator that calls each hook method in order with a
:class:`HookCtx`, suspends on an awaitable a hook returned (the shell awaits it
and the relay resumes the chain), and finishes with the outcome: ``UNCHANGED``
(the frame goes on byte for byte) or the items to send instead, and what each
hook did, for the frame log. A hook that raises or returns something the relay
cannot send is logged and the frame goes on as it was.

Hooks see the connection through :class:`ConnView`: what they may read of it
(its id, SETTINGS, windows, streams, counters) and the public actions, never
the relay's own state.
"""
from __future__ import annotations

import enum
import inspect
import logging
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Final,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from framecodec import frame as fc
from framecodec.exceptions import FrameCodecError

from ..hooks.api import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    HeaderList,
    Headers,
    HookContext,
    PushRefused,
    PushStarted,
    RawBytes,
)
from . import blocks
from .interfaces import Actions, Counters, HookEntry
from .limits import Limits
from .protocol import ALTSVC, HEADERS, PUSH_PROMISE, frame_name, parse_error_code
from .side import CLIENT, SERVER

if TYPE_CHECKING:
    from framecodec.reader import RawFrame

    from .relay import Relay
    from .streams import Stream
    from .unit import _Unit

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1
DIRECTION_NAME = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)


class _Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED` (an enum member, so that type checkers tell it from a list)."""
    UNCHANGED = "unchanged"


#: The hooks' outcome for a frame they left as it came: it is forwarded byte for byte.
UNCHANGED: Final = _Unchanged.UNCHANGED
#: What hooks may produce in place of a frame: frames, header lists to encode, raw bytes.
HookItem = Union[fc.Frame, Headers, RawBytes, bytes, bytearray, memoryview]
#: What the hooks made of a unit: UNCHANGED, or the items to send instead (an empty list drops it).
HookResult = Union[_Unchanged, List[HookItem]]
#: The hooks' outcome and what each hook did.
HookOutcome = Tuple[HookResult, Actions]
#: A hook chain run as a generator: it yields what an async hook returned, to be awaited by the shell.
HookGen = Generator[Awaitable[Any], Any, HookOutcome]
#: What to do with a hook chain's outcome once it finished.
Finish = Callable[[HookOutcome], None]


class MalformedFrame(fc.ExtensionFrame):
    """A frame of a known type whose body does not parse, handed to hooks as its raw parts.

    ``problem`` says what is wrong; :meth:`serialize` gives back the bytes that came in.
    """

    __slots__ = ("problem",)
    problem: str


def hook_chain(relay: Relay, d: int, unit: _Unit, hooks: List[HookEntry]) -> HookGen:
    """Run the hooks on one unit (a frame, or a header block); a generator so that an async hook can
    suspend it: it yields what the hook returned, the relay's shell awaits it and resumes the chain."""
    first = unit.frames[0]
    try:
        frame = blocks.frame_object(unit.frames)
    except FrameCodecError as exc:
        if first.type == ALTSVC:
            # A malformed ALTSVC still goes to the hooks that decide what becomes of ALTSVC
            # frames (RFC 7838 4: an intermediary does not forward them), as the raw frame.
            frame = MalformedFrame(ALTSVC, first.stream_id, flag_byte=first.flags, body=bytes(first.payload))
            frame.problem = str(exc)
            return (yield from _run_hooks(relay, d, unit, hooks, frame))
        relay._log_error(f"{frame_name(first.type)} on stream {first.stream_id} cannot be handed to hooks: "
                        f"{exc}; forwarded unchanged")
        return UNCHANGED, []
    return (yield from _run_hooks(relay, d, unit, hooks, frame))


def _run_hooks(relay: Relay, d: int, unit: _Unit, hooks: List[HookEntry], frame: fc.Frame) -> HookGen:
    first = unit.frames[0]
    original = frame.serialize() if unit.frames[0].type in (HEADERS, PUSH_PROMISE) else None
    items: List[HookItem] = [frame]
    actions: Actions = []
    changed = False
    for entry in hooks:
        name, method, wants_headers = entry[0], entry[1], entry[2]
        new_items: List[HookItem] = []
        for item in items:
            hdrs: Optional[Sequence[Tuple[Any, Any]]] = unit.headers
            if isinstance(item, Headers) and wants_headers and item.stream_id == first.stream_id:
                # An earlier hook's header list: later header hooks see it (hooks run in order).
                call_item, hdrs = frame, item.headers
            elif not isinstance(item, fc.Frame):
                new_items.append(item)
                continue
            else:
                call_item = item
            ctx = HookCtx(relay, d, name, unit.stream, call_item)
            try:
                if wants_headers:
                    result = method(ctx, call_item, list(hdrs) if hdrs is not None else None)
                else:
                    result = method(ctx, item)
                if result is not None and type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                    actions.append({"hook": name, "action": "delayed"})
                    result = yield result
            except Exception as exc:
                hook_error(relay, name, exc, first)
                new_items.append(item)
                continue
            if result is not None and not _valid_result(result):
                # Like an exception: the frame goes on as given, and the log says what came back.
                hook_error(relay, name, TypeError(
                    f"{getattr(method, '__name__', 'hook method')} returned {_type_name(result)} on "
                    f"{frame_name(first.type)} stream {first.stream_id}, not None, a frame, a header "
                    f"list, Headers, RawBytes or a list of them"), first, method)
                new_items.append(item)
                continue
            if result is None:
                new_items.append(item)
                actions.append({"hook": name, "action": "passed"})
                continue
            changed = True
            if isinstance(result, (list, tuple)):
                if result and isinstance(result[0], tuple):
                    if isinstance(item, Headers):
                        block = Headers(item.stream_id, result, item.end_stream, item.promised_stream_id)
                    else:
                        block = Headers(item.stream_id, result, "END_STREAM" in item.flags,
                                        getattr(item, "promised_stream_id", None)
                                        if isinstance(item, fc.PushPromiseFrame) else None)
                    new_items.append(block)
                    actions.append({"hook": name, "action": "changed"})
                else:
                    new_items.extend(result)
                    actions.append({"hook": name, "action": "dropped" if not result else
                                    ("changed" if len(result) == 1 else "split")})
            else:
                new_items.append(result)
                actions.append({"hook": name, "action": "changed" if result is not item else "passed"})
        items = new_items
    if not changed and len(items) == 1 and items[0] is frame:
        if original is None or frame.serialize() == original:
            return UNCHANGED, actions
    if len(items) == 1 and items[0] is frame and original is not None and frame.serialize() == original:
        return UNCHANGED, actions
    return items, actions


def hook_error(relay: Relay, name: str, exc: BaseException, f: RawFrame,
               method: Optional[Callable[..., Any]] = None) -> None:
    """A hook raised (or, with ``method``, returned what the relay cannot send): counted, logged with a
    traceback once per hook and exception type, and reported to the sink; the frame goes on unchanged."""
    relay.counters["hook_errors"] += 1
    key = (name, type(exc).__name__, method is not None)
    seen = relay.hooks.errors_logged if relay.hooks is not None else set()
    if key not in seen:
        seen.add(key)
        if method is not None:      # (a wrong return value: no traceback to show)
            log.error("c%d: hook %s: %s; the frame goes on unchanged", relay.id, name, exc)
        else:
            log.error("c%d: hook %s raised on %s stream %d; the frame goes on unchanged", relay.id, name,
                      frame_name(f.type), f.stream_id, exc_info=exc)
    else:
        log.debug("c%d: hook %s raised %r again", relay.id, name, exc)
    if relay.sink is not None:
        relay.sink.error(relay.id, relay.now, f"hook {name}: {exc}" if method is not None
                        else f"hook {name} raised {type(exc).__name__}: {exc}")


class HookCtx(HookContext):
    """The context a hook method gets: this frame's connection, stream and direction."""

    __slots__ = ("relay", "d", "hook", "stream", "frame")

    def __init__(self, relay: Relay, d: int, hook: str, stream: Optional[Stream], frame: Optional[fc.Frame]) -> None:
        self.relay = relay
        self.d = d
        self.hook = hook
        self.stream = stream
        self.frame = frame

    @property
    def direction(self) -> str:
        return DIRECTION_NAME[self.d]

    @property
    def conn(self) -> ConnView:
        return self.relay.view

    @property
    def request_headers(self) -> Optional[HeaderList]:
        return self.stream.request_headers if self.stream is not None else None

    def inject(self, frame: HookItem, direction: Optional[str] = None) -> None:
        d = self.d if direction is None else direction_of(direction)
        self.relay.inject(d, frame, note=self.hook)

    def reset_stream(self, stream_id: Optional[int] = None, code: Union[int, str] = "CANCEL",
                     towards: str = "both") -> None:
        if stream_id is None:
            if self.stream is not None:
                stream_id = self.stream.id
            elif self.frame is not None:
                stream_id = self.frame.stream_id
            else:
                raise ValueError("reset_stream: give the stream_id (this hook call has no frame)")
        self.relay.reset_stream(stream_id, parse_error_code(code), towards, note=self.hook)

    def goaway(self, code: Union[int, str] = "NO_ERROR", last_stream_id: Optional[int] = None, debug: bytes = b"",
               towards: str = "both") -> None:
        self.relay.goaway(parse_error_code(code), last_stream_id, debug, towards, note=self.hook)

    def push(self, path: str, headers: Iterable[Tuple[str, str]] = (), body: bytes = b"",
             status: int = 200) -> Union[PushRefused, PushStarted]:
        result = self.relay.push(self.stream, path, headers, body, status)
        if isinstance(result, PushRefused):
            log.info("c%d: push of %s refused: %s", self.relay.id, path, result.reason)
        return result

    def close(self, towards: str = "both", reset: bool = False) -> None:
        for side in sides_towards(towards):
            self.relay.close_side(side, f"hook {self.hook} closed the connection", abort=reset)


def sides_towards(towards: str) -> Tuple[int, ...]:
    """The sides a hook's ``towards`` names: ``client``, ``server`` or ``both``."""
    towards = towards.lower()
    if towards == "both":
        return (CLIENT, SERVER)
    if towards in ("client", "downstream"):
        return (CLIENT,)
    if towards in ("server", "upstream"):
        return (SERVER,)
    raise ValueError(f"towards must be 'client', 'server' or 'both', not {towards!r}")


def direction_of(direction: Union[int, str]) -> int:
    """The direction (0: client to server) a hook's ``direction`` names."""
    if direction in (C2S, CLIENT_TO_SERVER, "c2s", "to_server", "server", "upstream"):
        return C2S
    if direction in (S2C, SERVER_TO_CLIENT, "s2c", "to_client", "client", "downstream"):
        return S2C
    raise ValueError(f"direction must be {CLIENT_TO_SERVER!r} or {SERVER_TO_CLIENT!r}, not {direction!r}")


class ConnView:
    """What a hook sees of its connection (``ctx.conn``): read-only state and the public actions.

    One per connection (``Relay.view``), so it can key a hook's per-connection state. The
    per-side values are pairs, ``[0]`` the client's and ``[1]`` the server's; ``window`` is per
    direction (``[0]``: what the client may still send to the server).
    """

    __slots__ = ("_relay", "streams", "__weakref__")

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        #: The open streams by (client-leg) id, read-only and live.
        self.streams: Mapping[int, Stream] = MappingProxyType(relay.streams)

    def __repr__(self) -> str:
        return f"ConnView(c{self._relay.id})"

    @property
    def id(self) -> int:
        return self._relay.id

    @property
    def info(self) -> Dict[str, Any]:
        return self._relay.info

    @property
    def limits(self) -> Limits:
        return self._relay.limits

    @property
    def closed(self) -> bool:
        return self._relay.closed

    @property
    def counters(self) -> Counters:
        return self._relay.counters

    @property
    def settings(self) -> Tuple[Mapping[int, int], Mapping[int, int]]:
        """The SETTINGS each side announced (all of them: defaults for those it did not send)."""
        client, server = self._relay.sides
        return MappingProxyType(client.settings), MappingProxyType(server.settings)

    @property
    def unacked_settings(self) -> Tuple[int, int]:
        """Per side, its SETTINGS frames the other side has not acknowledged yet."""
        client, server = self._relay.sides
        return client.unacked_settings, server.unacked_settings

    @property
    def last_stream(self) -> Tuple[int, int]:
        """The highest stream id the client opened, and the highest the server promised."""
        client, server = self._relay.sides
        return client.last_stream, server.last_stream

    @property
    def window(self) -> Tuple[int, int]:
        """Per direction, the connection-level flow-control window its sender may still fill."""
        client, server = self._relay.sides
        return client.window, server.window

    @property
    def sink(self) -> Any:
        return self._relay.sink

    @property
    def hooks(self) -> Any:
        return self._relay.hooks

    @property
    def wake(self) -> Optional[Callable[[], None]]:
        """Set by the shell: to call after acting outside a hook call (from a timer)."""
        return self._relay.wake

    # The relay's public actions, for hooks acting outside a hook call (timers).

    def inject(self, d: int, item: HookItem, origin: Optional[int] = None, note: str = "injected") -> None:
        self._relay.inject(d, item, origin, note)

    def tick(self, now: float) -> None:
        self._relay.tick(now)

    def halt(self) -> None:
        self._relay.halt()

    def follow_stream(self, sid: int) -> None:
        self._relay.follow_stream(sid)

    def detach_sink(self) -> None:
        self._relay.detach_sink()


_RESULT_ITEMS = (fc.Frame, Headers, RawBytes, bytes, bytearray, memoryview)


def _valid_result(result: object) -> bool:
    """Whether a hook's return value is one the relay knows how to send (None aside)."""
    if isinstance(result, _RESULT_ITEMS):
        return True
    if not isinstance(result, (list, tuple)):
        return False
    if result and isinstance(result[0], tuple):
        # A header list: (name, value) pairs of text or bytes.
        text = _TEXT
        for h in result:
            if not isinstance(h, tuple) or not 2 <= len(h) <= 3 or not isinstance(h[0], text) \
                    or not isinstance(h[1], text):
                return False
        return True
    return all(isinstance(item, _RESULT_ITEMS) for item in result)


_TEXT = (str, bytes)
#: Result types that are never awaitable (the common ones: no inspect call for them).
_PLAIN_RESULTS = frozenset((list, tuple, Headers, RawBytes, bytes))


def _type_name(value: object) -> str:
    if isinstance(value, (list, tuple)):
        bad = next((v for v in value if not isinstance(v, _RESULT_ITEMS)), None)
        return f"a {type(value).__name__} holding {type(bad).__name__}"
    return f"{type(value).__name__} ({value!r:.40})"
