"""``tts``: speech synthesis of translated clauses, streamed as 48 kHz mono audio.

The synthesizer is an engine picked by ``engine:`` from
``streamai.speech.engines.TTS_ENGINES``: ``piper`` (default; the Piper voice
en_US-joe-medium reading the text's language through espeak-ng phonemes: neural, but
English-accented for pt/es/de/fr), ``coqui`` (a Coqui model folder of yours) and
``espeak`` (formant synthesis; a last resort, used only when chosen). Each clause is
spoken in its own language (the translation's target; ``language`` for text without
one), unless ``espeak_voice`` pins a voice.

The engine cuts a clause into pieces (Piper: clause ends, and a first piece of
``first_words`` words, so the first audio costs a few words of synthesis);
``process`` returns as soon as the first piece is pushed (so the engine's service-time
estimate is the time to first audio) and the rest follows in the background. The
first chunk keeps the clause's deadline; later chunks of an admitted clause get
``deadline = inf`` so a clause is never cut in the middle for lateness.

Interruptions stop at once. The engine shows an INTERRUPTION (the client's
``interrupt``) and, with ``barge_in``, a SPEECH_START (the user talks over the audio)
to this stage ahead of its queue (``on_urgent``): the clause being made is abandoned
(its piece in synthesis is thrown away when it returns), queued clauses before the
control frame's place in the stream are dropped (counted as ``interrupted``), as are
later clauses of the utterances already being spoken, and an INTERRUPTION goes to the
output at once, where the transport flushes the audio it holds.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame, now
from ..speech.audio import resample_once, trim_leading_silence
from ..speech.engines.tts import TTS_ENGINES, SynthesisOptions, Synthesizer
from ..speech.latency import tracker
from ..stage import Stage, StageContext, stage

OUT_RATE = 48_000


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str = "piper"  # a TTS engine name (streamai.speech.engines.TTS_ENGINES)
    language: str = "pt"  # language of text that names none
    espeak_voice: str | None = None  # pin the phoneme voice (piper) / voice (espeak); default: from the language
    speaker: str | None = None  # coqui multi-speaker models
    length_scale: float | None = Field(None, gt=0.3, le=3)  # piper: < 1 speaks faster
    chunk_ms: float = Field(100, ge=10, le=100)
    barge_in: bool = True
    first_words: int = Field(2, ge=0, le=50)  # a clause's first piece: this many words (0: whole clauses)
    threads: int = Field(1, ge=1, le=16)  # piper: onnxruntime threads (2 cores are shared with Whisper)
    trim_lead: bool = True  # a clause starts at its first audible sample (Piper leads with 45-65 ms of silence)
    lead_keep_ms: float = Field(5, ge=0, le=200)  # ... keeping this much before it

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return TTS_ENGINES.check(name)


def _options(p: TtsParams) -> SynthesisOptions:
    return SynthesisOptions(
        language=p.language,
        voice=p.espeak_voice,
        speaker=p.speaker,
        length_scale=p.length_scale,
        threads=p.threads,
        first_words=p.first_words,
    )


@stage("tts")
class Tts(Stage):
    """Translated text in, 48 kHz mono speech out, clause by clause."""

    consumes = frozenset({FrameKind.TEXT})
    emits = frozenset({FrameKind.AUDIO, FrameKind.CONTROL})
    Params = TtsParams
    client_settable = frozenset({"language", "length_scale"})
    live_params = frozenset({"language", "barge_in", "length_scale", "first_words"})

    def __init__(self, params: TtsParams, context: StageContext) -> None:
        super().__init__(params, context)
        self.p: TtsParams = params
        self.engine: Synthesizer | None = None
        self._tail: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by an interruption: older clauses stop
        self._playing_until = 0.0
        self._first_push: dict[int, float] = {}  # utterance -> when its latest clause started sounding
        self._newest_utterance = 0  # the newest utterance a clause came from
        self._muted_through = 0  # clauses of utterances up to this one were interrupted: never spoken
        self._discard_until: int | None = None  # seq of the interruption whose in-band copy ends the discard
        self.synths: list[dict[str, float]] = []  # per piece: audio_s, seconds (benchmarks)
        self.interruptions = 0

    async def start(self) -> None:
        engine = TTS_ENGINES.get(self.p.engine)
        self.engine = await engine.open(self.context, _options(self.p))
        if self.engine.warm_up:  # the first ONNX/torch run is slow: pay it here
            synthesizer = self.engine
            language = self.p.language
            await self.run_blocking(
                lambda: [synthesizer.synthesize(s) for s in synthesizer.sentences("Olá.", language)]
            )
        tracker(self.context.events).expect("first_audio_ms")

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    async def apply_params(self, params: BaseModel) -> None:
        assert isinstance(params, TtsParams) and self.engine is not None
        self.params = self.p = params
        self.engine.configure(_options(params))  # from the next piece on

    # -- text in -----------------------------------------------------------------
    def _silenced(self, frame: TextFrame) -> bool:
        return self._discard_until is not None or frame.utterance_id <= self._muted_through

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, TextFrame) and self.engine is not None
        if frame.language is None and not frame.final:
            return  # a partial transcript: not for speaking
        generation = self._generation
        if self._silenced(frame):
            self.drop(frame, "interrupted")
            return
        self._newest_utterance = max(self._newest_utterance, frame.utterance_id)
        if self._tail is not None and not self._tail.done():
            await asyncio.wait({self._tail})  # clauses play in order; never raises, even if cancelled
        if generation != self._generation:  # interrupted while the clause before played
            self.drop(frame, "interrupted")
            return
        text = frame.text.strip()
        if not text:
            if frame.final and frame.utterance_id in self._first_push:  # everything was spoken before the end
                self._record(frame, self._first_push[frame.utterance_id])
            return
        engine = self.engine
        sentences = await self.run_blocking(engine.sentences, text, frame.language or self.p.language)
        if not sentences or generation != self._generation:
            return
        audio = await self.run_blocking(self._synthesize, sentences[0], True)
        if generation != self._generation:
            self.drop(frame, "interrupted")
            return
        on_time = self.can_make_it(frame)
        first_seq = await self._push_audio(audio, frame, first=True, on_time=on_time)
        pushed_at = now()
        tracker(self.context.events).step(frame.utterance_id, "tts", pushed_at, first_seq)
        self._first_push[frame.utterance_id] = pushed_at
        if frame.final:
            self._record(frame, pushed_at)
        if len(sentences) > 1:
            self._tail = asyncio.create_task(self._rest(sentences[1:], frame, generation, on_time))

    def _record(self, frame: TextFrame, pushed_at: float) -> None:
        tracker(self.context.events).record(
            frame.utterance_id, "first_audio_ms", (pushed_at - frame.capture_time) * 1000
        )
        tracker(self.context.events).finish(frame.utterance_id)
        for old in [u for u in self._first_push if u < frame.utterance_id]:
            del self._first_push[old]

    def _synthesize(self, sentence: Any, first: bool = False) -> np.ndarray:
        """48 kHz audio of one piece; a clause's first piece starts at its first audible sample."""
        engine = self.engine
        assert engine is not None
        started = time.perf_counter()
        audio, rate = engine.synthesize(sentence)
        if first and self.p.trim_lead:
            audio = trim_leading_silence(audio, rate, self.p.lead_keep_ms)
        out = resample_once(audio, rate, OUT_RATE)
        self.synths.append({"audio_s": len(out) / OUT_RATE, "seconds": time.perf_counter() - started})
        return out

    async def _rest(self, sentences: list[Any], frame: TextFrame, generation: int, on_time: bool) -> None:
        for sentence in sentences:
            audio = await self.run_blocking(self._synthesize, sentence)
            if generation != self._generation:
                return
            await self._push_audio(audio, frame, first=False, on_time=on_time)

    async def _push_audio(self, audio: np.ndarray, frame: TextFrame, first: bool, on_time: bool) -> int | None:
        """Cut into <= chunk_ms frames: the first keeps the clause's deadline, the rest are never late
        (unless the clause already was: then all share its deadline and its fate at the output).
        Returns the first frame's seq."""
        step = int(OUT_RATE * self.p.chunk_ms / 1000)
        first_seq: int | None = None
        for index, offset in enumerate(range(0, len(audio), step)):
            samples = audio[offset : offset + step].reshape(-1, 1)
            out = AudioFrame(samples=samples, sample_rate=OUT_RATE, pts=offset)
            out.capture_time = frame.capture_time
            out.deadline = frame.deadline if (first and index == 0) or not on_time else math.inf
            self._playing_until = max(self._playing_until, now()) + len(samples) / OUT_RATE
            first_seq = out.seq if first_seq is None else first_seq
            await self.push(out)
        return first_seq

    # -- interruptions -----------------------------------------------------------
    def on_urgent(self, frame: ControlFrame) -> ControlFrame | None:
        """Stop now: a client INTERRUPTION always, a SPEECH_START (barge-in) while audio is made or plays."""
        if frame.control is ControlKind.INTERRUPTION:
            reason = str(frame.data.get("reason") or frame.data.get("source") or "interruption")
            self._cut(frame, reason)
            return None  # the engine already sends this interruption on to the output
        if frame.control is not ControlKind.SPEECH_START or not self.p.barge_in:
            return None
        busy = self._tail is not None and not self._tail.done()
        if not busy and now() >= self._playing_until:
            return None  # nothing is playing: nothing to cut
        self._cut(frame, "barge_in")
        return ControlFrame(control=ControlKind.INTERRUPTION, data={"reason": "barge_in", **frame.data})

    def _cut(self, frame: ControlFrame, reason: str) -> None:
        self._generation += 1
        if self._tail is not None:
            self._tail.cancel()
        self._playing_until = 0.0
        self._discard_until = frame.seq  # clauses queued before the frame's in-band copy are dropped
        self._muted_through = max(self._muted_through, self._newest_utterance)
        self.interruptions += 1
        self.emit_event("interruption", reason=reason, utterance=frame.data.get("utterance"))

    async def on_control(self, frame: ControlFrame) -> None:
        if frame.seq == self._discard_until:  # the in-band copy: what follows came after the interruption
            self._discard_until = None
