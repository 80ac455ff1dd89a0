"""The interface the proxy core reports frames through, and a sink that fans out to several.

The core calls a :class:`FrameSink` for every byte it receives or sends:
prefaces, frames and raw (non-frame) bytes, each on a *leg* (``"client"``: the
socket between the client and the proxy, ``"upstream"``: the one between the
proxy and the upstream server) and in a *direction* seen from the proxy
(``"recv"`` or ``"send"``). It also reports connections opening and closing,
protocol violations, errors and what hooks did.

``preface``, ``frame`` and ``raw`` return the record's sequence number, so the
core can pass the number of a received frame as ``origin`` of the frames sent
because of it. Numbers come from one counter per sink; :class:`MultiSink` hands
one number to all its sinks, so every output agrees on them.

Methods are called on the event loop thread and must return quickly.
"""
from __future__ import annotations

import inspect
import itertools
from typing import Iterable, List, Optional

__all__ = ["LEG_CLIENT", "LEG_UPSTREAM", "RECV", "SEND", "LEGS", "DIRECTIONS", "FrameSink", "MultiSink"]

#: The socket between the client and the proxy.
LEG_CLIENT = "client"
#: The socket between the proxy and the upstream server.
LEG_UPSTREAM = "upstream"
#: Bytes the proxy read from the leg's socket.
RECV = "recv"
#: Bytes the proxy wrote to the leg's socket.
SEND = "send"

LEGS = (LEG_CLIENT, LEG_UPSTREAM)
DIRECTIONS = (RECV, SEND)


class FrameSink:
    """Receives the proxy's frame events. Every method is a no-op here; subclasses override.

    ``preface``, ``frame`` and ``raw`` take an optional keyword ``seq``: a
    sequence number already given by a :class:`MultiSink`. Without it the sink
    numbers the record itself (from 1). Subclasses that override them should
    accept ``seq`` too (a :class:`MultiSink` copes with ones that do not).
    """

    #: True when the sink wants decoded header lists passed to :meth:`frame`
    #: (the core then runs HPACK decoding on the connection).
    needs_headers: bool = False

    _counter = None

    def next_seq(self, seq: Optional[int] = None, count: int = 1) -> int:
        """``seq`` when given, else the next number of this sink's own counter.

        ``count``: how many numbers the record takes (a :meth:`forwarded` block of n frames takes 2n:
        each received, then sent); the first is returned and the next record comes after them all.
        Every sink numbers its records here (:class:`MultiSink` once for all of its sinks).
        """
        if seq is not None:
            return seq
        counter = self._counter
        if counter is None:
            counter = self._counter = itertools.count(1)
        first = next(counter)
        if count > 1:
            # A fresh counter past the numbers taken: cheaper than consuming them one by one.
            self._counter = itertools.count(first + count)
        return first

    def connection_opened(self, conn_id: int, t: float, info: dict) -> None:
        """A client connected. ``info``: client_addr, listen_addr, upstream_addr ("ip:port"),
        client_tls / upstream_tls ({alpn, version, sni, cipher} or None), mode; values may be None."""

    def relay_opened(self, relay: object) -> None:
        """The relay of the connection just opened (right after :meth:`connection_opened`): a sink
        that cannot keep up may call its ``detach_sink()`` later, between two reads, to stop being
        called for that connection (the web view does, proxy/web/sink.py)."""

    def preface(self, conn_id: int, leg: str, direction: str, t: float, wire: bytes, *,
                seq: Optional[int] = None) -> int:
        """The 24-byte client connection preface went over ``leg`` in ``direction``."""
        return self.next_seq(seq)

    def frame(self, conn_id: int, leg: str, direction: str, t: float, wire, headers: Optional[list] = None,
              origin: Optional[int] = None, actions: Optional[list] = None, *, seq: Optional[int] = None) -> int:
        """One frame, ``wire`` its exact bytes (bytes or a memoryview valid only during the call).

        ``headers``: the decoded header list of the whole block, on the frame that ends it.
        ``origin``: seq of the received frame this sent frame came from.
        ``actions``: what hooks did (received frame) or how the frame came to be (sent frame).
        """
        return self.next_seq(seq)

    def raw(self, conn_id: int, leg: str, direction: str, t: float, data: bytes, note: str, *,
            seq: Optional[int] = None) -> int:
        """Bytes that are not frames (an HTTP/1.1 error text, a deliberately corrupted frame)."""
        return self.next_seq(seq)

    def forwarded(self, conn_id: int, recv_leg: str, send_leg: str, t: float, wires, *,
                  seq: Optional[int] = None) -> int:
        """Frames the proxy passed on unchanged, in order, in one call.

        Each wire is recorded as received on ``recv_leg`` (seq n) and sent on
        ``send_leg`` (seq n + 1, origin n): the same records ``frame`` would
        make, numbered as one block. The relay uses this on its fast paths so
        that recording costs one call per read, not two per frame.
        """
        first = None
        for w in wires:
            got = self.frame(conn_id, recv_leg, RECV, t, w, seq=seq)
            self.frame(conn_id, send_leg, SEND, t, w, None, got, None, seq=None if seq is None else seq + 1)
            if first is None:
                first = got
            if seq is not None:
                seq += 2
        return first if first is not None else self.next_seq(seq)

    def violation(self, conn_id: int, t: float, side: str, section: str, code: str, message: str) -> None:
        """A peer broke the protocol (``section``: RFC 9113 section, ``code``: error code name)."""

    def error(self, conn_id: int, t: float, message: str) -> None:
        """Something went wrong on the connection (a hook raised, a socket failed)."""

    def hook_action(self, conn_id: int, t: float, hook: str, action: str, detail: dict) -> None:
        """A hook did something worth logging by itself."""

    def connection_closed(self, conn_id: int, t: float, reason: str) -> None:
        """The connection is gone (both legs closed)."""

    def close(self) -> None:
        """Flush and release everything; called once when the proxy stops."""


def _takes_seq(method) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "seq" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class MultiSink(FrameSink):
    """Passes every event to several sinks, numbering records once for all of them."""

    def __init__(self, sinks: Iterable[FrameSink]) -> None:
        self.sinks: List[FrameSink] = [s for s in sinks if s is not None]
        self.needs_headers = any(getattr(s, "needs_headers", False) for s in self.sinks)
        # (preface, frame, raw) of each sink, and whether it takes seq=.
        self._numbered = [(s, _takes_seq(s.preface), _takes_seq(s.frame), _takes_seq(s.raw)) for s in self.sinks]

    def connection_opened(self, conn_id, t, info):
        for s in self.sinks:
            s.connection_opened(conn_id, t, info)

    def relay_opened(self, relay):
        for s in self.sinks:
            opened = getattr(s, "relay_opened", None)
            if opened is not None:
                opened(relay)

    def preface(self, conn_id, leg, direction, t, wire, *, seq=None):
        seq = self.next_seq(seq)
        for s, p, _, _ in self._numbered:
            if p:
                s.preface(conn_id, leg, direction, t, wire, seq=seq)
            else:
                s.preface(conn_id, leg, direction, t, wire)
        return seq

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, *, seq=None):
        seq = self.next_seq(seq)
        for s, _, f, _ in self._numbered:
            if f:
                s.frame(conn_id, leg, direction, t, wire, headers, origin, actions, seq=seq)
            else:
                s.frame(conn_id, leg, direction, t, wire, headers, origin, actions)
        return seq

    def raw(self, conn_id, leg, direction, t, data, note, *, seq=None):
        seq = self.next_seq(seq)
        for s, _, _, r in self._numbered:
            if r:
                s.raw(conn_id, leg, direction, t, data, note, seq=seq)
            else:
                s.raw(conn_id, leg, direction, t, data, note)
        return seq

    def forwarded(self, conn_id, recv_leg, send_leg, t, wires, *, seq=None):
        start = self.next_seq(seq, 2 * len(wires))
        for s in self.sinks:
            s.forwarded(conn_id, recv_leg, send_leg, t, wires, seq=start)
        return start

    def violation(self, conn_id, t, side, section, code, message):
        for s in self.sinks:
            s.violation(conn_id, t, side, section, code, message)

    def error(self, conn_id, t, message):
        for s in self.sinks:
            s.error(conn_id, t, message)

    def hook_action(self, conn_id, t, hook, action, detail):
        for s in self.sinks:
            s.hook_action(conn_id, t, hook, action, detail)

    def connection_closed(self, conn_id, t, reason):
        for s in self.sinks:
            s.connection_closed(conn_id, t, reason)

    def close(self):
        errors = []
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # close the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]
