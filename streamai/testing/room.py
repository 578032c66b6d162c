"""Python room participants for tests and benchmarks: aiortc peers that join a room over its HTTP API.

``create_room`` opens a room and returns the node's answer (room id and capabilities).
A :class:`RoomPeer` joins as a speaker (sending any audio track, e.g. espeak-ng speech
or a tone) or as a listener (sending nothing), keeps every event it gets and every
audio packet it receives with its arrival time on this process's clock, and leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import now
from ..transport.ice import offer_loopback_candidates_only, rtc_configuration, set_audio_prefetch
from .media import SAMPLE_RATE
from .peer import PacedAudioTrack


class RoomRequestError(RuntimeError):
    """The node refused a room request; ``status`` and ``body`` are its answer."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def create_room(http: aiohttp.ClientSession, url: str, token: str | None = None, **body: Any) -> dict[str, Any]:
    """``POST /v1/rooms``; the answer holds ``room_id``, ``room_token``, ``join_token`` and ``listen_token``."""
    async with http.post(f"{url.rstrip('/')}/v1/rooms", json=body, headers=bearer(token)) as response:
        answer = await response.json(content_type=None)
        if response.status != 201:
            raise RoomRequestError(response.status, answer)
    return answer  # type: ignore[no-any-return]


def tone_track(hz: float, level: float = 0.3, seconds: float = 2.0) -> PacedAudioTrack:
    """A looping sine at ``hz``: a speaker whose voice is easy to find in a spectrum."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return PacedAudioTrack(np.round(level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16))


def band_power(audio: np.ndarray, hz: float, rate: int = SAMPLE_RATE, width: float = 25.0) -> float:
    """The share of ``audio``'s power within ``width`` Hz of ``hz`` (0..1)."""
    if len(audio) < rate // 10:
        return 0.0
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    total = float(spectrum[freqs > 40].sum()) or 1.0
    return float(spectrum[np.abs(freqs - hz) <= width].sum()) / total


class RoomPeer:
    """One participant: joins ``room_id`` with ``token`` as ``role``, in ``language``."""

    def __init__(
        self,
        url: str,
        room_id: str,
        token: str,
        language: str,
        *,
        role: str = "speaker",
        name: str | None = None,
        audio: MediaStreamTrack | None = None,
        params: dict[str, Any] | None = None,
        loopback: bool = True,
        audio_prefetch: int | None = None,
    ) -> None:
        """``audio_prefetch``: packets aiortc's jitter buffer holds before releasing one (None: its 4;
        a browser's adaptive buffer holds one or two on a clean loopback)."""
        self.url = url.rstrip("/")
        self.room_id = room_id
        self.token = token
        self.language = language
        self.role = role
        self.name = name or f"{role}-{language}"
        self.audio = audio
        self.params = params
        self.audio_prefetch = audio_prefetch
        self.answer: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.chunks: list[tuple[float, np.ndarray]] = []  # (arrival, mono int16 at 48 kHz)
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        if loopback:
            offer_loopback_candidates_only()

    @property
    def participant_id(self) -> str:
        return str(self.answer.get("participant_id", ""))

    @property
    def session_token(self) -> str | None:
        return self.answer.get("session_token")

    def own_headers(self) -> dict[str, str]:
        """``Authorization`` with this participant's own session token."""
        return bearer(self.session_token)

    async def offer(self) -> str:
        """An SDP offer: one audio section (sendrecv for a speaker, recvonly for a listener) and ``events``."""
        self.pc = pc = RTCPeerConnection(rtc_configuration([]))
        self.channel = pc.createDataChannel("events")
        self.channel.on("message", self._on_message)
        if self.role == "speaker" and self.audio is not None:
            pc.addTrack(self.audio)
        else:
            pc.addTransceiver("audio", direction="recvonly")
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def join(self, http: aiohttp.ClientSession, timeout: float = 10.0) -> dict[str, Any]:
        """Join and wait for ICE to connect; ``RoomRequestError`` when refused."""
        sdp = await self.offer()
        body = {"sdp": sdp, "type": "offer", "language": self.language, "role": self.role, "name": self.name}
        if self.params is not None:
            body["params"] = self.params
        url = f"{self.url}/v1/rooms/{self.room_id}/participants"
        async with http.post(url, json=body, headers=bearer(self.token)) as response:
            answer = await response.json(content_type=None)
            if response.status != 200:
                await self.close()
                raise RoomRequestError(response.status, answer)
        self.answer = answer
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        if self.audio_prefetch is not None:
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "audio":
                    set_audio_prefetch(transceiver.receiver, self.audio_prefetch)
        ends = now() + timeout
        while self.pc.connectionState != "connected" and now() < ends:
            await asyncio.sleep(0.02)
        return answer

    def _on_message(self, message: str | bytes) -> None:
        with contextlib.suppress(ValueError):
            event = json.loads(message)
            if isinstance(event, dict):
                self.events.append(event)

    def send(self, message: dict[str, Any]) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(message))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._read_audio(track)))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = now()
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                mono = samples.astype(np.float32).mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
                if frame.sample_rate == SAMPLE_RATE:
                    self.chunks.append((arrived, mono.astype(np.int16)))

    # -- what came back -------------------------------------------------------------------
    def received(self, since: float | None = None) -> np.ndarray:
        """The audio received (after ``since`` on this process's clock), as one mono int16 array at 48 kHz."""
        chosen = [c for at, c in self.chunks if since is None or at >= since]
        return np.concatenate(chosen) if chosen else np.zeros(0, np.int16)

    def first_loud(self, after: float, threshold: int = 1000) -> float | None:
        """Arrival time of the first packet after ``after`` whose peak exceeds ``threshold``."""
        for at, samples in self.chunks:
            if at > after and len(samples) and int(np.abs(samples.astype(np.int32)).max()) > threshold:
                return at
        return None

    def of_type(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind and all(e.get(k) == v for k, v in match.items())]

    async def leave(self, http: aiohttp.ClientSession) -> int:
        """``DELETE`` this participant (with its own token); returns the status; then closes."""
        status = 0
        if self.participant_id:
            url = f"{self.url}/v1/rooms/{self.room_id}/participants/{self.participant_id}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.delete(url, headers=self.own_headers()) as response:
                    status = response.status
        await self.close()
        return status

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
