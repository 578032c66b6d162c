"""``coqui``: a Coqui TTS model folder of yours through ``TTS.api`` (no Coqui model ships in a package).

``model:`` must name the folder (config.json and the model file); ``speaker`` picks a
speaker of a multi-speaker model; a multilingual model is given each text's language.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from ...models.shared import acquire_model
from ...stage import StageContext
from .tts import SynthesisOptions, Synthesizer


class CoquiSynthesizer(Synthesizer):
    name = "coqui"

    def __init__(self, tts: Any, options: SynthesisOptions, release: Any) -> None:
        super().__init__(options, release)
        self.tts = tts

    @classmethod
    async def open(cls, context: StageContext, options: SynthesisOptions) -> Self:
        from ...models import speech

        reference = context.model or "coqui"
        if reference == "coqui":
            raise speech.ModelNotAvailable(
                "engine coqui needs 'model:' set to a Coqui TTS model folder of yours (no Coqui model ships "
                "in a package); or use engine: piper"
            )
        device = context.device
        tts, release = await acquire_model(
            context, f"tts:coqui:{reference}:{device}", lambda: speech.load_coqui(reference, device)
        )
        return cls(tts, options, release)

    def sentences(self, text: str, language: str) -> list[Any]:
        return [(piece, language) for piece in super().sentences(text, language)]

    def synthesize(self, piece: Any) -> tuple[np.ndarray, int]:
        text, language = piece
        kwargs: dict[str, Any] = {}
        if getattr(self.tts, "is_multi_lingual", False):
            kwargs["language"] = language
        if self.options.speaker:
            kwargs["speaker"] = self.options.speaker
        audio = np.asarray(self.tts.tts(text=text, **kwargs), dtype=np.float32)
        rate = int(self.tts.synthesizer.output_sample_rate)
        return (np.clip(audio, -1, 1) * 32767).astype(np.int16), rate
