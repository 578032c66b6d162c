"""``tts``: speech synthesis of translated clauses, streamed as 48 kHz mono audio.

Engines (``engine:``): ``piper`` (default; the Piper voice en_US-joe-medium reading the
target language through espeak-ng phonemes: neural, but English-accented for pt/es/de/fr),
``coqui`` (``TTS.api`` with a Coqui model folder of yours) and ``espeak`` (formant
synthesis; a last resort, used only when chosen).

A clause is synthesized piece by piece (Piper: split at , ; : and sentence ends, since
VITS makes a whole piece at once; the first piece is cut to ``first_words`` words, so
the first audio costs a few words of synthesis, not a clause); ``process`` returns as soon as the first
chunk is pushed (so the engine's service-time estimate is the time to first audio) and
the rest follows in the background. The first chunk keeps the clause's deadline; later
chunks of an admitted clause get ``deadline = inf`` so a clause is never cut in the
middle for lateness. With ``barge_in``, a SPEECH_START while audio is still being made
or played stops the clause and sends an INTERRUPTION downstream (the transport flushes
its queued audio when it sees it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame, now
from ..models.shared import acquire_model
from ..speech.audio import resample_once
from ..speech.latency import tracker
from ..speech.text import short_head, split_clauses
from ..stage import Stage, stage

OUT_RATE = 48_000
ESPEAK_VOICES = {"pt": "pt-br", "en": "en-us", "es": "es", "de": "de", "fr": "fr-fr", "it": "it"}
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_espeak_lock = threading.Lock()  # espeak-ng (inside Piper's phonemizer) is not thread-safe


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["piper", "coqui", "espeak"] = "piper"
    language: str = "pt"
    espeak_voice: str | None = None  # phoneme voice for piper / voice for espeak; default from language
    speaker: str | None = None  # coqui multi-speaker models
    length_scale: float | None = Field(None, gt=0.3, le=3)  # piper: < 1 speaks faster
    chunk_ms: float = Field(100, ge=10, le=100)
    barge_in: bool = True
    first_words: int = Field(3, ge=0, le=50)  # a clause's first piece: this many words (0: whole clauses)
    threads: int = Field(1, ge=1, le=16)  # piper: onnxruntime threads (2 cores are shared with Whisper)


class _Engine:
    """What the stage needs from a synthesizer: sentences of a text, and audio of one sentence."""

    first_words = 0  # split this many words off the first piece (see ``short_head``)

    def sentences(self, text: str) -> list[Any]:
        return short_head([s for s in _SENTENCE.split(text.strip()) if s], self.first_words)

    def synthesize(self, sentence: Any) -> tuple[np.ndarray, int]:  # int16 mono, rate
        raise NotImplementedError


class _Piper(_Engine):
    def __init__(self, voice: Any, espeak_voice: str, length_scale: float | None) -> None:
        from piper import SynthesisConfig

        # A copy sharing the ONNX session: the espeak voice is per stage, the weights per node.
        self.voice = dataclasses.replace(voice, config=dataclasses.replace(voice.config, espeak_voice=espeak_voice))
        self.config = SynthesisConfig(length_scale=length_scale)

    def sentences(self, text: str) -> list[Any]:
        clauses, rest = split_clauses(text)  # clause pieces: a shorter first piece is heard sooner
        pieces = short_head([c for c in [*clauses, rest] if c], self.first_words)
        with _espeak_lock:
            return [p for piece in pieces for p in self.voice.phonemize(piece) if p]

    def synthesize(self, phonemes: Any) -> tuple[np.ndarray, int]:
        ids = self.voice.phonemes_to_ids(phonemes)
        audio = np.asarray(self.voice.phoneme_ids_to_audio(ids, self.config), dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio / peak
        return (np.clip(audio, -1, 1) * 32767).astype(np.int16), int(self.voice.config.sample_rate)


class _Coqui(_Engine):
    def __init__(self, tts: Any, language: str, speaker: str | None) -> None:
        self.tts, self.language, self.speaker = tts, language, speaker

    def synthesize(self, sentence: Any) -> tuple[np.ndarray, int]:
        kwargs: dict[str, Any] = {}
        if getattr(self.tts, "is_multi_lingual", False):
            kwargs["language"] = self.language
        if self.speaker:
            kwargs["speaker"] = self.speaker
        audio = np.asarray(self.tts.tts(text=sentence, **kwargs), dtype=np.float32)
        rate = int(self.tts.synthesizer.output_sample_rate)
        return (np.clip(audio, -1, 1) * 32767).astype(np.int16), rate


class _Espeak(_Engine):
    def __init__(self, program: str, voice: str) -> None:
        self.program, self.voice = program, voice

    def synthesize(self, sentence: Any) -> tuple[np.ndarray, int]:
        import io
        import wave

        wav = subprocess.run(
            [self.program, "-v", self.voice, "--stdout", str(sentence)], check=True, capture_output=True, timeout=30
        ).stdout
        with wave.open(io.BytesIO(wav), "rb") as reader:
            rate = reader.getframerate()
            return np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.int16), rate


@stage("tts")
class Tts(Stage):
    """Translated text in, 48 kHz mono speech out, clause by clause."""

    consumes = frozenset({FrameKind.TEXT})
    emits = frozenset({FrameKind.AUDIO, FrameKind.CONTROL})
    Params = TtsParams
    client_settable = frozenset({"length_scale"})

    def __init__(self, params: TtsParams, context: Any) -> None:
        super().__init__(params, context)
        self.p: TtsParams = params
        self.engine: _Engine | None = None
        self._release: Callable[[], None] = lambda: None
        self._tail: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by barge-in: older clauses stop
        self._playing_until = 0.0
        self._first_push: dict[int, float] = {}  # utterance -> when its latest clause started sounding
        self.synths: list[dict[str, float]] = []  # per sentence: audio_s, seconds (benchmarks)
        self.interruptions = 0

    async def start(self) -> None:
        from ..models import speech

        voice = self.p.espeak_voice or ESPEAK_VOICES.get(self.p.language, self.p.language)
        if self.p.engine == "piper":
            reference = self.context.model or "piper-joe-en-us"
            threads = self.p.threads
            loaded, self._release = await acquire_model(
                self.context, f"tts:piper:{reference}:{threads}", lambda: speech.load_piper(reference, threads)
            )
            self.engine = _Piper(loaded, voice, self.p.length_scale)
        elif self.p.engine == "coqui":
            reference = self.context.model or "coqui"
            if reference == "coqui":
                raise speech.ModelNotAvailable(
                    "engine coqui needs 'model:' set to a Coqui TTS model folder of yours (no Coqui model ships "
                    "in a package); or use engine: piper"
                )
            device = self.context.device
            loaded, self._release = await acquire_model(
                self.context, f"tts:coqui:{reference}:{device}", lambda: speech.load_coqui(reference, device)
            )
            self.engine = _Coqui(loaded, self.p.language, self.p.speaker)
        else:
            program = shutil.which("espeak-ng")
            if program is None:
                raise speech.ModelNotAvailable("engine espeak needs the espeak-ng program: apt-get install espeak-ng")
            self.engine = _Espeak(program, voice)
        self.engine.first_words = self.p.first_words
        if self.p.engine != "espeak":  # the first ONNX/torch run is slow: pay it here
            await self.run_blocking(lambda: [self.engine.synthesize(s) for s in self.engine.sentences("Olá.")])
        tracker(self.context.events).expect("first_audio_ms")

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
        self._release()
        self.engine = None

    # -- text in -----------------------------------------------------------------
    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, TextFrame) and self.engine is not None
        if frame.language is None and not frame.final:
            return  # a partial transcript: not for speaking
        if self._tail is not None and not self._tail.done():
            await asyncio.wait({self._tail})  # clauses play in order; never raises, even if cancelled
        text = frame.text.strip()
        if not text:
            if frame.final and frame.utterance_id in self._first_push:  # everything was spoken before the end
                self._record(frame, self._first_push[frame.utterance_id])
            return
        generation = self._generation
        sentences = await self.run_blocking(self.engine.sentences, text)
        if not sentences:
            return
        audio = await self.run_blocking(self._synthesize, sentences[0])
        if generation != self._generation:
            return
        on_time = self.can_make_it(frame)
        await self._push_audio(audio, frame, first=True, on_time=on_time)
        pushed_at = now()
        self._first_push[frame.utterance_id] = pushed_at
        if frame.final:
            self._record(frame, pushed_at)
        if len(sentences) > 1:
            self._tail = asyncio.create_task(self._rest(sentences[1:], frame, generation, on_time))

    def _record(self, frame: TextFrame, pushed_at: float) -> None:
        tracker(self.context.events).record(
            frame.utterance_id, "first_audio_ms", (pushed_at - frame.capture_time) * 1000
        )
        for old in [u for u in self._first_push if u < frame.utterance_id]:
            del self._first_push[old]

    def _synthesize(self, sentence: Any) -> np.ndarray:
        import time

        assert self.engine is not None
        started = time.perf_counter()
        audio, rate = self.engine.synthesize(sentence)
        out = resample_once(audio, rate, OUT_RATE)
        self.synths.append({"audio_s": len(out) / OUT_RATE, "seconds": time.perf_counter() - started})
        return out

    async def _rest(self, sentences: list[Any], frame: TextFrame, generation: int, on_time: bool) -> None:
        for sentence in sentences:
            audio = await self.run_blocking(self._synthesize, sentence)
            if generation != self._generation:
                return
            await self._push_audio(audio, frame, first=False, on_time=on_time)

    async def _push_audio(self, audio: np.ndarray, frame: TextFrame, first: bool, on_time: bool) -> None:
        """Cut into <= chunk_ms frames: the first keeps the clause's deadline, the rest are never late
        (unless the clause already was: then all share its deadline and its fate at the output)."""
        step = int(OUT_RATE * self.p.chunk_ms / 1000)
        for index, offset in enumerate(range(0, len(audio), step)):
            samples = audio[offset : offset + step].reshape(-1, 1)
            out = AudioFrame(samples=samples, sample_rate=OUT_RATE, pts=offset)
            out.capture_time = frame.capture_time
            out.deadline = frame.deadline if (first and index == 0) or not on_time else math.inf
            self._playing_until = max(self._playing_until, now()) + len(samples) / OUT_RATE
            await self.push(out)

    # -- barge-in ----------------------------------------------------------------
    async def on_control(self, frame: ControlFrame) -> None:
        if frame.control is not ControlKind.SPEECH_START or not self.p.barge_in:
            return
        busy = self._tail is not None and not self._tail.done()
        if not busy and now() >= self._playing_until:
            return  # nothing is playing: nothing to cut
        self._generation += 1
        if self._tail is not None:
            self._tail.cancel()
        self._playing_until = 0.0
        self.interruptions += 1
        cut = ControlFrame(control=ControlKind.INTERRUPTION, data={"reason": "barge_in", **frame.data})
        await self.push(cut)
        self.emit_event("interruption", reason="barge_in", utterance=frame.data.get("utterance"))
