"""Whisper decoding for streaming: a forced prefix of committed words and a shortened encoder context.

faster-whisper's ``transcribe`` always pads audio to 30 s, so every call pays the full
encoder. Here the CTranslate2 model under a ``WhisperModel`` is called directly with
mel features cut to ``context`` frames (whisper.cpp's ``audio_ctx`` idea), and with
``max_length`` scaled to the audio's duration as a guard against the repetition loops
that too short a context causes. A decode that still repeats itself is redone with
the full 30 s context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

FULL_CONTEXT = 3000  # mel frames: 30 s
FRAMES_PER_SECOND = 100
_REPEAT = re.compile(r"\b(\w+(?:\W+\w+){0,3})(?:\W+\1\b){2,}", re.IGNORECASE)


@dataclass
class Decode:
    text: str  # only the words after the forced prefix
    seconds: float
    context_frames: int
    retried: bool = False


def repeats_itself(text: str) -> bool:
    """True when a phrase of 1-4 words occurs three times in a row (a short-context loop)."""
    return bool(_REPEAT.search(text))


class WhisperDecoder:
    """Greedy (or beam) decoding of a mono float32 16 kHz buffer with a committed-text prefix."""

    def __init__(self, model: Any, language: str = "en", beam_size: int = 1) -> None:
        from faster_whisper.tokenizer import Tokenizer

        self.model = model.model  # ctranslate2.models.Whisper
        self.features = model.feature_extractor
        multilingual = bool(self.model.is_multilingual)
        self.tokenizer = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else None
        )
        self.beam_size = beam_size

    def decode(self, audio: np.ndarray, prefix: str = "", context_s: float | None = None) -> Decode:
        """Transcribe ``audio`` continuing after ``prefix``; ``context_s`` None means the full 30 s."""
        import time

        import ctranslate2

        started = time.perf_counter()
        mel = self.features(audio)  # (n_mels, frames)
        frames = mel.shape[1]
        if frames > FULL_CONTEXT:
            mel, frames = mel[:, -FULL_CONTEXT:], FULL_CONTEXT
        context = FULL_CONTEXT if context_s is None else self._context(frames, context_s)
        text = self._generate(ctranslate2, mel, context, prefix, len(audio) / 16000)
        retried = False
        if context < FULL_CONTEXT and repeats_itself(text):
            text = self._generate(ctranslate2, mel, FULL_CONTEXT, prefix, len(audio) / 16000)
            context, retried = FULL_CONTEXT, True
        return Decode(text.strip(), time.perf_counter() - started, context, retried)

    @staticmethod
    def _context(frames: int, context_s: float) -> int:
        return int(min(FULL_CONTEXT, max(context_s * FRAMES_PER_SECOND, frames + FRAMES_PER_SECOND)))

    def _generate(self, ctranslate2: Any, mel: np.ndarray, context: int, prefix: str, seconds: float) -> str:
        short = mel.shape[1] < context
        mel = np.pad(mel, ((0, 0), (0, context - mel.shape[1]))) if short else mel[:, :context]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        forced = self.tokenizer.encode(" " + prefix.strip()) if prefix else []
        prompt += forced
        # ~3 words a second, ~1.5 tokens a word: a generous guard that still stops a loop.
        max_new = int(8 + 6 * seconds)
        result = self.model.generate(
            features,
            [prompt],
            beam_size=self.beam_size,
            max_length=min(448, len(prompt) + max_new),
            suppress_blank=not prefix,
        )
        ids = result[0].sequences_ids[0]
        if forced and ids[: len(forced)] == forced:  # the result repeats the forced prefix
            ids = ids[len(forced) :]
        ids = [t for t in ids if t < self.tokenizer.eot]
        return self.tokenizer.decode(ids)
