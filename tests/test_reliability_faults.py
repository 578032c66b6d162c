"""Faults inside a pipeline and a misbehaving peer: the session copes, counts, and stays controllable.

Real node, real aiortc peers on loopback, the ``fault`` stage from YAML. (A stage
that always raises and a peer that vanishes are covered in test_webrtc_bad_input.py
and test_webrtc_session.py.)
"""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import psutil
import pytest

from streamai.config import parse_pipeline
from streamai.engine import PipelineRunner
from streamai.engine.runner import CollectingSink
from streamai.frames import VideoFrame, now
from streamai.server import sessions as sessions_module
from streamai.server.app import SESSIONS
from streamai.server.sessions import Session
from streamai.server.settings import ServerSettings
from streamai.stage import StageRegistry
from streamai.stages.fault import Fault
from streamai.testing.media import SAMPLE_RATE, marker_track
from streamai.testing.node import running_node
from streamai.testing.peer import AUDIO_PACKET, BarcodeVideoTrack, PacedAudioTrack, Probe, marker_audio
from streamai.testing.wait import wait_for
from streamai.transport.decode_queue import LatestDecodeQueue, bound_video_decoding

pytestmark = pytest.mark.slow  # real peers for seconds each


def write_pipelines(folder: Path, **pipelines: str) -> Path:
    for name, stages in pipelines.items():
        (folder / f"{name}.yaml").write_text(f"name: {name}\nbudget_ms: 500\nstages:\n{stages}", encoding="utf-8")
    return folder


async def open_channel(probe: Probe) -> None:
    assert await wait_for(lambda: probe.channel is not None and probe.channel.readyState == "open", 5)


def only_session(app) -> Session:  # type: ignore[no-untyped-def]
    sessions = list(app[SESSIONS].sessions.values())
    assert len(sessions) == 1
    return sessions[0]


async def test_a_stage_raising_on_every_nth_frame_drops_and_counts_those_and_the_session_continues(
    tmp_path: Path,
) -> None:
    folder = write_pipelines(
        tmp_path,
        flaky="  - {name: flaky, type: fault, params: {raise_every: 4, kinds: [video]}}\n"
        "  - {name: invert, type: video-transform, params: {effect: invert}}\n",
    )
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=folder)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "flaky", video=BarcodeVideoTrack(320, 240, 20), audio=marker_audio())
        await probe.connect(http)
        session = only_session(app)
        stage = session.runner.stage_runners[0].stage
        assert isinstance(stage, Fault)
        assert await wait_for(lambda: stage.raised >= 10, 15), "the fault stage saw too few frames"
        received = probe.report.video_frames
        await asyncio.sleep(1.0)
        async with http.get(
            f"{url}/v1/sessions/{probe.report.session_id}", headers=probe.session_headers()
        ) as response:
            assert response.status == 200
            body = await response.json()
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
        await probe.close(http)

    # every 4th consumed video frame raised, was dropped with reason "error", and was counted exactly once
    final = session.runner.stats.stages["flaky"]
    assert stage.raised == stage.seen // 4 >= 10
    assert final.errors == final.drops["error"] == stage.raised
    flaky = next(s for s in body["stats"]["stages"] if s["name"] == "flaky")
    assert flaky["errors"] == flaky["drops"]["error"] == body["drops_by_stage"]["flaky"]["error"] >= 10
    assert flaky["processed"] >= 2 * flaky["errors"]
    assert 'streamai_drops_total{pipeline="flaky",reason="error",stage="flaky"}' in metrics
    # the other frames went through: the session lived on and the peer kept receiving processed video
    assert body["state"] == "connected"
    assert probe.report.video_frames > received
    assert probe.report.video_inverted > 20
    assert not [e for e in probe.report.events if e.get("type") == "error" and e.get("fatal")]
    drop_events = [e for e in probe.report.events if e.get("type") == "drop" and e.get("reason") == "error"]
    assert drop_events and drop_events[-1]["stage"] == "flaky"


async def test_a_hanging_stage_misses_deadlines_but_the_session_answers_and_delete_frees_it(tmp_path: Path) -> None:
    folder = write_pipelines(
        tmp_path,
        slow="  - {name: stuck, type: fault, params: {hang_s: 1.0, kinds: [video]}}\n",
        stuck="  - {name: stuck, type: fault, params: {hang_s: 8, blocking: true}}\n",
    )
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=folder)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        # a stage that takes 1 s a frame with a 500 ms budget: nothing it finishes is in time
        probe = Probe(url, "slow", video=BarcodeVideoTrack(320, 240, 20))
        await probe.connect(http)
        await open_channel(probe)
        session = only_session(app)
        drops = session.runner.stats.stages
        assert await wait_for(lambda: drops["stuck"].drops["replaced"] > 20 and "output" in drops, 10)
        assert await wait_for(lambda: drops["output"].drops["late"] >= 2, 5)
        assert session.runner.stats.frames_out.get("video", 0) == 0  # late work is never delivered
        # ... and the session is still answering: data channel ping, the session API
        sent = time.time()
        probe.send({"type": "ping", "t": sent})
        assert await wait_for(
            lambda: any(e.get("type") == "pong" and e.get("t") == sent for e in probe.report.events), 3
        )
        started = time.monotonic()
        async with http.get(
            f"{url}/v1/sessions/{probe.report.session_id}", headers=probe.session_headers()
        ) as response:
            assert response.status == 200
            stats = (await response.json())["stats"]
        assert stats["drops"]["stuck"]["replaced"] > 20 and stats["drops"]["output"]["late"] >= 2
        async with http.delete(
            f"{url}/v1/sessions/{probe.report.session_id}", headers=probe.session_headers()
        ) as response:
            assert response.status == 200
        assert time.monotonic() - started < 6
        assert not app[SESSIONS].sessions
        await probe.close(http, delete=False)

        # a stage stuck on its own thread (a model call that does not return; 8 s, so that the test's own
        # interpreter can exit: Python joins executor threads at exit): DELETE still frees
        # the session at once, the stage is stopped and no worker task is left behind
        probe = Probe(url, "stuck", video=BarcodeVideoTrack(320, 240, 20), audio=marker_audio())
        await probe.connect(http)
        session = only_session(app)
        stage = session.runner.stage_runners[0].stage
        assert isinstance(stage, Fault)
        assert await wait_for(lambda: stage.hanging == 1, 5)
        started = time.monotonic()
        async with http.delete(
            f"{url}/v1/sessions/{probe.report.session_id}", headers=probe.session_headers()
        ) as response:
            assert response.status == 200
        assert time.monotonic() - started < 6
        assert stage.stopped and stage._executor is None
        assert all(r.task is not None and r.task.done() for r in session.runner.stage_runners)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(f"session:{session.id}")]
        await probe.close(http, delete=False)


async def test_stop_frees_a_pipeline_whose_stage_hangs() -> None:
    registry = StageRegistry()
    config = parse_pipeline(
        "name: hang\nstages:\n  - {type: fault, params: {hang_s: 3600}}\n  - {type: fault, params: {hang_s: 8, "
        "blocking: true}, name: second}\n",
        "hang.yaml",
        registry,
    )
    runner = PipelineRunner(config, registry, CollectingSink())
    await runner.start()
    for _ in range(5):
        runner.submit(VideoFrame(image=np.zeros((8, 8, 3), np.uint8), capture_time=now()))
        await asyncio.sleep(0.01)
    first = runner.stage_runners[0].stage
    assert isinstance(first, Fault)
    assert await wait_for(lambda: first.hanging == 1, 2)
    started = time.monotonic()
    await runner.stop(timeout=2.0)
    assert time.monotonic() - started < 3
    assert all(r.task is not None and r.task.done() for r in runner.stage_runners)
    assert all(isinstance(r.stage, Fault) and r.stage.stopped for r in runner.stage_runners)
    assert runner.stats.stages["fault0"].drops["replaced"] >= 1  # the frames queued behind the hang


class FastAudioTrack(PacedAudioTrack):
    """Marker audio paced ``speed`` times faster than real time (a broken or hostile client)."""

    def __init__(self, speed: float, seconds: float = 10.0) -> None:
        samples, onsets = marker_track(seconds, period=1.0)
        super().__init__(samples, onsets)
        self.speed = speed
        self._origin = 0.0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = self._origin = now()
        # move the real-time pacer's start back so that packet n is due at n * 20 ms / speed
        packet_s = AUDIO_PACKET / SAMPLE_RATE
        self._start = self._origin - self._packets * packet_s * (1 - 1 / self.speed)
        return await super().recv()


class FastVideoTrack(BarcodeVideoTrack):
    """Barcode video whose timestamps say ``fps`` but which is sent ``speed`` times faster."""

    def __init__(self, speed: float, fps: float = 20.0) -> None:
        super().__init__(320, 240, fps * speed)
        self.claimed_fps = fps

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        frame.pts = int((self._index - 1) * 90000 / self.claimed_fps)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


@pytest.mark.parametrize("speed", [3.0])
async def test_a_peer_sending_media_faster_than_real_time_is_bounded_and_counted(speed: float, tmp_path: Path) -> None:
    """A peer paced ``speed`` x real time (it gets what the loaded machine lets it send) into a pipeline with a
    250 ms video stage: whatever rate it reaches, the node consumes every audio packet, drops and counts the video
    the stage cannot take, delivers nothing later than the budget and holds its buffers and memory bounded."""
    folder = write_pipelines(
        tmp_path,
        flood="  - {name: slow, type: fault, params: {service_ms: 250, kinds: [video]}}\n"
        "  - {name: invert, type: video-transform, params: {effect: invert}}\n",
    )
    process = psutil.Process()
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=folder)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        normal = Probe(url, "flood", video=BarcodeVideoTrack(320, 240, 20), audio=marker_audio())
        await normal.connect(http)
        fast = Probe(url, "flood", video=FastVideoTrack(speed), audio=FastAudioTrack(speed))
        await fast.connect(http)
        sessions = {s.id: s for s in app[SESSIONS].sessions.values()}
        flood = sessions[fast.report.session_id]
        await asyncio.sleep(2.0)
        rss_start = process.memory_info().rss
        await asyncio.sleep(6.0)
        rss_end = process.memory_info().rss
        stats = flood.runner.stats
        audio_in = stats.frames_in.get("audio", 0)
        audio_sent = fast.audio._packets  # type: ignore[union-attr]
        audio_arrived = await rtp_packets_received(flood.pc, "audio")  # what reached the node's RTP layer
        video_in = stats.frames_in.get("video", 0)
        slow = stats.stages["slow"]
        slow_stage = flood.runner.stage_runners[0].stage
        assert isinstance(slow_stage, Fault)
        slow_video = slow_stage.seen  # video frames the 250 ms stage worked on
        buffered = flood.audio_out.buffered_seconds
        latency = flood.video_out.counters.latency
        normal_frames = normal.report.video_frames
        await asyncio.sleep(1.0)
        assert normal.report.video_frames > normal_frames  # the well-behaved peer is still served
        await fast.close(http)
        await normal.close(http)
    elapsed = 8.0
    print(f"flood: audio sent {audio_sent} ({audio_sent / (50 * elapsed):.1f}x real time), node took {audio_in}")
    print(f"flood: video in {video_in}, slow stage took {slow_video}, its mailbox replaced {dict(slow.drops)}")
    print(f"flood: node-side video latency {latency.summary_ms()}, audio buffered {buffered:.1f} s, "
          f"RSS growth {(rss_end - rss_start) / 2**20:.1f} MB")  # fmt: skip
    # the node took every audio packet that reached it (on a loaded machine the kernel may drop UDP before
    # the node reads it: that is counted by RTP, not lost inside the node)
    print(f"flood: {audio_arrived} audio packets reached the node's RTP receiver")
    assert audio_in >= 0.9 * audio_arrived > 0
    # the 250 ms stage takes at most 4 frames a second of the flood; what it could not take was replaced in
    # its mailbox and counted (the peer sends well over 4 fps on any machine that can run this suite)
    assert video_in > slow_video + 10 and slow.drops["replaced"] > 0
    assert slow_video <= elapsed * 4 + 8
    # nothing delivered later than the 500 ms budget, measured by the node from capture to send
    assert latency.count > 0 and latency.quantile(1.0) <= 0.5 + 0.05, latency.summary_ms()
    # the outbound audio buffer holds at most its cap (30 s), whatever the peer sends
    assert buffered <= 30.0 + 0.1
    # memory of the whole process (node and both peers) grows by a bounded amount over 6 s of flood
    assert rss_end - rss_start < 150 * 2**20


async def rtp_packets_received(pc: Any, kind: str) -> int:
    """Packets of ``kind`` that reached ``pc``'s RTP receivers (its inbound-rtp stats)."""
    total = 0
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            for stats in (await transceiver.receiver.getStats()).values():
                if getattr(stats, "type", "") == "inbound-rtp":
                    total += int(stats.packetsReceived)
    return total


class SlowDecodeQueue(LatestDecodeQueue):
    """The node's bounded decode queue, with a decoder that takes 100 ms a frame by construction."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        time.sleep(0.1)
        return super().get(block, timeout)


async def test_a_decoder_that_falls_behind_skips_to_a_keyframe_and_asks_the_peer_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 fps into a 10 fps decoder: past 4 waiting frames the node drops the backlog, sends a PLI, resumes
    decoding at the keyframe the real peer sends back, and delivers nothing older than its budget."""
    queues: list[SlowDecodeQueue] = []

    def slow_decoding(receiver: Any, max_frames: int = 8) -> SlowDecodeQueue | None:
        bounded = bound_video_decoding(receiver, max_frames)
        if bounded is None:
            return None
        slow = SlowDecodeQueue(max_frames, bounded.request_keyframe)
        receiver._RTCRtpReceiver__decoder_queue = slow
        queues.append(slow)
        return slow

    monkeypatch.setattr(sessions_module, "bound_video_decoding", slow_decoding)
    settings = ServerSettings(port=0, ice_loopback=True, max_decode_backlog=4)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(320, 240, 20))
        await probe.connect(http)
        plis: list[float] = []
        sender = next(s for s in probe.pc.getSenders() if s.track is not None and s.track.kind == "video")
        forward = sender._send_keyframe
        sender._send_keyframe = lambda: (plis.append(now()), forward())  # type: ignore[method-assign]
        session = only_session(app)
        assert await wait_for(lambda: bool(queues) and queues[0].resyncs >= 1, 15), "the backlog never formed"
        decoded_at_resync = session.runner.stats.frames_in.get("video", 0)
        assert await wait_for(lambda: session.runner.stats.frames_in.get("video", 0) > decoded_at_resync + 5, 10)
        assert await wait_for(lambda: len(plis) >= 1, 5), "the peer never received a PLI"
        latency = session.video_out.counters.latency
        dropped_before = queues[0].dropped  # the decoder thread goes on dropping: bracket the summary's read
        summary = session.summary()
        dropped_after = queues[0].dropped
        await probe.close(http)
    queue = queues[0]
    print(f"slow decoder: resyncs {queue.resyncs}, dropped {queue.dropped}, PLIs at the peer {len(plis)}, "
          f"latency {latency.summary_ms()}")  # fmt: skip
    assert dropped_after >= 5 and dropped_before <= summary["decode_dropped"] <= dropped_after
    assert summary["decode_resyncs"] >= 1
    assert latency.count > 0 and latency.quantile(1.0) <= 0.5 + 0.05
