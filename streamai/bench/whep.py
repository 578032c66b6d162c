"""WHEP fan-out: one WHIP session of a pipeline, 1 -> N viewers; server CPU and viewer latency per step.

The node runs as its own process (``streamai serve --ice-loopback``) so its CPU is
measured alone. This process publishes one WHIP stream (a barcoded test pattern
and marker tone from the Python peer) and adds aiortc WHEP viewers step by step.
Each viewer reads the barcode of every frame it receives: latency is the arrival
time minus the time that frame number left the publisher (one clock). Also
reported: the node's own capture-to-viewer-sender latency from ``/metrics``.
Only ``--probes`` viewers decode (and measure latency); the others are load viewers
that receive and decrypt every packet but only count encoded frames, so this
process can host many of them next to the node on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import now
from ..testing.media import decode_barcode
from ..testing.node import free_port as _free_port
from ..testing.peer import BarcodeVideoTrack, marker_audio
from ..transport.ice import offer_loopback_candidates_only, rtc_configuration

SDP = "application/sdp"


class WhipError(RuntimeError):
    """The node answered a WHIP/WHEP POST with an error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def prefer_codecs(pc: RTCPeerConnection, kind: str, mime_types: list[str]) -> None:
    """Offer only ``mime_types`` (e.g. ``["video/H264"]``) on ``pc``'s transceivers of ``kind``."""
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for m in mime_types for c in capabilities if c.mimeType.lower() == m.lower()]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(chosen)


def strip_candidates(sdp: str) -> str:
    """The same offer as a trickle client would first send it: no candidates, no end-of-candidates."""
    return "".join(
        line + "\r\n" for line in sdp.splitlines() if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


@dataclass
class SdpAnswer:
    """A WHIP/WHEP answer: the SDP, the resource URL, and the capabilities a WHIP answer carries."""

    sdp: str
    resource: str
    session_token: str | None = None
    viewer_token: str | None = None


async def post_sdp(http: aiohttp.ClientSession, url: str, sdp: str, token: str | None = None) -> SdpAnswer:
    """POST an offer; returns the answer, the absolute resource URL and any session tokens."""
    headers = {"Content-Type": SDP}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=sdp.encode(), headers=headers) as response:
        body = await response.text()
        if response.status != 201:
            raise WhipError(response.status, body)
        return SdpAnswer(
            body,
            str(response.url.join(aiohttp.client.URL(response.headers["Location"]))),
            response.headers.get("Streamai-Session-Token"),
            response.headers.get("Streamai-Viewer-Token"),
        )


@dataclass
class WhipPublisher:
    """A Python WHIP client sending a barcoded test pattern and marker tone."""

    url: str  # e.g. http://127.0.0.1:8080/whip/transform?prompt=x
    token: str | None = None  # the node's API token, if it has one
    video_codecs: list[str] | None = None
    trickle: bool = False  # send the offer without candidates, then PATCH them
    video: BarcodeVideoTrack = field(default_factory=BarcodeVideoTrack)
    resource: str = ""
    session_token: str | None = None  # from the answer: DELETE, PATCH, events of this session
    viewer_token: str | None = None  # from the answer: what a WHEP viewer of this session needs
    pc: RTCPeerConnection | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.pc = pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver(self.video, direction="sendonly")
        pc.addTransceiver(marker_audio(), direction="sendonly")
        if self.video_codecs:
            prefer_codecs(pc, "video", self.video_codecs)
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        body = strip_candidates(offer) if self.trickle else offer
        answer = await post_sdp(http, self.url, body, self.token)
        self.resource = answer.resource
        self.session_token, self.viewer_token = answer.session_token, answer.viewer_token
        if self.trickle:
            await patch_candidates(http, self.resource, offer, self.session_token)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

    @property
    def session_id(self) -> str:
        return self.resource.rstrip("/").rsplit("/", 1)[-1]

    async def stop(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.resource:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.delete(self.resource, headers=_auth(self.session_token)):
                    pass
        if self.pc is not None:
            await self.pc.close()


async def patch_candidates(http: aiohttp.ClientSession, resource: str, offer: str, token: str | None) -> int:
    """Send ``offer``'s candidates as one trickle-ice-sdpfrag PATCH (RFC 8840); returns the status."""
    lines = [ln for ln in offer.splitlines() if ln.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    mid = next((ln for ln in offer.splitlines() if ln.startswith("a=mid:")), "a=mid:0")
    lines.append(mid)
    lines += [ln for ln in offer.splitlines() if ln.startswith("a=candidate:")][:8]
    lines.append("a=end-of-candidates")
    headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"' + resource.rsplit("/", 1)[-1] + '"'}
    headers.update(_auth(token))
    async with http.patch(resource, data="\r\n".join(lines) + "\r\n", headers=headers) as response:
        return response.status


class _CountingQueue:
    """Stands in for an aiortc receiver's decoder queue: counts encoded frames instead of decoding them.

    A load viewer then costs this process only SRTP and depacketizing, so one machine can
    host many. ``None`` (the receiver stopping) still reaches the real decoder thread.
    """

    def __init__(self, original: Any) -> None:
        self.original = original
        self.frames = 0

    def put(self, item: Any) -> None:
        if item is None:
            self.original.put(None)
        else:
            self.frames += 1

    def get(self, *args: Any, **kwargs: Any) -> Any:  # a decoder thread started after the swap waits here
        return self.original.get(*args, **kwargs)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class WhepViewer:
    """A Python WHEP viewer; reads barcodes to measure latency against the publisher's send times."""

    url: str  # e.g. http://127.0.0.1:8080/whep/<session id>
    sent_at: dict[int, float] = field(default_factory=dict)
    token: str | None = None  # the session's viewer token (or its session token)
    video_codecs: list[str] | None = None
    decode: bool = True  # decode and read barcodes; False: only count encoded frames (a cheap load viewer)
    frames: int = 0
    audio_frames: int = 0
    inverted: int = 0
    latency_ms: list[float] = field(default_factory=list)
    resource: str = ""
    pc: RTCPeerConnection | None = None
    paused: bool = False  # stop reading: frames pile up in aiortc's own queue on this side
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _counters: dict[str, _CountingQueue] = field(default_factory=dict)

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.pc = pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        if self.video_codecs:
            prefer_codecs(pc, "video", self.video_codecs)
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await post_sdp(http, self.url, pc.localDescription.sdp, self.token)
        self.resource = answer.resource
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        if not self.decode:
            for transceiver in pc.getTransceivers():
                receiver = transceiver.receiver
                counting = _CountingQueue(receiver._RTCRtpReceiver__decoder_queue)  # type: ignore[attr-defined]
                receiver._RTCRtpReceiver__decoder_queue = counting  # type: ignore[attr-defined]
                self._counters[transceiver.kind] = counting

    @property
    def received(self) -> int:
        """Video frames received: decoded ones, or encoded ones counted by a load viewer."""
        counting = self._counters.get("video")
        return counting.frames if counting is not None else self.frames

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                while self.paused:
                    await asyncio.sleep(0.05)
                frame = await track.recv()
                arrived = now()
                if track.kind == "audio":
                    self.audio_frames += 1
                    continue
                self.frames += 1
                code = decode_barcode(frame.to_ndarray(format="rgb24"))
                if code is None:
                    continue
                self.inverted += int(code.inverted)
                sent = self.sent_at.get(code.value)
                if sent is not None:
                    self.latency_ms.append((arrived - sent) * 1000)

    async def stop(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.resource:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.delete(self.resource, headers=_auth(self.token)):
                    pass
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()


# -- the benchmark -----------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="transform")
    parser.add_argument("--viewers", default="1,2,4,8,12,16", help="viewer counts to step through")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="seconds measured at each step")
    parser.add_argument("--settle-seconds", type=float, default=2.0, help="seconds after adding viewers")
    parser.add_argument("--probes", type=int, default=2, help="viewers that decode and read barcodes (latency)")
    parser.add_argument("--p95-goal-ms", type=float, default=500.0, help="latency a served viewer must stay under")
    parser.add_argument("--cpu-goal", type=float, default=0.8, help="node CPU share (of all cores) it may use")


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def _latency_buckets(http: aiohttp.ClientSession, base: str) -> list[tuple[float, float]]:
    """The node's capture -> viewer-sender latency histogram (cumulative buckets, seconds)."""
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    buckets = []
    for line in text.splitlines():
        if line.startswith("streamai_viewer_latency_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    return buckets


def _bucket_p95(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """p95 upper bound (ms) of what the histogram gained between two snapshots.

    Viewers that left between the snapshots take their counts with them: the window
    then undercounts, which is why every step only adds viewers.
    """
    old = dict(before)
    window = [(bound, count - old.get(bound, 0.0)) for bound, count in after]
    if not window or window[-1][1] <= 0:
        return None
    for bound, count in window:
        if count >= 0.95 * window[-1][1]:
            return round(bound * 1000, 1)
    return None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    counts = sorted({int(v) for v in args.viewers.split(",") if v.strip()})
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="whep-bench-", delete=False) as config:
        config.write(f"max_viewers: {max(counts)}\n")
    command = [sys.executable, "-m", "streamai", "serve", "--port", str(port), "--ice-loopback"]
    command += ["--config", config.name]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "STREAMAI_TOKEN": ""},
    )
    offer_loopback_candidates_only()
    steps: list[dict[str, Any]] = []
    cores = len(os.sched_getaffinity(0))
    try:
        proc = psutil.Process(server.pid)
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            publisher = WhipPublisher(f"{base}/whip/{args.pipeline}")
            await publisher.start(http)
            viewers: list[WhepViewer] = []
            try:
                for count in counts:
                    while len(viewers) < count:
                        viewer = WhepViewer(
                            f"{base}/whep/{publisher.session_id}",
                            sent_at=publisher.video.sent_at,
                            token=publisher.viewer_token,
                            decode=len(viewers) < args.probes,
                        )
                        await viewer.start(http)
                        viewers.append(viewer)
                    await asyncio.sleep(args.settle_seconds)
                    for viewer in viewers:
                        viewer.latency_ms.clear()
                    frames_before = [v.received for v in viewers]
                    buckets_before = await _latency_buckets(http, base)
                    proc.cpu_percent(None)
                    started = time.monotonic()
                    await asyncio.sleep(args.step_seconds)
                    cpu = proc.cpu_percent(None) / 100  # cores used by the node
                    elapsed = time.monotonic() - started
                    latencies = [ms for v in viewers for ms in v.latency_ms]
                    fps = [(v.received - b) / elapsed for v, b in zip(viewers, frames_before, strict=True)]
                    step = {
                        "viewers": count,
                        "node_cpu_cores": round(cpu, 2),
                        "node_cpu_share": round(cpu / cores, 3),
                        "viewer_p50_ms": _pct(latencies, 50),
                        "viewer_p95_ms": _pct(latencies, 95),
                        "node_to_sender_p95_ms": _bucket_p95(buckets_before, await _latency_buckets(http, base)),
                        "viewer_fps_min": round(min(fps), 1),
                        "viewer_fps_mean": round(sum(fps) / len(fps), 1),
                    }
                    steps.append(step)
                    print(step, file=sys.stderr, flush=True)
                session_url = f"{base}/v1/sessions/{publisher.session_id}"
                async with http.get(session_url, headers=_auth(publisher.session_token)) as response:
                    session = await response.json()
            finally:
                for viewer in viewers:
                    await viewer.stop(http)
                await publisher.stop(http)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        os.unlink(config.name)
    served = [
        s["viewers"]
        for s in steps
        if s["node_cpu_share"] <= args.cpu_goal
        and (s["viewer_p95_ms"] or 0) <= args.p95_goal_ms
        and s["viewer_fps_min"] >= 20
    ]
    served_max = max(served, default=0)
    lines = [f"WHEP fan-out, {args.pipeline}, one WHIP session, node on {cores} cores:"]
    for s in steps:
        lines.append(
            f"  {s['viewers']:3d} viewers: node CPU {s['node_cpu_cores']:.2f} cores ({s['node_cpu_share']:.0%}),"
            f" viewer p95 {s['viewer_p95_ms']} ms, node->sender p95 {s['node_to_sender_p95_ms']} ms,"
            f" min fps {s['viewer_fps_min']}"
        )
    lines.append(
        f"  serves {served_max} viewers within CPU {args.cpu_goal:.0%}, p95 {args.p95_goal_ms:.0f} ms, >= 20 fps"
    )
    return {
        "config": vars(args) | {"func": None, "module": None},
        "steps": steps,
        "served_viewers": served_max,
        "session_frames_in": session.get("frames_in_by_kind"),
        "session_frames_out": session.get("frames_out_by_kind"),
        "summary": "\n".join(lines),
    }
