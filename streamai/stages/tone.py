"""``tone``: replaces (or mixes into) the audio with a sine tone; audible proof audio flows."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..frames import AudioFrame, Frame, FrameKind, derived
from ..stage import Stage, stage


class ToneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frequency_hz: float = Field(440.0, gt=0, le=20_000)
    level: float = Field(0.3, ge=0, le=1)
    mix: bool = False  # False: replace the input; True: add the tone to it


@stage("tone")
class Tone(Stage):
    consumes = frozenset({FrameKind.AUDIO})
    emits = frozenset({FrameKind.AUDIO})
    Params = ToneParams
    client_settable = frozenset({"frequency_hz", "level"})
    admission = "stream"

    def __init__(self, params: ToneParams, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, context)
        self._phase = 0.0

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        n = frame.samples.shape[0]
        step = 2 * np.pi * self.params.frequency_hz / frame.sample_rate
        wave = np.sin(self._phase + step * np.arange(n)) * (self.params.level * 32767)
        self._phase = (self._phase + step * n) % (2 * np.pi)
        tone = np.repeat(wave[:, None], frame.channels, axis=1)
        base = frame.samples.astype(np.float32) if self.params.mix else 0.0
        samples = np.clip(base + tone, -32768, 32767).astype(np.int16)
        await self.push(derived(frame, samples=samples))
