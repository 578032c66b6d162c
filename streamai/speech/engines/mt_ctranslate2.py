"""``ctranslate2``: a translation model of yours in CTranslate2 format (OPUS-MT, Argos, NLLB), one folder.

The stage's ``model:`` is the folder (model.bin plus SentencePiece models, see
``streamai.models.speech.load_ctranslate2_translator``). A folder holds one direction,
the stage's ``source`` -> ``target``; NLLB-style models pick languages with
``source_prefix`` / ``target_prefix`` tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from ...models.shared import acquire_model
from ...stage import StageContext
from .mt import TranslationOptions, Translator


class CTranslate2Translator(Translator):
    name = "ctranslate2"

    def __init__(self, loaded: tuple[Any, Any, Any], options: TranslationOptions, release: Any) -> None:
        super().__init__(release)
        self.translator, self.source_spm, self.target_spm = loaded
        self.options = options

    @classmethod
    async def open(cls, context: StageContext, options: TranslationOptions) -> Self:
        from ...models import speech

        if not context.model:
            raise speech.ModelNotAvailable(
                "translate engine ctranslate2 needs 'model:' set to a CTranslate2 model folder of yours"
            )
        folder = speech.entry_or_path(context.model, "mt")
        if not isinstance(folder, Path):
            raise speech.ModelNotAvailable(f"engine ctranslate2 needs a folder path, not catalog id {folder.id!r}")
        device, threads = context.device, options.threads
        loaded, release = await acquire_model(
            context,
            f"mt:ct2:{folder.resolve()}:{device}",
            lambda: speech.load_ctranslate2_translator(folder, device, threads),
        )
        return cls(loaded, options, release)

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.options.source, self.options.target)]

    def translate(self, text: str, source: str, target: str) -> str:
        options = self.options
        tokens = [*options.source_prefix, *self.source_spm.encode(text, out_type=str), "</s>"]
        results = self.translator.translate_batch(
            [tokens],
            target_prefix=[options.target_prefix] if options.target_prefix else None,
            beam_size=options.beam_size,
            max_decoding_length=int(16 + 3 * len(tokens)),
        )
        hypothesis = results[0].hypotheses[0][len(options.target_prefix) :]
        return str(self.target_spm.decode(hypothesis))
