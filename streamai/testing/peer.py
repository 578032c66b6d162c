"""The Python test peer: an aiortc client that sends synthetic or file media to a node,
receives what comes back and measures glass-to-glass latency on its own clock.

Video latency: every sent frame carries its number as a barcode; a received frame's
latency is its arrival time minus the time that number left this peer. Audio
latency: marker tone bursts (1 s apart) are sent; the onset of each received burst
is matched to the burst sent before it. One clock for both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import now
from ..transport.decode_queue import LatestDecodeQueue, bound_video_decoding
from ..transport.ice import offer_loopback_candidates_only, rtc_configuration
from ..transport.inbound import InboundCounters, take_newest
from .media import SAMPLE_RATE, TestPattern, decode_barcode, detect_bursts, marker_track

AUDIO_PACKET = 960
MARKER_PERIOD = 1.0


class PacedVideoTrack(MediaStreamTrack):
    """A video track paced at ``fps`` by the clock; remembers when each numbered frame left."""

    kind = "video"

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        self.fps = fps
        self.sent_at: dict[int, float] = {}
        self._index = 0
        self._start: float | None = None

    def picture(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index``."""
        raise NotImplementedError

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = now()
        due = self._start + self._index / self.fps
        if due > now():
            await asyncio.sleep(due - now())
        index = self._index
        self._index += 1
        frame = av.VideoFrame.from_ndarray(self.picture(index), format="rgb24")
        frame.pts = int(index * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent_at[index] = now()
        return frame


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


class PacedAudioTrack(MediaStreamTrack):
    """20 ms packets of 48 kHz mono from a sample array (looping), paced by the clock."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, onsets: list[float] | None = None, loop: bool = True) -> None:
        super().__init__()
        self.samples = samples.reshape(-1)
        self.onsets = [round(t * SAMPLE_RATE) for t in (onsets or [])]
        self.loop = loop
        self.sent_onsets: list[float] = []  # send time of each marker onset, in order
        self._position = 0
        self._start: float | None = None
        self._packets = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = now()
        due = self._start + self._packets * AUDIO_PACKET / SAMPLE_RATE
        if due > now():
            await asyncio.sleep(due - now())
        total = len(self.samples)
        start = self._position % total if self.loop else self._position
        chunk = self.samples[start : start + AUDIO_PACKET]
        if len(chunk) < AUDIO_PACKET:
            tail = self.samples[: AUDIO_PACKET - len(chunk)] if self.loop else np.zeros(AUDIO_PACKET - len(chunk))
            chunk = np.concatenate([chunk, tail]).astype(np.int16)
        sent = now()
        for onset in self.onsets:
            if start <= onset < start + AUDIO_PACKET:
                self.sent_onsets.append(sent + (onset - start) / SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._position
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._position += AUDIO_PACKET
        self._packets += 1
        return frame


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


class ProbeError(RuntimeError):
    """The node refused the session; ``status`` and ``body`` are the server's answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Probe:
    """One session against a node: connect, stream, measure, close."""

    def __init__(
        self,
        url: str,
        pipeline: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        video: MediaStreamTrack | None = None,
        audio: MediaStreamTrack | None = None,
        token: str | None = None,
        loopback: bool = True,
        headers: dict[str, str] | None = None,
        on_video: Callable[[float, np.ndarray], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.on_video = on_video  # every received picture with its arrival time (peer clock)
        self.extra_headers = dict(headers or {})  # e.g. X-Client-Region for a fleet router
        self.answer: dict[str, Any] = {}
        self.pipeline = pipeline
        self.params = params
        self.video = video
        self.audio = audio
        self.token = token
        self.report = ProbeReport(pipeline=pipeline or "")
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._audio_chunks: list[tuple[float, np.ndarray]] = []
        self._video_sum = 0.0
        self.decode_queue: LatestDecodeQueue | None = None
        if loopback:
            offer_loopback_candidates_only()

    def _headers(self) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**self.extra_headers, **auth}

    @property
    def session_token(self) -> str | None:
        """The session's own capability from the node's answer (it reads and steers this session only)."""
        return self.answer.get("session_token")

    def session_headers(self) -> dict[str, str]:
        """``Authorization`` for this session's own endpoints (summary, events, DELETE)."""
        return {"Authorization": f"Bearer {self.session_token}"} if self.session_token else {}

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.pc = pc = RTCPeerConnection(rtc_configuration([]))
        self.channel = pc.createDataChannel("events")
        self.channel.on("message", self._on_message)
        if self.video is not None:
            pc.addTrack(self.video)
        if self.audio is not None:
            pc.addTrack(self.audio)
        pc.on("track", self._on_track)
        started = now()
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "pipeline": self.pipeline, "params": self.params}
        async with http.post(f"{self.url}/v1/sessions", json=body, headers=self._headers()) as response:
            answer = await response.json(content_type=None)
            if response.status != 200:
                raise ProbeError(response.status, answer)
        self.report.session_id = answer["session_id"]
        self.answer = answer  # the node's (or a fleet router's) JSON answer
        redirected = str(response.url.origin()) if response.history else None  # a router's 307
        self.url = (answer.get("node_url") or redirected or self.url).rstrip("/")  # fleet: talk to the node now
        self.report.pipeline = answer["pipeline"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        for transceiver in pc.getTransceivers():  # view like a real-time player: never a decode backlog
            if transceiver.kind == "video":
                self.decode_queue = bound_video_decoding(transceiver.receiver)
        for _ in range(200):
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.025)
        self.report.connect_ms = (now() - started) * 1000

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        if event.get("type") == "pong" and isinstance(event.get("t"), int | float):
            self.report.datachannel_rtt_ms.append((time.time() - event["t"]) * 1000)
        self.report.events.append(event)

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        payload = message if isinstance(message, str | bytes) else json.dumps(message)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(payload)

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(reader(track)))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        sent_at = getattr(self.video, "sent_at", {})
        counters = InboundCounters()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = take_newest(track, await track.recv(), counters)
                arrived = now()
                self.report.video_skipped = counters.skipped
                image = frame.to_ndarray(format="rgb24")
                report = self.report
                report.video_frames += 1
                report.last_video = image
                if self.on_video is not None:
                    self.on_video(arrived, image)
                self._video_sum += float(image.mean())
                report.video_mean_luma = self._video_sum / report.video_frames
                code = decode_barcode(image)
                if code is None:
                    continue
                report.video_decoded_barcodes += 1
                report.video_inverted += int(code.inverted)
                if code.value in sent_at:
                    report.video_latency_ms.append((arrived - sent_at.pop(code.value)) * 1000)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = now()
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                mono = samples.astype(np.float32).mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
                if frame.sample_rate != SAMPLE_RATE:
                    continue
                self._audio_chunks.append((arrived, mono.astype(np.int16)))
                self.report.audio_frames += 1

    async def ping(self) -> None:
        self.send({"type": "ping", "t": time.time()})

    def finish_audio(self) -> None:
        """Energy of what came back and marker-burst latencies."""
        if not self._audio_chunks:
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
        if delete and http is not None and self.report.session_id:
            with contextlib.suppress(aiohttp.ClientError):
                url = f"{self.url}/v1/sessions/{self.report.session_id}"
                async with http.delete(url, headers=self.session_headers()):
                    pass
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        self.finish_audio()


async def run_probe(
    url: str,
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
) -> ProbeReport:
    """Connect, stream for ``seconds`` (pinging the data channel), then close and report."""
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
            deadline = now() + seconds
            sent_messages = False
            while now() < deadline:
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
