"""``faster-whisper``: Whisper (CTranslate2 format) from a catalog id or a folder, one model per node.

The model comes from ``streamai.models.speech.load_whisper`` (int8 on CPU, float16 on
CUDA, never a hub); decoding is ``streamai.speech.whisper.WhisperDecoder``: a forced
prefix of committed words and a shortened encoder context.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from ...models.shared import acquire_model
from ...stage import StageContext
from ..decode_gate import gate_for
from ..whisper import Decode, WhisperDecoder
from .asr import Transcriber, TranscriptionOptions


class WhisperTranscriber(Transcriber):
    name = "faster-whisper"

    def __init__(self, decoder: WhisperDecoder, release: Any, model: Any = None, workers: int = 1) -> None:
        super().__init__(release)
        self.decoder = decoder
        self.gate = gate_for(model if model is not None else decoder, workers)  # one per shared model, node-wide

    @classmethod
    async def open(cls, context: StageContext, options: TranscriptionOptions) -> Self:
        from ...models.speech import load_whisper

        reference = context.model or ("whisper-tiny-en" if options.language == "en" else "whisper-base")
        device, threads, workers = context.device, options.threads, options.workers
        key = f"asr:{reference}:{device}:{threads}" + (f":w{workers}" if workers > 1 else "")
        model, release = await acquire_model(context, key, lambda: load_whisper(reference, device, threads, workers))
        try:
            return cls(WhisperDecoder(model, options.language, options.beam_size), release, model, workers)
        except Exception:
            release()
            raise

    def decode(self, audio: np.ndarray, prefix: str = "", context_s: float | None = None) -> Decode:
        return self.decoder.decode(audio, prefix, context_s)
