"""The unit the relay's pipeline passes along: one frame, or one whole header block.

Its own module so that the relay and its mixins (:mod:`.control` makes one for a control frame
a hook asks for) share it without importing each other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from framecodec.reader import RawFrame

from ..hooks.api import HeaderList

if TYPE_CHECKING:
    from .streams import Stream


class _Unit:
    """A frame, or a whole header block, on its way through the pipeline."""

    __slots__ = ("d", "frames", "headers", "stream", "neutral")

    def __init__(self, d: int, frames: List[RawFrame], stream: Optional[Stream]) -> None:
        self.d = d
        self.frames = frames
        self.headers: Optional[HeaderList] = None
        #: The block was decoded and left the decoder's dynamic table as it was (all indexed fields, no
        #: insertion, no size update): dropping it, or sending it again, keeps the receiver in step.
        self.neutral = False
        self.stream = stream
