"""Speech synthesis: Piper (real voice package) streaming 48 kHz chunks, barge-in, engine errors.

Text frames are submitted directly; chunks are collected as pushed (faster than real time).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner, PipelineStartError
from streamai.frames import AudioFrame, ControlFrame, ControlKind, FrameKind, TextFrame
from streamai.speech.audio import rms_dbfs
from streamai.stage import StageRegistry
from streamai.stages.tts import TtsParams
from streamai.testing.wait import wait_for

pytestmark = pytest.mark.models

LONG = (
    "Bom dia. Onde fica a estação de trem? Eu gostaria de uma xícara de café. "
    "O tempo está muito bom hoje. Você pode me ajudar a encontrar meu hotel?"
)


def _runner(params: str = "{}", model: str = "") -> PipelineRunner:
    registry = StageRegistry()
    yaml = (
        f"name: t\nbudget_ms: 2000\nstages:\n  - {{name: tts, type: tts, admission: stream{model}, params: {params}}}\n"
    )
    return PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())


def _audio(runner: PipelineRunner) -> list[AudioFrame]:
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    return [f for f in sink.of_kind(FrameKind.AUDIO) if isinstance(f, AudioFrame)]


async def test_piper_speaks_a_clause_as_48k_chunks_with_energy() -> None:
    runner = _runner()
    await runner.start()
    clause = TextFrame(text="Bom dia, onde fica a estação de trem?", language="pt", utterance_id=1)
    clause.deadline = clause.capture_time + 10.0  # submit gives text no deadline; generous: on time
    runner.submit(clause)
    await asyncio.sleep(1.5)
    await runner.stop()
    frames = _audio(runner)
    assert frames and all(f.sample_rate == 48000 and f.channels == 1 for f in frames)
    assert all(len(f.samples) <= 4800 for f in frames)  # <= 100 ms chunks
    audio = np.concatenate([f.samples[:, 0] for f in frames])
    seconds = len(audio) / 48000
    assert 1.0 <= seconds <= 6.0, seconds  # 7 words of speech
    assert rms_dbfs(audio) > -30
    assert math.isfinite(frames[0].deadline) and all(math.isinf(f.deadline) for f in frames[1:])


async def test_barge_in_stops_the_clause_and_sends_interruption() -> None:
    full = _runner("{barge_in: false}")
    await full.start()
    full.submit(TextFrame(text=LONG, language="pt", utterance_id=1))
    await asyncio.sleep(3.0)
    await full.stop()
    full_seconds = sum(f.duration for f in _audio(full))

    runner = _runner("{barge_in: true}")
    await runner.start()
    runner.submit(TextFrame(text=LONG, language="pt", utterance_id=1))
    for _ in range(300):  # the first sentence is out: the listener hears it; now the user speaks
        await asyncio.sleep(0.005)
        if _audio(runner):
            break
    runner.submit(ControlFrame(control=ControlKind.SPEECH_START, data={"utterance": 2}))
    await asyncio.sleep(2.0)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    kinds = [f.control if isinstance(f, ControlFrame) else f.kind for _, f in sink.frames]
    assert ControlKind.INTERRUPTION in kinds
    cut = kinds.index(ControlKind.INTERRUPTION)
    assert FrameKind.AUDIO not in kinds[cut:]  # nothing of the old clause after the cut
    spoken = sum(f.duration for f in _audio(runner))
    assert 0 < spoken < full_seconds * 0.6, (spoken, full_seconds)
    assert runner.stage_runners[0].stage.interruptions == 1


async def test_speech_start_with_nothing_playing_sends_no_interruption() -> None:
    runner = _runner("{barge_in: true}")
    await runner.start()
    runner.submit(ControlFrame(control=ControlKind.SPEECH_START, data={"utterance": 1}))
    await asyncio.sleep(0.2)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    assert not [f for _, f in sink.frames if isinstance(f, ControlFrame) and f.control is ControlKind.INTERRUPTION]


async def test_coqui_engine_error_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    runner = _runner("{engine: coqui}", model=f", model: {tmp_path}")
    with pytest.raises(PipelineStartError) as raised:
        await runner.start()
    message = str(raised.value)
    assert "pip install coqui-tts" in message and "torchaudio" in message and "engine: piper" in message


async def test_espeak_is_never_the_default_but_works_when_chosen() -> None:
    assert TtsParams().engine == "piper"
    runner = _runner("{engine: espeak, language: pt}")
    await runner.start()
    runner.submit(TextFrame(text="Bom dia.", language="pt", utterance_id=1))
    await asyncio.sleep(1.0)
    await runner.stop()
    audio = np.concatenate([f.samples[:, 0] for f in _audio(runner)])
    assert len(audio) / 48000 > 0.3 and rms_dbfs(audio) > -35


def test_short_head_splits_only_a_long_first_piece() -> None:
    from streamai.speech.text import short_head

    assert short_head(["onde está a estação de trem?", "obrigado."], 2) == [
        "onde está",
        "a estação de trem?",
        "obrigado.",
    ]
    assert short_head(["Bom dia,", "onde está a estação?"], 3) == ["Bom dia,", "onde está a estação?"]
    assert short_head(["um dois três quatro"], 3) == ["um dois três quatro"]  # no one-word rest
    assert short_head(["um dois três quatro cinco"], 0) == ["um dois três quatro cinco"]
    assert short_head([], 3) == []


async def test_piper_first_piece_is_a_few_words_then_the_rest_follows() -> None:
    runner = _runner("{first_words: 3}")
    await runner.start()
    clause = TextFrame(text="Você pode me ajudar a encontrar o meu hotel?", language="pt", utterance_id=1)
    clause.deadline = clause.capture_time + 10.0
    runner.submit(clause)
    await asyncio.sleep(2.0)
    await runner.stop()
    stage = runner.stage_runners[0].stage
    pieces = [s["audio_s"] for s in stage.synths]
    assert len(pieces) == 2, pieces
    assert pieces[0] < 0.5 * sum(pieces), pieces  # "Você pode me" is heard before the rest is made
    audio = np.concatenate([f.samples[:, 0] for f in _audio(runner)])
    assert abs(len(audio) / 48000 - sum(pieces)) < 0.05  # every piece was sent


async def test_a_clause_starts_at_its_first_audible_sample() -> None:
    """Piper leads every piece with 45-65 ms of silence; the first piece of a clause is cut to 5 ms of it."""
    runner = _runner()
    await runner.start()
    for utterance, text in enumerate(["Onde está a estação de trem?", "Eu gostaria de um café."], 1):
        clause = TextFrame(text=text, language="pt", utterance_id=utterance)
        clause.deadline = clause.capture_time + 10.0
        runner.submit(clause)
    await wait_for(lambda: len(runner.stage_runners[0].stage.synths) >= 4, 30)
    await runner.stop()
    firsts = [f for f in _audio(runner) if f.deadline != float("inf")]  # a clause's first chunk keeps a deadline
    assert len(firsts) == 2
    for frame in firsts:
        loud = np.flatnonzero(np.abs(frame.samples[:, 0].astype(np.int32)) > 328)  # -40 dBFS
        assert len(loud) and loud[0] <= int(48000 * 0.0065), loud[:1] / 48  # ms before the first sound
