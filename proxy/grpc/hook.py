"""gRPC messages in the relay: ``on_grpc_message(ctx, message)`` hooks and ``ctx.grpc_abort``.

:class:`GrpcHook` is a built-in hook that :class:`~proxy.hooks.chain.HookChain`
puts in front of the first hook that defines ``on_grpc_message``. On gRPC
streams only (recognised by the request's ``content-type``) it reassembles
each direction's messages from DATA frames, hands every complete message to
those hooks in chain order, and sends the result on as DATA of its own: a
frame that completed no message is held back (the relay gives the sender its
window back), the messages it completed go out as they were or as the hooks
made them. The relay's flow-control repairs keep both sides' windows right
(what the proxy sends beyond what it received is owed, and taken from the
receiver's WINDOW_UPDATEs). Frames whose bytes were all whole, unchanged
messages go on byte for byte; streams that are not gRPC are not touched.

A hook's return value: ``None`` (unchanged), bytes (the new message),
a protobuf message object, a dict of named fields (with ``--proto-descriptor``),
a list of those (split, duplicate) or ``[]`` (drop). Messages longer than the
maximum message size are passed through unseen.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from framecodec.frame import DataFrame, RstStreamFrame

from ..hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Headers
from .calls import GrpcOptions, header, is_grpc_request, split_path
from .framing import (
    DecompressError,
    Message,
    MessageReader,
    Oversized,
    Passthrough,
    compress,
    decompress,
    frame_message,
)
from .status import parse_status, percent_encode

log = logging.getLogger("h2proxy")

#: gRPC's SETTINGS parameter GRPC_ALLOW_TRUE_BINARY_METADATA: peers that both announce it send
#: ``-bin`` metadata as raw bytes, which is not UTF-8 and stops the proxy decoding header blocks.
TRUE_BINARY_METADATA = 0xFE03


class GrpcMessage:
    """One complete gRPC message as a hook sees it. ``data``: the message bytes (decompressed)."""

    __slots__ = ("data", "direction", "index", "compressed", "encoding", "path", "service", "method",
                 "stream_id", "conn_id", "_schema")

    def __init__(self, data: bytes, direction: str, index: int, compressed: bool, encoding: Optional[str],
                 path: str, stream_id: int, conn_id: int, schema=None) -> None:
        self.data = data
        self.direction = direction
        self.index = index
        self.compressed = compressed
        self.encoding = encoding
        self.path = path
        self.service, self.method = split_path(path)
        self.stream_id = stream_id
        self.conn_id = conn_id
        self._schema = schema

    @property
    def is_request(self) -> bool:
        return self.direction == CLIENT_TO_SERVER

    @property
    def decoded(self) -> Optional[dict]:
        """Named fields (needs ``--proto-descriptor`` with this method in it), else None."""
        if self._schema is None:
            return None
        return self._schema.decode(self.path, self.is_request, self.data)

    def fields(self):
        """The schema-less wire-format tree (:func:`proxy.grpc.protowire.decode_raw`)."""
        from .protowire import decode_raw
        return decode_raw(self.data)

    def __repr__(self) -> str:
        return (f"GrpcMessage({self.path} {self.direction} #{self.index}, {len(self.data)} bytes"
                f"{', compressed' if self.compressed else ''})")


class GrpcContext:
    """What ``on_grpc_message`` gets as ``ctx``: the frame's hook context plus gRPC names and ``grpc_abort``."""

    def __init__(self, hook: "GrpcHook", frame_ctx, call: "_Call", name: str) -> None:
        self._hook = hook
        self.frame_ctx = frame_ctx
        self.call = call
        self.hook = name

    def __getattr__(self, name: str) -> Any:
        # direction, conn, stream, request_headers, inject, reset_stream, goaway, close: the frame's context
        return getattr(self.frame_ctx, name)

    @property
    def path(self) -> str:
        return self.call.path

    @property
    def service(self) -> str:
        return split_path(self.call.path)[0]

    @property
    def method(self) -> str:
        return split_path(self.call.path)[1]

    def grpc_abort(self, code: Any, message: str = "") -> None:
        """End the call as a server would: grpc-status ``code`` to the client, RST_STREAM CANCEL to the server."""
        self._hook.abort(self.frame_ctx, self.call, parse_status(code), message, self.hook)

    def cut_after(self, code: Any = "INTERNAL_ERROR") -> None:
        """Forward this message, then reset the stream: ``code`` towards the receiver, CANCEL towards the sender."""
        from ..core.protocol import parse_error_code
        self.call.cut = parse_error_code(code)


class _Call:
    __slots__ = ("path", "readers", "encodings", "response_started", "aborted", "client_done", "cut", "tail")

    def __init__(self, path: str, encoding: Optional[str], max_size: int) -> None:
        self.path = path
        self.readers = (MessageReader(max_size, pass_oversized=True), MessageReader(max_size, pass_oversized=True))
        self.encodings: List[Optional[str]] = [encoding, None]
        self.response_started = False     # response HEADERS went to the client
        self.aborted = False
        self.client_done = False
        self.cut: Optional[int] = None      # an HTTP/2 error code: reset the stream after this message
        self.tail: Optional[list] = None    # what an abort on a response sends after the messages before it


def _join(parts: List[Any]) -> bytes:
    """Bytes and unchanged messages (their prefix and bytes as received) as one run of bytes."""
    return b"".join(p.wire() if isinstance(p, Message) else p for p in parts)


def _d(ctx) -> int:
    return 0 if ctx.direction == CLIENT_TO_SERVER else 1


class GrpcHook:
    """Reassembles gRPC messages for ``on_grpc_message`` hooks (see the module docstring)."""

    name = "grpc"
    needs_headers = True

    def __init__(self, handlers: List[Any], options: Optional[GrpcOptions] = None) -> None:
        self.handlers: List[Tuple[str, Any]] = [(getattr(h, "name", "") or type(h).__name__, h.on_grpc_message)
                                                for h in handlers]
        #: The hooks with ``on_grpc_message`` (their ``grpc_active`` and ``static`` say whether calls are followed).
        self.owners = list(handlers)
        self.options = options or GrpcOptions()
        self.schema = None
        if self.options.descriptor:
            from .schema import load_schema
            self.schema = load_schema(self.options.descriptor)
        self.calls: Dict[Tuple[int, int], _Call] = {}
        #: Streams this hook ended (abort, cut): frames the peers still had in flight are dropped.
        self.ended: Dict[Tuple[int, int], None] = {}
        self.messages = 0
        self.oversized = 0
        self.errors = 0

    def interest(self):
        """gRPC calls only (a POST with an application/grpc content type), and only while some handler
        acts on messages or may start to (:meth:`follows_calls`); frames on streams the relay no longer
        tracks too (those of calls it ended)."""
        from ..hooks.interest import Interest
        follows = self.follows_calls

        def wanted(request) -> bool:
            return follows() and is_grpc_request(request)
        wanted.request_only = True          # (until the rules change: rebuilt then)
        # While no handler acts on messages, DATA only: a call is followed from its first DATA on (its
        # messages counted, _follow), and its header blocks pass by this hook. The chain asks again
        # when the rules change, and the tables of open streams change with it.
        types = None if self.active() else ("data", "settings")
        return Interest(types=types, stream=wanted, decode=("client->server", "server->client"), untracked=True)

    def active(self) -> bool:
        """Whether some handler acts on messages now."""
        return any(getattr(o, "grpc_active", True) for o in self.owners)

    def changeable(self) -> bool:
        """Whether some handler's rules can change while calls run (``static`` false, fixed when the
        chain is made): its calls are wanted from their request on, so their first DATA starts a message."""
        return any(not getattr(o, "static", True) for o in self.owners)

    def follows_calls(self) -> bool:
        """Whether new calls are followed: some handler acts on messages now, or its rules can change
        while the call runs (a fault hook with the admin API or the web view: ``static`` false). Such a
        call's messages are then counted as they go by unseen, so that a rule added later acts from the
        next message on, with the message numbers of the whole call."""
        return self.active() or self.changeable()

    # ------------------------------------------------------------ frames

    def on_headers(self, ctx, frame, headers):
        s = ctx.stream
        if s is None:
            return [] if self.ended and (ctx.conn.id, frame.stream_id) in self.ended else None
        key = (ctx.conn.id, s.id)
        call = self.calls.get(key)
        d = _d(ctx)
        if call is None:
            if d == 0 and headers is not None and is_grpc_request(headers) and self.follows_calls():
                self._call(ctx, headers)
            return None
        if call.aborted:
            return []
        if d == 1 and headers is not None and not call.response_started:
            call.response_started = True
            call.encodings[1] = header(headers, "grpc-encoding")
        if "END_STREAM" in frame.flags:
            if d == 0:
                call.client_done = True
            rest = call.readers[d].take_partial()
            if rest:
                # The stream ends inside a message: the bytes held go on before the trailers.
                ctx.inject(DataFrame(frame.stream_id, data=rest))
        if s.held is not None and s.held[d]:
            # Messages this hook sent are waiting in the relay for the receiver's window: the block must
            # not overtake them (trailers before the last message would end the call without it).
            return self._after_held(ctx, s, d)
        return None

    def _call(self, ctx, request: Sequence[Any]) -> _Call:
        """A followed call (its messages are read from here on)."""
        # A message a hook saw goes out in one burst: keep it well inside what a socket may queue.
        limit = min(self.options.max_message, ctx.conn.limits.max_queued_bytes // 2)
        call = _Call(header(request, ":path") or "", header(request, "grpc-encoding"), limit)
        self.calls[(ctx.conn.id, ctx.stream.id)] = call
        return call

    def _follow(self, ctx, s) -> Optional[_Call]:
        """The first DATA of a call whose header blocks passed by (no handler acted then): it is followed
        from here, what it needs of its header blocks taken from the stream. Only for a :meth:`changeable`
        handler: a stream that became wanted when some other handler's ``grpc_active`` turned true may be
        in the middle of a message, and is left alone."""
        request = s.request_headers
        if request is None or not is_grpc_request(request):
            return None
        call = self._call(ctx, request)
        if s.response_headers is not None:
            call.response_started = True
            call.encodings[1] = header(s.response_headers, "grpc-encoding")
        return call

    async def _after_held(self, ctx, s, d: int, timeout: float = 60.0):
        """Hold a header block (and what follows it this way) until the stream's held DATA went out."""
        import asyncio
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while s.held is not None and s.held[d] and s.id in ctx.conn.streams and loop.time() < until:
            await asyncio.sleep(0.002)
        return None

    def on_data(self, ctx, frame):
        s = ctx.stream
        if s is None:
            return [] if self.ended and (ctx.conn.id, frame.stream_id) in self.ended else None
        call = self.calls.get((ctx.conn.id, s.id))
        if call is None:
            call = self._follow(ctx, s) if self.changeable() else None
            if call is None:
                return None
        if call.aborted:
            return []
        d = _d(ctx)
        reader = call.readers[d]
        end = "END_STREAM" in frame.flags
        if end and d == 0:
            call.client_done = True
        if not reader.keeping and not self.active():
            reader.skim(frame.data)     # (no handler looks now: the frame goes on, its messages counted)
            return None
        was_inside = reader.in_message
        events = reader.feed(frame.data)
        work = self._rebuild(ctx, call, d, events, end, not was_inside and not reader.in_message
                             and "PADDED" not in frame.flags)
        try:
            step = next(work)
        except StopIteration as stop:
            return self._frames(ctx, call, frame, stop.value)
        return self._finish_async(ctx, call, work, step, frame)

    async def _finish_async(self, ctx, call, work, step, frame):
        while True:
            try:
                value = await step
            except Exception as exc:       # (an async handler raised: treated like a sync one)
                step = work.throw(exc)
                continue
            try:
                step = work.send(value)
            except StopIteration as stop:
                return self._frames(ctx, call, frame, stop.value)

    def _frames(self, ctx, call: _Call, frame, out):
        if out is None:
            return None
        data, end = out
        if call.tail is not None:
            # grpc_abort on a response: the messages before the aborted one, then the trailers.
            tail, call.tail = call.tail, None
            return ([DataFrame(frame.stream_id, data=data)] if data else []) + tail
        if call.cut is not None and not call.aborted:
            # cut: what came up to the message goes on, then the stream is reset both ways.
            call.aborted = True
            d = _d(ctx)
            # (Frames the sender had in flight are late, not its own fault: the relay need not call them violations.)
            ctx.stream.reset_by = 1 - d
            self._ended(ctx.conn.id, frame.stream_id)
            ctx.reset_stream(frame.stream_id, "CANCEL", towards="client" if d == 0 else "server")
            self.calls.pop((ctx.conn.id, ctx.stream.id), None)
            out_frames = [DataFrame(frame.stream_id, data=data)] if data else []
            return out_frames + [RstStreamFrame(frame.stream_id, error_code=call.cut)]
        if not data and not end:
            return []
        f = DataFrame(frame.stream_id, data=data)
        if end:
            f.flags.add("END_STREAM")
        return [f]

    def _rebuild(self, ctx, call: _Call, d: int, events, end: bool, aligned: bool):
        """A generator: runs the handlers on each message (yielding awaitables); returns (bytes, end) or None."""
        parts: List[Any] = []      # bytes, or a Message whose prefix and bytes go on as they were
        changed = not aligned
        for ev in events:
            if isinstance(ev, Passthrough):
                parts.append(ev.data)
                continue
            if isinstance(ev, Oversized):
                self.oversized += 1
                log.info("c%d: gRPC %s message %d on stream %d is %d bytes, above the maximum message size %d: "
                         "passed on unseen by gRPC hooks", ctx.conn.id, call.path, ev.index, ctx.stream.id,
                         ev.length, ev.max_size)
                continue
            assert isinstance(ev, Message)
            self.messages += 1
            result = yield from self._handle(ctx, call, d, ev)
            if call.aborted:
                return _join(parts) if call.tail is not None else b"", False
            if result is None:
                parts.append(ev)
            else:
                changed = True
                parts.extend(result)
            if call.cut is not None:
                return _join(parts), False
        if end:
            rest = call.readers[d].take_partial()
            if rest:
                parts.append(rest)
        if not changed:
            return None
        return _join(parts), end

    def _handle(self, ctx, call: _Call, d: int, ev: Message):
        """The handlers on one message: None when it stays as it was, else the framed messages to send."""
        encoding = call.encodings[d]
        data = ev.data
        if ev.compressed:
            try:
                data = decompress(ev.data, encoding, self.options.max_message)
            except DecompressError as exc:
                log.info("c%d: gRPC %s message %d: %s; passed on unseen", ctx.conn.id, call.path, ev.index, exc)
                return None
        original = GrpcMessage(data, ctx.direction, ev.index, ev.compressed, encoding, call.path, ctx.stream.id,
                               ctx.conn.id, self.schema)
        msgs = [original]
        changed = False
        for name, handler in self.handlers:
            gctx = GrpcContext(self, ctx, call, name)
            out = []
            for m in msgs:
                try:
                    result = handler(gctx, m)
                    if inspect.isawaitable(result):
                        result = yield result
                except Exception as exc:
                    self.errors += 1
                    log.error("c%d: hook %s raised in on_grpc_message (%r); the message goes on unchanged",
                              ctx.conn.id, name, m, exc_info=exc)
                    out.append(m)
                    continue
                if call.aborted:
                    return []
                if result is None:
                    out.append(m)
                    continue
                try:
                    if isinstance(result, (list, tuple)):
                        made = [x for x in (self._as_message(item, m, name) for item in result) if x is not None]
                    else:
                        one = self._as_message(result, m, name)
                        made = [one if one is not None else m]     # (a bad return leaves the message as it was)
                except Exception as exc:       # a dict the schema cannot encode, a failing SerializeToString
                    self.errors += 1
                    log.error("c%d: hook %s: cannot use what on_grpc_message returned for %r: %s; the message "
                              "goes on unchanged", ctx.conn.id, name, m, exc)
                    out.append(m)
                    continue
                changed = True
                out.extend(made)
            msgs = out
        if not changed:
            return None
        framed: List[Any] = []
        for m in msgs:
            if m is original and m.data is data:
                framed.append(ev)                     # (as it came: prefix and bytes unchanged)
            elif m.compressed and m.encoding:
                framed.append(frame_message(compress(m.data, m.encoding), compressed=True))
            else:
                framed.append(frame_message(m.data))
        return framed

    def _as_message(self, item, original: GrpcMessage, name: str) -> Optional[GrpcMessage]:
        if isinstance(item, GrpcMessage):
            return item
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
        elif hasattr(item, "SerializeToString"):
            data = item.SerializeToString()
        elif isinstance(item, dict) and self.schema is not None:
            data = self.schema.encode(original.path, original.is_request, item)
        else:
            why = (" (a dict of named fields needs --proto-descriptor with this method)" if isinstance(item, dict)
                   else "")
            log.error("hook %s: on_grpc_message returned %s, not bytes, a protobuf message, a dict, a list or "
                      "None%s; ignored", name, type(item).__name__, why)
            return None
        m = GrpcMessage(data, original.direction, original.index, original.compressed, original.encoding,
                        original.path, original.stream_id, original.conn_id, self.schema)
        return m

    # ------------------------------------------------------------ aborting

    def abort(self, ctx, call: _Call, code: int, message: str, name: str) -> None:
        """Trailers-only (or trailers) with ``code`` to the client, RST_STREAM CANCEL to the server."""
        if call.aborted:
            return
        call.aborted = True
        s = ctx.stream
        sid = s.id
        status = [("grpc-status", str(code))]
        if message:
            status.append(("grpc-message", percent_encode(message)))
        if call.response_started:
            block = status
        else:
            block = [(":status", "200"), ("content-type", "application/grpc")] + status
        client_open = not call.client_done
        tail: list = [Headers(sid, block, end_stream=True)]
        if client_open:
            # The client may still be sending: tell it to stop, as a server that answered early does.
            tail.append(RstStreamFrame(sid, error_code=0))
        if ctx.direction == SERVER_TO_CLIENT:
            # On a response: the messages before this one in the same DATA frame go first (see _frames).
            call.tail = tail
        else:
            for item in tail:
                ctx.inject(item, direction=SERVER_TO_CLIENT)
        s.reset_by = 0        # (the server's frames in flight are late, not violations)
        self._ended(ctx.conn.id, sid)
        ctx.reset_stream(sid, "CANCEL", towards="server")
        self.calls.pop((ctx.conn.id, sid), None)
        log.info("c%d: hook %s aborted gRPC call %s on stream %d with grpc-status %d", ctx.conn.id, name,
                 call.path, sid, code)

    def _ended(self, conn_id: int, sid: int) -> None:
        self.ended[(conn_id, sid)] = None
        if len(self.ended) > 4096:
            del self.ended[next(iter(self.ended))]

    def stream_closed(self, ctx, stream) -> None:
        self.calls.pop((ctx.conn.id, stream.id), None)

    def connection_closed(self, ctx) -> None:
        conn = ctx.conn.id
        for key in [k for k in self.calls if k[0] == conn]:
            del self.calls[key]
        for key in [k for k in self.ended if k[0] == conn]:
            del self.ended[key]


class GrpcSettingsHook(GrpcHook):
    """:class:`GrpcHook` that also keeps peers from negotiating true-binary metadata (see ``on_settings``).

    Used when some hook or rule acts on gRPC messages from the start; a chain whose only gRPC
    handler is the fault hook without gRPC rules gets the plain :class:`GrpcHook` (SETTINGS then
    take no detour through it).
    """

    def on_settings(self, ctx, frame):
        """Take GRPC_ALLOW_TRUE_BINARY_METADATA out: peers then send ``-bin`` metadata base64-encoded (text)."""
        if TRUE_BINARY_METADATA in frame.settings and any(getattr(o, "grpc_active", True) for o in self.owners):
            del frame.settings[TRUE_BINARY_METADATA]
            return frame
        return None
