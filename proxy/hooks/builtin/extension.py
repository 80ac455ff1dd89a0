"""The ``extension`` hook: frames of types the proxy does not know (RFC 9113 section 5.5).

An HTTP/2 endpoint must ignore frames of unknown types, and an intermediary
must not break extensions that its peers negotiated end to end: by default the
proxy forwards them unchanged, byte for byte (type, flags byte, reserved bit,
stream id and body as received). This hook counts them and can drop chosen
types (``drop_types``), or every unknown type (``mode = "drop"``, except those
in ``keep_types``), to see how peers cope without an extension.

"Unknown" means a type outside RFC 9113 and ALTSVC (0x0-0xA): ORIGIN (0xC),
PRIORITY_UPDATE (0x10), GREASE types (0x0b + 0x1f * N), ...
"""
from __future__ import annotations

import collections
import logging
from typing import Sequence

from ..api import Hook, HookOptionError

log = logging.getLogger("h2proxy")

MODES = ("forward", "drop")


class ExtensionHook(Hook):
    """Options: ``drop_types`` (frame type numbers to drop, e.g. ``[0xEE]``), ``mode`` (``forward``,
    the default: forward every other unknown type unchanged; ``drop``: drop every unknown type
    except ``keep_types``), ``keep_types``.

    Counters: ``seen`` and ``dropped``, per frame type (``collections.Counter``).
    """

    name = "extension"

    def __init__(self, drop_types: Sequence[int] = (), mode: str = "forward",
                 keep_types: Sequence[int] = ()) -> None:
        if mode not in MODES:
            raise HookOptionError(f"extension: mode {mode!r} is not one of {', '.join(MODES)}")
        for key, types in (("drop_types", drop_types), ("keep_types", keep_types)):
            if isinstance(types, (str, int)) or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 0xFF for t in types):
                raise HookOptionError(f"extension: {key} must be a list of frame types 0..255, got {types!r}")
            if any(t <= 0x0A for t in types):
                raise HookOptionError(f"extension: {key}: types 0x0-0xA are not extension frames, got {types!r}")
        super().__init__(drop_types=list(drop_types), mode=mode, keep_types=list(keep_types))
        self.mode = mode
        self.drop_types = frozenset(drop_types)
        self.keep_types = frozenset(keep_types)
        self.seen: "collections.Counter[int]" = collections.Counter()
        self.dropped: "collections.Counter[int]" = collections.Counter()

    def on_extension(self, ctx, frame):
        t = frame.type
        self.seen[t] += 1
        if t in self.drop_types or (self.mode == "drop" and t not in self.keep_types):
            if not self.dropped[t]:
                log.info("c%s: dropping extension frames of type 0x%02X (%s)", ctx.conn.id, t, ctx.direction)
            self.dropped[t] += 1
            return []
        return None
