"""``delay``: holds each frame for a service time set in YAML; the tool that proves deadline logic."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, FrameKind
from ..stage import Stage, stage


class DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms: float = Field(ge=0, le=60_000)
    blocking: bool = True  # True: sleeps on the stage's thread, like a model call


@stage("delay")
class Delay(Stage):
    consumes = frozenset({FrameKind.AUDIO, FrameKind.VIDEO, FrameKind.TEXT})
    emits = consumes
    Params = DelayParams

    async def process(self, frame: Frame) -> None:
        seconds = self.params.ms / 1000
        if self.params.blocking:
            await self.run_blocking(time.sleep, seconds)
        else:
            await asyncio.sleep(seconds)
        await self.push(frame)
