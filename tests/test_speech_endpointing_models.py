"""Endpointing with the real models: the speech end the VAD stamps, and adaptive endpointing on a human
recording and on an espeak phrase with an inner pause (one turn each), a complete sentence not held."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamai.bench.endpointing import ALSA, MODES, read_human
from streamai.bench.speech import FRAME, RATE, play, sample_time
from streamai.config import load_pipeline, parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import ControlFrame, ControlKind
from streamai.models import SharedModels
from streamai.stage import StageRegistry
from streamai.testing.speech import EspeakMissing, silence, speak, voiced_end

pytestmark = [pytest.mark.models, pytest.mark.slow]


def _speech(text: str) -> np.ndarray:
    try:
        return speak(text)
    except EspeakMissing as exc:
        pytest.skip(str(exc))


async def test_speech_end_is_the_last_audible_sample_not_where_the_detector_stops() -> None:
    sentence = _speech("where is the train station")
    clip = np.concatenate([silence(0.5), sentence, silence(1.5)])
    registry = StageRegistry()
    config = parse_pipeline("name: v\nstages:\n  - {name: vad, type: vad, model: silero-vad, queue_size: 2000}\n",
                            "<test>", registry)  # fmt: skip
    sink = CollectingSink()
    runner = PipelineRunner(config, registry, sink)
    await runner.start()
    stamps = await play(runner, clip)
    await asyncio.sleep(0.2)
    await runner.stop()
    truth = sample_time(stamps, 0.5 + voiced_end(sentence))
    ends = [f for _, f in sink.frames if isinstance(f, ControlFrame) and f.control is ControlKind.SPEECH_END]
    assert ends and ends[0].data["tentative"] and not ends[-1].data["tentative"]
    for end in ends:  # every end carries the speech end: the last sample above -40 dBFS (the truth's floor: 300)
        assert abs(end.capture_time - truth) < 0.001, (end.capture_time - truth) * 1000
    # the tentative end leaves after pad_ms of silence (64 ms), counted in 32 ms windows, not after Silero's lag
    assert ends[0].data["at"] - truth < 0.064 + 0.032 + FRAME / RATE + 0.25  # generous: a loaded machine


async def _run(overrides: dict[str, Any], clip: np.ndarray, root: Path) -> list[dict[str, Any]]:
    registry = StageRegistry()
    config = load_pipeline(root / "pipelines" / "speech-translate.yaml", registry)
    runner = PipelineRunner(config, registry, CollectingSink(), params=overrides, resources=SharedModels())
    events: list[dict[str, Any]] = []
    runner.events.on_event(events.append)
    await runner.start()
    await play(runner, clip)
    await asyncio.sleep(1.5)
    await runner.stop()
    return events


def _pieces(events: list[dict[str, Any]], first: int, last: int) -> list[str]:
    """Translated pieces of the utterances that started between the two clip positions (ms)."""
    starts = {e["utterance"]: e["audio_ms"] for e in events if e["type"] == "vad" and e["state"] == "start"}
    ours = {u for u, at in starts.items() if first <= at < last}
    return [e["text"] for e in events if e["type"] == "translation" and e["text"].strip() and e["utterance"] in ours]


async def test_a_pause_inside_a_phrase_does_not_split_it_and_a_complete_sentence_is_not_held(root: Path) -> None:
    if not ALSA.is_dir():
        pytest.skip("needs Debian's alsa-utils recordings: apt-get install alsa-utils")
    human = read_human("Rear_Left")  # "rear ... left", a ~450 ms pause between the words
    head, tail = _speech("I would like a"), _speech("cup of coffee please")
    phrase = np.concatenate([head[: int(voiced_end(head) * RATE)], silence(0.4), tail])
    sentence = _speech("where is the train station")
    parts = [silence(0.5), human, silence(2.5), phrase, silence(2.5), sentence, silence(2.0)]
    clip = np.concatenate(parts)
    bounds = np.cumsum([len(p) for p in parts]) * 1000 // RATE  # ms where each part ends
    spans = [(bounds[0] - 400, bounds[2] - 400), (bounds[2] - 400, bounds[4] - 400), (bounds[4] - 400, 10**9)]

    adaptive = await _run({}, clip, root)
    for first, last in spans:
        assert len(_pieces(adaptive, first, last)) == 1, [(e["type"], e.get("text")) for e in adaptive]
    waterfalls = [e for e in adaptive if e["type"] == "waterfall"]
    assert waterfalls, "no waterfall event"
    last = waterfalls[-1]  # the complete sentence: committed at the pause, not after a long wait
    assert last["total_ms"] < 900 + 1500  # the long wait alone is 900 ms; generous for a loaded machine
    parts_sum = sum(v for v in last["components"].values() if v is not None)
    assert abs(parts_sum - last["total_ms"]) < 1.0

    fixed = await _run(MODES["fixed"], clip, root)  # the previous behaviour splits at least one of the two
    assert len(_pieces(fixed, *spans[0])) + len(_pieces(fixed, *spans[1])) >= 3, fixed
