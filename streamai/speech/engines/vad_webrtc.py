"""``webrtcvad``: the WebRTC VAD (webrtcvad-wheels), a cheap voicing gate with four aggressiveness modes.

It scores 10/20/30 ms frames; a 32 ms window is scored on its first 30 ms (480
samples), so its answer is 0 or 1, never in between.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from ...stage import StageContext
from .vad import RATE, DetectionOptions, VoiceDetector

FRAME = 480  # 30 ms at 16 kHz: the longest frame webrtcvad accepts


class WebRtcDetector(VoiceDetector):
    name = "webrtcvad"

    def __init__(self, vad: Any) -> None:
        super().__init__()
        self.vad = vad

    @classmethod
    async def open(cls, context: StageContext, options: DetectionOptions) -> Self:
        from ...models.speech import need

        webrtcvad = need("webrtcvad", "webrtcvad-wheels==2.0.14.post1")
        return cls(webrtcvad.Vad(options.webrtc_mode))  # tiny and stateful: one per stream

    def probability(self, window: np.ndarray) -> float:
        return float(self.vad.is_speech(np.ascontiguousarray(window[:FRAME], np.int16).tobytes(), RATE))
