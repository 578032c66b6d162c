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
    ends, stamps = await _vad_only(clip, early_ms=64)  # the shipped pipelines' early_ms and pad_ms
    truth = sample_time(stamps, 0.5 + voiced_end(sentence))
    assert ends and not ends[-1].data["tentative"]
    last = [e for e in ends if e.data["pause"] == ends[-1].data["pause"]]  # the pause that ended the utterance
    for end in last:  # each of its ends carries the speech end: the last sample above -40 dBFS (the truth's: 300)
        assert abs(end.capture_time - truth) < 0.001, (end.capture_time - truth) * 1000
    # its early end leaves after early_ms of silence (64 ms) by the energy floor, not after Silero's lag,
    # then its tentative end (after pad_ms, 96), then the confirmed end
    assert [(bool(e.data.get("early")), e.data["tentative"]) for e in last] == [
        (True, True),
        (False, True),
        (False, False),
    ]
    assert last[0].data["at"] - truth < 0.064 + 0.032 + FRAME / RATE + 0.25  # generous: a loaded machine
    assert last[0].data["at"] < last[1].data["at"] < last[2].data["at"]
    # a tentative end always follows an early end of the same pause (no speech came between)
    for end in ends:
        if end.data["tentative"] and not end.data.get("early"):
            assert any(e.data.get("early") and e.data["pause"] == end.data["pause"] for e in ends)


def _ends(sink: CollectingSink) -> list[ControlFrame]:
    return [f for _, f in sink.frames if isinstance(f, ControlFrame) and f.control is ControlKind.SPEECH_END]


async def _vad_only(clip: np.ndarray, early_ms: int) -> tuple[list[ControlFrame], list[float]]:
    """The SPEECH_ENDs a lone vad (``pad_ms`` 96, as shipped) sends for ``clip``, and the frames' capture times."""
    registry = StageRegistry()
    params = f"{{pad_ms: 96, early_ms: {early_ms}}}"
    stage = f"{{name: vad, type: vad, model: silero-vad, queue_size: 2000, params: {params}}}"
    config = parse_pipeline(f"name: v\nstages:\n  - {stage}\n", "<test>", registry)
    sink = CollectingSink()
    runner = PipelineRunner(config, registry, sink)
    await runner.start()
    stamps = await play(runner, clip)
    await asyncio.sleep(0.2)
    await runner.stop()
    return _ends(sink), stamps


async def test_a_silence_shorter_than_the_pad_gets_an_early_end_only_and_the_next_one_is_a_new_pause() -> None:
    # espeak leaves 32-90 ms of silence at stop closures and between words of this sentence: with the early
    # end after one silent window (32 ms), pauses whose early end came but whose pad (96 ms) never filled
    sentence = _speech("I would like a cup of coffee, please")
    ends, _ = await _vad_only(np.concatenate([silence(0.5), sentence, silence(1.5)]), early_ms=32)
    marks = [(e.data["utterance"], e.data["pause"], bool(e.data.get("early")), e.data["tentative"]) for e in ends]
    pauses = sorted({m[1] for m in marks})
    assert pauses == list(range(1, len(pauses) + 1)), marks  # numbered 1, 2, ... with no gaps
    early_only = [n for n in pauses if (1, n, True, True) in marks and (1, n, False, True) not in marks]
    assert early_only, marks
    for n in pauses:  # every pause opens with its early end; a tentative end only after it
        assert marks.index((1, n, True, True)) == min(i for i, m in enumerate(marks) if m[1] == n), marks
    last = pauses[-1]
    assert marks[-3:] == [(1, last, True, True), (1, last, False, True), (1, last, False, False)], marks


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


async def test_the_pause_decode_starts_at_the_early_end_and_its_words_are_committed_without_decoding_again(
    root: Path,
) -> None:
    sentence = _speech("where is the train station")
    clip = np.concatenate([silence(0.5), sentence, silence(2.0)])
    registry = StageRegistry()
    config = load_pipeline(root / "pipelines" / "speech-translate.yaml", registry)
    runner = PipelineRunner(config, registry, CollectingSink(), resources=SharedModels())
    events: list[dict[str, Any]] = []
    runner.events.on_event(events.append)
    await runner.start()
    await play(runner, clip)
    for _ in range(200):  # the waterfall comes once the translation is spoken (a loaded machine: seconds)
        if any(e["type"] == "waterfall" for e in events):
            break
        await asyncio.sleep(0.1)
    asr = next(r.stage for r in runner.stage_runners if r.stage.context.name == "asr")
    decodes = list(asr.decodes)
    await runner.stop()
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert [e["text"].rstrip("?.!").lower() for e in finals] == ["where is the train station"], finals
    assert decodes[-1]["early"] == 1.0, decodes  # the last decode was the early one: no pause decode, no final one
    # its words were committed (stable) before the final, as a pause commit, and translated once
    committed = [e for e in events if e["type"] == "transcript" and not e["final"] and e["stable"] == finals[0]["text"]]
    assert committed, [(e["text"], e["stable"]) for e in events if e["type"] == "transcript"]
    assert len([e for e in events if e["type"] == "translation" and e["text"].strip()]) == 1
    assert [e for e in events if e["type"] == "waterfall"], "no waterfall event within 20 s"


@pytest.mark.parametrize("offset_ms", [2, 9, 17, 25, 30])
async def test_the_early_end_leaves_with_the_frame_that_makes_early_ms_of_silence_not_at_a_window_boundary(
    offset_ms: int,
) -> None:
    """Frames fed one by one (no clock): the early end is pushed while the first frame whose last sample
    lies ``early_ms`` (64) after the last audible one is processed, wherever the speech ended inside a
    32 ms window (before: after two whole silent windows, 0-32 ms later, plus up to a frame)."""
    from streamai.frames import AudioFrame
    from streamai.stage import StageContext
    from streamai.stages.vad import Vad, VadParams

    sentence = _speech("where is the train station")
    cut = int((0.5 + voiced_end(sentence)) * RATE)
    clip = np.concatenate([silence(0.5), sentence, silence(1.0)])
    clip[cut:] = 0
    clip = np.concatenate([np.zeros((int(offset_ms * RATE / 1000), 1), np.int16), clip])  # move the end in its window
    end_sample = cut + int(offset_ms * RATE / 1000)  # first silent sample
    stage = Vad(VadParams(pad_ms=96, early_ms=64), StageContext(name="vad", model="silero-vad"))
    pushed: list[tuple[int, ControlFrame]] = []
    fed = [0]  # the index of the frame being processed

    async def collect(frame: object) -> None:
        if isinstance(frame, ControlFrame) and frame.control is ControlKind.SPEECH_END:
            pushed.append((fed[0], frame))

    stage.bind(collect)
    await stage.start()
    try:
        start = 1000.0
        for fed[0], offset in enumerate(range(0, len(clip) - FRAME + 1, FRAME)):
            frame = AudioFrame(samples=clip[offset : offset + FRAME], sample_rate=RATE, pts=offset)
            frame.capture_time = start + (offset + FRAME) / RATE  # the frame's last sample
            await stage.process(frame)
    finally:
        await stage.stop()
    early = [(i, e) for i, e in pushed if e.data.get("early")]
    assert early, pushed
    at_frame, end = early[-1]
    silent_after = ((at_frame + 1) * FRAME - end_sample) / RATE * 1000  # silence at that frame's last sample
    assert 64 <= silent_after < 64 + FRAME / RATE * 1000, silent_after
    assert abs(end.capture_time - (start + end_sample / RATE)) < 0.001  # the speech end it carries
    pad_to_come = end.data["pad_to_come_ms"]
    assert 0 < pad_to_come <= 96 - 32 and pad_to_come % 32 == 0  # the pad's windows not forwarded yet
