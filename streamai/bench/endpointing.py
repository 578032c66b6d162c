"""Endpointing on a labelled set: false splits of phrases with inner pauses, and latency on complete sentences.

The set, played at real-time pace through speech-translate (each item followed by
``--gap`` s of silence):

- *human*: the eight spoken recordings Debian's ``alsa-utils`` ships in
  ``/usr/share/sounds/alsa`` ("Front ... Center", "Rear ... Left", ...): two words with a
  300-450 ms pause between them, one phrase each;
- *espeak*: ten phrases spoken in two parts with an inner pause of 200-600 ms, cut
  after an article, a preposition, a conjunction, an auxiliary, a pronoun, a noun
  and a verb (some of them read as complete sentences before the pause: a lexical
  rule cannot know better);
- *complete*: the five one-clause sentences of ``streamai bench speech``, to show the
  latency on complete sentences is held.

A phrase is one turn: each translated piece beyond the first (a separate translation
event with text, whether from a separate utterance or from words committed at the
pause) is a *false split*. Both endpointing modes run on the same set, in one process:
``fixed`` (the previous behaviour: Silero silence only, ``pad_ms`` 96, no early end, every pause
commits, the utterance ends after ``silence_ms`` 300) and ``adaptive`` (the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_pipeline
from ..engine import PipelineRunner
from ..events import EventBus
from ..frames import now
from ..models import SharedModels
from ..stage import StageRegistry
from ..testing.speech import CLIP_SENTENCES, silence, speak, voiced_end
from .speech import AUDIBLE, RATE, EncodingOutput, load_average, parse_overrides, pct, play, sample_time

ROOT = Path(__file__).resolve().parents[2]
ALSA = Path("/usr/share/sounds/alsa")
HUMAN = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
         "Side_Right")  # fmt: skip
SPLIT_PHRASES = (
    ("I would like a", "cup of coffee please"),
    ("where is the", "train station"),
    ("I am looking for", "the museum"),
    ("coffee and", "a sandwich please"),
    ("the weather is", "very nice today"),
    ("we should meet at", "the station tomorrow"),
    ("the train to", "Lisbon leaves at noon"),
    ("can you help me", "find my hotel"),
    ("my brother", "lives in Paris"),
    ("turn left", "at the next corner"),
)
PAUSES_MS = (200, 300, 400, 500, 600)
MODES: dict[str, dict[str, dict[str, Any]]] = {
    "fixed": {
        # the previous behaviour in full: no early end either (the pause decode starts at the tentative end)
        "vad": {"endpointing": "fixed", "energy_silence": False, "pad_ms": 96, "early_ms": None, "silence_ms": 300},
        "asr": {"endpointing": "fixed"},
    },
    "adaptive": {},
}


@dataclass
class Item:
    """One labelled phrase in the clip."""

    kind: str  # human | espeak | complete
    label: str
    start_s: float  # where it starts in the clip
    end_s: float  # its last voiced sample
    pause_ms: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "speech-translate.yaml"))
    parser.add_argument("--gap", type=float, default=2.5, help="seconds of silence after each item")
    parser.add_argument("--modes", default="fixed,adaptive", help="comma-separated: fixed, adaptive")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override a stage param in every mode")  # fmt: skip


def read_human(name: str) -> np.ndarray:
    """One alsa-utils recording as int16 (n, 1) at 48 kHz."""
    from ..media.resample import resample
    from ..media.wav import read_wav

    samples, rate = read_wav(ALSA / f"{name}.wav")
    mono = samples[:, :1] if samples.shape[1] > 1 else samples
    return resample(mono, rate, RATE) if rate != RATE else mono


def labelled_clip(gap_s: float) -> tuple[np.ndarray, list[Item]]:
    """The whole set as one clip, and where each item is in it."""
    parts: list[np.ndarray] = [silence(0.5)]
    items: list[Item] = []
    position = 0.5

    def add(audio: np.ndarray, kind: str, label: str, pause_ms: float | None = None) -> None:
        nonlocal position
        items.append(Item(kind, label, position, position + voiced_end(audio), pause_ms))
        parts.extend([audio, silence(gap_s)])
        position += (len(audio) + int(gap_s * RATE)) / RATE

    if ALSA.is_dir():
        for name in HUMAN:
            add(read_human(name), "human", name.replace("_", " ").lower())
    for index, (head, tail) in enumerate(SPLIT_PHRASES):
        pause = PAUSES_MS[index % len(PAUSES_MS)]
        first, second = speak(head), speak(tail)
        first = first[: int(voiced_end(first) * RATE) + 1]  # the pause is exactly pause_ms of silence
        second = second[int(_voiced_start(second) * RATE) :]
        add(np.concatenate([first, silence(pause / 1000), second]), "espeak", f"{head} | {tail}", pause)
    for text in CLIP_SENTENCES:
        add(speak(text), "complete", text)
    return np.concatenate(parts), items


def _voiced_start(samples: np.ndarray, floor: int = 300) -> float:
    loud = np.flatnonzero(np.abs(samples[:, 0].astype(np.int32)) > floor)
    return loud[0] / RATE if len(loud) else 0.0


async def run_mode(config_path: str, overrides: dict[str, dict[str, Any]], clip: np.ndarray,
                   items: list[Item]) -> dict[str, Any]:  # fmt: skip
    """Play the clip through one endpointing mode; per item: utterances, pieces, first packet."""
    registry = StageRegistry()
    config = load_pipeline(config_path, registry)
    bus = EventBus()
    output = EncodingOutput(bus)
    runner = PipelineRunner(config, registry, output.sink, events=bus, params=overrides, resources=SharedModels())
    events: list[dict[str, Any]] = []
    bus.on_event(lambda e: events.append({**e, "_at": now()}))
    await runner.start()
    output.start()
    load_before = load_average()
    stamps = await play(runner, clip)
    await asyncio.sleep(1.5)
    load_after = load_average()
    await runner.stop()
    await output.stop()

    starts: dict[int, float] = {}
    for event in events:
        if event.get("type") == "vad" and event.get("state") == "start":
            starts[int(event["utterance"])] = float(event["audio_ms"]) / 1000
    rows = []
    for index, item in enumerate(items):
        following = items[index + 1].start_s if index + 1 < len(items) else float("inf")
        utterances = [u for u, at in starts.items() if item.start_s - 0.4 <= at < following - 0.4]
        of_it = [e for e in events if e.get("utterance") in utterances]
        pieces = [e["text"] for e in of_it if e.get("type") == "translation" and str(e.get("text", "")).strip()]
        heard = [e["text"] for e in of_it if e.get("type") == "transcript" and e.get("final")]
        end = sample_time(stamps, item.end_s)
        limit = sample_time(stamps, following) if index + 1 < len(items) else float("inf")
        first = next((at for at, peak in output.packets if end < at < limit and peak > AUDIBLE), None)
        waterfalls = [e for e in of_it if e.get("type") == "waterfall"]
        rows.append(
            {
                "waterfall": dict(waterfalls[-1]["components"], total_ms=waterfalls[-1]["total_ms"])
                if waterfalls
                else None,
                "kind": item.kind,
                "label": item.label,
                "pause_ms": item.pause_ms,
                "utterances": len(utterances),
                "pieces": len(pieces),
                "false_splits": max(0, len(pieces) - 1),
                "heard": heard,
                "said": pieces,
                "first_packet_ms": round((first - end) * 1000, 1) if first is not None else None,
            }
        )
    return {"loadavg_before": load_before, "loadavg_after": load_after, "rows": rows}


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """False splits by kind and the latency on complete sentences."""
    out: dict[str, Any] = {}
    for kind in ("human", "espeak"):
        of_kind = [r for r in rows if r["kind"] == kind]
        out[f"{kind}_false_splits"] = sum(r["false_splits"] for r in of_kind)
        out[f"{kind}_split_phrases"] = sum(1 for r in of_kind if r["false_splits"])
        out[f"{kind}_phrases"] = len(of_kind)
        out[f"{kind}_lost"] = sum(1 for r in of_kind if r["pieces"] == 0)
    complete = [r["first_packet_ms"] for r in rows if r["kind"] == "complete" and r["first_packet_ms"] is not None]
    out["complete_first_packet_ms"] = {"p50": pct(complete, 50), "p95": pct(complete, 95), "n": len(complete)}
    out["complete_lost"] = sum(1 for r in rows if r["kind"] == "complete" and r["first_packet_ms"] is None)
    out["false_splits"] = out["human_false_splits"] + out["espeak_false_splits"]
    # phrases with a pause: their latency too (the long wait is the price of not splitting)
    paused = [r["first_packet_ms"] for r in rows if r["kind"] != "complete" and r["first_packet_ms"] is not None]
    out["paused_phrase_first_packet_ms"] = {"p50": pct(paused, 50), "p95": pct(paused, 95), "n": len(paused)}
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    clip, items = labelled_clip(args.gap)
    common = parse_overrides(args.set)
    results: dict[str, Any] = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        overrides = {stage: {**MODES[mode].get(stage, {}), **common.get(stage, {})}
                     for stage in {*MODES[mode], *common}}  # fmt: skip
        run = await run_mode(args.pipeline, overrides, clip, items)
        results[mode] = {**score(run["rows"]), "overrides": overrides, **run}
    lines = []
    for mode, r in results.items():
        c = r["complete_first_packet_ms"]
        lines.append(
            f"{mode}: false splits {r['false_splits']} (human {r['human_false_splits']} in "
            f"{r['human_split_phrases']}/{r['human_phrases']} phrases, espeak {r['espeak_false_splits']} in "
            f"{r['espeak_split_phrases']}/{r['espeak_phrases']}); complete sentences first packet p50 {c['p50']} / "
            f"p95 {c['p95']} ms (lost {r['complete_lost']}); load {r['loadavg_before'][0]}->{r['loadavg_after'][0]}"
        )
    return {"items": len(items), "gap_s": args.gap, "modes": results, "summary": "\n".join(lines)}
