"""Text where users look: ``streamai run`` prints what it heard and said as it becomes final, puts it
in the report and writes captions (WebVTT, SubRip) in both languages, timed by the input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamai.commands.run import print_speech_event
from streamai.speech.captions import captions_from_events, format_srt, format_vtt

EVENTS = [
    (0.4, {"type": "vad", "state": "start", "utterance": 1, "audio_ms": 512}),
    (2.2, {"type": "translation", "utterance": 1, "text": "Bom dia,", "language": "pt", "final": False}),
    (2.9, {"type": "vad", "state": "end", "utterance": 1, "audio_ms": 2880}),
    (
        3.1,
        {"type": "transcript", "utterance": 1, "text": "Good morning, <where> is it?", "final": True, "language": "en"},
    ),
    (3.2, {"type": "translation", "utterance": 1, "text": "onde é?", "language": "pt", "final": True}),
    (4.0, {"type": "vad", "state": "start", "utterance": 2, "audio_ms": 3000}),
    (4.5, {"type": "vad", "state": "end", "utterance": 2, "audio_ms": 3300}),
    (4.8, {"type": "transcript", "utterance": 2, "text": "Yes.", "final": True, "language": "en"}),
    (7.0, {"type": "transcript", "utterance": 3, "text": "No VAD here.", "final": True, "language": "en"}),
    (7.1, {"type": "transcript", "utterance": 4, "text": "", "final": True, "language": "en"}),  # noise
]


def test_captions_join_what_was_heard_and_said_per_utterance_in_both_formats() -> None:
    captions = captions_from_events(EVENTS)
    assert [(c.utterance, c.start_s, c.end_s) for c in captions] == [
        (1, 0.512, 2.88),
        (2, 3.0, 4.0),  # 0.3 s of speech, held for at least a second
        (3, 5.0, 7.0),  # no vad events: the 2 s before its final transcript
    ]
    assert captions[0].lines == [("en", "Good morning, <where> is it?"), ("pt", "Bom dia, onde é?")]
    assert captions[1].lines == [("en", "Yes.")]
    assert format_vtt(captions).splitlines()[:6] == [
        "WEBVTT",
        "",
        "1",
        "00:00:00.512 --> 00:00:02.880",
        "<lang en>Good morning, &lt;where&gt; is it?</lang>",
        "<lang pt>Bom dia, onde é?</lang>",
    ]
    assert format_srt(captions).splitlines()[:5] == [
        "1",
        "00:00:00,512 --> 00:00:02,880",
        "Good morning, <where> is it?",
        "Bom dia, onde é?",
        "",
    ]


def test_finals_and_clauses_are_printed_and_partials_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    partial = {"type": "transcript", "text": "good mor", "final": False, "language": "en"}
    for at, event in EVENTS:
        print_speech_event(at, event)
    print_speech_event(1.0, partial)
    quiet = capsys.readouterr().out.splitlines()
    assert quiet[0] == "  said       2.20 s (pt): Bom dia,"
    assert "  heard      3.10 s (en): Good morning, <where> is it?" in quiet
    assert len(quiet) == 5 and not [line for line in quiet if "partial" in line]
    print_speech_event(1.0, partial, partials=True)
    assert capsys.readouterr().out == "  partial    1.00 s (en): good mor\n"


def _cue_times(text: str, separator: str) -> list[tuple[float, float]]:
    stamp = r"(\d\d):(\d\d):(\d\d)" + re.escape(separator) + r"(\d\d\d)"
    times = []
    for match in re.finditer(stamp + " --> " + stamp, text):
        h, m, s, ms, h2, m2, s2, ms2 = map(int, match.groups())
        times.append((h * 3600 + m * 60 + s + ms / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000))
    return times


@pytest.mark.models
@pytest.mark.slow
def test_run_prints_text_writes_it_to_the_report_and_writes_captions(tmp_path: Path, root: Path) -> None:
    from streamai.media.wav import write_wav
    from streamai.testing.speech import EspeakMissing, silence, speak, voiced_end

    try:
        first, second = speak("good morning, where is the train station"), speak("can you help me find my hotel")
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    clip = np.concatenate([silence(0.5), first, silence(1.5), second, silence(2.0)])
    truth = [
        (0.5, 0.5 + voiced_end(first)),
        (2.0 + len(first) / 48000, 2.0 + (len(first) + voiced_end(second) * 48000) / 48000),
    ]
    write_wav(tmp_path / "in.wav", clip, 48000)
    command = [sys.executable, "-m", "streamai", "run", str(root / "pipelines" / "speech-translate.yaml")]
    command += ["--input", str(tmp_path / "in.wav"), "--report", str(tmp_path / "r.json"), "-v"]
    command += ["--captions", str(tmp_path / "out.vtt"), "--captions", str(tmp_path / "out.srt")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    lines = done.stdout.splitlines()
    heard = [line for line in lines if line.startswith("  heard")]
    said = [line for line in lines if line.startswith("  said")]
    assert len(heard) == 2 and "train station" in heard[0].lower() and "hotel" in heard[1].lower(), lines
    assert said and "estação" in " ".join(said).lower()
    assert [line for line in lines if line.startswith("  partial")]  # -v
    assert lines.index(heard[0]) < lines.index(heard[1])  # printed as they came, before the summary
    assert lines.index(heard[1]) < next(i for i, line in enumerate(lines) if line.startswith("pipeline "))

    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["utterance"] for t in report["transcripts"]] == [1, 2]
    assert all(t["language"] == "en" and t["t_s"] > 0 for t in report["transcripts"])
    assert {t["language"] for t in report["translations"]} == {"pt"}
    assert len(report["captions"]) == 2

    vtt = (tmp_path / "out.vtt").read_text()
    srt = (tmp_path / "out.srt").read_text()
    assert vtt.startswith("WEBVTT\n") and vtt.count("<lang en>") == 2 and vtt.count("<lang pt>") == 2
    assert "estação" in vtt and "hotel" in vtt.lower()
    for times in (_cue_times(vtt, "."), _cue_times(srt, ",")):
        assert len(times) == 2
        for (start, end), (true_start, true_end) in zip(times, truth, strict=True):
            assert abs(start - true_start) < 0.3, (times, truth)  # the VAD's start, in input time
            assert abs(end - true_end) < 0.5, (times, truth)
