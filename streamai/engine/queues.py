"""Bounded queues between stages, with an explicit policy per edge.

``latest``: a mailbox holding at most one waiting video frame; a newer one replaces
it (counted as ``replaced``). Audio is a stream and is never replaced: in a ``latest``
queue (a video stage the audio only passes) it waits in order like ``fifo``.
``fifo``: first in, first out with a bound; when full the oldest media frame is
dropped (``overflow``).
Text frames and control frames are never dropped by either policy: they are few and
they carry meaning (end of speech), with one exception: a waiting PROMPT is replaced
by a newer one (the newest prompt wins), so a stuck stage cannot pile prompts up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Literal

from ..frames import ControlFrame, ControlKind, Frame, FrameKind

DropCallback = Callable[[Frame, str], None]


class StageQueue:
    """The input queue of one stage: ``put`` never blocks, ``get`` waits."""

    def __init__(self, policy: Literal["latest", "fifo"], bound: int, on_drop: DropCallback) -> None:
        self.policy = policy
        self.bound = bound
        self._items: deque[tuple[Frame, float]] = deque()
        self._on_drop = on_drop
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Frame, at: float) -> None:
        """Enqueue ``frame`` (stamped with arrival time ``at``) under this queue's policy."""
        if isinstance(frame, ControlFrame) and frame.control is ControlKind.PROMPT:
            self._replace_prompt()  # the newest prompt wins: a stuck stage never piles them up
        if frame.is_media:
            if self.policy == "latest" and frame.kind is FrameKind.VIDEO:
                self._evict_same_kind(frame)
            elif len(self._items) >= self.bound:
                self._evict_oldest_media()
        self._items.append((frame, at))
        self._ready.set()

    def _evict_same_kind(self, frame: Frame) -> None:
        for index, (waiting, _) in enumerate(self._items):
            if waiting.kind is frame.kind:
                del self._items[index]
                self._on_drop(waiting, "replaced")
                return

    def _replace_prompt(self) -> None:
        for index, (waiting, _) in enumerate(self._items):
            if isinstance(waiting, ControlFrame) and waiting.control is ControlKind.PROMPT:
                del self._items[index]
                self._on_drop(waiting, "replaced")
                return

    def _evict_oldest_media(self) -> None:
        for index, (waiting, _) in enumerate(self._items):
            if waiting.is_media:
                del self._items[index]
                self._on_drop(waiting, "overflow")
                return

    async def get(self) -> tuple[Frame, float]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def clear(self) -> list[Frame]:
        frames = [f for f, _ in self._items]
        self._items.clear()
        return frames
