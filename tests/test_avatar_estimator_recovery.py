"""A cold first frame (model warm-up on a new shape, a contention spike) must not refuse frames forever.

The avatar chain's diffusion stage can take seconds on its first frame at a new size; the
service-time estimate then says every later frame would miss the budget, and without a
probe no frame would ever be processed again to correct it.
"""

from __future__ import annotations

import asyncio

import numpy as np

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import VideoFrame
from streamai.stage import StageRegistry


async def test_stage_recovers_after_one_slow_outlier(registry: StageRegistry) -> None:
    text = """
name: outlier
budget_ms: 200
stages:
  - {name: model, type: delay, params: {ms: 10}, queue: latest}
"""
    runner = PipelineRunner(parse_pipeline(text, "<test>", registry), registry, CollectingSink())
    await runner.start()
    runner.stage_runners[0].estimator.update(3.0)  # what one cold 3 s frame leaves behind
    for index in range(75):  # 2.5 s at 30 fps
        runner.submit(VideoFrame(image=np.zeros((4, 4, 3), np.uint8), pts=index))
        await asyncio.sleep(1 / 30)
    await asyncio.sleep(0.1)
    await runner.stop()
    stats = runner.stats.stages["model"]
    assert stats.drops["would_miss"] >= 20  # refused while the estimate was stale
    assert runner.stats.frames_out["video"] >= 20  # then a probe corrected it and frames flowed again
