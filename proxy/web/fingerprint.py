"""HTTP/2 fingerprints in the Akamai format, one per sending side of a connection.

The format (Shuster and Segal, "Passive Fingerprinting of HTTP/2 Clients",
Black Hat EU 2017) is ``S|WU|P|PS``:

* ``S``: the first SETTINGS frame's parameters in the order sent, ``id:value`` joined by ``;``;
* ``WU``: the increment of the first connection-level WINDOW_UPDATE sent before the first
  HEADERS, ``00`` when there is none;
* ``P``: the PRIORITY frames sent before the first HEADERS, ``stream:exclusive:depends_on:weight``
  joined by ``,`` (weight 1..256 as in the RFC), ``0`` when there are none;
* ``PS``: the order of the pseudo-header fields of the first HEADERS: ``m`` :method,
  ``a`` :authority, ``s`` :scheme, ``p`` :path (``st`` :status and ``pr`` :protocol for the
  other fields that exist).

Fed with frame-log records (docs/frame-log.md) of one sender, in order. Proxies that terminate
HTTP/2 replace the client's fingerprint with their own; this one sees both.
"""
from __future__ import annotations

from typing import List, Optional

from ..recording.decode import SETTINGS_IDS

__all__ = ["Fingerprint", "PSEUDO_LETTERS"]

PSEUDO_LETTERS = {":method": "m", ":authority": "a", ":scheme": "s", ":path": "p", ":status": "st",
                  ":protocol": "pr"}


def _setting_id(name) -> Optional[int]:
    if isinstance(name, int):
        return name
    ident = SETTINGS_IDS.get(str(name))
    if ident is not None:
        return ident
    text = str(name)
    if text.startswith("UNKNOWN(") and text.endswith(")"):
        try:
            return int(text[8:-1], 0)
        except ValueError:
            return None
    return None


class Fingerprint:
    """The fingerprint of one sender, built frame by frame; :attr:`text` once anything is known."""

    __slots__ = ("settings", "window_update", "priorities", "pseudo", "seen_headers", "done")

    def __init__(self) -> None:
        self.settings: Optional[List[List[int]]] = None
        self.window_update: Optional[int] = None
        self.priorities: List[str] = []
        self.pseudo: Optional[List[str]] = None
        self.seen_headers = False
        #: True once the first HEADERS went by: nothing later changes the fingerprint.
        self.done = False

    def feed(self, rec: dict) -> None:
        """One frame record sent by this side."""
        if self.done:
            return
        ftype = rec.get("type")
        fields = rec.get("fields") or {}
        if ftype == "SETTINGS":
            if self.settings is None and not fields.get("ack") and "settings" in fields:
                pairs = []
                for name, value in fields["settings"]:
                    ident = _setting_id(name)
                    pairs.append([ident if ident is not None else -1, value])
                self.settings = pairs
        elif ftype == "WINDOW_UPDATE":
            if self.window_update is None and not rec.get("stream") and not self.seen_headers:
                self.window_update = fields.get("increment")
        elif ftype == "PRIORITY":
            if not self.seen_headers and "weight" in fields:
                self.priorities.append(f"{rec.get('stream')}:{int(bool(fields.get('exclusive')))}:"
                                       f"{fields.get('depends_on')}:{fields.get('weight')}")
        elif ftype == "HEADERS":
            self.seen_headers = True
            headers = rec.get("headers")
            if headers is not None:
                self.pseudo = [PSEUDO_LETTERS.get(n, n.lstrip(":")) for n, _ in headers if n.startswith(":")]
                self.done = True

    @property
    def settings_text(self) -> str:
        if not self.settings:
            return ""
        return ";".join(f"{k}:{v}" for k, v in self.settings)

    @property
    def text(self) -> Optional[str]:
        """``S|WU|P|PS``, or None before this side sent its SETTINGS."""
        if self.settings is None:
            return None
        wu = "00" if self.window_update is None else str(self.window_update)
        prio = ",".join(self.priorities) if self.priorities else "0"
        ps = ",".join(self.pseudo) if self.pseudo is not None else ""
        return f"{self.settings_text}|{wu}|{prio}|{ps}"

    def to_dict(self) -> dict:
        return {"text": self.text, "settings": self.settings, "window_update": self.window_update,
                "priorities": list(self.priorities), "pseudo": self.pseudo}
