"""The ASR family: a ``Transcriber`` decodes a buffer of 16 kHz audio continuing after committed text.

Streaming (periodic re-decodes, local agreement, the tail-only final) lives in the
``asr`` stage; an engine does one decode. Engine: ``faster-whisper`` (Whisper in
CTranslate2 format, called below faster-whisper's 30 s padding, see
``streamai.speech.whisper``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self

import numpy as np

from ...stage import StageContext
from ..decode_gate import DecodeGate
from ..whisper import Decode
from .base import Engine
from .registry import EngineRegistry

RATE = 16_000


@dataclass(frozen=True)
class TranscriptionOptions:
    """What an ASR engine may be told by the stage's params."""

    language: str = "en"
    beam_size: int = 1
    threads: int = 2
    workers: int = 1  # decodes the node's shared model runs at once (each on ``threads`` threads)


class Transcriber(Engine, ABC):
    """One decode of mono float32 16 kHz audio, after a forced ``prefix`` of committed words."""

    default_model: str = ""  # catalog id used when the stage names no ``model:``
    gate: DecodeGate | None = None  # an engine whose model is shared by sessions gives its gate (priority)

    @classmethod
    @abstractmethod
    async def open(cls, context: StageContext, options: TranscriptionOptions) -> Self:
        """A transcriber; the model behind it may be shared by every session of the node."""

    @abstractmethod
    def decode(self, audio: np.ndarray, prefix: str = "", context_s: float | None = None) -> Decode:
        """Text of ``audio`` after ``prefix`` (only the new words); on the stage's thread."""


ASR_ENGINES: EngineRegistry[Transcriber] = EngineRegistry(
    "asr", Transcriber, {"faster-whisper": "streamai.speech.engines.asr_faster_whisper:WhisperTranscriber"}
)
