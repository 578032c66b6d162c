"""The Python test peer: a :mod:`streamai.client` session that sends synthetic or file media
and measures glass-to-glass latency on its own clock.

Video latency: every sent frame carries its number as a barcode; a received frame's
latency is its arrival time minus the time that number left this peer. Audio
latency: marker tone bursts (1 s apart) are sent; the onset of each received burst
is matched to the burst sent before it. One clock for both ends. Connecting,
signaling (routers, failover), events and closing are the client's; only the
measuring lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from ..client import Session, StreamaiError
from ..client.events import Event
from ..client.media import AUDIO_PACKET, SAMPLE_RATE, AudioArrayTrack
from ..client.media import PacedVideoTrack as _ClientVideoTrack
from ..client.received import ReceivedTrack, frame_array
from ..frames import now
from ..transport.decode_queue import LatestDecodeQueue
from .media import TestPattern, decode_barcode, detect_bursts, marker_track

MARKER_PERIOD = 1.0


class PacedVideoTrack(_ClientVideoTrack):
    """A video track paced at ``fps`` by the clock; remembers when each numbered frame left."""

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__(fps)
        self.sent_at: dict[int, float] = {}

    def picture(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index``."""
        raise NotImplementedError

    def on_frame(self, index: int, sent: float) -> None:
        self.sent_at[index] = sent


class BarcodeVideoTrack(PacedVideoTrack):
    """Test-pattern frames with their number as a barcode."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
        super().__init__(fps)
        self.pattern = TestPattern(width, height, fps)

    def picture(self, index: int) -> np.ndarray:
        return self.pattern.frame(index)


class FileVideoTrack(PacedVideoTrack):
    """A y4m file's frames at their own rate, looping."""

    def __init__(self, path: str | Path) -> None:
        from ..media.y4m import read_y4m

        self.frames, rate = read_y4m(path)
        super().__init__(float(rate))

    def picture(self, index: int) -> np.ndarray:
        return self.frames[index % len(self.frames)]


class PacedAudioTrack(AudioArrayTrack):
    """20 ms packets of 48 kHz mono from a sample array (looping), paced by the clock; notes marker send times."""

    def __init__(self, samples: np.ndarray, onsets: list[float] | None = None, loop: bool = True) -> None:
        super().__init__(samples.reshape(-1), SAMPLE_RATE, loop=loop)
        self.onsets = [round(t * SAMPLE_RATE) for t in (onsets or [])]
        self.sent_onsets: list[float] = []  # send time of each marker onset, in order

    def on_packet(self, start: int, sent: float) -> None:
        for onset in self.onsets:
            if start <= onset < start + AUDIO_PACKET:
                self.sent_onsets.append(sent + (onset - start) / SAMPLE_RATE)


def marker_audio(seconds: float = 10.0) -> PacedAudioTrack:
    """Silence with a 1 kHz-ish marker burst every second."""
    samples, onsets = marker_track(seconds, period=MARKER_PERIOD)
    return PacedAudioTrack(samples, onsets)


def wav_audio(path: str | Path, loop: bool = True) -> PacedAudioTrack:
    from ..media.resample import resample
    from ..media.wav import read_wav

    samples, rate = read_wav(path)
    mono = samples.astype(np.float32).mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    mono = resample(mono.astype(np.int16)[:, None], rate, SAMPLE_RATE)[:, 0] if rate != SAMPLE_RATE else mono
    return PacedAudioTrack(np.asarray(mono, np.int16), loop=loop)


@dataclass
class ProbeReport:
    """What the peer measured; all latencies in ms on the peer's clock."""

    session_id: str = ""
    pipeline: str = ""
    connect_ms: float = 0.0
    video_frames: int = 0
    video_skipped: int = 0  # frames a real-time viewer would not show: newer ones were already waiting
    video_decoded_barcodes: int = 0
    video_inverted: int = 0
    video_latency_ms: list[float] = field(default_factory=list)
    video_mean_luma: float = 0.0
    audio_frames: int = 0
    audio_rms: float = 0.0
    audio_latency_ms: list[float] = field(default_factory=list)
    datachannel_rtt_ms: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    received_audio: np.ndarray | None = None
    last_video: np.ndarray | None = None

    @staticmethod
    def _pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for event in self.events:
            kinds[event.get("type", "?")] = kinds.get(event.get("type", "?"), 0) + 1
        return {
            "session_id": self.session_id,
            "pipeline": self.pipeline,
            "connect_ms": round(self.connect_ms, 1),
            "video": {
                "frames": self.video_frames,
                "skipped": self.video_skipped,
                "barcodes": self.video_decoded_barcodes,
                "inverted": self.video_inverted,
                "latency_p50_ms": self._pct(self.video_latency_ms, 0.5),
                "latency_p95_ms": self._pct(self.video_latency_ms, 0.95),
                "latency_max_ms": max(self.video_latency_ms, default=None),
            },
            "audio": {
                "frames": self.audio_frames,
                "rms": round(self.audio_rms, 1),
                "latency_ms": [round(v, 1) for v in self.audio_latency_ms],
                "latency_p50_ms": self._pct(self.audio_latency_ms, 0.5),
            },
            "datachannel_rtt_p50_ms": self._pct(self.datachannel_rtt_ms, 0.5),
            "events": kinds,
        }


class ProbeError(StreamaiError):
    """The session could not be had: ``status`` and ``body`` are the server's answer (status 0: no answer)."""

    def __init__(self, status: int, body: Any, error: StreamaiError | None = None) -> None:
        source = error or StreamaiError(f"HTTP {status}: {body}", status=status, body=body)
        super().__init__(source.message, status=status, code=source.code, retry_after=source.retry_after,
                         body=body, url=source.url)  # fmt: skip

    @classmethod
    def from_error(cls, error: StreamaiError) -> ProbeError:
        """The client's error as the peer's."""
        return cls(error.status, error.body, error)


class Probe:
    """One session against a node (or routers: ``url`` may list several): connect, stream, measure, close."""

    def __init__(
        self,
        url: str | Sequence[str],
        pipeline: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        video: MediaStreamTrack | None = None,
        audio: MediaStreamTrack | None = None,
        token: str | None = None,
        loopback: bool = True,
        headers: dict[str, str] | None = None,
        on_video: Callable[[float, np.ndarray], None] | None = None,
        connect_timeout: float = 15.0,
        server_timeout: float = 8.0,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0].rstrip("/")
        self.on_video = on_video  # every received picture with its arrival time (peer clock)
        self.extra_headers = dict(headers or {})  # e.g. X-Client-Region for a fleet router
        self.pipeline = pipeline
        self.params = params
        self.video = video
        self.audio = audio
        self.token = token
        self.loopback = loopback
        self.connect_timeout = connect_timeout
        self.server_timeout = server_timeout
        self.report = ProbeReport(pipeline=pipeline or "")
        self.session: Session | None = None
        self._audio_chunks: list[tuple[float, np.ndarray]] = []
        self._video_sum = 0.0

    @property
    def answer(self) -> dict[str, Any]:
        """The node's (or a fleet router's) JSON answer; empty before one came."""
        return self.session.answer if self.session is not None else {}

    @property
    def pc(self) -> RTCPeerConnection | None:
        """The peer connection (None before ``connect``)."""
        return self.session.pc if self.session is not None else None

    @property
    def channel(self) -> Any:
        """The ``events`` data channel (None before ``connect``)."""
        return self.session.channel if self.session is not None else None

    @property
    def decode_queue(self) -> LatestDecodeQueue | None:
        """The bounded decode queue of the received video, when there is one."""
        return self.session.decode_queue if self.session is not None else None

    @property
    def session_token(self) -> str | None:
        """The session's own capability from the node's answer (it reads and steers this session only)."""
        return self.session.session_token if self.session is not None else None

    def session_headers(self) -> dict[str, str]:
        """``Authorization`` for this session's own endpoints (summary, events, DELETE)."""
        return {"Authorization": f"Bearer {self.session_token}"} if self.session_token else {}

    async def connect(self, http: aiohttp.ClientSession) -> None:
        """Open the session through the client; :class:`ProbeError` when it cannot be had."""
        self.session = session = Session(
            self.urls, pipeline=self.pipeline, params=self.params, token=self.token, audio=self.audio,
            video=self.video, headers=self.extra_headers, ice_loopback=self.loopback, http=http,
            connect_timeout=self.connect_timeout, server_timeout=self.server_timeout,
            ping_interval=0,  # the peer pings when its caller asks: control-rate tests count every message
        )  # fmt: skip
        session.on_event(self._on_event)
        session.on_track(self._on_track)
        try:
            await session.start()
        except StreamaiError as error:
            raise ProbeError.from_error(error) from None
        finally:
            if session.session_id:
                self.report.session_id = session.session_id
            if session.node_url:
                self.url = session.node_url  # fleet: talk to the node now
        self.report.pipeline = session.pipeline or ""
        self.report.connect_ms = session.connect_ms or 0.0

    def _on_event(self, event: Event) -> None:
        raw = event.raw()
        if raw.get("type") == "pong" and isinstance(raw.get("t"), int | float):
            self.report.datachannel_rtt_ms.append((time.time() - raw["t"]) * 1000)
        self.report.events.append(raw)

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send anything on the events channel as it is (tests send malformed messages on purpose)."""
        payload = message if isinstance(message, str | bytes) else json.dumps(message)
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(payload)

    def _on_track(self, received: ReceivedTrack[Any]) -> None:
        if received.kind == "video":
            received.on_frame(lambda frame, arrived: self._on_video(received, frame, arrived))
        else:
            received.on_frame(self._on_audio)

    def _on_video(self, received: ReceivedTrack[Any], frame: av.VideoFrame, arrived: float) -> None:
        report = self.report
        report.video_skipped = received.skipped
        image = frame_array(frame)
        report.video_frames += 1
        report.last_video = image
        if self.on_video is not None:
            self.on_video(arrived, image)
        self._video_sum += float(image.mean())
        report.video_mean_luma = self._video_sum / report.video_frames
        code = decode_barcode(image)
        if code is None:
            return
        report.video_decoded_barcodes += 1
        report.video_inverted += int(code.inverted)
        sent_at = getattr(self.video, "sent_at", {})
        if code.value in sent_at:
            report.video_latency_ms.append((arrived - sent_at.pop(code.value)) * 1000)

    def _on_audio(self, frame: av.AudioFrame, arrived: float) -> None:
        if frame.sample_rate != SAMPLE_RATE:
            return
        samples = frame_array(frame)
        mono = samples.astype(np.float32).mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
        self._audio_chunks.append((arrived, mono.astype(np.int16)))
        self.report.audio_frames += 1

    async def ping(self) -> None:
        self.send({"type": "ping", "t": time.time()})

    def finish_audio(self) -> None:
        """Energy of what came back and marker-burst latencies."""
        if not self._audio_chunks or self.report.received_audio is not None:
            return
        audio = np.concatenate([c for _, c in self._audio_chunks])
        self.report.received_audio = audio
        self.report.audio_rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        sent = getattr(self.audio, "sent_onsets", [])
        if not sent:
            return
        starts = np.cumsum([0] + [len(c) for _, c in self._audio_chunks])
        for onset in detect_bursts(audio[:, None], SAMPLE_RATE):
            sample = round(onset * SAMPLE_RATE)
            index = int(np.searchsorted(starts, sample, side="right") - 1)
            received = self._audio_chunks[index][0] + (sample - starts[index]) / SAMPLE_RATE
            earlier = [s for s in sent if s < received]
            if earlier and received - earlier[-1] < MARKER_PERIOD:
                self.report.audio_latency_ms.append((received - earlier[-1]) * 1000)

    async def close(self, http: aiohttp.ClientSession | None = None, delete: bool = True) -> None:
        """End the session (``delete=False``: hang up without DELETE) and measure what came back."""
        if self.session is not None:
            with contextlib.suppress(StreamaiError):
                await self.session.close(delete=delete)
        self.finish_audio()


async def run_probe(
    url: str | Sequence[str],
    pipeline: str | None,
    seconds: float = 5.0,
    *,
    params: dict[str, Any] | None = None,
    video: bool = True,
    audio: bool = True,
    input_file: str | None = None,
    token: str | None = None,
    loopback: bool = True,
    messages: list[dict[str, Any]] | None = None,
    until: Callable[[ProbeReport], bool] | None = None,
    max_seconds: float = 30.0,
) -> ProbeReport:
    """Connect, stream for ``seconds`` (pinging the data channel), then close and report.

    With ``until``, streaming goes on past ``seconds`` until ``until(report)`` holds (or
    ``max_seconds``): a loaded machine moves fewer frames a second, never fewer in all.
    """
    video_track: MediaStreamTrack | None = BarcodeVideoTrack() if video else None
    audio_track: MediaStreamTrack | None = marker_audio() if audio else None
    if input_file:
        if input_file.endswith(".y4m"):
            video_track = FileVideoTrack(input_file)
        else:
            audio_track = wav_audio(input_file)
    probe = Probe(url, pipeline, params=params, video=video_track, audio=audio_track, token=token, loopback=loopback)
    async with aiohttp.ClientSession() as http:
        try:
            await probe.connect(http)
            started = now()
            sent_messages = False
            while now() < started + seconds or (
                until is not None and not until(probe.report) and now() < started + max_seconds
            ):
                await asyncio.sleep(0.5)
                await probe.ping()
                if messages and not sent_messages and probe.channel.readyState == "open":
                    for message in messages:
                        probe.send(message)
                    sent_messages = True
        finally:
            await probe.close(http)
    return probe.report


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
