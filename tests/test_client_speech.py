"""The Python client through ``speech-translate`` with the real models: a WAV file in, Portuguese speech,
transcript and translation events back; the events WebSocket sees the same speech events; and the
runnable example (examples/translate_wav.py) writes the translated WAV and captions.

Test speech is made with espeak-ng at test time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamai.client as client
from streamai.media.wav import read_wav, write_wav
from streamai.testing.node import running_node
from streamai.testing.speech import EspeakMissing, silence, speak
from streamai.testing.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.models, pytest.mark.slow]
LOUD = 1000
SPEECH_EVENTS = ("vad", "transcript", "translation")


def sentence_wav(path: Path, rate: int = 16_000) -> Path:
    """One spoken sentence between silences, written at ``rate`` (the client resamples it to 48 kHz)."""
    try:
        spoken = speak("where is the train station", rate=rate)
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    write_wav(path, np.concatenate([silence(0.5, rate), spoken, silence(2.5, rate)]), rate)
    return path


def speech(events: list[client.Event]) -> list[dict[str, Any]]:
    return [e.raw() for e in events if e.type in SPEECH_EVENTS]


async def test_a_wav_file_comes_back_translated_with_typed_events_and_the_websocket_sees_the_same(
    tmp_path: Path,
) -> None:
    wav = sentence_wav(tmp_path / "station.wav")
    channel: list[client.Event] = []
    socket: list[client.Event] = []
    received: list[np.ndarray] = []
    async with (
        running_node() as (url, _app),
        client.connect(url, pipeline="speech-translate", audio=str(wav), ice_loopback=True) as session,
    ):
        session.on_event(channel.append)
        assert isinstance(session.sent_audio, client.AudioArrayTrack) and session.audio is not None
        node = session.node_url or url
        async with client.watch_events(node, session.session_id or "", session.session_token) as watcher:

            async def watch() -> None:
                async for event in watcher:
                    socket.append(event)

            async def record() -> None:
                async for samples in session.audio.arrays():  # type: ignore[union-attr]
                    received.append(samples[:, 0])

            tasks = [asyncio.create_task(watch()), asyncio.create_task(record())]

            def answered() -> bool:
                done = any(isinstance(e, client.TranslationEvent) and e.final for e in channel)
                heard = sum(int(np.abs(c.astype(np.int32)).max() > LOUD) for c in received)
                return done and heard >= 25 and session.sent_audio.finished.is_set()  # type: ignore[union-attr]

            assert await wait_for(answered, 45), [e.type for e in channel]
            assert await wait_for(lambda: len(speech(socket)) >= len(speech(channel)), 10)  # the socket is behind
            for task in tasks:
                task.cancel()

    finals = [e for e in channel if isinstance(e, client.TranscriptEvent) and e.final]
    assert finals and "train station" in " ".join(e.text for e in finals).lower(), finals
    translations = [e for e in channel if isinstance(e, client.TranslationEvent)]
    assert "estação" in " ".join(e.text for e in translations).lower(), translations
    assert all(e.language == "pt" and e.source_language == "en" for e in translations)
    audio = np.concatenate(received)
    assert np.count_nonzero(np.abs(audio.astype(np.int32)) > LOUD) > 0.3 * 48_000, "no translated speech came back"

    # the events-only client got the same speech events, field for field and in order
    assert speech(socket) == speech(channel) and len(speech(channel)) >= 4
    kinds = [type(e) for e in socket if e.type in SPEECH_EVENTS]
    assert kinds == [type(e) for e in channel if e.type in SPEECH_EVENTS] and client.UnknownEvent not in kinds


async def test_the_example_translates_a_wav_through_a_running_node_into_a_wav_and_captions(tmp_path: Path) -> None:
    wav = sentence_wav(tmp_path / "station.wav", rate=22_050)
    out, vtt, srt = tmp_path / "translated.wav", tmp_path / "captions.vtt", tmp_path / "captions.srt"
    async with running_node() as (url, _app):
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "examples" / "translate_wav.py"), url, str(wav), "--output", str(out),
            "--captions", str(vtt), "--captions", str(srt), "--tail", "2", "--ice-loopback",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        )  # fmt: skip
        printed, _ = await asyncio.wait_for(process.communicate(), 120)
    text = printed.decode()
    assert process.returncode == 0, text
    assert "heard" in text and "train station" in text.lower() and "said" in text, text
    samples, rate = read_wav(out)
    assert rate == 48_000 and len(samples) >= 3 * rate
    assert np.count_nonzero(np.abs(samples.astype(np.int32)) > LOUD) > 0.3 * rate
    captions = vtt.read_text()
    assert captions.startswith("WEBVTT") and "train station" in captions.lower() and "estação" in captions.lower()
    assert "-->" in srt.read_text() and "estação" in srt.read_text().lower()
