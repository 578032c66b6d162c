"""Processed frames -> outbound aiortc tracks that never stall.

Video: a new processed frame is sent as soon as it arrives; when none comes within
one frame interval the last one is repeated (so the encoder and the viewer keep
going). Audio: 20 ms packets at 48 kHz paced by the clock; silence when nothing is
buffered; an interruption flushes what is queued.

Audio timing: for each processed frame with a deadline (a clause's first chunk) the
track reports, once the packet holding its first samples has been encoded and handed
to the transport (aiortc asks for the next packet only then), a ``SendTiming``: when
the frame was put here, when that packet was taken (queue and pacing before it) and
when it was handed over (encode and send). The 20 ms pacing wait is the stream's
clock: a packet sent before its slot would arrive sooner but play no sooner, since
the silence before it already fills the timeline up to that slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, VideoFrame, now
from ..histogram import Histogram
from ..media.resample import StreamResampler, mono_int16

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PACKET = 960  # 20 ms at 48 kHz


@dataclass(frozen=True)
class SendTiming:
    """When an audio frame's first samples went through the outbound track (monotonic seconds)."""

    put_at: float  # the frame reached the track
    taken_at: float  # the packet holding its first samples was taken for sending
    handed_at: float  # ... encoded and handed to the transport


LatencyListener = Callable[..., None]  # (kind, capture -> sent seconds, frame[, SendTiming])


def sent_fields(kind: str, latency: float, frame: Frame, timing: SendTiming | None = None) -> dict[str, Any]:
    """The fields of a ``latency`` event for one sent frame (``queued_ms``, ``encode_ms``, ``handed_at``
    for audio: the outbound queue and pacing, encode and send, and when it was handed over)."""
    fields: dict[str, Any] = {"kind": kind, "ms": round(latency * 1000, 1), "seq": frame.seq}
    if timing is not None:
        fields["queued_ms"] = round((timing.taken_at - timing.put_at) * 1000, 1)
        fields["encode_ms"] = round((timing.handed_at - timing.taken_at) * 1000, 1)
        fields["handed_at"] = timing.handed_at
    return fields


@dataclass
class OutboundCounters:
    """What went out on one track."""

    sent: int = 0  # new processed frames (video) / packets with processed audio (audio)
    repeated: int = 0  # video repeats / silent audio packets
    flushed: int = 0  # audio samples dropped by an interruption or overflow
    late: int = 0  # video frames whose deadline passed while they waited for the sender: not sent
    latency: Histogram = field(default_factory=Histogram)


class ProcessedVideoTrack(MediaStreamTrack):
    """Sends the newest processed video frame; repeats the last one when none is ready.

    A frame whose deadline passed while it waited here (the encoder or the event loop fell
    behind) is never sent: it is counted (``late``, and ``on_late``) and the last frame repeats.
    """

    kind = "video"

    def __init__(
        self,
        fps: float = 30.0,
        on_sent: LatencyListener | None = None,
        on_late: Callable[[Frame], None] | None = None,
    ) -> None:
        super().__init__()
        self.interval = 1 / fps
        self.counters = OutboundCounters()
        self._on_late = on_late
        self._pending: VideoFrame | None = None
        self._last: av.VideoFrame | None = None
        self._arrived = asyncio.Event()
        self._started: float | None = None
        self._last_pts = -1
        self._on_sent = on_sent

    def put(self, frame: VideoFrame) -> None:
        """Offer a processed frame; a newer one replaces a frame not yet sent."""
        self._pending = frame
        self._arrived.set()

    def stop(self) -> None:
        """End the track and let go of its frames: a sent frame keeps the encoder's scaler (and its
        threads) alive, and closed sessions are kept a while for metrics."""
        super().stop()
        self._pending = None
        self._last = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pending is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), self.interval)
        self._arrived.clear()
        started = self._started if self._started is not None else now()
        self._started = started
        frame = self._pending
        self._pending = None
        if frame is not None and now() > frame.deadline:
            self.counters.late += 1
            if self._on_late is not None:
                self._on_late(frame)
            frame = None
        if frame is not None:
            out = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            self._last = out
            self.counters.sent += 1
        elif self._last is not None:
            out = self._last
            self.counters.repeated += 1
        else:
            out = av.VideoFrame(width=320, height=240, format="yuv420p")  # black until the first frame
            for plane, value in zip(out.planes, (16, 128, 128), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            self.counters.repeated += 1
        pts = max(int((now() - started) * VIDEO_CLOCK), self._last_pts + 1)
        self._last_pts = pts
        out.pts = pts
        out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        if frame is not None:
            latency = now() - frame.capture_time
            self.counters.latency.observe(latency)
            if self._on_sent is not None:
                self._on_sent("video", latency, frame)
        return out


class ProcessedAudioTrack(MediaStreamTrack):
    """20 ms packets at 48 kHz from a buffer of processed audio; silence when it runs dry."""

    kind = "audio"

    def __init__(
        self,
        max_buffer_s: float = 30.0,
        on_sent: LatencyListener | None = None,
        drop_late: bool = False,
        on_late: Callable[[Frame], None] | None = None,
    ) -> None:
        super().__init__()
        self.drop_late = drop_late  # a frame whose deadline passed while it waited here is not played
        self._on_late = on_late
        self.counters = OutboundCounters()
        self._chunks: deque[tuple[np.ndarray, AudioFrame | None, float]] = deque()  # samples, source, put at
        self._handing: list[tuple[AudioFrame, float, float]] = []  # taken in the packet being encoded now
        self._buffered = 0
        self._max_samples = int(max_buffer_s * AUDIO_RATE)
        self._next_time: float | None = None
        self._pts = 0
        self._on_sent = on_sent
        self._resampler = StreamResampler(AUDIO_RATE)  # processed audio at another rate, as one stream

    @property
    def buffered_seconds(self) -> float:
        return self._buffered / AUDIO_RATE

    def put(self, frame: AudioFrame) -> None:
        """Queue processed audio (any rate, any channel count) for sending."""
        if frame.sample_rate != AUDIO_RATE:
            samples = self._resampler(frame.samples, frame.sample_rate)
        else:
            samples = mono_int16(frame.samples)
        self._chunks.append((samples, frame, now()))
        self._buffered += samples.shape[0]
        while self._buffered > self._max_samples and self._chunks:
            dropped, _, _ = self._chunks.popleft()
            self._buffered -= dropped.shape[0]
            self.counters.flushed += dropped.shape[0]

    def flush(self) -> None:
        """Drop everything queued (barge-in: the user started speaking)."""
        self.counters.flushed += self._buffered
        self._chunks.clear()
        self._buffered = 0

    def _take(self, count: int) -> tuple[np.ndarray, bool]:
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            samples, source, put_at = self._chunks[0]
            if source is not None and self.drop_late and now() > source.deadline:
                self._chunks.popleft()  # it waited past its deadline behind earlier audio: never late
                self._buffered -= samples.shape[0]
                self.counters.flushed += samples.shape[0]
                if self._on_late is not None:
                    self._on_late(source)
                continue
            if source is not None:  # first samples of this frame leave now
                self._chunks[0] = (samples, None, put_at)
                if source.deadline != float("inf"):
                    self._handing.append((source, put_at, now()))
            take = min(count - filled, samples.shape[0])
            out[filled : filled + take] = samples[:take]
            filled += take
            if take == samples.shape[0]:
                self._chunks.popleft()
            else:
                self._chunks[0] = (samples[take:], None, put_at)
        self._buffered -= filled
        return out, filled > 0

    def _report_handed(self) -> None:
        """The previous packet is encoded and sent (the sender asks for the next one only then)."""
        handed_at = now()
        for source, put_at, taken_at in self._handing:
            latency = handed_at - source.capture_time
            self.counters.latency.observe(latency)
            if self._on_sent is not None:
                self._on_sent("audio", latency, source, SendTiming(put_at, taken_at, handed_at))
        self._handing.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._handing:
            self._report_handed()
        if self._next_time is None:
            self._next_time = now()
        else:
            self._next_time += AUDIO_PACKET / AUDIO_RATE
            wait = self._next_time - now()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.1:  # we fell behind (a stalled loop): resynchronise, don't burst
                self._next_time = now()
        samples, had_audio = self._take(AUDIO_PACKET)
        if had_audio:
            self.counters.sent += 1
        else:
            self.counters.repeated += 1
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += AUDIO_PACKET
        return frame


class TrackSink:
    """The engine's sink for one session: media to the outbound tracks, interruptions flush audio."""

    def __init__(self, video: ProcessedVideoTrack | None, audio: ProcessedAudioTrack | None) -> None:
        self.video = video
        self.audio = audio
        self.listeners: list[Callable[[Frame], None]] = []

    def deliver(self, frame: Frame) -> None:
        if frame.kind is FrameKind.VIDEO and self.video is not None:
            assert isinstance(frame, VideoFrame)
            self.video.put(frame)
        elif frame.kind is FrameKind.AUDIO and self.audio is not None:
            assert isinstance(frame, AudioFrame)
            self.audio.put(frame)
        elif isinstance(frame, ControlFrame) and frame.control is ControlKind.INTERRUPTION and self.audio:
            self.audio.flush()
        for listener in self.listeners:
            listener(frame)
