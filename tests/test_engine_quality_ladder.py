"""The quality ladder (``degrade:`` in YAML): a stage whose service time is set by construction at
each level steps down under deadline pressure instead of dropping, and back up when the pressure
goes. Pressure is made by construction too: frames that arrive with most of their budget already
spent (as after a slow network), then fresh frames."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from streamai.config import PipelineError, parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import VideoFrame, now
from streamai.stage import StageRegistry

LADDER = """
name: ladder
budget_ms: 400
stages:
  - name: model
    type: delay
    params: {ms: 150}          # level 0: 150 ms a frame
    expected_ms: 150
    queue: latest
    degrade:
      - {ms: 60}               # level 1
      - {ms: 15}               # level 2
"""
SPENT_S = 0.32  # pressure: each frame arrives with 320 of its 400 ms gone (80 left: only level 2 fits)


async def feed(runner: PipelineRunner, seconds: float, spent_s: float, fps: float = 30.0) -> None:
    """Frames at ``fps`` for ``seconds``, each captured ``spent_s`` before it enters the pipeline."""
    image = np.zeros((8, 8, 3), np.uint8)
    started = now()
    index = 0
    while now() - started < seconds:
        runner.submit(VideoFrame(image=image, pts=index, capture_time=now() - spent_s))
        index += 1
        await asyncio.sleep(1 / fps)


def steps(runner: PipelineRunner) -> list[dict[str, Any]]:
    return [e for e in runner.events.history if e["type"] == "degrade"]


def delivered(runner: PipelineRunner) -> list[tuple[float, VideoFrame]]:
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    return [(at, f) for at, f in sink.frames if isinstance(f, VideoFrame)]


async def test_stage_steps_down_under_pressure_and_back_up_after(registry: StageRegistry) -> None:
    runner = PipelineRunner(parse_pipeline(LADDER, "<test>", registry), registry, CollectingSink())
    await runner.start()
    await feed(runner, 2.5, SPENT_S)
    pressure_steps = steps(runner)
    pressure_out = len(delivered(runner))
    pressure_stats = dict(runner.stats.stages["model"].level_frames)
    await feed(runner, 4.0, 0.0)
    await asyncio.sleep(0.5)
    await runner.stop()
    stats = runner.stats.stages["model"]
    report = f"steps {steps(runner)}, {runner.snapshot()}"

    # under pressure: down to level 1 (tried once, measured too slow), then level 2, where frames make it
    downs = [e["level"] for e in pressure_steps if e["direction"] == "down"]
    assert downs[:2] == [1, 2], report
    assert pressure_stats.get(2, 0) >= 20, report  # most frames ran at the cheapest level...
    assert pressure_out >= 20, report  # ...and came out, where a strict stage drops them all (next test)
    assert all(e["params"] == {"ms": 60} for e in pressure_steps if e["level"] == 1), report
    # pressure gone: back up, one level at a time, to the configured quality, and it stays there
    after = steps(runner)[len(pressure_steps) :]
    assert [e["direction"] for e in after][-2:] == ["up", "up"], report
    assert [e["level"] for e in after][-2:] == [1, 0], report
    assert after[-1]["params"] == {}
    assert stats.level == 0 and runner.stage_runners[0].ladder is not None
    assert runner.stage_runners[0].ladder.level == 0
    assert runner.stage_runners[0].stage.params.ms == 150  # the stage runs with level 0's parameters again
    assert stats.level_frames[0] >= 10, report  # frames processed at full quality after the climb
    assert stats.degrade_steps["down"] >= 2 and stats.degrade_steps["up"] >= 2, report
    # never late: the ladder changes what is computed, not the deadline rule
    frames = delivered(runner)
    assert frames and all(at <= f.deadline for at, f in frames), report
    assert stats.errors == 0


async def test_without_degrade_the_same_pressure_drops_every_frame(registry: StageRegistry) -> None:
    strict = LADDER.split("    degrade:")[0]
    runner = PipelineRunner(parse_pipeline(strict, "<test>", registry), registry, CollectingSink())
    await runner.start()
    await feed(runner, 2.5, SPENT_S)
    await asyncio.sleep(0.5)
    await runner.stop()
    assert runner.stage_runners[0].ladder is None
    assert delivered(runner) == []  # 150 ms never fits in 80: refused (or a late probe, dropped at output)
    assert runner.stats.stages["model"].drops["would_miss"] >= 40
    assert steps(runner) == []


def test_degrade_levels_are_validated_with_the_stage_params(registry: StageRegistry) -> None:
    bad = LADDER.replace("- {ms: 15}", "- {ms: -5}")
    with pytest.raises(PipelineError) as info:
        parse_pipeline(bad, "ladder.yaml", registry)
    assert "ladder.yaml:12" in str(info.value) and "degrade" in str(info.value), str(info.value)
    unknown = LADDER.replace("- {ms: 15}", "- {size: 256}")
    with pytest.raises(PipelineError, match="unknown parameter 'size'"):
        parse_pipeline(unknown, "ladder.yaml", registry)
    remote = LADDER.replace("    queue: latest\n", "    queue: latest\n    placement: remote\n")
    with pytest.raises(PipelineError, match="needs placement: edge"):
        parse_pipeline(remote, "ladder.yaml", registry)
