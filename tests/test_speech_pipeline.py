"""pipelines/speech-translate.yaml end to end: English espeak-ng speech in at real-time pace,
Portuguese captions and speech out, with the per-utterance latency event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamai.config import load_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import AudioFrame, FrameKind
from streamai.models import SharedModels
from streamai.speech.audio import rms_dbfs
from streamai.speech.text import word_error_rate
from streamai.stage import StageRegistry
from streamai.testing.speech import SENTENCES, feed, utterance_clip

pytestmark = [pytest.mark.models, pytest.mark.slow]


async def test_speech_translate_pipeline_end_to_end(root: Path) -> None:
    registry = StageRegistry()
    config = load_pipeline(root / "pipelines" / "speech-translate.yaml", registry)
    assert config.budget_ms == 500
    runner = PipelineRunner(config, registry, CollectingSink(), resources=SharedModels())
    events: list[dict] = []
    runner.events.on_event(events.append)
    await runner.start()
    speech_end = await feed(runner, utterance_clip(SENTENCES["station"], trail_s=3.5), speed=1.0, eos=True)
    await asyncio.sleep(0.5)
    await runner.stop()

    transcripts = [e for e in events if e["type"] == "transcript"]
    assert transcripts[-1]["final"] and not transcripts[0]["final"]
    assert word_error_rate(SENTENCES["station"], transcripts[-1]["text"]) <= 0.15
    portuguese = " ".join(e["text"] for e in events if e["type"] == "translation").lower()
    assert "bom dia" in portuguese and "estação" in portuguese and "trem" in portuguese
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    audio = [f for f in sink.of_kind(FrameKind.AUDIO) if isinstance(f, AudioFrame)]
    samples = np.concatenate([f.samples[:, 0] for f in audio])
    assert audio[0].sample_rate == 48000 and 1.0 <= len(samples) / 48000 <= 6.0 and rms_dbfs(samples) > -30
    first_after_end = min(at for at, f in sink.frames if f.kind is FrameKind.AUDIO and at > speech_end)
    latency = [e for e in events if e["type"] == "latency"]
    assert len(latency) == 1
    figures = latency[0]
    assert all(figures[k] is not None for k in ("final_transcript_ms", "translation_ms", "first_audio_ms"))
    assert figures["final_transcript_ms"] <= figures["translation_ms"] + 1
    assert (first_after_end - speech_end) < 5.0  # sanity only: 2 shared cores
