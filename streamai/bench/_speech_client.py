"""An outside-style WebRTC speech client: aiortc, aiohttp and numpy only, its own clock, no node internals.

It speaks a clip into a session the way a microphone does (the 20 ms packet holding
samples up to t leaves at t), and stamps every RTP packet of the answer as it arrives
from the network, before any jitter buffer, decoding it with its own Opus decoder to
tell speech from silence. The first packet with a sample above -40 dBFS after a
sentence's true end (its last voiced sample in the clip, on this client's clock) is
"the first translated audio packet at the client". The node's events arrive on the
``events`` data channel and are kept for comparison; none of their times is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48_000
PACKET = 960
AUDIBLE = 328  # -40 dBFS


def clock() -> float:
    return time.monotonic()


def loopback_ice_only() -> None:
    """aioice leaves 127.0.0.1 out of its candidates; a loopback-only client must put it in."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Microphone(MediaStreamTrack):
    """A clip as a microphone gives it: packet k (samples up to (k+1) x 20 ms) at start + (k+1) x 20 ms."""

    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self.samples = samples.reshape(-1).astype(np.int16)
        self.start: float | None = None  # when sample 0 was "captured", on this client's clock
        self._packet = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = clock()
        due = self.start + (self._packet + 1) * PACKET / RATE
        await asyncio.sleep(max(0.0, due - clock()))
        offset = self._packet * PACKET
        chunk = self.samples[offset : offset + PACKET]
        if len(chunk) < PACKET:
            chunk = np.concatenate([chunk, np.zeros(PACKET - len(chunk), np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = offset
        frame.time_base = fractions.Fraction(1, RATE)
        self._packet += 1
        return frame


class SpeechClient:
    """One session: connect, speak the clip, stamp answer packets, collect events, close."""

    def __init__(self, url: str, pipeline: str, clip: np.ndarray, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.pipeline = pipeline
        self.microphone = Microphone(clip)
        self.token = token
        self.packets: list[tuple[float, int]] = []  # (arrival, peak |sample| of its decoded audio)
        self.events: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {}
        self.pc: RTCPeerConnection | None = None
        self._decoder = OpusDecoder()
        self._readers: list[asyncio.Task[None]] = []

    def _stamp(self, receiver: Any) -> None:
        """Wrap the receiver's packet handler: note each packet as it arrives from the network."""
        handle = receiver._handle_rtp_packet

        async def stamped(packet: Any, arrival_time_ms: int) -> None:
            arrived = clock()
            peak = 0
            if packet.payload:
                with contextlib.suppress(Exception):
                    for frame in self._decoder.decode(JitterFrame(data=packet.payload, timestamp=packet.timestamp)):
                        peak = max(peak, int(np.abs(frame.to_ndarray().astype(np.int32)).max()))
            self.packets.append((arrived, peak))
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = stamped

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = pc.createDataChannel("events")
        channel.on("message", lambda message: self.events.append({**json.loads(message), "_at": clock()}))
        pc.addTrack(self.microphone)
        pc.on("track", lambda track: self._readers.append(asyncio.create_task(self._drain(track))))
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "pipeline": self.pipeline}
        async with http.post(f"{self.url}/v1/sessions", json=body, headers=headers) as response:
            answer = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"session refused: HTTP {response.status} {answer}")
        self.session = answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                self._stamp(transceiver.receiver)
        ends = clock() + 15
        while pc.connectionState != "connected" and clock() < ends:
            await asyncio.sleep(0.02)
        if pc.connectionState != "connected":
            raise RuntimeError(f"ICE did not connect ({pc.connectionState})")

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()  # a player would play it; the packets were stamped on arrival

    async def close(self, http: aiohttp.ClientSession) -> None:
        token = self.session.get("session_token")
        if self.session.get("session_id"):
            with contextlib.suppress(aiohttp.ClientError):
                url = f"{self.url}/v1/sessions/{self.session['session_id']}"
                async with http.delete(url, headers={"Authorization": f"Bearer {token}"} if token else {}):
                    pass
        for task in self._readers:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()

    def first_audible_after(self, at: float, before: float, quiet: int = 3) -> float | None:
        """Arrival of the first packet in (at, before) that starts audible audio after ``quiet`` silent packets.

        An answer still playing when the sentence ends (a late one) is not this sentence's answer.
        """
        silent = quiet
        for t, peak in self.packets:
            if at < t < before and peak > AUDIBLE and silent >= quiet:
                return t
            if t >= before:
                break
            silent = 0 if peak > AUDIBLE else silent + 1
        return None
