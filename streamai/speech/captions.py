"""Captions of a speech run: one cue an utterance, what was heard and what was said, timed by the input.

Cues come from the session's events: ``vad`` (``audio_ms``: where the utterance starts
and ends in the input), ``transcript`` (the final text and its language) and
``translation`` (one event a translated clause, joined). An utterance without ``vad``
events (a pipeline without a VAD) is timed by when its final transcript came, in
media time. A cue lasts at least ``MIN_CUE_S`` when the next one leaves room.

Written as WebVTT (``.vtt``; each line in a ``<lang>`` span) or SubRip (``.srt``), both
languages in one cue: the transcript first, then the translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_CUE_S = 1.0
FALLBACK_CUE_S = 2.0  # an utterance timed only by its final transcript: this long before it


@dataclass
class Caption:
    """One utterance: its span in the input and its lines, (language, text), heard then said."""

    utterance: int
    start_s: float
    end_s: float
    lines: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "utterance": self.utterance,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "lines": [{"language": language, "text": text} for language, text in self.lines],
        }


def captions_from_events(events: list[tuple[float, dict[str, Any]]]) -> list[Caption]:
    """Cues from ``(media_seconds_when_received, event)`` pairs of one run, in utterance order."""
    spans: dict[int, dict[str, float]] = {}
    heard: dict[int, tuple[str, str, float]] = {}
    said: dict[int, list[tuple[str, str]]] = {}
    for at, event in events:
        kind, utterance = event.get("type"), event.get("utterance")
        if not isinstance(utterance, int):
            continue
        if kind == "vad" and isinstance(event.get("audio_ms"), int | float):
            spans.setdefault(utterance, {})[str(event.get("state"))] = float(event["audio_ms"]) / 1000
        elif kind == "transcript" and event.get("final") and str(event.get("text", "")).strip():
            heard[utterance] = (str(event.get("language") or "und"), str(event["text"]).strip(), at)
        elif kind == "translation" and str(event.get("text", "")).strip():
            said.setdefault(utterance, []).append((str(event.get("language") or "und"), str(event["text"]).strip()))
    captions: list[Caption] = []
    for utterance in sorted(heard):
        language, text, received = heard[utterance]
        span = spans.get(utterance, {})
        end = span.get("end", received)
        start = span.get("start", max(0.0, end - FALLBACK_CUE_S))
        lines = [(language, text)]
        translated = said.get(utterance, [])
        if translated:
            lines.append((translated[-1][0], " ".join(t for _, t in translated)))
        captions.append(Caption(utterance, start, max(end, start), lines))
    for index, caption in enumerate(captions):
        room = captions[index + 1].start_s if index + 1 < len(captions) else float("inf")
        caption.end_s = max(caption.end_s, min(caption.start_s + MIN_CUE_S, room))
    return captions


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _vtt_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("-->", "--&gt;")


def format_vtt(captions: list[Caption]) -> str:
    """WebVTT: a cue an utterance, each line in a ``<lang>`` span."""
    out = ["WEBVTT", ""]
    for index, caption in enumerate(captions, 1):
        out.append(str(index))
        out.append(f"{_timestamp(caption.start_s, '.')} --> {_timestamp(caption.end_s, '.')}")
        out.extend(f"<lang {language}>{_vtt_text(text)}</lang>" for language, text in caption.lines)
        out.append("")
    return "\n".join(out)


def format_srt(captions: list[Caption]) -> str:
    """SubRip: a cue an utterance, plain lines."""
    out: list[str] = []
    for index, caption in enumerate(captions, 1):
        out.append(str(index))
        out.append(f"{_timestamp(caption.start_s, ',')} --> {_timestamp(caption.end_s, ',')}")
        out.extend(" ".join(text.splitlines()) for _, text in caption.lines)
        out.append("")
    return "\n".join(out)


FORMATS = {".vtt": format_vtt, ".srt": format_srt}


def check_caption_path(path: str | Path) -> None:
    """``ValueError`` unless ``path`` ends in .vtt or .srt."""
    if Path(path).suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: captions must end in .vtt (WebVTT) or .srt (SubRip)")


def write_captions(path: str | Path, captions: list[Caption]) -> None:
    """Write ``captions`` in the format the file's extension names."""
    check_caption_path(path)
    Path(path).write_text(FORMATS[Path(path).suffix.lower()](captions), encoding="utf-8")
