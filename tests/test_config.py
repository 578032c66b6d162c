"""PipelineConfig edge cases: shapes, branches, stage names, per-session parameters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamai.config import PipelineError, parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.engine.runner import ParamsError, split_session_params
from streamai.frames import AudioFrame, ControlFrame, ControlKind, FrameKind, VideoFrame
from streamai.stage import StageRegistry

BRANCHES = """
name: fan-out
budget_ms: 1000
branches:
  audio:
    - {name: loud, type: echo, params: {gain: 1.0}}
  video:
    - {name: fx, type: video-transform, params: {effect: invert}}
    - {name: loud, type: passthrough}
"""

CHAIN = """
name: chain
stages:
  - {name: fx, type: video-transform, params: {effect: invert}}
  - {name: loud, type: echo, params: {gain: 1.0}}
  - {type: tone}
"""


def errors(text: str, registry: StageRegistry | None = None) -> str:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.yaml", registry)
    return str(info.value)


def test_branches_are_named_chains(registry: StageRegistry) -> None:
    config = parse_pipeline(BRANCHES, "p.yaml", registry)
    assert list(config.chains()) == ["audio", "video"]
    assert config.stage_names() == ["audio.loud", "video.fx", "video.loud"]  # same name, different branches


def test_chain_names_default_to_type_and_index(registry: StageRegistry) -> None:
    config = parse_pipeline(CHAIN, "p.yaml", registry)
    assert config.stage_names() == ["fx", "loud", "tone2"]
    assert config.budget_ms == 500


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\n", "exactly one of"),
        ("name: x\nstages: [{type: echo}]\nbranches: {a: [{type: echo}]}\n", "exactly one of"),
        ("name: x\nstages: []\n", "'stages' is empty"),
        ("name: x\nbranches: {a: [{type: echo}], b: []}\n", "every branch"),
        ("name: Bad Name\nstages: [{type: echo}]\n", "field name"),
        ("name: x\nbudget_ms: 0\nstages: [{type: echo}]\n", "field budget_ms"),
        ("name: x\nstages: [{type: echo, queue_size: 0}]\n", "stage 1 (echo), field queue_size"),
        ("name: x\nstages: [{type: echo, placement: moon}]\n", "field placement"),
        ("name: x\nstages: [{type: echo, remote: {num_gpus: many}}]\n", "field remote.num_gpus"),
    ],
)
def test_shape_errors(text: str, fragment: str) -> None:
    assert fragment in errors(text)


def test_duplicate_stage_names_rejected_with_and_without_registry(registry: StageRegistry) -> None:
    explicit = "name: x\nstages:\n  - {type: echo, name: a}\n  - {type: passthrough, name: a}\n"
    implicit = "name: x\nstages:\n  - {type: echo}\n  - {type: echo, name: echo0}\n"
    branch = "name: x\nbranches:\n  b:\n    - {type: echo, name: a}\n    - {type: tone, name: a}\n"
    for text, name in ((explicit, "a"), (implicit, "echo0"), (branch, "b.a")):
        assert f"unique: {name}" in errors(text)
        assert f"unique: {name}" in errors(text, registry)


def test_branch_error_names_branch_stage_and_line(registry: StageRegistry) -> None:
    text = BRANCHES.replace("effect: invert", "effect: blur")
    message = errors(text, registry)
    assert message.startswith("p.yaml:8: branch 'video' stage 1 'fx' (video-transform), field params.effect")


def runner_with(registry: StageRegistry, params: dict) -> PipelineRunner:
    config = parse_pipeline(CHAIN, "p.yaml", registry)
    return PipelineRunner(config, registry, CollectingSink(), params=split_session_params(params, config.stage_names()))


def test_session_params_flat_and_per_stage(registry: StageRegistry) -> None:
    runner = runner_with(registry, {"gain": 2.5, "fx": {"effect": "gray"}, "level": 0.1})
    stages = {r.name: r.stage for r in runner.stage_runners}
    assert stages["loud"].params.gain == 2.5
    assert stages["fx"].params.effect == "gray"
    assert stages["tone2"].params.level == 0.1
    config = parse_pipeline(CHAIN, "p.yaml", registry)
    assert config.stages is not None and config.stages[1].params == {"gain": 1.0}  # YAML untouched


def test_split_session_params() -> None:
    assert split_session_params({"fx": {"effect": "gray"}, "gain": 2}, ["fx", "loud"]) == {
        "_flat": {"gain": 2},
        "fx": {"effect": "gray"},
    }


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        ({"volume": 3}, ["fit no stage", "volume"]),
        ({"gain": "loud"}, ["stage 'loud'", "parameter 'gain'"]),
        ({"gain": 100}, ["stage 'loud'", "parameter 'gain'"]),
        ({"fx": {"effect": "blur"}}, ["stage 'fx'", "parameter 'effect'"]),
        ({"fx": {"colour": 1}}, ["stage 'fx'", "colour"]),
        ({"fx": "gray"}, ["stage 'fx'", "must be an object"]),
    ],
)
def test_session_params_errors(registry: StageRegistry, params: dict, fragments: list[str]) -> None:
    with pytest.raises(ParamsError) as info:
        runner_with(registry, params)
    for fragment in fragments:
        assert fragment in str(info.value)


async def test_fan_out_routes_each_kind_to_its_branch(registry: StageRegistry) -> None:
    sink = CollectingSink()
    runner = PipelineRunner(parse_pipeline(BRANCHES, "p.yaml", registry), registry, sink)
    await runner.start()
    runner.submit(AudioFrame(samples=np.ones((960, 1), np.int16), sample_rate=48_000))
    runner.submit(VideoFrame(image=np.zeros((4, 4, 3), np.uint8)))
    runner.control(ControlKind.END_OF_STREAM)
    for _ in range(100):
        if sum(isinstance(f, ControlFrame) for _, f in sink.frames) == 2:
            break
        await asyncio.sleep(0.01)
    await runner.stop()
    assert runner.stats.stages["audio.loud"].processed == 1
    assert runner.stats.stages["video.fx"].processed == 1
    assert runner.stats.stages["video.loud"].processed == 1  # video only: audio never entered this branch
    video = sink.of_kind(FrameKind.VIDEO)
    assert len(video) == 1 and isinstance(video[0], VideoFrame) and video[0].image.max() == 255
    assert len(sink.of_kind(FrameKind.AUDIO)) == 1
    assert sum(isinstance(f, ControlFrame) for _, f in sink.frames) == 2  # end of stream out of both branches


def test_a_stage_module_that_fails_to_import_is_named_where_its_type_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mystages"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(
        "from streamai.stage import Stage, stage\n\n@stage('good')\nclass Good(Stage):\n    pass\n"
    )
    (package / "broken.py").write_text("from streamai.stage import Stage, stage\n\ndef oops(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = StageRegistry(packages=("mystages",))
    with pytest.raises(PipelineError) as failed:
        parse_pipeline("name: p\nstages:\n  - {name: b, type: broken}\n", "<test>", registry)
    message = str(failed.value)
    assert "unknown stage type 'broken' (known: good)" in message
    assert "mystages.broken: SyntaxError" in message
