"""The types the relay exchanges with what plugs into it: hook chains, frame records, held DATA.

The core does not import the hook machinery (``proxy.hooks.chain``) nor the recorders: it only
needs the few methods it calls on them, spelled out here as protocols so that the sans-I/O core
stays checked strictly without depending on the shell's modules.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Set, Tuple, TypedDict

from framecodec.reader import Wire

if TYPE_CHECKING:
    from .relay import Relay
    from .streams import Stream

#: What the proxy did to a frame, as the frame log records it: ``{"hook": name, "action": verb}``.
Action = Dict[str, str]
Actions = List[Action]
#: One hook method in a per-direction table: (hook name, bound method, whether it takes the header
#: list, stream condition, screen). The condition is None (every stream), () (only stream 0 and
#: untracked streams), ``(untracked_only,)`` (only untracked streams; proxy.hooks.interest) or a
#: tuple of conditions on the Stream, any of which makes it want the stream;
#: the screen is None or a :data:`Screen`, asked before a frame object is made (see
#: proxy.hooks.chain.HookChain).
HookEntry = Tuple[str, Callable[..., Any], bool, Optional[Tuple[Callable[..., bool], ...]],
                  Optional[Callable[..., bool]]]
#: ``screen(relay view, d, frame type, flags, stream id, length, stream, headers, entries) -> bool``: may
#: an entry of ``entries`` act on this frame or header block (its raw fields; the flags of a block's
#: first frame, with END_HEADERS when CONTINUATIONs were joined; its decoded headers, or None)? False
#: from every screen of a list: the frame goes on as it came, with no object and no hook called.
Screen = Callable[[Any, int, int, int, int, int, Optional["Stream"], Optional[List[Tuple[Any, Any]]], Any], bool]


def screened_elsewhere(relay: Any, d: int, t: int, flags: int, sid: int, length: int, stream: Optional[Stream],
                       headers: Optional[List[Tuple[Any, Any]]], entries: Any) -> bool:
    """The screen of an entry that another entry of the same list screens for (a fault rule's entry: the
    rules' book-keeping screens for all of them). Never asked: :class:`Entries` leaves it out."""
    return False


class Entries(list):  # type: ignore[type-arg]
    """The hook entries of one frame type in one direction, as the relay gets them.

    ``screens``: when every entry has a screen, the distinct screens that decide (without
    :func:`screened_elsewhere`), which the relay asks on the raw frame before it makes any object;
    None when some entry has none (the chain always runs). ``rewrite``: see
    ``proxy.hooks.chain.RewriteEntries``.
    """

    screens: Optional[Tuple[Screen, ...]] = None
    rewrite: Optional[Callable[..., Any]] = None

    @classmethod
    def of(cls, entries: List[HookEntry]) -> "Entries":
        out = cls(entries)
        screens = [e[4] for e in entries]
        if entries and all(sc is not None for sc in screens):
            out.screens = tuple(dict.fromkeys(sc for sc in screens if sc is not None and sc is not screened_elsewhere))
        return out


#: Per direction: frame type (-1 for extension frames) -> the hook methods to run on it, in order.
HookTable = Dict[int, List[HookEntry]]
#: A stream's own tables, per direction (HookChain.stream_tables).
StreamTables = Tuple[HookTable, HookTable]
#: A DATA frame held back for flow control: (wire, flow-controlled length, origin record, actions).
HeldData = Tuple[Wire, int, Optional[int], Optional[Actions]]
#: A frame the proxy sends before the receiver has had SETTINGS: (wire, origin record, actions).
HeldOutput = Tuple[Wire, Optional[int], Optional[Actions]]


class Counters(TypedDict):
    """A connection's counters (``relay.counters``); the per-direction ones are [client->server, server->client]."""

    frames_in: List[int]
    frames_out: List[int]
    bytes_in: List[int]
    violations: int
    streams: int
    resets: List[int]
    hook_errors: int
    pushes: int


class HookRunner(Protocol):
    """What the relay needs of a hook chain (``proxy.hooks.chain.HookChain`` implements it)."""

    #: True when some hook wants decoded header lists (the relay then decodes HPACK).
    needs_headers: bool
    #: Per direction, whether some hook needs that direction's header blocks decoded.
    decode: List[bool]
    #: Per direction, whether some hook needs them decoded only where the client allows server push.
    decode_if_push: List[bool]
    #: (hook, exception type, wrong return) already logged with a traceback: logged once each.
    errors_logged: Set[Tuple[str, str, bool]]
    #: None, or a value that changes whenever the rules do, while :meth:`stream_tables` depends on the
    #: stream's request headers alone (the same list: the same tables).
    request_tables: Optional[int]
    #: True while :meth:`stream_tables` gives ``every_stream`` for every stream (it is then not asked).
    fixed_tables: bool
    every_stream: Optional[StreamTables]

    def table(self) -> List[HookTable]: ...

    def conn_table(self) -> List[HookTable]: ...

    def untracked_table(self) -> List[HookTable]: ...

    def stream_tables(self, stream: Stream) -> Optional[StreamTables]: ...

    def full_tables(self) -> StreamTables: ...

    def connection_opened(self, relay: Relay) -> None: ...

    def connection_closed(self, relay: Relay) -> None: ...

    def stream_opened(self, relay: Relay, stream: Stream) -> None: ...

    def stream_closed(self, relay: Relay, stream: Stream) -> None: ...
