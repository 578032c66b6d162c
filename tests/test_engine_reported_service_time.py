"""A stage that finishes frames after ``process()`` returns reports their real service time to the engine.

``RemoteStage`` is such a stage (its call is in flight after ``process()``); here a
plain stage with a set service time stands for it, so the engine's side is proved
without Ray: the reported time reaches the stage's stats and estimate, and the stage
before it refuses a frame that cannot make it through both.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import numpy as np

from streamai.config import PipelineConfig
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import Frame, FrameKind, VideoFrame, now
from streamai.stage import Stage, StageRegistry, stage
from streamai.testing.wait import wait_for

FINISH_S = 0.2
BUDGET_S = 2.0  # room for a loaded machine's slow sleeps in the estimate; the refusal below is set against it


@stage("finishes-later")
class FinishesLater(Stage):
    """Takes each frame at once and pushes it ``FINISH_S`` later, several in flight (like a remote call)."""

    consumes = frozenset({FrameKind.VIDEO})
    emits = consumes
    reports_service_time: ClassVar[bool] = True

    async def process(self, frame: Frame) -> None:
        asyncio.get_running_loop().create_task(self._finish(frame))

    async def _finish(self, frame: Frame) -> None:
        started = now()
        await asyncio.sleep(FINISH_S)
        self.report_service_time(now() - started)
        await self.push(frame)


def video(age_s: float = 0.0) -> VideoFrame:
    return VideoFrame(image=np.zeros((8, 8, 3), np.uint8), capture_time=now() - age_s)


async def test_upstream_refuses_a_frame_that_cannot_make_it_through_a_stage_that_reports_its_time(
    registry: StageRegistry,
) -> None:
    registry.register(FinishesLater)
    config = PipelineConfig.model_validate(
        {
            "name": "reported",
            "budget_ms": int(BUDGET_S * 1000),
            "stages": [
                {"name": "pre", "type": "delay", "params": {"ms": 50}},
                {"name": "later", "type": "finishes-later"},
            ],
        }
    )
    sink = CollectingSink()
    runner = PipelineRunner(config, registry, sink)
    await runner.start()
    try:
        for _ in range(5):
            runner.submit(video())
            await asyncio.sleep(0.1)  # faster than FINISH_S: frames overlap in "later"
        later = runner.stats.stages["later"]
        await wait_for(lambda: later.service.count == 5 and len(sink.frames) == 5, 10)
        assert later.service.count == 5 and (later.service.quantile(0.5) or 0) >= FINISH_S, later.snapshot()
        assert runner.stage_runners[1].estimator.estimate >= FINISH_S
        assert len(sink.frames) == 5

        # 150 ms left: "pre" alone (50 ms) fits, "pre" + "later" (250 ms) does not
        late = video(age_s=BUDGET_S - 0.15)
        runner.submit(late)
        await wait_for(lambda: runner.stats.stages["pre"].drops["would_miss"] >= 1, 10)
        assert runner.stats.stages["pre"].drops["would_miss"] == 1, runner.snapshot()
        assert runner.stats.stages["pre"].processed == 5
        assert late.seq not in {f.seq for _, f in sink.frames}
    finally:
        await runner.stop()
