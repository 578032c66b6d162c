"""``fault``: a test tool that misbehaves on purpose (raises, hangs, runs slow).

Not for production pipelines. It exists so that reliability tests, soaks and demos
can show what the engine does with a broken model, from YAML alone::

    stages:
      - type: fault
        params: {raise_every: 10}      # every 10th frame raises (dropped, counted as error)
      - type: fault
        params: {always_raise: true}   # every frame raises: the session ends after max_errors
      - type: fault
        params: {hang_s: 30}           # each frame hangs 30 s (deadlines missed, stop() still frees it)
      - type: fault
        params: {service_ms: 40}       # a slow but healthy model

Faults apply to the media kinds in ``kinds`` (default: audio and video); other
frames pass untouched. ``hang_s`` waits on the event loop (cancellable) unless
``blocking`` is set, then it sleeps on the stage's own thread like a stuck model
call; ``stop()`` returns at once either way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, FrameKind
from ..stage import Stage, StageContext, stage


class FaultError(RuntimeError):
    """What a ``fault`` stage raises (so tests can tell it from a real failure)."""


class FaultParams(BaseModel):
    """What to break; all off by default (then the stage is a passthrough)."""

    model_config = ConfigDict(extra="forbid")

    raise_every: int = Field(0, ge=0, le=1_000_000)  # raise on every Nth consumed frame (0: never)
    always_raise: bool = False
    hang_s: float = Field(0.0, ge=0, le=3600)  # hold each frame this long before passing it on
    service_ms: float = Field(0.0, ge=0, le=60_000)  # healthy service time per frame
    blocking: bool = False  # hang and service time on the stage's thread instead of the event loop
    kinds: list[Literal["audio", "video", "text"]] = Field(default_factory=lambda: ["audio", "video"])


@stage("fault")
class Fault(Stage):
    """Raises, hangs or runs slow on the frames it is told to; a reliability test tool."""

    consumes = frozenset({FrameKind.AUDIO, FrameKind.VIDEO, FrameKind.TEXT})
    emits = consumes
    Params = FaultParams

    def __init__(self, params: BaseModel, context: StageContext) -> None:
        super().__init__(params, context)
        self.seen = 0
        self.raised = 0
        self.hanging = 0
        self.stopped = False

    async def process(self, frame: Frame) -> None:
        params: FaultParams = self.params  # type: ignore[assignment]
        if frame.kind.value not in params.kinds:
            await self.push(frame)
            return
        self.seen += 1
        if params.always_raise or (params.raise_every and self.seen % params.raise_every == 0):
            self.raised += 1
            raise FaultError(f"fault stage: injected failure on frame {self.seen}")
        wait_s = params.hang_s + params.service_ms / 1000
        if wait_s > 0:
            self.hanging += 1
            try:
                if params.blocking:
                    await self.run_blocking(time.sleep, wait_s)
                else:
                    await asyncio.sleep(wait_s)
            finally:
                self.hanging -= 1
        await self.push(frame)

    async def stop(self) -> None:
        self.stopped = True
