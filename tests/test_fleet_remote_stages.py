"""Remote stages on a local Ray cluster, driven through the engine (no transport).

- The engine learns a remote stage's real round trip, so the stage *before* it refuses
  a frame that cannot make it through the slow remote stage: dropped ``would_miss``
  upstream, never processed there, never sent to Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from streamai.config import PipelineConfig
from streamai.engine.runner import CollectingSink, PipelineRunner
from streamai.fleet.remote import RayServeStageFactory
from streamai.frames import Frame, VideoFrame, now
from streamai.stage import StageRegistry
from streamai.testing.placed_delay import PlacedDelay
from streamai.testing.wait import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class RecordingRunner(PipelineRunner):
    """A pipeline runner that remembers where each frame was dropped, and why."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dropped: dict[int, tuple[str, str]] = {}  # frame seq -> (stage, reason)

    def note_drop(self, stage: str, frame: Frame, reason: str) -> None:
        self.dropped[frame.seq] = (stage, reason)


def video_frame(age_s: float = 0.0) -> VideoFrame:
    """A small frame captured ``age_s`` seconds ago (it waited that long before reaching the pipeline)."""
    return VideoFrame(image=np.zeros((32, 32, 3), np.uint8), capture_time=now() - age_s)


@contextlib.asynccontextmanager
async def feeding(runner: PipelineRunner, fps: float = 10.0) -> AsyncIterator[None]:
    """Submit a fresh frame every 1/fps seconds while the block runs (a camera)."""

    async def feed() -> None:
        while True:
            runner.submit(video_frame())
            await asyncio.sleep(1 / fps)

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        task.cancel()


def ran_at(sink: CollectingSink, where: str, since: int = 0) -> int:
    """Frames delivered (on time: the engine drops late ones) from ``where`` (edge|replica), from index ``since``."""
    return sum(1 for _, f in sink.frames[since:] if f.meta.get("ran_at") == where)


def replica_actors(ray: Any, app_prefix: str) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app_prefix}")
    ]


def placed_pipeline(name: str, placement: str, params: dict[str, Any], fallback: str = "drop") -> PipelineConfig:
    remote = {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}, "fallback": fallback}
    stage = {"name": "work", "type": "placed-delay", "params": params, "placement": placement, "remote": remote}
    return PipelineConfig.model_validate({"name": name, "budget_ms": 500, "stages": [stage]})


SLOW_REMOTE = {
    "name": "slow-remote",
    "budget_ms": 1000,
    "stages": [
        {"name": "pre", "type": "delay", "params": {"ms": 100}},  # at the edge
        {
            "name": "slow",
            "type": "delay",
            "params": {"ms": 300},  # a set service time, in a Serve replica
            "placement": "remote",
            "remote": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    ],
}


async def test_upstream_admission_drops_a_frame_that_cannot_make_it_through_a_slow_remote_stage(
    ray_cluster: Any, registry: StageRegistry
) -> None:
    factory = RayServeStageFactory(address="auto")
    sink = CollectingSink()
    runner = RecordingRunner(PipelineConfig.model_validate(SLOW_REMOTE), registry, sink, remote=factory)
    await runner.start()  # deploys the remote stage
    try:
        # fresh frames fit (100 + 300 ms + the call, of 1000): the engine learns both stages' times (the
        # first calls through a new Serve handle are slow: the handle sets itself up)
        for _ in range(40):
            runner.submit(video_frame())
            await asyncio.sleep(0.5)
            if len(sink.frames) >= 4:
                break
        assert len(sink.frames) >= 4, (runner.snapshot(), runner.dropped)
        warm = len(sink.frames)

        # frames that waited 700 ms before the pipeline: 300 ms left, 100 + 300 needed. The edge stage
        # alone would fit, so only an engine that counts the remote time refuses them at "pre".
        late: list[VideoFrame] = []
        fresh: list[VideoFrame] = []
        for _ in range(6):
            frame = video_frame(age_s=0.7)
            late.append(frame)
            runner.submit(frame)
            await asyncio.sleep(0.25)
            fresh.append(video_frame())  # fresh frames in between keep the estimates current
            runner.submit(fresh[-1])
            await asyncio.sleep(0.5)
        delivered_seqs = lambda: {f.seq for _, f in sink.frames}  # noqa: E731
        fates = lambda: all(f.seq in runner.dropped or f.seq in delivered_seqs() for f in late + fresh)  # noqa: E731
        await wait_for(fates, 10)

        where = {f.seq: runner.dropped.get(f.seq) for f in late}
        # each is given up at "pre", before the remote call: for lateness, or (when a loaded machine slows
        # "pre") replaced in its mailbox by the fresh frame behind it; most must be refused for lateness
        at_pre = all(w is not None and w[0] == "pre" and w[1] in ("would_miss", "replaced") for w in where.values())
        refused = sum(w == ("pre", "would_miss") for w in where.values())
        assert at_pre and refused >= 3, (where, runner.snapshot())
        delivered = {f.seq for _, f in sink.frames}
        assert not delivered & {f.seq for f in late}
        pre = runner.stats.stages["pre"]
        assert pre.drops["would_miss"] >= len(late), runner.snapshot()
        # fresh frames kept flowing through the replica (the remote stage is slow, not broken); one that did
        # not arrive was dropped and counted where it was (a loaded machine's late call), never lost
        assert len(delivered) > warm, runner.snapshot()
        assert fates(), ({f.seq: runner.dropped.get(f.seq) for f in fresh}, runner.snapshot())
        slow = runner.stage_runners[1]
        assert slow.estimator.estimate >= 0.3, slow.estimator.estimate  # the real round trip, not ~0
    finally:
        await runner.stop()


async def test_placement_auto_runs_at_the_edge_while_it_fits_then_offloads_to_the_replica(
    ray_cluster: Any, registry: StageRegistry
) -> None:
    registry.register(PlacedDelay)
    # at the edge: 20 ms for 25 frames, then 700 ms (more than the 500 ms budget); in the replica 20 ms
    params = {"edge_pid": os.getpid(), "edge_ms": 20, "edge_slow_ms": 700, "edge_slow_after": 25, "remote_ms": 20}
    sink = CollectingSink()
    runner = PipelineRunner(
        placed_pipeline("auto-place", "auto", params), registry, sink, remote=RayServeStageFactory()
    )
    await runner.start()  # deploys the replica too: auto may offload from the first frame
    stage = runner.stage_runners[0].stage
    try:
        async with feeding(runner):
            # the edge fits: every frame runs there, none goes to the replica
            assert await wait_for(lambda: ran_at(sink, "edge") >= 20, 15), runner.snapshot()
            assert ran_at(sink, "replica") == 0 and stage.counts["remote_ok"] == 0, stage.snapshot()
            assert stage.handle is not None  # not for want of a replica
            started = now()  # from here on the edge turns slow: a probe there every 2 s at most
            # the edge turns slow: frames go to the replica and arrive in time
            assert await wait_for(lambda: ran_at(sink, "replica") >= 20, 30), (stage.snapshot(), runner.snapshot())
            switched = len(sink.frames)
            assert await wait_for(lambda: ran_at(sink, "replica", switched) >= 20, 15), stage.snapshot()
            seconds = now() - started
        replica_pids = {f.meta["pid"] for _, f in sink.frames if f.meta.get("ran_at") == "replica"}
        assert replica_pids and os.getpid() not in replica_pids
        # while offloading, the edge only sees a probe every 2 s (whose frame is late: never delivered)
        assert ran_at(sink, "edge", switched) == 0, stage.snapshot()
        assert stage.counts["edge"] <= 25 + 3 + seconds / 2 + 1, (seconds, stage.snapshot())
        print("auto placement:", stage.snapshot(), runner.snapshot())
    finally:
        await runner.stop()


async def test_fallback_edge_serves_frames_at_the_edge_when_the_replica_dies(
    ray_cluster: Any, registry: StageRegistry
) -> None:
    registry.register(PlacedDelay)
    params = {"edge_pid": os.getpid(), "edge_ms": 20, "remote_ms": 20}
    sink = CollectingSink()
    config = placed_pipeline("fallback-edge", "remote", params, fallback="edge")
    runner = PipelineRunner(config, registry, sink, remote=RayServeStageFactory())
    await runner.start()
    stage = runner.stage_runners[0].stage
    try:
        async with feeding(runner):
            assert await wait_for(lambda: ran_at(sink, "replica") >= 10, 20), runner.snapshot()
            # a healthy remote serves the frames; the edge only when a call failed (on a loaded machine a
            # first call can outlast the frame's budget: the fallback then serves it, as it should)
            failed = stage.counts["call_error"] + stage.counts["call_timeout"]
            assert ran_at(sink, "edge") == 0 or failed >= 1, stage.snapshot()
            assert (stage.local is None) == (ran_at(sink, "edge") == 0), stage.snapshot()
            serving = next(iter(stage.replicas))
            actors = [a for a in replica_actors(ray_cluster, "streamai-placed-delay-work-") if a.endswith(serving)]
            assert len(actors) == 1, (actors, serving)
            ray_cluster.kill(ray_cluster.get_actor(actors[0], namespace="serve"), no_restart=True)
            killed = len(sink.frames)
            # the call failed under the dead replica: the edge copy serves frames, in time
            assert await wait_for(lambda: ran_at(sink, "edge", killed) >= 5, 15), stage.snapshot()
            assert stage.counts["call_error"] + stage.counts["call_timeout"] > failed, stage.snapshot()
            edge_pids = {f.meta["pid"] for _, f in sink.frames[killed:] if f.meta.get("ran_at") == "edge"}
            assert edge_pids == {os.getpid()}
            # Serve starts a replacement; frames flow through it again
            assert await wait_for(lambda: len(stage.replicas) >= 2, 45), stage.snapshot()
            back = len(sink.frames)
            assert await wait_for(lambda: ran_at(sink, "replica", back) >= 10, 15), stage.snapshot()
        assert runner.failed is None
        print("fallback edge:", stage.snapshot(), runner.snapshot())
    finally:
        await runner.stop()
