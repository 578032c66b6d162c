"""``asr``: streaming speech recognition; the decoder is an engine (``engine:``, default ``faster-whisper``).

While an utterance grows, the buffer is re-decoded every ``interval_ms`` of new audio
(one decode at a time, in the background, so audio is never held up), with
``beam_size`` (1); decodes at a pause or at the end use ``final_beam_size`` (4: on
espeak speech sent through WebRTC WER 0.03 instead of 0.10 at beam 1, for ~20 % more
decode time; see docs/speech-latency.md). The committed
words go in as a forced decoder prefix, so each decode only generates the uncommitted
tail; words on which two consecutive hypotheses agree are committed (local agreement),
by default only up to the last clause end among them (``commit: clause``): tiny.en's
early guesses agree on wrong words often enough that word-level commits cost WER.
A tentative SPEECH_END from ``vad`` (a pause) starts a decode at once (ahead of other
sessions' periodic decodes on the shared model) and judges the words
(``streamai.speech.turn``): with ``commit_on_pause`` and ``endpointing: adaptive``, a
complete phrase is committed whole, so translation and speech start while the end is
being confirmed, unless speech resumed while it decoded; an incomplete one is held,
and ``vad`` is told to wait longer (``endpointing: fixed`` commits every pause, as
before). An *early* tentative end (``data["early"]``, sent by ``vad`` before its pad
of silence is full) starts that decode sooner: its words are judged at once (``vad``
gets the verdict) and taken, as the pause decode's, when the tentative end of the same
pause follows (no speech came between), without decoding again; when speech resumes
first they are dropped. When the confirmed SPEECH_END finds no new audio since, that hypothesis is
the final and no decode is left to do. Text committed at a pause and the final carry
the capture time of the utterance's speech end (from SPEECH_END), so their latency is
what the speaker feels. The engine (a ``Transcriber``
from ``streamai.speech.engines.ASR_ENGINES``) does one decode; everything streaming
is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame, inherit_timing, now
from ..speech.audio import StreamResampler
from ..speech.engines.asr import ASR_ENGINES, Transcriber, TranscriptionOptions
from ..speech.latency import tracker
from ..speech.text import local_agreement, words
from ..speech.turn import clause_complete, phrase_complete, turn
from ..speech.whisper import Decode
from ..stage import Stage, StageContext, stage

RATE = 16_000
log = logging.getLogger(__name__)


class AsrParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str = "faster-whisper"  # an ASR engine name (streamai.speech.engines.ASR_ENGINES)
    language: str = "en"
    interval_ms: float = Field(400, ge=100, le=5000)  # re-decode after this much new audio
    min_audio_ms: float = Field(800, ge=0, le=5000)  # no decode before this much speech (early ones are noise)
    commit: Literal["clause", "word"] = "clause"  # commit agreed words up to a clause end, or every agreed word
    context_s: float | None = Field(10.0, ge=1, le=30)  # encoder context; null = Whisper's full 30 s
    beam_size: int = Field(1, ge=1, le=8)  # periodic (partial) decodes
    final_beam_size: int | None = Field(4, ge=1, le=8)  # decodes at a pause and at the end (null: beam_size)
    # CPU threads of one decode. 1: on a 2-core node the VAD, TTS and other sessions share the cores,
    # and a 2-thread decode waited on its busy twin (bench speech: asr 150-200 -> 120-150 ms).
    threads: int = Field(1, ge=1, le=64)
    # Decodes the node's shared model runs at once, sessions together (CTranslate2 workers); with 2,
    # partials use at most one, so a pause's decode never waits behind another session's partial.
    workers: int = Field(1, ge=1, le=16)
    partials: bool = True  # emit partial transcripts (decoding still runs for commits when False)
    commit_on_pause: bool = True  # a tentative SPEECH_END (a pause) commits the whole hypothesis ...
    endpointing: Literal["adaptive", "fixed"] = "adaptive"  # ... adaptive: only a complete phrase
    # No periodic decode while the newest audio is this much quieter than the utterance's
    # loudest (dB; null: never wait): it is likely a pause, whose tentative SPEECH_END is
    # about to start a decode that a periodic one, still running, would hold up.
    quiet_db: float | None = Field(-30, ge=-80, le=0)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return ASR_ENGINES.check(name)


@dataclass
class _EarlyDecode:
    """A pause's decode started at its early end; committed when the pause's tentative end confirms it."""

    utterance: int
    pause: int
    end: ControlFrame  # the early end: its ``at`` starts the waterfall's asr step
    hypothesis: list[str] | None = None  # None while decoding (or when the decode failed)
    complete: bool = False


def _pause_number(end: ControlFrame) -> int:
    return int(end.data.get("pause", 0))


@stage("asr")
class Asr(Stage):
    """Whisper with periodic re-decoding, local-agreement commits and a tail-only final decode."""

    consumes = frozenset({FrameKind.AUDIO})
    emits = frozenset({FrameKind.TEXT})
    Params = AsrParams
    client_settable = frozenset({"partials"})
    admission = "stream"

    def __init__(self, params: AsrParams, context: StageContext) -> None:
        super().__init__(params, context)
        self.p: AsrParams = params
        self.transcriber: Transcriber | None = None
        self.final_transcriber: Transcriber | None = None  # same model, the final beam
        self._resample = StreamResampler(RATE)
        self._task: asyncio.Task[None] | None = None
        self.decodes: list[dict[str, float]] = []  # per decode: audio_s, seconds, final, early (for benchmarks)
        self._reset(0)

    def _reset(self, utterance: int) -> None:
        self.utterance = utterance
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._since_decode = 0
        self._committed: list[str] = []
        self._tail: list[str] = []  # uncommitted words of the last hypothesis
        self._hyp_samples = -1  # how much audio the last hypothesis covered
        self._newest: AudioFrame | None = None
        self._active = False
        self._last_partial = ""
        self._last_stable = ""
        self._pushed_words = 0  # committed words already pushed (a new push with more is a new waterfall path)
        self._loudest = 0.0  # RMS of the loudest chunk of the utterance
        self._recent: list[float] = []  # RMS of the newest chunks
        self._early: _EarlyDecode | None = None  # the decode of the current pause, started at its early end

    async def start(self) -> None:
        engine = ASR_ENGINES.get(self.p.engine)
        p = self.p
        options = TranscriptionOptions(language=p.language, beam_size=p.beam_size, threads=p.threads, workers=p.workers)
        self.transcriber = self.final_transcriber = await engine.open(self.context, options)
        final_beam = p.final_beam_size or p.beam_size
        if final_beam != p.beam_size:
            final = dataclasses.replace(options, beam_size=final_beam)
            self.final_transcriber = await engine.open(self.context, final)
        # The first model call is slow (allocations): pay it here, not on the first utterance.
        for transcriber in {id(t): t for t in (self.transcriber, self.final_transcriber)}.values():
            await self.run_blocking(transcriber.decode, np.zeros(RATE, np.float32), "", self.p.context_s)
        tracker(self.context.events).expect("final_transcript_ms")
        turn(self.context.events).listening = self.p.commit_on_pause and self.p.endpointing == "adaptive"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for transcriber in {id(t): t for t in (self.transcriber, self.final_transcriber) if t is not None}.values():
            transcriber.close()
        self.transcriber = self.final_transcriber = None

    # -- audio -----------------------------------------------------------------
    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        audio = self._resample(frame.samples, frame.sample_rate)
        if not self._active:  # audio without a VAD in front: one open utterance
            self._active = True
            self.utterance = self.utterance or 1
        self._chunks.append(audio)
        self._samples += len(audio)
        self._since_decode += len(audio)
        self._newest = frame
        self._note_level(audio)
        ready = self._samples >= self.p.min_audio_ms * RATE / 1000
        due = self._since_decode >= self.p.interval_ms * RATE / 1000
        overdue = self._since_decode >= 2 * self.p.interval_ms * RATE / 1000
        if ready and due and not self._busy() and (overdue or not self._quiet()):
            self._spawn()

    def _note_level(self, audio: np.ndarray) -> None:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
        self._loudest = max(self._loudest, rms)
        self._recent = [*self._recent[-1:], rms]

    def _quiet(self) -> bool:
        """True when the newest ~64 ms are ``quiet_db`` below the loudest chunk: likely a pause."""
        if self.p.quiet_db is None or not self._loudest:
            return False
        return max(self._recent) < self._loudest * 10 ** (self.p.quiet_db / 20)

    def _spawn(self, pause: ControlFrame | None = None) -> None:
        early = None
        if pause is not None and pause.data.get("early"):  # known before the task runs: the pad's end may be next
            early = self._early = _EarlyDecode(self.utterance, _pause_number(pause), pause)
        step = self._decode_step(partial=True, pause=pause, early=early)
        self._task = asyncio.create_task(self._guarded_step(step, pause))

    async def _guarded_step(self, step: Coroutine[Any, Any, None], pause: ControlFrame | None) -> None:
        try:
            await step
        except Exception as exc:  # a failed partial must not end the utterance
            log.warning("asr %s: partial decode failed: %s: %s", self.context.name, type(exc).__name__, exc)
            if pause is not None:  # vad must not wait for a verdict that never comes
                turn(self.context.events).post(self.utterance, _pause_number(pause), False)

    def _busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0].astype(np.float32) / 32768.0 if self._chunks else np.zeros(0, np.float32)

    async def _decode_step(
        self, partial: bool, pause: ControlFrame | None = None, early: _EarlyDecode | None = None
    ) -> None:
        """Decode the utterance after the committed words; commit what two hypotheses agree on
        (everything, at a ``pause`` after a complete phrase: the speaker stopped, the words will not change).
        ``early``: the pause's decode began at its early end; its words wait for ``_confirm_early``."""
        audio, covered, newest, utterance = self._audio(), self._samples, self._newest, self.utterance
        self._since_decode = 0
        prefix = " ".join(self._committed)
        assert self.transcriber is not None
        gate = self.transcriber.gate
        urgent = pause is not None or not partial
        if gate is not None and not urgent and gate.busy():
            return  # another session's decode holds the shared model: skip this partial, the next one comes
        if early is not None:  # the silence the pad is still to bring, so it decodes what the pause decode would
            to_come = float(early.end.data.get("pad_to_come_ms", 0.0))
            audio = np.concatenate([audio, np.zeros(int(max(0.0, min(to_come, 1000.0)) * RATE / 1000), np.float32)])
        result = await self.run_blocking(self._decode, audio, prefix, urgent)
        self.decodes.append(
            {
                "audio_s": len(audio) / RATE,
                "seconds": result.seconds,
                "final": float(not partial),
                "early": float(bool(early)),
            }
        )
        if utterance != self.utterance:
            return
        hypothesis = words(result.text)
        commit = False
        if pause is not None:
            complete = self._complete(hypothesis)
            turn(self.context.events).post(utterance, _pause_number(pause), complete)
            if early is not None:  # judged now; used when the pause's tentative end confirms it, else dropped
                early.hypothesis, early.complete = hypothesis, complete
                return
            resumed = self._samples > covered  # speech went on while it decoded: not an end
            commit = self.p.commit_on_pause and complete and not resumed
        self._committed, self._tail = self._agree(self._committed, self._tail, hypothesis, commit)
        self._hyp_samples = covered
        if partial and newest is not None:
            await self._emit_partial(newest, pause if commit else None)

    def _complete(self, hypothesis: list[str]) -> bool:
        """Do the committed words and ``hypothesis`` read as a finished phrase (a pause may end the turn)?"""
        text = " ".join([*self._committed, *hypothesis])
        return self.p.endpointing == "fixed" or phrase_complete(text, self.p.language)

    def _agree(
        self, committed: list[str], tail: list[str], hypothesis: list[str], pause: bool
    ) -> tuple[list[str], list[str]]:
        accept = None if self.p.endpointing == "fixed" else functools.partial(clause_complete, language=self.p.language)
        return local_agreement(committed, tail, hypothesis, pause=pause, commit=self.p.commit, accept=accept)

    async def _confirm_early(
        self, early: _EarlyDecode, end: ControlFrame, covered: int, running: asyncio.Task[None] | None
    ) -> None:
        """The pause's tentative end after its early one: take the early decode's words (no new decode).

        ``covered``: the samples when the tentative end came (after the early decode's audio,
        only the pad's silence)."""
        if running is not None:
            await asyncio.wait({running})  # the early decode (it never raises: _guarded_step)
        if early.utterance != self.utterance:
            return
        if early.hypothesis is None:  # it failed: decode now, as without an early end
            await self._decode_step(partial=True, pause=end)
            return
        # from here as a pause decode that began at the tentative end would go on
        resumed = self._samples > covered  # speech went on while it decoded: not an end
        commit = self.p.commit_on_pause and early.complete and not resumed
        self._committed, self._tail = self._agree(self._committed, self._tail, early.hypothesis, commit)
        if not resumed:
            self._hyp_samples = covered  # the hypothesis holds for the pad's silence after its audio
        if self._newest is not None:
            await self._emit_partial(self._newest, early.end if commit else None)

    def _decode(self, audio: np.ndarray, prefix: str, urgent: bool) -> Decode:
        """One decode on the stage's thread, holding the shared model's gate when the engine has one."""
        transcriber = self.final_transcriber if urgent else self.transcriber  # a pause or the end: the final beam
        assert transcriber is not None
        gate = transcriber.gate
        with gate.hold(urgent) if gate is not None else contextlib.nullcontext():
            return transcriber.decode(audio, prefix, self.p.context_s)

    async def _emit_partial(self, newest: AudioFrame, pause: ControlFrame | None = None) -> None:
        text = " ".join(self._committed + self._tail)
        stable = " ".join(self._committed)
        if not self.p.partials or not text or (text, stable) == (self._last_partial, self._last_stable):
            return
        out = TextFrame(text=text, final=False, language=self.p.language, utterance_id=self.utterance)
        out.stable_prefix = stable
        inherit_timing(out, newest)
        if pause is not None:  # committed at the end of speech: its latency runs from the speech end
            out.capture_time = pause.capture_time
        # A late partial is skipped: the next supersedes it. Not one that commits words: only
        # the final would bring them, later, so skipping it would only delay their translation.
        if stable == self._last_stable and not self.can_make_it(out):
            return
        self._last_partial, self._last_stable = text, stable
        self.emit_event(
            "transcript", text=text, final=False, stable=stable, utterance=self.utterance, language=self.p.language
        )
        self._stamp(out, pause, len(self._committed))
        await self.push(out)

    def _stamp(self, out: TextFrame, end: ControlFrame | None, committed: int) -> None:
        """Waterfall: text pushed with words not pushed before, after a VAD end, starts the utterance's path."""
        if committed <= self._pushed_words or end is None:
            return
        self._pushed_words = committed
        vad_at = end.data.get("at")
        tracker(self.context.events).path(
            self.utterance, out.capture_time, float(vad_at) if isinstance(vad_at, int | float) else None, now()
        )

    # -- control -----------------------------------------------------------------
    async def on_control(self, frame: ControlFrame) -> None:
        if frame.control is ControlKind.SPEECH_START:
            if self._active and self._samples:
                await self._finish(None)
            self._reset(int(frame.data.get("utterance", self.utterance + 1)))
            self._active = True
        elif frame.control is ControlKind.SPEECH_END and self._active:
            if frame.data.get("tentative"):
                early = self._early
                if (  # the pause's decode began at its early end: confirm it
                    not frame.data.get("early")
                    and early is not None
                    and (early.utterance, early.pause) == (self.utterance, _pause_number(frame))
                ):
                    self._early = None
                    running = self._task if self._busy() else None
                    confirm = self._confirm_early(early, frame, self._samples, running)
                    self._task = asyncio.create_task(self._guarded_step(confirm, frame))
                elif self._samples:  # speculative: decode while the endpoint is confirmed
                    if self._busy():
                        await asyncio.wait({self._task})
                    self._spawn(pause=frame)
            else:
                await self._finish(frame)
        elif frame.control is ControlKind.END_OF_STREAM and self._active and self._samples:
            await self._finish(None)

    async def _finish(self, end: ControlFrame | None) -> None:
        """The final transcript: reuse the last hypothesis if it covered all audio, else decode the tail."""
        if self._task is not None:
            await asyncio.shield(self._task)  # never raises: _guarded_step
        if self._samples and self._hyp_samples != self._samples:
            await self._decode_step(partial=False)
        text = " ".join(self._committed + self._tail)
        if not text:  # noise, not words: nothing to send or to measure
            self._reset(self.utterance)
            return
        out = TextFrame(text=text, final=True, language=self.p.language, utterance_id=self.utterance)
        out.stable_prefix = text
        if end is not None:
            out.capture_time = end.capture_time
            out.deadline = float(end.data.get("deadline", math.inf))
        elif self._newest is not None:
            inherit_timing(out, self._newest)
        latency_ms = (now() - out.capture_time) * 1000
        self.emit_event(
            "transcript",
            text=text,
            final=True,
            stable=text,
            utterance=self.utterance,
            language=self.p.language,
            latency_ms=round(latency_ms, 1),
        )
        tracker(self.context.events).record(self.utterance, "final_transcript_ms", latency_ms)
        self._stamp(out, end, len(words(text)))
        await self.push(out)
        self._reset(self.utterance)
