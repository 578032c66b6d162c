"""``echo``: returns the speaker's own audio with a gain (audio loopback through the engine)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..frames import AudioFrame, Frame, FrameKind, derived
from ..stage import Stage, stage


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gain: float = Field(1.0, ge=0, le=8)


@stage("echo")
class Echo(Stage):
    consumes = frozenset({FrameKind.AUDIO})
    emits = frozenset({FrameKind.AUDIO})
    Params = EchoParams
    client_settable = frozenset({"gain"})
    admission = "stream"

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        if self.params.gain == 1.0:
            await self.push(frame)
            return
        scaled = np.clip(frame.samples.astype(np.float32) * self.params.gain, -32768, 32767)
        await self.push(derived(frame, samples=scaled.astype(np.int16)))
