"""Deadline semantics of the engine, proved with the ``delay`` stage."""

from __future__ import annotations

import asyncio

import numpy as np

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import AudioFrame, FrameKind, VideoFrame, now
from streamai.stage import StageRegistry
from streamai.testing.wait import wait_for


def delay_pipeline(registry: StageRegistry, budget_ms: int, stage_ms: int, queue: str = "latest") -> PipelineRunner:
    text = f"""
name: delay-test
budget_ms: {budget_ms}
stages:
  - name: slow
    type: delay
    params: {{ms: {stage_ms}}}
    queue: {queue}
"""
    return PipelineRunner(parse_pipeline(text, "<test>", registry), registry, CollectingSink())


def video(index: int) -> VideoFrame:
    image = np.full((8, 8, 3), index % 256, dtype=np.uint8)
    return VideoFrame(image=image, pts=index)


async def feed(runner: PipelineRunner, count: int, fps: float) -> None:
    for index in range(count):
        runner.submit(video(index))
        await asyncio.sleep(1 / fps)


async def test_stage_slower_than_budget_delivers_nothing_late(registry: StageRegistry) -> None:
    runner = delay_pipeline(registry, budget_ms=100, stage_ms=150)
    await runner.start()
    await feed(runner, 30, fps=30)
    await asyncio.sleep(0.4)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    late = [f for at, f in sink.frames if at > f.deadline]
    assert late == []
    drops = runner.stats.stages["slow"].drops
    # The first frame is admitted blind (no estimate yet) and dies at the output as "late";
    # after one sample the stage knows it cannot make 100 ms and refuses every frame up front.
    assert runner.stats.stages["output"].drops["late"] >= 1
    assert drops["would_miss"] + drops["expired"] >= 10
    assert runner.stats.frames_out.get("video", 0) == 0


async def test_stage_within_budget_drops_nothing(registry: StageRegistry) -> None:
    # 50 ms of work in a 1 s budget: a margin a loaded 2-core machine's late sleeps cannot eat (at 100 ms it did)
    runner = delay_pipeline(registry, budget_ms=1000, stage_ms=50)
    await runner.start()
    await feed(runner, 20, fps=10)
    await wait_for(lambda: runner.stats.frames_out["video"] + runner.stats.total_drops() >= 20, 10)
    await runner.stop()
    assert runner.stats.total_drops() == 0
    assert runner.stats.frames_out["video"] == 20
    assert runner.stats.end_to_end.quantile(0.99) < 1.0


async def test_latest_queue_delivers_newest_not_backlog(registry: StageRegistry) -> None:
    runner = delay_pipeline(registry, budget_ms=2000, stage_ms=100)
    await runner.start()
    for index in range(100):  # a burst: all at once
        runner.submit(video(index))
    await asyncio.sleep(0.5)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    delivered = [f.pts for f in sink.of_kind(FrameKind.VIDEO)]
    assert delivered[-1] == 99
    assert len(delivered) <= 2  # the one already started, then the newest
    assert runner.stats.stages["slow"].drops["replaced"] >= 98


async def test_fifo_queue_keeps_order_and_bound(registry: StageRegistry) -> None:
    runner = delay_pipeline(registry, budget_ms=60_000, stage_ms=1, queue="fifo")
    await runner.start()
    for index in range(40):
        runner.submit(AudioFrame(samples=np.zeros((960, 1), np.int16), sample_rate=48000, pts=index))
    await asyncio.sleep(0.5)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    pts = [f.pts for f in sink.of_kind(FrameKind.AUDIO)]
    assert pts == sorted(pts)
    # queue_size 16: the burst overflows and the oldest waiting frames are counted
    assert runner.stats.stages["slow"].drops["overflow"] == 40 - len(pts)
    assert len(pts) >= 16


async def test_admission_counts_downstream_stages(registry: StageRegistry) -> None:
    """A frame that stage 1 could finish but stage 2 could not is refused at stage 1."""
    text = """
name: two-hops
budget_ms: 100
stages:
  - {name: fast, type: delay, params: {ms: 10}, expected_ms: 10}
  - {name: slow, type: delay, params: {ms: 150}, expected_ms: 150}
"""
    runner = PipelineRunner(parse_pipeline(text, "<test>", registry), registry, CollectingSink())
    await runner.start()
    await feed(runner, 10, fps=20)
    await asyncio.sleep(0.2)
    await runner.stop()
    assert runner.stats.stages["fast"].processed == 0
    assert runner.stats.stages["fast"].drops["would_miss"] == 10
    assert runner.stats.stages["slow"].processed == 0


async def test_expired_on_arrival_is_dropped(registry: StageRegistry) -> None:
    runner = delay_pipeline(registry, budget_ms=100, stage_ms=1)
    await runner.start()
    old = video(1)
    old.capture_time = now() - 1.0
    runner.submit(old)
    await asyncio.sleep(0.1)
    await runner.stop()
    assert runner.stats.stages["slow"].drops["expired"] == 1
