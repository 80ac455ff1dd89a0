"""What a hook can act on: its *interest*, declared or derived from its methods.

The relay keeps a frame on its fast path (forwarded as the bytes that arrived,
no object, no call) unless some hook can act on it. An :class:`Interest` says
which frames those are:

* ``types``: the frame types, per direction (derived from the ``on_<type>``
  methods a hook defines; ``on_frame`` means every type);
* ``stream``: a condition on a stream's request headers, decided once, when the
  request's header block has been read (or a push promised). A stream for which
  no hook's condition holds stays on the fast path for all its frames. ``None``:
  every stream;
* ``decode``: the directions whose header blocks must be decoded (every block of
  such a direction, to keep the HPACK table in step): those the hook reads or
  changes header blocks in, and client->server when ``stream`` reads the request.
  Blocks of other directions are never decoded for this hook.

A hook declares its interest with an ``interest()`` method returning an
:class:`Interest` (see docs/hooks.md); without one it is derived from the
methods it defines: the types they name, every stream, header blocks decoded in
both directions when it defines ``on_headers`` or ``on_push_promise``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Iterable, Optional, Sequence, Tuple, Union

from ..core.protocol import FRAME_NAMES, HOOK_SUFFIX
from .api import CLIENT_TO_SERVER, SERVER_TO_CLIENT

C2S, S2C = 0, 1
#: Table key of frame types the codec does not know (``on_extension``).
EXTENSION = -1
#: Every table key: the known frame types and EXTENSION.
ALL_TYPES: FrozenSet[int] = frozenset(list(FRAME_NAMES) + [EXTENSION])
_BY_NAME = {name.lower(): t for t, name in FRAME_NAMES.items()}
_BY_NAME.update({"extension": EXTENSION, "unknown": EXTENSION})
_DIRECTIONS = {CLIENT_TO_SERVER: C2S, SERVER_TO_CLIENT: S2C, "request": C2S, "response": S2C, "c2s": C2S,
               "s2c": S2C, C2S: C2S, S2C: S2C}

#: A condition on a stream: called once with its request header list (``None`` when not decoded).
StreamCondition = Callable[[Optional[Sequence[Tuple[str, str]]]], bool]


@dataclass(frozen=True)
class Interest:
    """What a hook can act on (see the module docstring).

    ``types``: frame types as numbers or names (``"data"``, ``"headers"``, ...,
    ``"extension"``), or None for every type the hook's methods cover;
    ``directions``: ``client->server``/``server->client`` (or ``request``/``response``);
    ``stream``: a condition on the request headers, or None for every stream;
    ``decode``: directions whose header blocks the hook needs decoded (None: derived:
    the directions it gets HEADERS or PUSH_PROMISE in when it defines ``on_headers`` or
    ``on_push_promise``, plus client->server when ``stream`` is given);
    ``untracked``: with ``stream``, also the frames on streams the relay no longer tracks
    (frames in flight on a stream the hook ended; the condition cannot be asked there);
    ``decode_if_push``: directions decoded only on connections whose client allows server push
    (its first SETTINGS leaves SETTINGS_ENABLE_PUSH at 1): a hook that needs that direction's
    blocks only for pushed streams (a PUSH_PROMISE's request, a pushed response) says so here.

    A hook with a ``stream`` condition gets ``stream_opened``/``stream_closed`` only for
    the streams it holds for.
    """

    types: Optional[Iterable[Union[int, str]]] = None
    directions: Iterable[Union[int, str]] = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)
    stream: Optional[StreamCondition] = None
    decode: Optional[Iterable[Union[int, str]]] = None
    untracked: bool = False
    decode_if_push: Iterable[Union[int, str]] = ()

    def type_set(self) -> Optional[FrozenSet[int]]:
        if self.types is None:
            return None
        out = set()
        for t in self.types:
            if isinstance(t, str):
                key = t.strip().lower()
                if key not in _BY_NAME:
                    raise ValueError(f"Interest: unknown frame type {t!r}; known: {', '.join(sorted(_BY_NAME))}")
                out.add(_BY_NAME[key])
            else:
                out.add(EXTENSION if t > max(FRAME_NAMES) else int(t))
        return frozenset(out)

    def direction_set(self) -> FrozenSet[int]:
        return frozenset(_direction(d) for d in self.directions)

    def decode_set(self) -> Optional[FrozenSet[int]]:
        return None if self.decode is None else frozenset(_direction(d) for d in self.decode)


def _direction(value) -> int:
    try:
        return _DIRECTIONS[value]
    except (KeyError, TypeError):
        raise ValueError(f"Interest: direction must be {CLIENT_TO_SERVER!r} or {SERVER_TO_CLIENT!r}, "
                         f"not {value!r}") from None


class HookInterest:
    """A hook's interest resolved against its methods: per direction, type -> bound method."""

    __slots__ = ("methods", "stream", "decode", "untracked", "decode_if_push")

    def __init__(self, methods: Tuple[dict, dict], stream: Optional[StreamCondition],
                 decode: FrozenSet[int], untracked: bool = False, decode_if_push: FrozenSet[int] = frozenset()) -> None:
        #: methods[d][t] = (method, wants_headers)
        self.methods = methods
        self.stream = stream
        self.decode = decode
        self.untracked = untracked
        #: Directions decoded only where the client allows server push (Interest.decode_if_push); HookChain
        #: leaves out those some hook needs decoded always.
        self.decode_if_push = decode_if_push


def resolve(hook: Any) -> HookInterest:
    """The frame types (with the method for each), stream condition and decoding a hook needs."""
    declared: Optional[Interest] = None
    fn = getattr(hook, "interest", None)
    if callable(fn):
        declared = fn()
        if declared is not None and not isinstance(declared, Interest):
            raise TypeError(f"{type(hook).__name__}.interest() returned {type(declared).__name__}, not Interest")
    types = declared.type_set() if declared is not None else None
    directions = declared.direction_set() if declared is not None else frozenset((C2S, S2C))
    methods: Tuple[dict, dict] = ({}, {})
    header_dirs = set()
    for t in ALL_TYPES:
        if types is not None and t not in types:
            continue
        suffix = HOOK_SUFFIX.get(t, "extension")
        method = getattr(hook, "on_" + suffix, None)
        wants = suffix in ("headers", "push_promise") and method is not None
        if method is None:
            method = getattr(hook, "on_frame", None)
        if method is None:
            continue
        for d in directions:
            methods[d][t] = (method, wants)
            if wants:
                header_dirs.add(d)
    stream = declared.stream if declared is not None else None
    decode = declared.decode_set() if declared is not None else None
    if decode is None:
        derived = set(header_dirs)
        if getattr(hook, "needs_headers", False):
            derived |= {C2S, S2C}
        if stream is not None:
            derived.add(C2S)
        decode = frozenset(derived)
    if_push = frozenset(_direction(d) for d in declared.decode_if_push) if declared is not None else frozenset()
    return HookInterest(methods, stream, decode, bool(declared is not None and declared.untracked), if_push)


def untracked_only(stream: Any) -> bool:
    """The condition of an entry only for frames on streams the relay no longer tracks (not stream 0):
    it holds for no stream (see HookChain)."""
    return False


def on_request(condition: StreamCondition) -> Callable[[Any], bool]:
    """A stream condition on request headers as the chain's tables hold them: called with the stream.

    A condition that says it is a pure function of the request headers (``condition.request_only =
    True``: the built-ins' are) keeps the mark: HookChain may then remember its outcome per header
    list. Others (a user's condition may count streams) are asked for every stream."""
    def on_stream(stream: Any) -> bool:
        return bool(condition(stream.request_headers))
    on_stream.request_only = bool(getattr(condition, "request_only", False))     # type: ignore[attr-defined]
    return on_stream
