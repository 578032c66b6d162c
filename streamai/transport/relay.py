"""Fan-out of one session's processed output to many viewers, encoded once.

One :class:`Broadcast` per watched session listens to the session's processed
frames, paces them like the session's own outbound tracks (newest video frame,
repeated when the pipeline is slow; 20 ms audio packets, silence when dry) and
encodes each frame once per codec in use (VP8, H.264, Opus). Every viewer gets its
own :class:`ViewerTrack`, a small bounded queue of encoded packets that aiortc's
sender packetizes without re-encoding. Nothing here ever waits for a viewer:

- a viewer whose sender falls behind overflows only its own queue; video then skips
  to the next keyframe (a decoder cannot use a P-frame after a gap), audio drops its
  oldest packets; both are counted;
- a keyframe request (PLI/FIR) from any viewer asks the shared encoder for one,
  at most one per ``keyframe_interval_s``.

aiortc's ``MediaRelay`` was not used: its buffered mode queues every frame without
bound per consumer, its unbuffered mode drops audio, and both re-encode per viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import Frame, FrameKind, now
from ..histogram import Histogram
from .outbound import AUDIO_RATE, ProcessedAudioTrack, ProcessedVideoTrack

log = logging.getLogger(__name__)

VIDEO_CODECS = ("vp8", "h264")
AUDIO_CODECS = ("opus",)
VIDEO_BITRATE = 1_000_000


@dataclass
class ViewerCounters:
    """What one viewer's track sent and skipped."""

    sent: int = 0
    skipped: int = 0  # packets dropped because this viewer fell behind
    latency: Histogram = field(default_factory=Histogram)  # pipeline capture -> handed to this viewer's sender


@dataclass
class EncodedPacket:
    """One encoded frame shared by every viewer of a codec."""

    packet: av.Packet
    keyframe: bool
    capture_time: float | None  # of the processed frame it came from; None for repeats and silence


class VideoEncoder:
    """VP8 or H.264 (constrained baseline, packetization-mode 1) for one broadcast, set up like aiortc's."""

    def __init__(self, codec: str, bitrate: int = VIDEO_BITRATE) -> None:
        self.codec_name = codec
        self.bitrate = bitrate
        self.context: Any = None

    def _open(self, width: int, height: int) -> Any:
        if self.codec_name == "vp8":
            context = av.CodecContext.create("libvpx", "w")
            context.options = {
                "bufsize": str(self.bitrate),
                "cpu-used": "-6",
                "deadline": "realtime",
                "lag-in-frames": "0",
                "minrate": str(self.bitrate),
                "maxrate": str(self.bitrate),
                "noise-sensitivity": "4",
                "overshoot-pct": "15",
                "partitions": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
            }
            context.gop_size = 3000
            context.qmin, context.qmax = 2, 56
        else:
            context = av.CodecContext.create("libx264", "w")
            context.options = {"level": "31", "tune": "zerolatency"}
            context.profile = "Baseline"
            context.framerate = fractions.Fraction(30, 1)
        context.width, context.height = width, height
        context.bit_rate = self.bitrate
        context.pix_fmt = "yuv420p"
        context.time_base = fractions.Fraction(1, 90000)
        context.thread_count = 1
        return context

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> tuple[bytes, bool]:
        """Encode one frame; returns its bitstream and whether it is a keyframe."""
        image = frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
        context = self.context
        if context is None or context.width != image.width or context.height != image.height:
            context = self.context = self._open(image.width, image.height)
            keyframe = True
        image.pts = frame.pts
        image.time_base = frame.time_base
        image.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = context.encode(image)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)


class OpusEncoder:
    """Opus at 48 kHz stereo, 20 ms packets (the same settings aiortc uses)."""

    def __init__(self) -> None:
        self.context: Any = av.CodecContext.create("libopus", "w")
        self.context.bit_rate = 64000
        self.context.format = "s16"
        self.context.layout = "stereo"
        self.context.options = {"application": "voip"}
        self.context.sample_rate = AUDIO_RATE
        self.context.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=960)

    def encode(self, frame: av.AudioFrame) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self.resampler.resample(frame):
            out += [bytes(p) for p in self.context.encode(chunk)]
        return out


class ViewerTrack(MediaStreamTrack):
    """One viewer's encoded packets for one codec: a bounded queue that the viewer's sender drains."""

    def __init__(self, broadcast: Broadcast, kind: str, codec: str, max_queue: int) -> None:
        super().__init__()
        self.kind = kind
        self.codec = codec
        self.counters = ViewerCounters()
        self._broadcast = broadcast
        self._queue: deque[EncodedPacket] = deque()
        self._max_queue = max_queue
        self._arrived = asyncio.Event()
        self._need_keyframe = kind == "video"  # a decoder starts at a keyframe

    def offer(self, item: EncodedPacket) -> None:
        """Called by the broadcast; never blocks, never waits for this viewer."""
        if self.readyState != "live":
            return
        if self._need_keyframe:
            if not item.keyframe:
                self.counters.skipped += 1
                return
            self._need_keyframe = False
        if len(self._queue) >= self._max_queue:
            if self.kind == "video":  # behind: drop what is queued, resume at the next keyframe
                self.counters.skipped += len(self._queue) + 1
                self._queue.clear()
                self._need_keyframe = True
                self._broadcast.request_keyframe()
                return
            self._queue.popleft()
            self.counters.skipped += 1
        self._queue.append(item)
        self._arrived.set()

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._arrived.clear()
            await self._arrived.wait()
        item = self._queue.popleft()
        self.counters.sent += 1
        if item.capture_time is not None:
            self.counters.latency.observe(now() - item.capture_time)
        return item.packet

    def stop(self) -> None:
        super().stop()
        self._arrived.set()
        self._broadcast.unsubscribe(self)


class Broadcast:
    """A session's processed output, paced and encoded once per codec, fanned out to viewer tracks."""

    def __init__(
        self,
        attach: Callable[[Callable[[Frame], None]], Callable[[], None]],
        *,
        video_bitrate: int = VIDEO_BITRATE,
        keyframe_interval_s: float = 0.5,
        video_queue: int = 8,
        audio_queue: int = 10,
        audio_source: MediaStreamTrack | None = None,
        video: bool = True,
    ) -> None:
        """``attach(listener)`` starts delivering processed frames to ``listener`` and returns a detach function.

        ``audio_source``: a paced audio track to encode instead of the attached frames' audio
        (a room's mix of one language); ``video=False``: an audio-only broadcast (no video pump).
        """
        self.id = uuid.uuid4().hex[:8]
        self.video_bitrate = video_bitrate
        self.keyframe_interval_s = keyframe_interval_s
        self.queue_sizes = {"video": video_queue, "audio": audio_queue}
        self.video_source = ProcessedVideoTrack(on_sent=self._on_source_frame)
        self.audio_source: MediaStreamTrack = audio_source or ProcessedAudioTrack(max_buffer_s=1.0)
        self.video = video
        self.viewers: dict[str, set[ViewerTrack]] = {"video": set(), "audio": set()}
        self.encoded = {"video": 0, "audio": 0}
        self.keyframes = 0
        self._attach = attach
        self._detach: Callable[[], None] | None = None
        self._video_encoders: dict[str, VideoEncoder] = {}
        self._audio_encoder: OpusEncoder | None = None
        self._keyframe_wanted = True
        self._last_keyframe = -1e9
        self._tasks: list[asyncio.Task[None]] = []
        self._capture: float | None = None

    def _on_source_frame(self, kind: str, latency: float, frame: Frame) -> None:
        self._capture = frame.capture_time  # the frame the source is about to return is a new one

    # -- viewers -----------------------------------------------------------------
    def subscribe(self, kind: str, codec: str) -> ViewerTrack:
        """A new track for one viewer; starts the pump on the first one."""
        codec = codec.lower()
        supported = (VIDEO_CODECS if self.video else ()) if kind == "video" else AUDIO_CODECS
        if codec not in supported:
            raise ValueError(f"cannot relay {kind} as {codec!r}; supported: {', '.join(supported)}")
        track = ViewerTrack(self, kind, codec, self.queue_sizes[kind])
        self.viewers[kind].add(track)
        if kind == "video":
            self.request_keyframe()
        self._start()
        return track

    def unsubscribe(self, track: ViewerTrack) -> None:
        self.viewers[track.kind].discard(track)
        if not any(self.viewers.values()):
            self.stop()

    def request_keyframe(self) -> None:
        """Ask for a keyframe on the next video frame (rate-limited across all viewers)."""
        self._keyframe_wanted = True

    # -- pump --------------------------------------------------------------------
    def _listen(self, frame: Frame) -> None:
        if frame.kind is FrameKind.VIDEO:
            self.video_source.put(frame)  # type: ignore[arg-type]
        elif frame.kind is FrameKind.AUDIO and isinstance(self.audio_source, ProcessedAudioTrack):
            self.audio_source.put(frame)  # type: ignore[arg-type]

    def _start(self) -> None:
        if self._tasks:
            return
        if self._detach is None:
            self._detach = self._attach(self._listen)
        self._tasks = [asyncio.create_task(self._pump_audio(), name=f"broadcast:{self.id}:audio")]
        if self.video:
            self._tasks.append(asyncio.create_task(self._pump_video(), name=f"broadcast:{self.id}:video"))

    def stop(self) -> None:
        """Stop pumping and listening; viewer tracks already handed out end when read."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._detach is not None:
            self._detach()
            self._detach = None

    def _fan_out(self, kind: str, codec: str, item: EncodedPacket) -> None:
        for track in list(self.viewers[kind]):
            if track.codec == codec:
                track.offer(item)

    async def _pump_video(self) -> None:
        loop = asyncio.get_running_loop()
        source = self.video_source
        try:
            while True:
                frame = await source.recv()
                capture, self._capture = self._capture, None
                codecs = {t.codec for t in self.viewers["video"]}
                keyframe = False
                if self._keyframe_wanted and now() - self._last_keyframe >= self.keyframe_interval_s:
                    keyframe, self._keyframe_wanted = True, False
                    self._last_keyframe = now()
                    self.keyframes += 1
                for codec in codecs:
                    encoder = self._video_encoders.get(codec)
                    if encoder is None:
                        encoder = self._video_encoders[codec] = VideoEncoder(codec, self.video_bitrate)
                    data, is_key = await loop.run_in_executor(None, encoder.encode, frame, keyframe)
                    if not data:
                        continue
                    packet = av.Packet(data)
                    packet.pts = frame.pts
                    packet.time_base = frame.time_base
                    self.encoded["video"] += 1
                    self._fan_out("video", codec, EncodedPacket(packet, is_key, capture))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("broadcast %s: video pump failed", self.id)

    async def _pump_audio(self) -> None:
        source = self.audio_source
        try:
            while True:
                frame = await source.recv()
                if not self.viewers["audio"]:
                    continue
                if self._audio_encoder is None:
                    self._audio_encoder = OpusEncoder()
                for data in self._audio_encoder.encode(frame):
                    packet = av.Packet(data)
                    packet.pts = frame.pts
                    packet.time_base = fractions.Fraction(1, AUDIO_RATE)
                    self.encoded["audio"] += 1
                    self._fan_out("audio", "opus", EncodedPacket(packet, True, None))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("broadcast %s: audio pump failed", self.id)

    def summary(self) -> dict[str, Any]:
        tracks = [t for kind in self.viewers.values() for t in kind]
        return {
            "encoded": dict(self.encoded),
            "keyframes": self.keyframes,
            "codecs": sorted({t.codec for t in tracks}),
            "skipped": sum(t.counters.skipped for t in tracks),
        }


def close_quietly(track: MediaStreamTrack) -> None:
    with contextlib.suppress(Exception):
        track.stop()
