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
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.protocol import FRAME_NAMES, HOOK_SUFFIX

log = logging.getLogger("h2proxy")

#: Built-in hooks by name (module:Class), loaded on demand.
BUILTINS = {
    "altsvc": "proxy.hooks.builtin.altsvc:AltSvcHook",
    "push": "proxy.hooks.builtin.push:PushHook",
    "headers": "proxy.hooks.builtin.headers:HeadersHook",
    "extension": "proxy.hooks.builtin.extension:ExtensionHook",
    "faults": "proxy.faults.hook:FaultHook",
}

EXTENSION = -1   # table key for frame types the codec does not know


class HookLoadError(Exception):
    """A hook named in the config or on the command line could not be loaded."""


class HookChain:
    """The hooks of a proxy, in order, with their dispatch tables."""

    def __init__(self, hooks: List[Any], grpc=None) -> None:
        self.hooks = list(hooks)
        self._add_grpc(grpc)
        self.errors_logged: set = set()
        self.needs_headers = any(_wants_headers(h) or getattr(h, "needs_headers", False) for h in self.hooks)
        self._table = self._build()
        self._lifecycle = {name: [(self._name(h), getattr(h, name)) for h in self.hooks if hasattr(h, name)]
                           for name in ("connection_opened", "connection_closed", "stream_opened", "stream_closed")}
        #: False when no hook has stream lifecycle methods: the relay then skips those calls per stream.
        self.wants_stream_events = bool(self._lifecycle["stream_opened"] or self._lifecycle["stream_closed"])

    def _add_grpc(self, options) -> None:
        """Hooks with ``on_grpc_message``: the gRPC message hook goes in front of the first (proxy/grpc/hook.py)."""
        handlers = [h for h in self.hooks if hasattr(h, "on_grpc_message")]
        if not handlers:
            return
        from ..grpc.hook import GrpcHook, GrpcSettingsHook
        now = any(getattr(h, "grpc_active", True) for h in handlers)
        self.hooks.insert(self.hooks.index(handlers[0]), (GrpcSettingsHook if now else GrpcHook)(handlers, options))

    @staticmethod
    def _name(hook) -> str:
        return getattr(hook, "name", "") or type(hook).__name__

    def _build(self) -> List[Dict[int, list]]:
        tables: List[Dict[int, list]] = [{}, {}]
        types = list(FRAME_NAMES) + [EXTENSION]
        for t in types:
            suffix = HOOK_SUFFIX.get(t, "extension")
            entries = []
            for h in self.hooks:
                method = getattr(h, "on_" + suffix, None)
                wants = suffix in ("headers", "push_promise") and method is not None
                if method is None:
                    method = getattr(h, "on_frame", None)
                if method is None:
                    continue
                entries.append((self._name(h), method, wants))
            if entries:
                for d in (0, 1):
                    tables[d][t] = entries
        return tables

    def table(self):
        return self._table

    def _call(self, name, *args):
        for hook_name, fn in self._lifecycle[name]:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    _schedule(result)
            except Exception as exc:
                log.error("hook %s raised in %s", hook_name, name, exc_info=exc)

    def connection_opened(self, relay) -> None:
        if self._lifecycle["connection_opened"]:
            from ..core.relay import HookCtx
            self._call("connection_opened", HookCtx(relay, 0, "h2proxy", None, None))

    def connection_closed(self, relay) -> None:
        if self._lifecycle["connection_closed"]:
            from ..core.relay import HookCtx
            self._call("connection_closed", HookCtx(relay, 0, "h2proxy", None, None))

    def stream_opened(self, relay, stream) -> None:
        if self._lifecycle["stream_opened"]:
            from ..core.relay import HookCtx
            self._call("stream_opened", HookCtx(relay, 0, "h2proxy", stream, None), stream)

    def stream_closed(self, relay, stream) -> None:
        if self._lifecycle["stream_closed"]:
            from ..core.relay import HookCtx
            self._call("stream_closed", HookCtx(relay, 0, "h2proxy", stream, None), stream)


def _schedule(awaitable) -> None:
    import asyncio
    try:
        asyncio.ensure_future(awaitable)
    except RuntimeError:
        pass


def _wants_headers(hook) -> bool:
    return any(hasattr(hook, m) for m in ("on_headers", "on_push_promise"))


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
