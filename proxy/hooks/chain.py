"""Loading hooks and building the per-direction dispatch tables the relay uses.

The table maps a frame type to the list of ``(hook name, bound method,
wants headers)`` that must see frames of that type in that direction; types
no hook asks for are absent, which is what gives them the fast path.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.hookrun import HookCtx
from ..core.interfaces import Entries
from ..core.protocol import HEADERS
from .api import HookLoadError
from .interest import ALL_TYPES, on_request, resolve, untracked_only

__all__ = ["HookChain", "HookLoadError", "load_hook", "BUILTINS"]

log = logging.getLogger("h2proxy")

#: Built-in hooks by name (module:Class), loaded on demand.
BUILTINS = {
    "altsvc": "proxy.hooks.builtin.altsvc:AltSvcHook",
    "push": "proxy.hooks.builtin.push:PushHook",
    "headers": "proxy.hooks.builtin.headers:HeadersHook",
    "extension": "proxy.hooks.builtin.extension:ExtensionHook",
    "faults": "proxy.faults.hook:FaultHook",
}


#: How many request header lists the outcome of request-only conditions is remembered for.
_CONDITION_MEMO = 1024
#: Memo value for "no tables" (None is "not remembered"), and the key for a stream with no request list.
_NONE: tuple = ()
_NO_REQUEST: tuple = (None,)


class RewriteEntries(Entries):
    """The entries for a stream's HEADERS in one direction when they are one hook's that only rewrites
    header lists: ``rewrite(direction, headers, request_headers)`` returns None (unchanged) or the new
    list. The relay calls it directly (no frame object, no hook context) where nothing else needs
    the frame (see ``rewrite_header_list`` in docs/hooks.md); anywhere else the entries run as usual."""

    rewrite: Callable[[str, List[Tuple[str, str]], Optional[List[Tuple[str, str]]]], Optional[list]]


class HookChain:
    """The hooks of a proxy, in order, with their dispatch tables.

    Tables map a frame type to the entries ``(hook name, bound method, wants headers,
    stream condition, screen)`` that must see frames of that type in that direction; types no
    hook asks for are absent, which is what gives them the fast path. ``screen`` is None or a
    :data:`~proxy.core.interfaces.Screen`, asked before a frame object is made: when every entry of a
    list has one and each says False, the frame goes on as it came (no object, no call; the lists the
    relay gets are :class:`~proxy.core.interfaces.Entries`, which name those screens). The stream
    condition is None (every stream) or a tuple of conditions, any of which makes the
    stream wanted; each is called once per stream with the :class:`~proxy.core.relay.Stream`
    (its request headers read). See :mod:`proxy.hooks.interest`.

    * :meth:`table`: every entry (what :class:`~proxy.faults.hook.FaultHook` edits);
    * :meth:`conn_table`: the entries for frames on stream 0 and on streams the relay
      does not track: those without a stream condition;
    * :meth:`stream_tables`: a stream's own tables (None when no hook wants it).

    After editing :meth:`table`, call :meth:`changed`: open connections take the new
    interest at once.
    """

    def __init__(self, hooks: List[Any], grpc=None) -> None:
        self.hooks = list(hooks)
        self._add_grpc(grpc)
        self.errors_logged: set = set()
        #: id(bound on_headers of an entry) -> the same hook's rewrite_header_list (see RewriteEntries).
        self._rewriters: Dict[int, Callable] = {}
        self.interests = [resolve(h) for h in self.hooks]
        self._decoding()
        self._table = self._build()
        self._full: tuple = ({}, {})
        self._conn_table: List[Dict[int, list]] = [{}, {}]
        self._untracked_table: List[Dict[int, list]] = [{}, {}]
        self._stream_cache: Dict[tuple, Optional[tuple]] = {}
        self._atoms: List[Callable] = []
        self._one: Optional[Callable] = None
        self._one_tables: Tuple[Optional[tuple], Optional[tuple]] = (None, None)
        #: request header list -> the tables (or _NONE), when every condition is marked request_only.
        self._memo: Optional[Dict[tuple, tuple]] = None
        self._relays: "weakref.WeakSet" = weakref.WeakSet()
        #: Bumped at every change of the tables.
        self.version = 0
        #: See HookRunner.request_tables.
        self.request_tables: Optional[int] = None
        self._derive()
        self._lifecycle: Dict[str, List[Tuple[str, Callable[..., Any]]]] = {
            name: [(self._name(h), getattr(h, name)) for h in self.hooks if hasattr(h, name)]
            for name in ("connection_opened", "connection_closed")}
        # Stream events: hooks with a stream condition only hear of the streams it holds for.
        self._wanted_events: Dict[str, List[Tuple[str, Callable[..., Any], Callable[[Any], bool]]]] = {}
        pairs = list(zip(self.hooks, self.interests, strict=True))
        for name in ("stream_opened", "stream_closed"):
            self._lifecycle[name] = [(self._name(h), getattr(h, name)) for h, i in pairs
                                     if hasattr(h, name) and i.stream is None]
            self._wanted_events[name] = [(self._name(h), getattr(h, name), on_request(i.stream))
                                         for h, i in pairs if hasattr(h, name) and i.stream is not None]
        self.wants_stream_opened = bool(self._lifecycle["stream_opened"] or self._wanted_events["stream_opened"])
        self.wants_stream_closed = bool(self._lifecycle["stream_closed"] or self._wanted_events["stream_closed"])

    def _add_grpc(self, options) -> None:
        """Hooks with ``on_grpc_message``: the gRPC message hook goes in front of the first (proxy/grpc/hook.py)."""
        handlers = [h for h in self.hooks if hasattr(h, "on_grpc_message")]
        if not handlers or all(getattr(h, "static", False) and not getattr(h, "grpc_active", True)
                               for h in handlers):
            return       # (rules that cannot change and act on no message: no call needs following)
        from ..grpc.hook import GrpcHook, GrpcSettingsHook
        now = any(getattr(h, "grpc_active", True) for h in handlers)
        self.hooks.insert(self.hooks.index(handlers[0]), (GrpcSettingsHook if now else GrpcHook)(handlers, options))

    def _decoding(self) -> None:
        """What the hooks' interests need decoded (set from :attr:`interests`)."""
        #: Per direction, whether some hook needs that direction's header blocks decoded; and whether it
        #: does only where the client allows server push (see Interest.decode_if_push).
        self.decode = [any(d in i.decode for i in self.interests) for d in (0, 1)]
        self.decode_if_push = [not self.decode[d] and any(d in i.decode_if_push for i in self.interests)
                               for d in (0, 1)]
        self.needs_headers = any(self.decode) or any(self.decode_if_push)

    @staticmethod
    def _name(hook) -> str:
        return getattr(hook, "name", "") or type(hook).__name__

    def _build(self) -> List[Dict[int, list]]:
        tables: List[Dict[int, list]] = [{}, {}]
        self._rewriters = {}
        for h, interest in zip(self.hooks, self.interests, strict=True):
            provider = getattr(h, "hook_entries", None)
            if provider is not None:
                # A hook that is several entries (the fault rules: one per rule, each with its interest).
                for d in (0, 1):
                    for t in ALL_TYPES:
                        entries = provider(d, t)
                        if entries:
                            tables[d].setdefault(t, []).extend(entries)
                continue
            cond = None if interest.stream is None else (on_request(interest.stream),)
            rewrite = getattr(h, "rewrite_header_list", None)
            for d in (0, 1):
                for t, (method, wants) in interest.methods[d].items():
                    if callable(rewrite) and wants and t == HEADERS:
                        self._rewriters[id(method)] = rewrite
                    entries = tables[d].setdefault(t, [])
                    entries.append((self._name(h), method, wants, cond, None))
                    if cond is not None and interest.untracked:
                        entries.append((self._name(h), method, wants, (), None))
        return tables

    def rebuild(self) -> None:
        """Ask every hook again (a hook's entries changed): the tables change in place, then :meth:`changed`."""
        new = self._build()
        for d in (0, 1):
            # New lists: a hook chain suspended on an old one (an async hook) finishes with it.
            self._table[d].clear()
            self._table[d].update(new[d])
        self.changed()

    def table(self):
        return self._table

    def conn_table(self) -> List[Dict[int, list]]:
        """Entries for frames on stream 0 (the same dicts for the chain's life)."""
        return self._conn_table

    def untracked_table(self) -> List[Dict[int, list]]:
        """Entries for frames on streams the relay does not track (the same dicts for the chain's life)."""
        return self._untracked_table

    def _derive(self) -> None:
        """Recompute what follows from :meth:`table`: the connection tables, the conditions.

        An entry whose condition is the empty tuple is only for stream 0 and untracked streams, one
        whose condition is ``(untracked_only,)`` only for untracked streams.
        """
        atoms: Dict[int, Callable] = {}
        for d in (0, 1):
            conn = self._conn_table[d]
            untracked = self._untracked_table[d]
            full = self._full[d]
            conn.clear()
            untracked.clear()
            full.clear()
            for t, entries in self._table[d].items():
                plain = [e for e in entries if e[3] is None or e[3] == ()]
                if plain:
                    conn[t] = Entries.of(plain)
                loose = [e for e in entries if e[3] is None or e[3] == () or e[3] == (untracked_only,)]
                if loose:
                    untracked[t] = Entries.of(loose)
                every, seen = [], set()
                for e in entries:        # (an entry listed twice, for streams and for the rest: once)
                    if (e[0], e[1]) not in seen:
                        seen.add((e[0], e[1]))
                        every.append(e)
                full[t] = Entries.of(every)
                for e in entries:
                    for atom in e[3] or ():
                        if atom is not untracked_only:
                            atoms[id(atom)] = atom
        self._atoms = list(atoms.values())
        self._stream_cache = {}
        # One condition (the usual case: one rule or one hook on a path): both outcomes' tables made now.
        self._one = self._atoms[0] if len(self._atoms) == 1 else None
        self._one_tables = (self._tables_for((False,)), self._tables_for((True,))) if self._one else (None, None)
        self._memo = {} if self._atoms and all(getattr(a, "request_only", False) for a in self._atoms) else None
        self.request_tables = None if self._atoms and self._memo is None else self.version + 1
        #: With no condition, every stream has the same tables: the relay takes them without asking
        #: per stream (the default ALTSVC hook is such a chain).
        self.fixed_tables = not self._atoms
        self.every_stream = self._tables_for(()) if not self._atoms else None

    def changed(self) -> None:
        """The tables were edited (rules changed at run time): open connections follow at once.

        (What is decoded changes for new connections only: a direction cannot start being decoded
        in the middle of one. Hooks whose rules may change decode both directions from the start.)
        """
        self.interests = [resolve(h) for h in self.hooks]
        self._decoding()
        self._derive()
        self.version += 1
        for relay in list(self._relays):
            relay.interest_changed()

    def stream_tables(self, stream) -> Optional[tuple]:
        """Per direction, type -> entries for the frames of ``stream``; None when no hook wants any of them.

        Each condition is evaluated once here; streams with the same outcome share their tables.
        """
        if self._memo is not None:
            return self._remembered(stream)
        return self._decide(stream)

    def _decide(self, stream) -> Optional[tuple]:
        """stream_tables, each condition asked."""
        one = self._one
        if one is not None:
            return self._one_tables[1 if one(stream) else 0]
        atoms = self._atoms
        key: tuple = tuple([bool(a(stream)) for a in atoms]) if atoms else ()
        cache = self._stream_cache
        try:
            return cache[key]
        except KeyError:
            pass
        result = self._tables_for(key)
        if len(cache) < 256:
            cache[key] = result
        return result

    def _remembered(self, stream) -> Optional[tuple]:
        """stream_tables when every condition is on the request alone: remembered per request header list."""
        memo = self._memo
        assert memo is not None
        req = stream.request_headers
        try:
            request = tuple(req) if req is not None else _NO_REQUEST
            hit = memo.get(request)
        except TypeError:          # (a value that cannot be hashed)
            return self._decide(stream)
        if hit is None:
            if len(memo) >= _CONDITION_MEMO:
                memo.clear()
            hit = memo[request] = self._decide(stream) or _NONE
        return None if hit is _NONE else hit

    def _tables_for(self, key: tuple) -> Optional[tuple]:
        """The tables of a stream for which the conditions' outcomes are ``key`` (in ``_atoms`` order)."""
        held = {id(a) for a, on in zip(self._atoms, key, strict=True) if on}
        out: List[Dict[int, list]] = [{}, {}]
        for d in (0, 1):
            for t, entries in self._table[d].items():
                kept = [e for e in entries if e[3] is None or any(id(a) in held for a in e[3])]
                if len(kept) == 1 and t == HEADERS and id(kept[0][1]) in self._rewriters:
                    rewriting = RewriteEntries.of(kept)
                    rewriting.rewrite = self._rewriters[id(kept[0][1])]
                    out[d][t] = rewriting
                elif kept:
                    out[d][t] = Entries.of(kept)
        return None if not (out[0] or out[1]) else (out[0], out[1])

    def full_tables(self) -> tuple:
        """Every entry, whatever its condition (a stream a hook must follow whole from now on: its
        repairs); the same dicts for the chain's life."""
        return self._full

    def _call(self, name, *args):
        for hook_name, fn in self._lifecycle[name]:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    _schedule(result)
            except Exception as exc:
                log.error("hook %s raised in %s", hook_name, name, exc_info=exc)

    def connection_opened(self, relay) -> None:
        self._relays.add(relay)
        if self._lifecycle["connection_opened"]:
            self._call("connection_opened", HookCtx(relay, 0, "h2proxy", None, None))

    def connection_closed(self, relay) -> None:
        self._relays.discard(relay)
        if self._lifecycle["connection_closed"]:
            self._call("connection_closed", HookCtx(relay, 0, "h2proxy", None, None))

    def stream_opened(self, relay, stream) -> None:
        self._stream_event("stream_opened", relay, stream)

    def stream_closed(self, relay, stream) -> None:
        self._stream_event("stream_closed", relay, stream)

    def _stream_event(self, name: str, relay, stream) -> None:
        calls = self._lifecycle[name]
        wanted = self._wanted_events[name]
        if wanted and stream.hooks is not None:
            calls = calls + [(hook_name, fn) for hook_name, fn, cond in wanted if cond(stream)]
        if calls:
            ctx = HookCtx(relay, 0, "h2proxy", stream, None)
            for hook_name, fn in calls:
                try:
                    result = fn(ctx, stream)
                    if inspect.isawaitable(result):
                        _schedule(result)
                except Exception as exc:
                    log.error("hook %s raised in %s", hook_name, name, exc_info=exc)


def _schedule(awaitable) -> None:
    import asyncio
    try:
        asyncio.ensure_future(awaitable)
    except RuntimeError:
        pass


def load_hook(spec: str, options: Optional[dict] = None):
    """Instantiate a hook from a built-in name, ``module:Class`` or ``path/to/file.py[:Class]``."""
    options = dict(options or {})
    target = BUILTINS.get(spec, spec)
    path_part, _, cls_name = target.partition(":") if not _is_windows_path(target) else (target, "", "")
    try:
        if path_part.endswith(".py") or "/" in path_part:
            path = Path(path_part)
            if not path.exists():
                raise HookLoadError(f"hook file {path} does not exist")
            mod_name = f"h2proxy_user_hook_{abs(hash(str(path.resolve())))}"
            spec_obj = importlib.util.spec_from_file_location(mod_name, path)
            if spec_obj is None or spec_obj.loader is None:
                raise HookLoadError(f"hook file {path} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[mod_name] = module
            spec_obj.loader.exec_module(module)
        else:
            module = importlib.import_module(path_part)
    except HookLoadError:
        raise
    except Exception as exc:
        raise HookLoadError(f"cannot load hook {spec!r}: {type(exc).__name__}: {exc}") from exc
    if cls_name:
        try:
            obj = getattr(module, cls_name)
        except AttributeError:
            raise HookLoadError(f"hook {spec!r}: module {path_part} has no {cls_name}") from None
        instances = [_instantiate(obj, options, spec)]
    else:
        # A file or module: its `hooks` list (mitmproxy's `addons`), else every Hook subclass defined in it.
        if hasattr(module, "hooks"):
            instances = list(module.hooks)
        else:
            from .api import Hook
            classes = [v for v in vars(module).values()
                       if inspect.isclass(v) and v.__module__ == module.__name__
                       and (issubclass(v, Hook) or any(n.startswith("on_") for n in vars(v)))]
            if not classes:
                raise HookLoadError(f"hook {spec!r} defines no hook class and no `hooks` list")
            instances = [_instantiate(c, options, spec) for c in classes]
    return instances


def _instantiate(obj, options, spec):
    if not inspect.isclass(obj):
        return obj
    try:
        return obj(**options)
    except TypeError as exc:
        raise HookLoadError(f"hook {spec!r}: bad options {sorted(options)}: {exc}") from exc


def _is_windows_path(text: str) -> bool:
    return len(text) > 2 and text[1] == ":" and text[2] in "\\/"
