"""Interruptions that stop: a client interrupt and a barge-in stop the clause being synthesized at
once and cancel the clauses queued behind it (Piper, real voice package; text submitted directly)."""

from __future__ import annotations

import asyncio

import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame
from streamai.stage import StageRegistry

pytestmark = pytest.mark.models

CLAUSES = [
    "Bom dia, onde fica a estação de trem? Eu gostaria de uma xícara de café, por favor.",
    "O tempo está muito bom hoje, e eu quero passear no parque com os meus amigos.",
    "Você pode me ajudar a encontrar o meu hotel? Ele fica perto da praia.",
]


def _runner() -> PipelineRunner:
    registry = StageRegistry()
    yaml = (
        "name: t\nbudget_ms: 5000\nstages:\n  - {name: tts, type: tts, admission: stream, params: {barge_in: true}}\n"
    )
    return PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())


def _frames(runner: PipelineRunner) -> list[Frame]:
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    return [f for _, f in sink.frames]


async def _speaking(runner: PipelineRunner) -> None:
    """Queue three clauses of utterance 1 and wait until the first one sounds."""
    for text in CLAUSES:
        runner.submit(TextFrame(text=text, language="pt", utterance_id=1))
    for _ in range(400):
        if any(f.kind is FrameKind.AUDIO for f in _frames(runner)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no audio")


def _audio_after_cut(frames: list[Frame]) -> list[AudioFrame]:
    cut = next(i for i, f in enumerate(frames) if isinstance(f, ControlFrame) and f.control is ControlKind.INTERRUPTION)
    return [f for f in frames[cut:] if isinstance(f, AudioFrame)]


@pytest.mark.parametrize("how", ["client interrupt", "barge-in"])
async def test_interruption_stops_the_clause_at_once_and_drops_the_queued_ones(how: str) -> None:
    runner = _runner()
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()
    await _speaking(runner)
    if how == "client interrupt":
        runner.control(ControlKind.INTERRUPTION, {"source": "client"})
    else:
        runner.submit(ControlFrame(control=ControlKind.SPEECH_START, data={"utterance": 2}))
    # at once, not after the clauses queued ahead of the control frame: the output already has it
    last = _frames(runner)[-1]
    assert isinstance(last, ControlFrame) and last.control is ControlKind.INTERRUPTION
    await asyncio.sleep(1.5)  # the piece being synthesized returns, the queued clauses come up
    frames = _frames(runner)
    assert _audio_after_cut(frames) == []  # nothing of utterance 1 after the cut
    assert [f for f in frames if isinstance(f, ControlFrame) and f.control is ControlKind.INTERRUPTION] == [last]
    assert runner.stats.drops()["tts"]["interrupted"] >= 2  # the two queued clauses were never spoken
    reason = "client" if how == "client interrupt" else "barge_in"
    assert [e["reason"] for e in events if e["type"] == "interruption"] == [reason]

    runner.submit(TextFrame(text="Obrigado.", language="pt", utterance_id=2))  # the next utterance is spoken
    await asyncio.sleep(1.0)
    await runner.stop()
    assert _audio_after_cut(_frames(runner)), "the utterance after the interruption was not spoken"


async def test_speech_detected_by_the_vad_cuts_the_answer_through_the_pipeline() -> None:
    """Barge-in end to end inside a pipeline: the VAD's own SPEECH_START (real Silero on espeak-ng
    speech) reaches the TTS ahead of the clauses queued for it."""
    from streamai.testing.speech import EspeakMissing, feed, utterance_clip

    try:
        clip = utterance_clip("excuse me, wait a moment", lead_s=0.2, trail_s=0.2)
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    registry = StageRegistry()
    yaml = (
        "name: t\nbudget_ms: 5000\nstages:\n  - {name: vad, type: vad, queue_size: 2000}\n"
        "  - {name: tts, type: tts, admission: stream, params: {barge_in: true}}\n"
    )
    runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()
    await _speaking(runner)  # text passes the VAD (it consumes audio only) and queues at the TTS
    await feed(runner, clip, speed=1.0)
    await asyncio.sleep(1.0)
    await runner.stop()
    frames = _frames(runner)
    vad_start = next(
        i for i, f in enumerate(frames) if isinstance(f, ControlFrame) and f.control is ControlKind.SPEECH_START
    )
    spoken = [f for f in _audio_after_cut(frames) if f.sample_rate == 48000]  # (the VAD's 16 kHz speech passes on)
    assert spoken == []
    cut = next(i for i, f in enumerate(frames) if isinstance(f, ControlFrame) and f.control is ControlKind.INTERRUPTION)
    assert cut < vad_start  # the interruption reached the output before the in-order SPEECH_START did
    assert [e["reason"] for e in events if e["type"] == "interruption"] == ["barge_in"]
    assert runner.stats.drops()["tts"]["interrupted"] >= 2
