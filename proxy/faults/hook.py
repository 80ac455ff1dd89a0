"""FaultHook: fault rules acting on frames in flight.

One :class:`FaultHook` holds the rules of a proxy. It is an ordinary hook in
the :class:`~proxy.hooks.chain.HookChain`, and once it sees the chain (on the
first connection, or :meth:`FaultHook.attach`) it puts *one entry per rule*
into the chain's dispatch table, in place of its own:

* first ``faults``: book-keeping (frame counts per stream, the repairs below);
* then ``fault:NAME`` for each rule, only for the frame types and directions
  the rule can match.

The relay records hook actions by entry name, so the frame log shows
``fault:NAME`` with ``passed``/``dropped``/``changed``/``split``/``delayed``,
and frames a rule injects carry ``fault:NAME`` too. Adding, changing or
removing a rule rebuilds the entries at once: the next frame of every
connection, open or new, sees the new rules.

Repairs (what keeps the rest of a connection valid; none of them for rules
with ``raw = true``): frames on a stream a rule reset are not forwarded to a
side that got the RST_STREAM, nor the rest of a stream whose first header
block a rule dropped (DATA among them is credited back to its sender); PING
and SETTINGS acknowledgements answering frames a rule injected are not passed
on to a side that never sent them; after a close, nothing more goes through.
The relay itself credits dropped DATA back and re-encodes header blocks once a
block was dropped or duplicated.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
import weakref
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple, Union

from framecodec import frame as fc

from ..core.interfaces import screened_elsewhere
from ..core.protocol import ErrorCode, Setting, error_name, frame_name, setting_name
from ..hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Headers, RawBytes, header_value
from ..hooks.interest import Interest, untracked_only
from .parse import parse_line, to_line
from .rules import (
    ACTIONS,
    ALTSVC,
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    KEYS,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    UNKNOWN,
    WINDOW_UPDATE,
    FaultError,
    FrameInfo,
    Rule,
)

log = logging.getLogger("h2proxy")

C2S, S2C = 0, 1
CLIENT, SERVER = 0, 1
_DIRECTIONS = {CLIENT_TO_SERVER: C2S, SERVER_TO_CLIENT: S2C}
_MAX_WINDOW = 2 ** 31 - 1
_STREAM_TYPES = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION, WINDOW_UPDATE})
#: Frame types :meth:`FaultHook.screen` may hand to the book-keeping for a repair, whatever the rules say.
_SCREEN_REPAIRS = frozenset({PING, SETTINGS, WINDOW_UPDATE})
#: Actions that may drop, duplicate or change the frame they act on (a header block among them);
#: the others forward it as it came (delay, throttle, stall, settings on SETTINGS only, inject
#: next to it; close ends the connection, so the HPACK tables no longer matter).
_BLOCK_CHANGING = frozenset({"drop", "duplicate", "corrupt", "split", "rst_stream"})
_MAX_EVENTS = 10000
_LOGGED_PER_RULE = 20

RuleLike = Union[Rule, dict, str]


async def _hold(seconds: float, result: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return result


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def flag_byte(frame) -> int:
    """The flags byte of a frame object, undefined bits included."""
    if isinstance(frame, fc.ExtensionFrame):
        return frame.flag_byte
    bits = 0
    names = frame.flags
    for name, bit in type(frame).defined_flags:
        if name in names:
            bits |= bit
    return bits | frame.undefined_flags


def _set_flag_byte(frame, byte: int):
    if isinstance(frame, fc.ExtensionFrame):
        frame.flag_byte = byte
        return frame
    mask = 0
    for name, bit in type(frame).defined_flags:
        mask |= bit
        if byte & bit:
            frame.flags.add(name)
    frame.undefined_flags = byte & ~mask & 0xFF
    return frame


def _clone(frame):
    """An independent copy of a frame object (parsed back from its bytes)."""
    wire = frame.serialize()
    new, length = fc.Frame.parse_frame_header(memoryview(wire)[:9])
    new.parse_body(memoryview(wire)[9:9 + length])
    return new


def _flow_length(frame) -> int:
    if isinstance(frame, fc.DataFrame):
        return frame.flow_controlled_length
    return 0


def _frame_type(frame) -> int:
    return frame.type


class _Stall:
    __slots__ = ("rule", "d", "scope", "sid", "pending", "timer", "since")

    def __init__(self, rule: Rule, d: int, scope: str, sid: int) -> None:
        self.rule = rule
        self.d = d                  # the direction whose WINDOW_UPDATEs are withheld
        self.scope = scope
        self.sid = sid
        self.pending: Dict[int, int] = {}
        self.timer: Optional[asyncio.TimerHandle] = None
        self.since = _now()


class _Conn:
    """What the fault hook remembers about one connection."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.counts: Dict[int, Dict[int, int]] = {}     # stream -> type * 2 + direction -> frames
        self.bytes: Dict[Tuple[int, int], int] = {}                   # (direction, stream) -> DATA bytes
        self.conn_bytes = [0, 0]
        self.ordinals: Dict[int, int] = {}
        self.opened = 0
        self.info: List[Optional[FrameInfo]] = [None, None]
        self.reset: "collections.OrderedDict[int, Tuple[frozenset, frozenset]]" = collections.OrderedDict()
        self.stalls: List[_Stall] = []
        self.stalled_by: set = set()
        self.settings_marks: List[collections.deque] = [collections.deque(), collections.deque()]
        self.pings: List[set] = [set(), set()]
        self.throttle: Dict[Tuple[str, int], float] = {}
        self.closing = False          # a close rule fired: nothing more goes through
        #: Per direction: the rules that fire on the frame the relay just screened (FaultHook.screen),
        #: until the book-keeping takes it; then ``firing``, for the rule entries of that frame.
        self.screened: List[Optional[set]] = [None, None]
        self.firing: List[Optional[set]] = [None, None]

    def count(self, d: int, sid: int, t: int, stream: Any = None) -> int:
        """The how-manieth frame of type t in direction d on stream sid this one is (counted now).

        A tracked stream keeps its counts itself (they go with it when it closes); stream 0 and
        untracked streams are counted here, the oldest forgotten past 4096 streams."""
        if stream is not None:
            per = stream.counts
            if per is None:
                per = stream.counts = {}
        else:
            per = self.counts.get(sid)
            if per is None:
                per = self.counts[sid] = {}
                if len(self.counts) > 4096:
                    self.counts = dict(list(self.counts.items())[2048:])     # (not one by one: O(n) each)
        key = t * 2 + d          # (an int key: no tuple per frame)
        n = per.get(key, 0) + 1
        per[key] = n
        return n


class RuleHook:
    """The hook entry of one rule (``fault:NAME`` in the frame log)."""

    __slots__ = ("owner", "rule")

    def __init__(self, owner: "FaultHook", rule: Rule) -> None:
        self.owner = owner
        self.rule = rule

    @property
    def name(self) -> str:
        return f"fault:{self.rule.name}"

    def on_frame(self, ctx, frame):
        return self.owner._apply(self.rule, ctx, frame, None)

    def on_headers(self, ctx, frame, headers):
        return self.owner._apply(self.rule, ctx, frame, headers)

    on_push_promise = on_headers


class FaultHook:
    """The fault rules of a proxy, as a hook (see the module docstring)."""

    name = "faults"
    needs_headers = True

    def __init__(self, rules: Iterable[RuleLike] = (), file: Optional[str] = None, **options: Any) -> None:
        if options:
            raise FaultError(f"faults hook: unknown options {sorted(options)} (known: rules, file)")
        self.rules: List[Rule] = []
        self._hooks: Dict[str, RuleHook] = {}
        self.events: "collections.deque[dict]" = collections.deque(maxlen=_MAX_EVENTS)
        self._chains: "weakref.WeakSet" = weakref.WeakSet()
        self._conns: Dict[Any, _Conn] = {}
        #: Connections seen since the start (``connections_total``; ``_conns`` holds the open ones).
        self._total = 0
        self._serial = 0
        self._grpc_active = False
        #: id(entry list) -> (the list, the rules of its entries): what screen asks, per table list.
        self._list_rules: Dict[int, tuple] = {}
        #: True when the rules cannot change once connections run (no admin API, no web view): header
        #: blocks are then decoded only in the directions the rules need. Otherwise both, always: a rule
        #: added at run time may need them, and a direction cannot start being decoded mid-connection.
        self.static = False
        if file is not None:
            for spec in load_fault_file(file):
                self.add(spec, source=f"{file}: faults")
        for i, r in enumerate(rules or ()):
            self.add(r, source=f"faults[{i}]")

    # ------------------------------------------------------------ managing rules

    def _default_name(self, action: str) -> str:
        while True:
            self._serial += 1
            name = f"{action}-{self._serial}"
            if name not in self._hooks:
                return name

    def make_rule(self, rule: RuleLike, source: Optional[str] = None) -> Rule:
        """Check a rule given as a Rule, a spec dict or a one-line string (not added)."""
        if isinstance(rule, Rule):
            return rule
        if isinstance(rule, str):
            where = source or f"fault {rule!r}"
            spec = parse_line(rule, where)
        elif isinstance(rule, dict):
            where = source or "fault"
            spec = rule
        else:
            raise FaultError(f"{source or 'fault'}: expected a one-line rule, a table or a Rule, "
                             f"got {type(rule).__name__}")
        default = None
        from ..grpc.faults import GrpcRule, is_grpc_spec
        if is_grpc_spec(spec):          # a rule on gRPC messages (proxy/grpc/faults.py)
            if not spec.get("name") and "action" in spec:
                default = self._default_name(str(spec["action"]).strip().lower().replace("-", "_"))
            return GrpcRule(spec, where, default_name=default)
        if not spec.get("name") and "action" in spec:
            from .rules import canonical_action
            default = self._default_name(canonical_action(spec["action"], where))
        return Rule(spec, where, default_name=default)

    def add(self, rule: RuleLike, source: Optional[str] = None, position: Optional[int] = None) -> Rule:
        """Add a rule (it applies to the next frame of every connection); returns the checked Rule."""
        r = self.make_rule(rule, source)
        if r.name in self._hooks:
            raise FaultError(f"{r.source}: name = {r.name!r}: a rule of that name exists already")
        if position is None:
            self.rules.append(r)
        else:
            self.rules.insert(position, r)
        self._hooks[r.name] = RuleHook(self, r)
        self._rebuild_all()
        log.info("fault rule %s added: %s", r.name, to_line(r))
        return r

    def get(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def remove(self, name: str) -> Rule:
        r = self.get(name)
        self.rules.remove(r)
        del self._hooks[name]
        for st in self._conns.values():
            for stall in [s for s in st.stalls if s.rule is r]:
                self._release(st, stall)
        self._rebuild_all()
        log.info("fault rule %s removed", name)
        return r

    def change(self, name: str, changes: Dict[str, Any], replace: bool = False) -> Rule:
        """Change keys of a rule (a key set to None is removed); ``replace``: the spec is ``changes``.

        The counters and the random numbers carry over (unless the seed changes).
        """
        old = self.get(name)
        spec = dict(changes) if replace else {**old.spec, **changes}
        if replace and "action" not in spec:
            spec["action"] = old.action
        spec = {k: v for k, v in spec.items() if v is not None}
        spec.setdefault("name", name)
        from ..grpc.faults import GrpcRule, is_grpc_spec
        new = (GrpcRule if is_grpc_spec(spec) else Rule)(spec, f"fault {name}", default_seed=old.seed)
        if new.name != name and new.name in self._hooks:
            raise FaultError(f"fault {name}: name = {new.name!r}: a rule of that name exists already")
        new.carry_over(old)
        i = self.rules.index(old)
        self.rules[i] = new
        del self._hooks[name]
        self._hooks[new.name] = RuleHook(self, new)
        for st in self._conns.values():
            for stall in st.stalls:
                if stall.rule is old:
                    stall.rule = new
            if name in st.stalled_by:
                st.stalled_by.discard(name)
                st.stalled_by.add(new.name)
        self._rebuild_all()
        log.info("fault rule %s changed: %s", new.name, to_line(new))
        return new

    def clear(self) -> None:
        for r in list(self.rules):
            self.remove(r.name)

    def reset_counters(self) -> None:
        """Counters to zero, random numbers back to their seeds, the event list emptied."""
        for r in self.rules:
            r.reset_counters()
        self.events.clear()

    def hits(self, name: str) -> int:
        return self.get(name).hits

    def matches(self, name: str) -> int:
        return self.get(name).matches

    def counters(self) -> Dict[str, Any]:
        return {"rules": {r.name: {"matches": r.matches, "hits": r.hits} for r in self.rules},
                "events": len(self.events), "connections_open": len(self._conns),
                "connections_total": self._total}

    @property
    def injected(self) -> List[dict]:
        """What the rules did, oldest first (the last 10000 events)."""
        return list(self.events)

    # ------------------------------------------------------------ the dispatch table

    def attach(self, chain) -> None:
        """Follow ``chain``: changes of the rules rebuild its tables at once (done on the first connection)."""
        if chain is None or chain in self._chains:
            return
        self._chains.add(chain)
        if hasattr(chain, "rebuild"):
            chain.rebuild()

    def _rebuild_all(self) -> None:
        self._grpc_active = any(getattr(r, "grpc", False) for r in self.rules)
        self._list_rules = {}
        for chain in list(self._chains):
            chain.rebuild()

    def interest(self) -> Interest:
        """The directions whose header blocks are decoded (the frame types and conditions are per rule:
        :meth:`hook_entries`)."""
        always, if_push = self.decode_directions()
        return Interest(decode=always, decode_if_push=if_push)

    def decode_directions(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """(directions always decoded, directions decoded only where the client allows server push).

        Both always, unless :attr:`static`; then those where some rule can drop or change header blocks
        (the direction is then re-encoded, hence decoded) or reads them (request keys need the
        requests, ``status`` and ``response_header`` the responses). A rule that ends every stream it
        wants at that stream's request block (:func:`_ends_at_request`) can meet a response block only
        on a pushed stream (a PUSH_PROMISE's request): it needs responses decoded only where the client
        allows push.
        """
        if not self.static:
            return (C2S, S2C), ()
        dirs: Set[int] = set()
        push_only: Set[int] = set()
        for r in self.rules:
            if not r.enabled or getattr(r, "grpc", False):
                continue
            if r.action in _BLOCK_CHANGING or (r.action == "goaway" and not r.params.get("keep", True)):
                for d in (C2S, S2C):
                    if r.wants(d, HEADERS) or r.wants(d, PUSH_PROMISE) or r.wants(d, CONTINUATION):
                        (push_only if d == S2C and _ends_at_request(r) else dirs).add(d)
            if r.method is not None or r.authority is not None or r.path is not None or r.request_header:
                dirs.add(C2S)
            if r.status is not None or r.response_header:
                dirs.add(S2C)
        return tuple(sorted(dirs)), tuple(sorted(push_only - dirs))

    def hook_entries(self, d: int, t: int) -> list:
        """The chain's entries for frames of type ``t`` in direction ``d`` (see HookChain): one per rule that
        can match them, with the rule's stream condition, behind the book-keeping entry ``faults``.

        The book-keeping sees a frame when some rule may (on the streams some rule wants), and, on
        stream 0 and untracked streams, when a repair may need it: PING and SETTINGS acknowledgements
        after inject rules, WINDOW_UPDATEs under stall rules, the rest of streams a rule reset or
        dropped the first block of, DATA counted towards a connection's ``after_bytes``.
        """
        key = UNKNOWN if t < 0 else t
        wants = key in (HEADERS, PUSH_PROMISE)
        rules = []
        conds = []
        for r in self.rules:
            if r.enabled and r.wants(d, key):
                h = self._hooks[r.name]
                cond = _stream_condition(r)
                rules.append((h.name, h.on_headers if wants else h.on_frame, wants,
                              None if cond is None else (cond,), screened_elsewhere))
                conds.append(cond)
        repair = self._repair_types()
        if rules:
            if any(c is None for c in conds) or key in repair[0]:
                book_cond = None
            else:
                book_cond = tuple(conds)
        elif key in repair[0]:
            book_cond = None
        elif key in repair[1]:
            book_cond = (untracked_only,)      # only on streams the relay no longer tracks
        else:
            return []
        own: Callable[..., Any]
        if key == HEADERS:
            own = self.on_headers
        elif key == PUSH_PROMISE:
            own = self.on_push_promise
        else:
            own = self.on_frame
        screen: Callable[..., bool] = self.screen
        if rules and book_cond is None and 0 <= key <= ALTSVC and key not in _SCREEN_REPAIRS \
                and all(c is None for c in conds):
            ruled = tuple(self._hooks[name[6:]].rule for name, *_ in rules)
            if all(r.by_type_alone() for r in ruled):
                screen = self._type_screen(d, key, ruled)
        entries = [(self.name, own, wants, book_cond, screen)]
        if book_cond is not None and book_cond != (untracked_only,) and key in repair[1]:
            entries.append((self.name, own, wants, (untracked_only,), self.screen))
        return entries + rules

    def _repair_types(self) -> Tuple[frozenset, frozenset]:
        """Frame types the book-keeping must see (every stream; stream 0 and untracked streams) for its repairs."""
        every: set = set()
        untracked: set = set()
        for r in self.rules:
            if not r.enabled or getattr(r, "grpc", False):
                continue
            if r.action == "inject":
                every |= {PING, SETTINGS}
            if r.action == "stall":
                every.add(WINDOW_UPDATE)
            if r.action in ("rst_stream", "drop"):
                untracked |= _STREAM_TYPES | {UNKNOWN}
            if r.after_bytes is not None:
                every.add(DATA)
        return frozenset(every), frozenset(untracked)

    # ------------------------------------------------------------ lifecycle

    def _state(self, relay) -> _Conn:
        st = self._conns.get(relay)
        if st is None:
            st = self._conns[relay] = _Conn(relay)
            self._total += 1
            self.attach(getattr(relay, "hooks", None))
        return st

    def connection_opened(self, ctx) -> None:
        self._state(ctx.conn)

    def connection_closed(self, ctx) -> None:
        st = self._conns.pop(ctx.conn, None)
        if st is not None:
            for stall in st.stalls:
                if stall.timer is not None:
                    stall.timer.cancel()
            st.stalls.clear()

    # ------------------------------------------------------------ gRPC messages (proxy/grpc/faults.py)

    @property
    def grpc_active(self) -> bool:
        """Whether some rule acts on gRPC messages (else gRPC calls are not followed for this hook).

        Asked once per stream: kept up to date when the rules change, not recomputed."""
        return self._grpc_active

    def on_grpc_message(self, ctx, message):
        from ..grpc.faults import apply_rules
        return apply_rules(self, self.rules, ctx, message)

    # ------------------------------------------------------------ book-keeping (entry "faults")

    def on_frame(self, ctx, frame):
        return self._book(ctx, frame, None)

    def on_headers(self, ctx, frame, headers):
        return self._book(ctx, frame, headers)

    on_push_promise = on_headers

    def _book(self, ctx, frame, headers):
        relay = ctx.conn
        st = self._state(relay)
        d = _DIRECTIONS[ctx.direction]
        t = _frame_type(frame)
        stream = ctx.stream
        sid = stream.id if stream is not None else frame.stream_id
        # (The flags byte only where a repair or the count needs it: most frames here were screened.)
        fb = flag_byte(frame) if t == PING or t == SETTINGS or st.screened[d] is None else 0
        # Repairs.
        if st.closing:
            return []
        if sid and sid in st.reset:
            drop_dirs, rst_sides = st.reset[sid]
            if d in drop_dirs:
                if t == DATA and stream is None:
                    n = _flow_length(frame)
                    if n:
                        back = 1 - d
                        relay.inject(back, fc.WindowUpdateFrame(0, window_increment=n), note="faults")
                        sender = "client" if d == C2S else "server"
                        if sender not in rst_sides and not fb & 0x01:
                            relay.inject(back, fc.WindowUpdateFrame(frame.stream_id, window_increment=n),
                                         note="faults")
                return []
        if t == PING and fb & 0x01 and st.pings[1 - d]:
            opaque = bytes(frame.opaque_data).ljust(8, b"\0")
            if opaque in st.pings[1 - d]:
                st.pings[1 - d].discard(opaque)
                return []
        if t == SETTINGS:
            if fb & 0x01:
                marks = st.settings_marks[1 - d]
                if marks and marks.popleft() == "fault":
                    return []
            elif st.settings_marks[d]:
                st.settings_marks[d].append("peer")
        if t == WINDOW_UPDATE and st.stalls:
            for stall in st.stalls:
                if stall.d == d and (stall.scope == "connection" or frame.stream_id == stall.sid):
                    stall.pending[frame.stream_id] = stall.pending.get(frame.stream_id, 0) + frame.window_increment
                    return []
        screened = st.screened[d]
        if screened is not None:
            # The relay screened this frame (see screen): counted, and the rules that fire are known.
            st.screened[d] = None
            st.firing[d] = screened
            return None
        st.firing[d] = None
        self._count(st, relay, d, t, fb, sid, stream, _flow_length(frame) if t == DATA else 0, headers)
        return None

    def _count(self, st: _Conn, relay, d: int, t: int, fb: int, sid: int, stream, flow: int, headers) -> FrameInfo:
        """Count one frame that came in (per stream and type; DATA bytes) and say what the rules see of it."""
        n, before = self._tally(st, d, t, sid, stream, flow)
        return self._info(st, relay, d, t, fb, sid, stream, headers, n, before)

    @staticmethod
    def _tally(st: _Conn, d: int, t: int, sid: int, stream, flow: int) -> Tuple[int, int]:
        """Count one frame that came in: (its number among the stream's frames of its type and direction,
        the DATA bytes before it on its stream, or on the connection for stream 0)."""
        n = st.count(d, sid, t, stream)
        if t == DATA:
            key = (d, sid)
            before = st.bytes.get(key, 0)
            st.bytes[key] = before + flow
            st.conn_bytes[d] += flow
            if len(st.bytes) > 8192:
                st.bytes = dict(list(st.bytes.items())[4096:])    # (the oldest half at once: not O(n) each)
        elif sid:
            before = st.bytes.get((d, sid), 0)
        else:
            before = st.conn_bytes[d]
        return n, before

    @staticmethod
    def _info(st: _Conn, relay, d: int, t: int, fb: int, sid: int, stream, headers, n: int,
              before: int) -> FrameInfo:
        """What the rules see of a frame that was counted (:meth:`_tally`); kept as ``st.info[d]``."""
        request = stream.request_headers if stream is not None else None
        response = stream.response_headers if stream is not None else None
        if t == HEADERS and d == S2C and headers is not None:
            status = header_value(headers, ":status")
        else:
            status = header_value(response, ":status")
        # (Positional: a keyword call costs about three times as much, once per frame the rules see.)
        info = st.info[d] = FrameInfo(d, t, fb, sid, relay.id, n,
                                      getattr(stream, "ordinal", None) if stream is not None else None,
                                      before, request, response, status)
        return info

    def screen(self, relay, d: int, t: int, fb: int, sid: int, length: int, stream, headers, hooks=None) -> bool:
        """The relay asks, before making a frame object: may any rule of this entry list act on this frame
        (its raw fields, see proxy.core.interfaces.Screen; ``hooks``: the entry list, whose rule entries
        name the rules to ask)?

        No repair may apply and no rule fire: False, and the relay forwards the frame as it came, with
        no object and no call per rule (the frame is counted all the same). Otherwise True, and the
        hook chain runs: the book-keeping entry takes the outcome decided here (each rule's match is
        counted once).
        """
        st = self._conns.get(relay)
        if st is None or st.closing:
            return True
        if (sid and sid in st.reset) or t > HEADERS and (
                (t == PING and fb & 0x01 and st.pings[1 - d])
                or (t == SETTINGS and (st.settings_marks[1 - d] if fb & 0x01 else st.settings_marks[d]))
                or (t == WINDOW_UPDATE and st.stalls)):
            st.screened[d] = None
            return True        # a repair may apply: the book-keeping decides with the frame object
        firing = None
        if hooks is not None:
            listed = self._list_rules.get(id(hooks))
            if listed is None or listed[0] is not hooks:
                ruled = [self._hooks[e[0][6:]].rule for e in hooks
                         if e[4] is screened_elsewhere and e[0][6:] in self._hooks]
                listed = self._list_rules[id(hooks)] = (hooks, ruled, all(r.by_type_alone() for r in ruled), {})
            rules: Iterable[Rule] = listed[1]
            if listed[2] and t <= ALTSVC:
                # Every rule of this list matches on direction and type alone (the table's own keys): only
                # its counters decide.
                key = t * 2 + d
                candidates = listed[3].get(key)
                if candidates is None:
                    candidates = listed[3][key] = tuple(
                        r for r in listed[1] if d in r.directions and (r.types is None or t in r.types))
                return self._by_type(st, relay, d, t, fb, sid, length, stream, headers, candidates)
        else:
            rules = self._screened_rules(d, t, stream)
        info = self._count(st, relay, d, t, fb, sid, stream, length if t == DATA else 0, headers)
        for rule in rules:
            if rule.action == "stall" and rule.name in st.stalled_by:
                continue
            if rule.matches_frame(info) and rule.fires():
                if firing is None:
                    firing = set()
                firing.add(rule.name)
        st.screened[d] = firing
        return firing is not None

    def _by_type(self, st: _Conn, relay, d: int, t: int, fb: int, sid: int, length: int, stream, headers,
                 candidates: Tuple[Rule, ...]) -> bool:
        """:meth:`screen` for rules that match on direction and type alone (``candidates``: those that can
        match this frame's): the frame is counted, each rule counts a match, and the FrameInfo is built
        only for a frame some rule acts on."""
        if t == DATA:
            n, before = self._tally(st, d, t, sid, stream, length)
        else:
            n, before = st.count(d, sid, t, stream), -1     # (the bytes before it: only if a rule fires)
        firing = None
        for rule in candidates:
            if rule.enabled and (sid or not rule.needs_stream) \
                    and not (rule.action == "stall" and rule.name in st.stalled_by) and rule.fires():
                if firing is None:
                    firing = set()
                firing.add(rule.name)
        if firing is None:
            st.info[d] = None
            st.screened[d] = None
            return False
        if before < 0:
            before = st.bytes.get((d, sid), 0) if sid else st.conn_bytes[d]
        st.info[d] = self._info(st, relay, d, t, fb, sid, stream, headers, n, before)
        st.screened[d] = firing
        return True

    def _type_screen(self, d: int, t: int, candidates: Tuple[Rule, ...]) -> Callable[..., bool]:
        """The screen of an entry list for frames of type t in direction d whose rules all match on
        direction and type alone and want every stream: every stream's list is the same, so what
        :meth:`screen` looks up per frame (the list's rules, those for this type) is known here."""
        conns = self._conns
        general = self.screen
        by_type = self._by_type

        def screen(relay, d_: int, t_: int, fb: int, sid: int, length: int, stream, headers, hooks=None) -> bool:
            st = conns.get(relay)
            if st is None or st.closing or (sid and sid in st.reset):
                return general(relay, d_, t_, fb, sid, length, stream, headers, hooks)
            return by_type(st, relay, d, t, fb, sid, length, stream, headers, candidates)
        return screen

    def _screened_rules(self, d: int, t: int, stream) -> List[Rule]:
        """The rules with an entry for frames of type t in direction d on this stream (in rule order)."""
        key = UNKNOWN if t > ALTSVC else t
        out = []
        for r in self.rules:
            if r.enabled and r.wants(d, key):
                cond = r.stream_condition()
                if cond is None or (stream is not None and cond(stream)):
                    out.append(r)
        return out

    # ------------------------------------------------------------ rules (entries "fault:NAME")

    def _apply(self, rule: Rule, ctx, frame, headers):
        st = self._conns.get(ctx.conn)
        if st is None:
            return None
        d = _DIRECTIONS[ctx.direction]
        info = st.info[d]
        if info is None or _frame_type(frame) != info.type:
            return None      # something an earlier rule injected: rules act on frames that came in
        firing = st.firing[d]
        if firing is not None:
            # Decided when the relay screened the frame (matched and counted then).
            if rule.name not in firing:
                return None
        else:
            fb = flag_byte(frame)
            if fb != info.flag_byte:
                info = dataclasses.replace(info, flag_byte=fb)
            if rule.action == "stall" and rule.name in st.stalled_by:
                return None
            if not rule.matches_frame(info):
                return None
            if not rule.fires():
                return None
        result, detail = self._act(rule, ctx, frame, headers, st, info, d)
        self._record(rule, ctx.conn, info, detail)
        return result

    def _record(self, rule: Rule, relay, info: FrameInfo, detail: str) -> None:
        event = {"time": time.time(), "rule": rule.name, "action": rule.action, "conn": relay.id,
                 "stream": info.stream_id, "direction": CLIENT_TO_SERVER if info.d == C2S else SERVER_TO_CLIENT,
                 "frame": frame_name(info.type) if info.type >= 0 else "unknown", "detail": detail}
        self.events.append(event)
        sink = getattr(relay, "sink", None)
        if sink is not None:
            try:
                sink.hook_action(relay.id, time.time(), f"fault:{rule.name}", rule.action,
                                 {k: event[k] for k in ("stream", "direction", "frame", "detail")})
            except Exception as exc:  # a sink's trouble is not the fault's
                log.debug("sink.hook_action failed: %r", exc)
        level = logging.INFO if rule.hits <= _LOGGED_PER_RULE else logging.DEBUG
        log.log(level, "c%d: fault %s: %s on %s stream %d (%s)%s", relay.id, rule.name, rule.action,
                event["frame"], info.stream_id, event["direction"], f": {detail}" if detail else "")

    def _act(self, rule: Rule, ctx, frame, headers, st: _Conn, info: FrameInfo, d: int):
        """What the rule's action makes of the frame, and the detail for the log (see ``_ACTIONS``)."""
        return _ACTIONS[rule.action].act(self, rule, ctx, frame, st, info, d, f"fault:{rule.name}")

    # -- the actions with more to them

    def _corrupt(self, rule: Rule, frame, p, note):
        lie = "length" in p or "length_delta" in p
        count = p.get("count", 0 if (lie or "offsets" in p) else 1)
        xor = p.get("xor", 0xFF)
        if isinstance(frame, fc.DataFrame) and not lie and not rule.raw:
            # Payload flips only: still a valid DATA frame, flow control stays exact.
            data = bytearray(frame.data)
            flipped = self._flip(rule, data, p.get("offsets", ()), count, xor)
            new = _clone(frame)
            new.data = bytes(data)
            return new, f"flipped DATA bytes at {flipped}"
        wire = bytearray(frame.serialize())
        payload = memoryview(wire)[9:]
        flipped = self._flip(rule, payload, p.get("offsets", ()), count, xor)
        del payload
        detail = f"flipped payload bytes at {flipped}" if flipped else "payload intact"
        if lie:
            real = len(wire) - 9
            claim = p["length"] if "length" in p else real + p["length_delta"]
            claim = max(0, min(claim, 2 ** 24 - 1))
            wire[0:3] = claim.to_bytes(3, "big")
            detail += f"; length field says {claim}, the payload has {real}"
        return [RawBytes(bytes(wire), f"{note}: corrupted")], detail + " (raw bytes)"

    @staticmethod
    def _flip(rule: Rule, buf, offsets, count: int, xor: int) -> List[int]:
        n = len(buf)
        chosen = []
        for o in offsets:
            i = o + n if o < 0 else o
            if 0 <= i < n:
                chosen.append(i)
        if n:
            for _ in range(count):
                chosen.append(rule.rng.randrange(n))
        for i in chosen:
            buf[i] ^= xor
        return chosen

    def _split(self, rule: Rule, ctx, frame, p, note, d: int):
        parts = p.get("parts", 2)
        if isinstance(frame, fc.DataFrame):
            data = frame.data
            n = min(parts, len(data))
            if n < 2:
                return None, "too short to split"
            pieces = _chunks(data, n)
            out: List[fc.Frame] = []
            for i, chunk in enumerate(pieces):
                f = fc.DataFrame(frame.stream_id, data=chunk)
                if i == len(pieces) - 1 and "END_STREAM" in frame.flags:
                    f.flags.add("END_STREAM")
                out.append(f)
        elif isinstance(frame, (fc.HeadersFrame, fc.PushPromiseFrame)):
            block = frame.data
            max_size = ctx.conn.settings[1 - d][Setting.MAX_FRAME_SIZE] - 64
            n = min(max(parts, -(-len(block) // max_size)), len(block))
            if n < 2:
                return None, "too short to split"
            pieces = _chunks(block, n)
            head = _clone(frame)
            head.data = pieces[0]
            head.flags.discard("END_HEADERS")
            out = [head]
            for i, chunk in enumerate(pieces[1:]):
                c = fc.ContinuationFrame(frame.stream_id, data=chunk)
                if i == len(pieces) - 2:
                    c.flags.add("END_HEADERS")
                out.append(c)
        else:
            return None, "not DATA, HEADERS or PUSH_PROMISE"
        detail = f"into {len(out)} frames"
        if rule.raw:
            return [RawBytes(b"".join(f.serialize() for f in out), f"{note}: split (raw)")], detail + " (raw)"
        return out, detail

    def _mark_reset(self, st: _Conn, sid: int, drop_dirs: frozenset, rst_sides: frozenset) -> None:
        st.reset[sid] = (drop_dirs, rst_sides)
        if len(st.reset) > 1024:
            st.reset.popitem(last=False)
        follow = getattr(st.relay, "follow_stream", None)
        if follow is not None:
            follow(sid)        # the rest of that stream is this hook's to repair, whichever rule wants it

    def _rst(self, rule: Rule, ctx, frame, p, st: _Conn, info: FrameInfo, d: int, note):
        code = p.get("code", int(ErrorCode.CANCEL))
        towards = p.get("towards", "both")
        sid = info.stream_id
        stream = ctx.stream
        unseen = d == C2S and info.type == HEADERS and info.nth == 1
        if unseen:
            # The request has not reached the server: only the client can be told.
            towards = "client"
        if rule.raw:
            for side in _sides(towards):
                wire_sid = stream.server_id if (stream is not None and side == SERVER) else sid
                ctx.inject(RawBytes(fc.RstStreamFrame(wire_sid, error_code=code).serialize(),
                                    f"{note}: RST_STREAM (raw)"), direction=_towards_direction(side))
            return [], f"RST_STREAM {error_name(code)} towards {towards} (raw)"
        ctx.reset_stream(sid, code, towards)
        sides = frozenset(_side_names(towards))
        drop = frozenset(_towards_direction(s) for s in _sides(towards))
        if unseen:
            drop = frozenset({C2S, S2C})     # nor does the rest of that stream (the server never saw it)
        self._mark_reset(st, sid, drop, sides)
        return [], f"RST_STREAM {error_name(code)} towards {towards}"

    def _stall(self, rule: Rule, ctx, p, st: _Conn, info: FrameInfo, d: int):
        towards = p.get("towards")
        if towards is None:
            towards = ("client" if d == C2S else "server") if info.type == DATA else "server"
        stall = _Stall(rule, C2S if towards == "server" else S2C, p.get("scope", "connection"), info.stream_id)
        st.stalls.append(stall)
        st.stalled_by.add(rule.name)
        ms = p.get("ms")
        if ms:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                stall.timer = loop.call_later(ms / 1000.0, self._release, st, stall)
        how = f"for {ms:.0f} ms" if ms else "for good"
        scope = "connection" if stall.scope == "connection" else f"stream {stall.sid}"
        return None, f"WINDOW_UPDATEs towards the {towards} withheld ({scope}) {how}"

    def _release(self, st: _Conn, stall: _Stall) -> None:
        """A timed stall ends: the withheld credit goes out, one WINDOW_UPDATE per stream."""
        if stall in st.stalls:
            st.stalls.remove(stall)
        if stall.timer is not None:
            stall.timer.cancel()
            stall.timer = None
        relay = st.relay
        if relay.closed or self._conns.get(relay) is not st:
            return
        # A timer, not a read, brings us here: pass the time in, or the released frames carry the
        # time of the connection's last read in the frame log.
        relay.tick(time.time())
        if relay.closed:
            return
        note = f"fault:{stall.rule.name}"
        total = 0
        for sid, inc in stall.pending.items():
            if sid and sid not in relay.streams:
                continue
            total += inc
            while inc > 0:
                step = min(inc, _MAX_WINDOW)
                relay.inject(stall.d, fc.WindowUpdateFrame(sid, window_increment=step), note=note)
                inc -= step
        stall.pending.clear()
        info = FrameInfo(d=stall.d, type=WINDOW_UPDATE, flag_byte=0, stream_id=stall.sid, conn=relay.id)
        self._record(stall.rule, relay, info, f"stall over: {total} bytes of window released")
        wake = getattr(relay, "wake", None)
        if wake is not None:
            wake()

    def _inject(self, rule: Rule, ctx, frame, p, st: _Conn, info: FrameInfo, d: int, note):
        towards = p.get("towards")
        target = d if towards is None else _towards_direction(towards)
        if "hex" in p:
            item = RawBytes(p["hex"], f"{note}: injected bytes")
            what = f"{len(p['hex'])} raw bytes"
        else:
            item = self._build(rule, ctx, p, info)
            kind = p["frame"]
            what = frame_name(kind) if kind <= ALTSVC else f"frame type 0x{kind:02X}"
            if rule.raw and not isinstance(item, Headers):
                item = RawBytes(item.serialize(), f"{note}: injected {what} (raw)")
            elif isinstance(item, (fc.PingFrame, fc.SettingsFrame)) and "ACK" not in item.flags \
                    and item.stream_id == 0:
                self._expect_ack(st, item, target, ctx, info, p.get("position", "before"), d)
        where = "towards the client" if target == S2C else "towards the server"
        if p.get("position", "before") == "after" and target == d:
            return [frame, item], f"{what} after the frame, {where}"
        ctx.inject(item, direction=target)
        return None, f"{what} {where}"

    def _expect_ack(self, st: _Conn, item, target: int, ctx, info: FrameInfo, position: str, d: int) -> None:
        if isinstance(item, fc.PingFrame):
            st.pings[target].add(bytes(item.opaque_data).ljust(8, b"\0"))
            return
        marks = st.settings_marks[target]
        if not marks:
            marks.extend(["peer"] * ctx.conn.unacked_settings[target])
            if info.type == SETTINGS and not info.flag_byte & 0x01 and d == target and marks:
                marks.pop()       # the matched SETTINGS itself: placed below
                if position == "after":
                    marks.append("peer")
                    marks.append("fault")
                else:
                    marks.append("fault")
                    marks.append("peer")
                return
            marks.append("fault")
            return
        if info.type == SETTINGS and not info.flag_byte & 0x01 and d == target and position == "before":
            marks.insert(len(marks) - 1, "fault")
        else:
            marks.append("fault")

    def _build(self, rule: Rule, ctx, p, info: FrameInfo):
        kind = p["frame"]
        stream = ctx.stream
        trigger_sid = stream.id if stream is not None else info.stream_id
        sid = p.get("stream_id", trigger_sid if kind in _STREAM_TYPES else 0)
        flags = p.get("frame_flags", 0)
        code = p.get("code", int(ErrorCode.CANCEL if kind == RST_STREAM else ErrorCode.NO_ERROR))
        if "payload" in p:
            return fc.ExtensionFrame(type=kind, stream_id=sid, flag_byte=flags, body=p["payload"])
        if kind == HEADERS:
            if "headers" not in p:
                raise FaultError(f"fault {rule.name}: inject frame=headers needs headers.NAME=VALUE or payload")
            return Headers(sid, p["headers"], end_stream=bool(flags & 0x01))
        if kind in (PUSH_PROMISE, CONTINUATION):
            raise FaultError(f"fault {rule.name}: inject {frame_name(kind)} needs payload = HEX")
        if kind > ALTSVC:
            return fc.ExtensionFrame(type=kind, stream_id=sid, flag_byte=flags, body=p.get("data", "").encode())
        # A valid frame on stream 0 first; a stream id the type does not allow goes on the raw form.
        f: fc.Frame
        if kind == DATA:
            f = fc.DataFrame(sid or 1, data=p.get("data", "").encode())
        elif kind == PRIORITY:
            f = fc.PriorityFrame(sid or 1, depends_on=0, stream_weight=15)
        elif kind == RST_STREAM:
            f = fc.RstStreamFrame(sid or 1, error_code=code)
        elif kind == SETTINGS:
            f = fc.SettingsFrame(0, settings=dict(p.get("set", {})) if not flags & 0x01 else None)
        elif kind == PING:
            opaque = p.get("opaque") or rule.rng.randbytes(8)
            f = fc.PingFrame(0, opaque_data=opaque)
        elif kind == GOAWAY:
            last = p.get("last_stream_id")
            if last is None:
                last = ctx.conn.last_stream[CLIENT]
            f = fc.GoAwayFrame(0, last_stream_id=last, error_code=code,
                               additional_data=p.get("debug", "").encode("utf-8"))
        elif kind == WINDOW_UPDATE:
            f = fc.WindowUpdateFrame(sid, window_increment=p.get("increment", 1))
        elif kind == ALTSVC:
            f = fc.AltSvcFrame(sid, origin=b"", field=p.get("data", "").encode())
        else:  # pragma: no cover - every type is handled above
            raise AssertionError(kind)
        _set_flag_byte(f, flags)
        if f.stream_id != sid:
            wire = f.serialize()
            return fc.ExtensionFrame(type=kind, stream_id=sid, flag_byte=flags, body=wire[9:])
        return f

    def _settings(self, rule: Rule, frame, p, note):
        if not isinstance(frame, fc.SettingsFrame) or "ACK" in frame.flags:
            return None, "not a SETTINGS frame with parameters"
        values = dict(frame.settings)
        for ident in p.get("remove", ()):
            values.pop(ident, None)
        values.update(p.get("set", {}))
        new = fc.SettingsFrame(0, settings=values)
        changes = ", ".join(f"{setting_name(k)}={v}" for k, v in p.get("set", {}).items())
        if p.get("remove"):
            changes += (", " if changes else "") + "removed " + ", ".join(setting_name(k) for k in p["remove"])
        if rule.raw:
            return [RawBytes(new.serialize(), f"{note}: SETTINGS changed (raw)")], changes + " (raw)"
        return new, changes


# ---------------------------------------------------------------- helpers

def _ends_at_request(rule: Rule) -> bool:
    """Whether ``rule`` resets every stream it wants at the first frame of it that it is shown, the
    request's block (the stream then never reaches the server, so no response of it follows): it acts
    on HEADERS from the client, and nothing but its stream condition decides whether it fires (every
    match fires while ``first`` and ``limit`` allow; no ``after``, ``every``, probability or key of
    the frame itself)."""
    return (rule.action == "rst_stream" and C2S in rule.directions
            and (rule.types is None or HEADERS in rule.types) and not rule.after and rule.every in (None, 1)
            and rule.probability >= 1.0 and rule.nth is None and not rule.flags_need and not rule.flags_avoid
            and rule.after_bytes is None and rule.status is None and not rule.response_header)


def _stream_condition(rule: Rule):
    """The part of a rule's match decided once per stream (request headers, stream id, ordinal), as a
    condition on the relay's Stream; None when the rule has none (it may act on every stream)."""
    fn = getattr(rule, "stream_condition", None)
    return fn() if fn is not None else None


def _chunks(data: bytes, n: int) -> List[bytes]:
    size, extra = divmod(len(data), n)
    out = []
    pos = 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(bytes(data[pos:pos + step]))
        pos += step
    return out


def _sides(towards: str) -> Tuple[int, ...]:
    return {"client": (CLIENT,), "server": (SERVER,), "both": (CLIENT, SERVER)}[towards]


def _side_names(towards: str) -> Tuple[str, ...]:
    return {"client": ("client",), "server": ("server",), "both": ("client", "server")}[towards]


def _towards_direction(side) -> int:
    """The direction in which frames reach ``side`` (0/"client": server->client)."""
    if side in (CLIENT, "client"):
        return S2C
    return C2S


# ---------------------------------------------------------------- the actions

class _Action:
    """One fault action: what it makes of the matched frame, and the detail the log shows.

    ``act`` returns what hooks return (None: the frame goes on; a list: what goes instead; an
    awaitable: held) and the detail. ``params``: the rule parameters it reads; each must be a key
    the rule parser (rules.KEYS) accepts for this action, and every action the parser knows
    (rules.ACTIONS) has a class here: :func:`_check_actions` holds the two to each other.
    """

    name = ""
    params: FrozenSet[str] = frozenset()

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        raise NotImplementedError


class _DelayAction(_Action):
    name = "delay"
    params = frozenset({"ms", "jitter"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        p = rule.params
        ms = p["ms"]
        jitter = p.get("jitter")
        if jitter:
            ms = max(0.0, ms + rule.rng.uniform(-jitter, jitter))
        return _hold(ms / 1000.0), f"held {ms:.0f} ms"


class _DropAction(_Action):
    name = "drop"

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        t = info.type
        if rule.raw and t == DATA:
            # Bytes of nothing: the relay sees no DATA dropped and credits nothing back.
            return [RawBytes(b"", f"{note}: dropped, no window credit (raw)")], "dropped (raw)"
        if t == HEADERS and info.nth == 1 and not rule.raw:
            # The receiver never learns of this request (or response): nothing more of it goes there.
            hook._mark_reset(st, info.stream_id, frozenset({d}), frozenset())
        return [], "dropped"


class _DuplicateAction(_Action):
    name = "duplicate"
    params = frozenset({"copies"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        copies = rule.params.get("copies", 1)
        if rule.raw:
            wire = frame.serialize()
            return [frame] + [RawBytes(wire, f"{note}: copy (raw)") for _ in range(copies)], \
                f"{copies} cop{'y' if copies == 1 else 'ies'} (raw)"
        return [frame] + [_clone(frame) for _ in range(copies)], f"{copies} cop{'y' if copies == 1 else 'ies'}"


class _CorruptAction(_Action):
    name = "corrupt"
    params = frozenset({"offsets", "count", "xor", "length", "length_delta"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._corrupt(rule, frame, rule.params, note)


class _SplitAction(_Action):
    name = "split"
    params = frozenset({"parts"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._split(rule, ctx, frame, rule.params, note, d)


class _RstStreamAction(_Action):
    name = "rst_stream"
    params = frozenset({"code", "towards"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._rst(rule, ctx, frame, rule.params, st, info, d, note)


class _GoawayAction(_Action):
    name = "goaway"
    params = frozenset({"code", "towards", "last_stream_id", "debug", "keep", "position"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        p = rule.params
        code = p.get("code", int(ErrorCode.NO_ERROR))
        towards = p.get("towards", "client")
        last = p.get("last_stream_id")
        debug = p.get("debug", "").encode("utf-8")
        keep = p.get("keep", True)
        after = p.get("position", "before") == "after" and keep
        result: Optional[list] = None if keep else []
        if rule.raw or after:
            for side in _sides(towards):
                last_id = last if last is not None else ctx.conn.last_stream[side]
                goaway = fc.GoAwayFrame(0, last_stream_id=last_id, error_code=code, additional_data=debug)
                item = RawBytes(goaway.serialize(), f"{note}: GOAWAY (raw)") if rule.raw else goaway
                target = _towards_direction(side)
                if after and target == d:
                    result = [frame, item]
                else:
                    ctx.inject(item, direction=target)
        else:
            ctx.goaway(code, last, debug, towards)
        where = " after the frame" if after else ""
        return result, f"GOAWAY {error_name(code)} towards {towards}{where}"


class _CloseAction(_Action):
    name = "close"
    params = frozenset({"reset", "towards", "keep"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        p = rule.params
        reset = p.get("reset", False)
        towards = p.get("towards", "both")
        ctx.close(towards, reset)
        if not rule.raw:
            st.closing = True     # frames behind this one in the same read do not follow it out
            halt = getattr(ctx.conn, "halt", None)
            if halt is not None:
                halt()
        return (None if p.get("keep", False) else []), f"{'TCP reset' if reset else 'FIN'} towards {towards}"


class _StallAction(_Action):
    name = "stall"
    params = frozenset({"ms", "towards", "scope"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._stall(rule, ctx, rule.params, st, info, d)


class _ThrottleAction(_Action):
    name = "throttle"
    params = frozenset({"rate"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        rate = rule.params["rate"]
        size = _flow_length(frame) if info.type == DATA else max(0, len(frame.serialize()) - 9)
        key = (rule.name, d)
        now = _now()
        start = max(now, st.throttle.get(key, now))
        st.throttle[key] = start + size / rate
        wait = start - now
        if wait > 0.0005:
            return _hold(wait), f"{size} bytes held {wait * 1000:.0f} ms"
        return None, f"{size} bytes"


class _InjectAction(_Action):
    name = "inject"
    params = frozenset({"code", "towards", "last_stream_id", "debug", "frame", "hex", "stream_id", "frame_flags",
                        "payload", "data", "opaque", "increment", "headers", "position", "set"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._inject(rule, ctx, frame, rule.params, st, info, d, note)


class _SettingsAction(_Action):
    name = "settings"
    params = frozenset({"set", "remove"})

    def act(self, hook: FaultHook, rule: Rule, ctx: Any, frame: Any, st: _Conn, info: FrameInfo, d: int,
            note: str) -> Tuple[Any, str]:
        return hook._settings(rule, frame, rule.params, note)


def _check_actions(classes: Iterable[type]) -> Dict[str, _Action]:
    """The action table, held to the rule parser's definitions: the same actions as rules.ACTIONS,
    each reading only parameters that rules.KEYS accepts for it (a mismatch is a bug: import fails)."""
    table: Dict[str, _Action] = {}
    for cls in classes:
        action = cls()
        if not isinstance(action, _Action) or action.name not in ACTIONS:
            raise RuntimeError(f"fault action class {cls.__name__} is for no action the rule parser knows")
        for key in sorted(action.params):
            allowed = KEYS[key].actions if key in KEYS else frozenset()
            if allowed is not None and action.name not in allowed:
                raise RuntimeError(f"fault action {action.name!r} reads {key!r}, which the rule parser does not "
                                   f"accept for it")
        table[action.name] = action
    missing = set(ACTIONS) - set(table)
    if missing:
        raise RuntimeError(f"fault actions with no implementation: {sorted(missing)}")
    return table


#: Action name -> what carries it out.
_ACTIONS = _check_actions((_DelayAction, _DropAction, _DuplicateAction, _CorruptAction, _SplitAction,
                           _RstStreamAction, _GoawayAction, _CloseAction, _StallAction, _ThrottleAction,
                           _InjectAction, _SettingsAction))


def load_fault_file(path: str) -> List[dict]:
    """The ``[[faults]]`` tables of a TOML file."""
    import tomllib
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise FaultError(f"{path}: no such fault file") from None
    except tomllib.TOMLDecodeError as exc:
        raise FaultError(f"{path}: not valid TOML: {exc}") from None
    faults = data.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(t, dict) for t in faults):
        raise FaultError(f"{path}: faults: expected [[faults]] tables")
    return faults
