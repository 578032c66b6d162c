"""``asr``: streaming speech recognition; the decoder is an engine (``engine:``, default ``faster-whisper``).

While an utterance grows, the buffer is re-decoded every ``interval_ms`` of new audio
(one decode at a time, in the background, so audio is never held up). The committed
words go in as a forced decoder prefix, so each decode only generates the uncommitted
tail; words on which two consecutive hypotheses agree are committed (local agreement),
by default only up to the last clause end among them (``commit: clause``): tiny.en's
early guesses agree on wrong words often enough that word-level commits cost WER.
A tentative SPEECH_END from ``vad`` (a pause) starts a decode at once and, with
``commit_on_pause``, commits all of it, so translation and speech of the words so far
start while the end is being confirmed; when the confirmed SPEECH_END finds no new
audio since, that hypothesis is the final and no decode is left to do. The final
TextFrame carries the capture time of the utterance's last voiced audio (from
SPEECH_END), so its latency is what the speaker feels. The engine (a ``Transcriber``
from ``streamai.speech.engines.ASR_ENGINES``) does one decode; everything streaming
is here.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame, inherit_timing, now
from ..speech.audio import StreamResampler
from ..speech.engines.asr import ASR_ENGINES, Transcriber, TranscriptionOptions
from ..speech.latency import tracker
from ..speech.text import local_agreement, words
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
    beam_size: int = Field(1, ge=1, le=8)
    threads: int = Field(2, ge=1, le=64)
    partials: bool = True  # emit partial transcripts (decoding still runs for commits when False)
    commit_on_pause: bool = True  # a tentative SPEECH_END (a pause) commits the whole hypothesis
    # No periodic decode while the newest audio is this much quieter than the utterance's
    # loudest (dB; null: never wait): it is likely a pause, whose tentative SPEECH_END is
    # about to start a decode that a periodic one, still running, would hold up.
    quiet_db: float | None = Field(-30, ge=-80, le=0)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return ASR_ENGINES.check(name)


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
        self._resample = StreamResampler(RATE)
        self._task: asyncio.Task[None] | None = None
        self.decodes: list[dict[str, float]] = []  # per decode: audio_s, seconds, kind (for benchmarks)
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
        self._loudest = 0.0  # RMS of the loudest chunk of the utterance
        self._recent: list[float] = []  # RMS of the newest chunks

    async def start(self) -> None:
        options = TranscriptionOptions(language=self.p.language, beam_size=self.p.beam_size, threads=self.p.threads)
        self.transcriber = await ASR_ENGINES.get(self.p.engine).open(self.context, options)
        # The first model call is slow (allocations): pay it here, not on the first utterance.
        await self.run_blocking(self.transcriber.decode, np.zeros(RATE, np.float32), "", self.p.context_s)
        tracker(self.context.events).expect("final_transcript_ms")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transcriber is not None:
            self.transcriber.close()
        self.transcriber = None

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

    def _spawn(self, pause: bool = False) -> None:
        self._task = asyncio.create_task(self._guarded_step(pause))

    async def _guarded_step(self, pause: bool) -> None:
        try:
            await self._decode_step(partial=True, pause=pause)
        except Exception as exc:  # a failed partial must not end the utterance
            log.warning("asr %s: partial decode failed: %s: %s", self.context.name, type(exc).__name__, exc)

    def _busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0].astype(np.float32) / 32768.0 if self._chunks else np.zeros(0, np.float32)

    async def _decode_step(self, partial: bool, pause: bool = False) -> None:
        """Decode the utterance after the committed words; commit what two hypotheses agree on
        (everything, when ``pause``: the speaker stopped, so the words so far will not change)."""
        audio, covered, newest, utterance = self._audio(), self._samples, self._newest, self.utterance
        self._since_decode = 0
        prefix = " ".join(self._committed)
        assert self.transcriber is not None
        result = await self.run_blocking(self.transcriber.decode, audio, prefix, self.p.context_s)
        self.decodes.append({"audio_s": len(audio) / RATE, "seconds": result.seconds, "final": float(not partial)})
        if utterance != self.utterance:
            return
        self._committed, self._tail = local_agreement(
            self._committed, self._tail, words(result.text), pause=pause, commit=self.p.commit
        )
        self._hyp_samples = covered
        if partial and newest is not None:
            await self._emit_partial(newest)

    async def _emit_partial(self, newest: AudioFrame) -> None:
        text = " ".join(self._committed + self._tail)
        stable = " ".join(self._committed)
        if not self.p.partials or not text or (text, stable) == (self._last_partial, self._last_stable):
            return
        out = TextFrame(text=text, final=False, language=self.p.language, utterance_id=self.utterance)
        out.stable_prefix = stable
        inherit_timing(out, newest)
        # A late partial is skipped: the next supersedes it. Not one that commits words: only
        # the final would bring them, later, so skipping it would only delay their translation.
        if stable == self._last_stable and not self.can_make_it(out):
            return
        self._last_partial, self._last_stable = text, stable
        self.emit_event(
            "transcript", text=text, final=False, stable=stable, utterance=self.utterance, language=self.p.language
        )
        await self.push(out)

    # -- control -----------------------------------------------------------------
    async def on_control(self, frame: ControlFrame) -> None:
        if frame.control is ControlKind.SPEECH_START:
            if self._active and self._samples:
                await self._finish(None)
            self._reset(int(frame.data.get("utterance", self.utterance + 1)))
            self._active = True
        elif frame.control is ControlKind.SPEECH_END and self._active:
            if frame.data.get("tentative"):
                if self._samples:  # speculative: decode while the endpoint is confirmed
                    if self._busy():
                        await asyncio.wait({self._task})
                    self._spawn(pause=self.p.commit_on_pause)
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
        await self.push(out)
        self._reset(self.utterance)
