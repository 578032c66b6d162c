"""Mixing several audio streams into one outbound track, on the listener's side.

An :class:`AudioMix` holds one :class:`MixSource` per contributor (a speaker's
translated speech, a speaker's own voice); each source is a queue of 48 kHz mono
audio that never waits for anything. A :class:`MixedAudioTrack` sends 20 ms packets
paced by the clock: each packet is the sum of the next 20 ms of every source
(clipped to 16 bits), silence when all are dry. Two people speaking at once are two
sources summed, never one queued behind the other.

Every source keeps the timing of the frames put into it: when the first samples of a
frame with a deadline leave, ``on_first(frame, latency, late)`` is called; with
``drop_late`` a frame whose deadline passed while it waited is dropped there (the
rest of its source plays on), otherwise it plays and is counted as late.
"""

from __future__ import annotations

import asyncio
import fractions
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import AudioFrame, now
from ..histogram import Histogram
from ..media.resample import StreamResampler, mono_int16

AUDIO_RATE = 48_000
AUDIO_PACKET = 960  # 20 ms at 48 kHz

FirstListener = Callable[[AudioFrame, float, bool], None]


@dataclass
class SourceCounters:
    """What one source of a mix did."""

    frames: int = 0  # frames with a deadline whose first samples left
    late_played: int = 0  # ... after their deadline (late_audio: play)
    late_dropped: int = 0  # frames dropped at the mix because their deadline had passed (late_audio: drop)
    overflowed: int = 0  # samples dropped because the source held more than its bound
    flushed: int = 0  # samples dropped by an interruption
    latency: Histogram = field(default_factory=Histogram)  # capture -> first samples sent


class MixSource:
    """One contributor's queued audio, resampled to 48 kHz mono, with per-frame timing."""

    def __init__(
        self, key: str, *, drop_late: bool = False, max_buffer_s: float = 5.0, on_first: FirstListener | None = None
    ) -> None:
        self.key = key
        self.drop_late = drop_late
        self.on_first = on_first
        self.counters = SourceCounters()
        self._chunks: deque[tuple[np.ndarray, AudioFrame | None]] = deque()
        self._buffered = 0
        self._max_samples = int(max_buffer_s * AUDIO_RATE)
        self._resampler = StreamResampler(AUDIO_RATE)

    @property
    def buffered_seconds(self) -> float:
        return self._buffered / AUDIO_RATE

    def put(self, frame: AudioFrame) -> None:
        """Queue audio (any rate, any channel count); the oldest goes past ``max_buffer_s``."""
        if frame.sample_rate != AUDIO_RATE:
            samples = self._resampler(frame.samples, frame.sample_rate)
        else:
            samples = mono_int16(frame.samples)
        if not len(samples):
            return
        timed = frame if math.isfinite(frame.deadline) else None
        self._chunks.append((samples, timed))
        self._buffered += samples.shape[0]
        while self._buffered > self._max_samples and self._chunks:
            dropped, _ = self._chunks.popleft()
            self._buffered -= dropped.shape[0]
            self.counters.overflowed += dropped.shape[0]

    def flush(self) -> None:
        """Drop everything queued (the speaker's translation was interrupted)."""
        self.counters.flushed += self._buffered
        self._chunks.clear()
        self._buffered = 0

    def take(self, count: int) -> np.ndarray | None:
        """The next ``count`` samples (zero-padded), or None when nothing is queued."""
        if not self._chunks:
            return None
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            samples, source = self._chunks[0]
            if source is not None:
                at = now()
                late = at > source.deadline
                if late and self.drop_late:  # it waited past its deadline behind earlier audio: never late
                    self._chunks.popleft()
                    self._buffered -= samples.shape[0]
                    self.counters.late_dropped += 1
                    if self.on_first is not None:
                        self.on_first(source, at - source.capture_time, True)
                    continue
                self._chunks[0] = (samples, None)
                latency = at - source.capture_time
                self.counters.frames += 1
                self.counters.late_played += int(late)
                self.counters.latency.observe(latency)
                if self.on_first is not None:
                    self.on_first(source, latency, late)
            take = min(count - filled, samples.shape[0])
            out[filled : filled + take] = samples[:take]
            filled += take
            if take == samples.shape[0]:
                self._chunks.popleft()
            else:
                self._chunks[0] = (samples[take:], None)
        self._buffered -= filled
        return out if filled else None


class AudioMix:
    """Named sources summed into packets; sources come and go while it plays."""

    def __init__(self) -> None:
        self.sources: dict[str, MixSource] = {}

    def source(self, key: str, **options: object) -> MixSource:
        """The source named ``key``, made with ``options`` (see :class:`MixSource`) the first time."""
        found = self.sources.get(key)
        if found is None:
            found = self.sources[key] = MixSource(key, **options)  # type: ignore[arg-type]
        return found

    def remove(self, key: str) -> None:
        self.sources.pop(key, None)

    def flush(self, key: str) -> None:
        source = self.sources.get(key)
        if source is not None:
            source.flush()

    def take(self, count: int) -> tuple[np.ndarray, int]:
        """The sum of the next ``count`` samples of every source, and how many sources had audio."""
        total: np.ndarray | None = None
        active = 0
        for source in list(self.sources.values()):
            chunk = source.take(count)
            if chunk is None:
                continue
            active += 1
            total = chunk.astype(np.int32) if total is None else total + chunk
        if total is None:
            return np.zeros(count, dtype=np.int16), 0
        return np.clip(total, -32768, 32767).astype(np.int16), active


class MixedAudioTrack(MediaStreamTrack):
    """An outbound audio track: 20 ms packets of a mix, paced by the clock."""

    kind = "audio"

    def __init__(self, mix: AudioMix | None = None) -> None:
        super().__init__()
        self.mix = mix or AudioMix()
        self.sent = 0  # packets with audio from at least one source
        self.silent = 0  # packets of silence
        self.overlapped = 0  # packets mixing two or more sources at once
        self._next_time: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._next_time is None:
            self._next_time = now()
        else:
            self._next_time += AUDIO_PACKET / AUDIO_RATE
            wait = self._next_time - now()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.1:  # we fell behind (a stalled loop): resynchronise, don't burst
                self._next_time = now()
        samples, active = self.mix.take(AUDIO_PACKET)
        if active:
            self.sent += 1
            self.overlapped += int(active > 1)
        else:
            self.silent += 1
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += AUDIO_PACKET
        return frame
