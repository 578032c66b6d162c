"""``espeak``: espeak-ng formant synthesis (the Debian program), native voices for many languages.

A last resort: robotic, and never used unless a pipeline names it. One process a piece.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from typing import Any, Self

import numpy as np

from ...stage import StageContext
from .tts import SynthesisOptions, Synthesizer, espeak_voice


class EspeakSynthesizer(Synthesizer):
    name = "espeak"
    warm_up = False  # a new process a piece: nothing to warm

    def __init__(self, program: str, options: SynthesisOptions) -> None:
        super().__init__(options)
        self.program = program

    @classmethod
    async def open(cls, context: StageContext, options: SynthesisOptions) -> Self:
        from ...models import speech

        program = shutil.which("espeak-ng")
        if program is None:
            raise speech.ModelNotAvailable("engine espeak needs the espeak-ng program: apt-get install espeak-ng")
        return cls(program, options)

    def sentences(self, text: str, language: str) -> list[Any]:
        voice = espeak_voice(language, self.options.voice)
        return [(piece, voice) for piece in super().sentences(text, language)]

    def synthesize(self, piece: Any) -> tuple[np.ndarray, int]:
        text, voice = piece
        wav = subprocess.run(
            [self.program, "-v", voice, "--stdout", str(text)], check=True, capture_output=True, timeout=30
        ).stdout
        with wave.open(io.BytesIO(wav), "rb") as reader:
            rate = reader.getframerate()
            return np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.int16), rate
