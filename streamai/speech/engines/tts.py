"""The TTS family: a ``Synthesizer`` cuts text into pieces and makes int16 audio of one piece.

The ``tts`` stage streams pieces as 48 kHz chunks, handles order, deadlines and
interruptions; an engine only cuts and synthesizes. Both calls take the language of
the text (a translation's target), so a live change of the target language changes
the voice's language too, unless the stage pins a voice. Engines: ``piper`` (a Piper
VITS voice reading any espeak-ng language's phonemes), ``coqui`` (a Coqui model folder
of yours) and ``espeak`` (formant synthesis, last resort, only when chosen).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from ...stage import StageContext
from ..text import short_head
from .base import Engine
from .registry import EngineRegistry

ESPEAK_VOICES = {"pt": "pt-br", "en": "en-us", "es": "es", "de": "de", "fr": "fr-fr", "it": "it"}
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")


def espeak_voice(language: str, pinned: str | None = None) -> str:
    """The espeak-ng voice for ``language`` (``pinned`` wins when set)."""
    return pinned or ESPEAK_VOICES.get(language, language)


@dataclass(frozen=True)
class SynthesisOptions:
    """What a TTS engine may be told by the stage's params."""

    language: str = "pt"
    voice: str | None = None  # espeak voice (piper phonemes / espeak); None: from the language
    speaker: str | None = None  # coqui multi-speaker models
    length_scale: float | None = None  # piper: < 1 speaks faster
    threads: int = 1  # piper: onnxruntime threads
    first_words: int = 2  # split this many words off a text's first piece (0: never)


class Synthesizer(Engine, ABC):
    """Pieces of a text, and int16 mono audio of one piece at the engine's own rate."""

    warm_up = True  # synthesize a word in start() (first ONNX/torch runs are slow)

    def __init__(self, options: SynthesisOptions, release: Any = None) -> None:
        super().__init__(release)
        self.options = options

    @classmethod
    @abstractmethod
    async def open(cls, context: StageContext, options: SynthesisOptions) -> Self:
        """A synthesizer; the voice behind it may be shared by every session of the node."""

    def configure(self, options: SynthesisOptions) -> None:
        """Take new options between pieces (a live ``params`` change)."""
        self.options = options

    def sentences(self, text: str, language: str) -> list[Any]:
        """Pieces to synthesize one at a time, in order; the first cut short (``first_words``)."""
        return short_head([s for s in _SENTENCE.split(text.strip()) if s], self.options.first_words)

    @abstractmethod
    def synthesize(self, piece: Any) -> tuple[np.ndarray, int]:
        """int16 mono audio of one piece and its sample rate; on the stage's thread."""


TTS_ENGINES: EngineRegistry[Synthesizer] = EngineRegistry(
    "tts",
    Synthesizer,
    {
        "piper": "streamai.speech.engines.tts_piper:PiperSynthesizer",
        "coqui": "streamai.speech.engines.tts_coqui:CoquiSynthesizer",
        "espeak": "streamai.speech.engines.tts_espeak:EspeakSynthesizer",
    },
)
