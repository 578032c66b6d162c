"""Speech translation latency: espeak-ng sentences at real-time pace through speech-translate, with the waterfall.

The clip: five one-clause sentences, ``--gap`` s of silence between them (2 s), fed at
real-time pace as 20 ms frames. Output goes through the node's own outbound audio track
(``ProcessedAudioTrack``: queue, 20 ms pacing) and aiortc's Opus encoder, as in a
session, without a network. Per sentence:

- ``first_packet_ms``: from the true end of speech (the clip's last voiced sample, known
  from the clip, as the capture time the feeder stamped on it) to the first encoded
  packet with translated audio in it (peak above -40 dBFS), measured here, outside the
  node's own accounting;
- the node's ``waterfall`` event for the utterance (vad, asr, mt, tts, outbound,
  encode; ``total_ms``), and the difference of the two;
- the node's ``latency`` event (final transcript, translation, first audio).

A sentence whose translated audio never comes before the next one starts is *lost*.
The load average is recorded before and after: figures are only meaningful when the
machine is quiet. ``--set stage.param=value`` overrides a stage's params (e.g.
``--set vad.endpointing=fixed --set asr.endpointing=fixed`` for the fixed-silence
endpointing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..config import load_pipeline
from ..engine import PipelineRunner
from ..frames import AudioFrame, now
from ..models import SharedModels
from ..speech.latency import COMPONENTS
from ..speech.text import word_error_rate
from ..stage import StageRegistry
from ..testing.speech import CLIP_SENTENCES, sentence_clip
from ..transport.outbound import ProcessedAudioTrack, TrackSink, sent_fields

ROOT = Path(__file__).resolve().parents[2]
RATE = 48_000
FRAME = 960
AUDIBLE = 328  # -40 dBFS: a packet with a sample above this carries translated speech


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "speech-translate.yaml"))
    parser.add_argument("--gap", type=float, default=2.0, help="seconds of silence after each sentence")
    parser.add_argument("--repeat", type=int, default=1, help="play the five-sentence clip this many times")
    parser.add_argument(
        "--set", action="append", default=[], metavar="STAGE.PARAM=VALUE", help="override a stage param"
    )


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["vad.silence_ms=250", "asr.endpointing=fixed"]`` -> ``{"vad": {"silence_ms": 250.0}, ...}``."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        stage, _, param = key.partition(".")
        if not stage or not param or not _:
            raise SystemExit(f"--set {item!r}: expected STAGE.PARAM=VALUE")
        out.setdefault(stage, {})[param] = yaml.safe_load(value)
    return out


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _rtf(records: list[dict[str, float]]) -> float | None:
    audio = sum(r["audio_s"] for r in records)
    return round(sum(r["seconds"] for r in records) / audio, 3) if audio else None


class EncodingOutput:
    """The node's outbound audio track and aiortc's Opus encoder, pumped like a session's sender."""

    def __init__(self, runner_events: Any) -> None:
        from aiortc.codecs.opus import OpusEncoder

        self.track = ProcessedAudioTrack(on_sent=self._on_sent)
        self.sink = TrackSink(None, self.track)
        self.encoder = OpusEncoder()
        self.events = runner_events
        self.packets: list[tuple[float, int]] = []  # (handed to the transport at, peak |sample|)
        self._task: asyncio.Task[None] | None = None

    def _on_sent(self, kind: str, latency: float, frame: Any, timing: Any = None) -> None:
        self.events.emit("latency", **sent_fields(kind, latency, frame, timing))

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.track.recv()
            peak = int(np.abs(frame.to_ndarray().astype(np.int32)).max())
            await loop.run_in_executor(None, self.encoder.encode, frame, False)
            self.packets.append((now(), peak))

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.track.stop()


async def play(runner: PipelineRunner, clip: np.ndarray) -> list[float]:
    """Submit ``clip`` as 20 ms frames at real-time pace; the capture time stamped on each frame."""
    stamps: list[float] = []
    start = now()
    for index, offset in enumerate(range(0, len(clip), FRAME)):
        chunk = clip[offset : offset + FRAME]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros((FRAME - len(chunk), 1), np.int16)])
        delay = start + (index + 1) * FRAME / RATE - now()
        await asyncio.sleep(max(0.0, delay))
        frame = AudioFrame(samples=chunk, sample_rate=RATE, pts=offset)
        stamps.append(frame.capture_time)
        runner.submit(frame)
    return stamps


def sample_time(stamps: list[float], seconds: float) -> float:
    """When the clip's sample at ``seconds`` was captured (its frame's stamp, less the samples after it)."""
    index = int(seconds * RATE)
    frame = min(index // FRAME, len(stamps) - 1)
    return stamps[frame] - (FRAME - 1 - index % FRAME) / RATE


def by_sentence(events: list[dict[str, Any]], starts_ms: list[float]) -> dict[int, int]:
    """VAD utterance -> sentence index, by where in the clip the utterance started."""
    mapping: dict[int, int] = {}
    for event in events:
        if event.get("type") == "vad" and event.get("state") == "start":
            at = float(event.get("audio_ms", 0))
            index = max((i for i, s in enumerate(starts_ms) if s - 400 <= at), default=0)
            mapping[int(event["utterance"])] = index
    return mapping


def summarize_waterfalls(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """p50 / p95 of each waterfall component and of the total, over the rows that have one."""
    out: dict[str, dict[str, float | None]] = {}
    for name in (*COMPONENTS, "total_ms"):
        values = [r["waterfall"][name] for r in rows if r.get("waterfall") and r["waterfall"].get(name) is not None]
        out[name] = {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)}
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    registry = StageRegistry()
    config = load_pipeline(args.pipeline, registry)
    overrides = parse_overrides(args.set)
    texts = list(CLIP_SENTENCES) * max(1, args.repeat)
    clip, ends = sentence_clip(texts, gap_s=args.gap)
    sentence_starts = [0.5 * 1000] + [(e + args.gap * 0.5) * 1000 for e in ends[:-1]]
    events: list[dict[str, Any]] = []
    runner: PipelineRunner | None = None

    def build(output_events: Any) -> PipelineRunner:
        return PipelineRunner(
            config, registry, output.sink, events=output_events, params=overrides, resources=SharedModels()
        )

    from ..events import EventBus

    bus = EventBus()
    output = EncodingOutput(bus)
    runner = build(bus)
    bus.on_event(lambda e: events.append({**e, "_at": now()}))
    started = time.perf_counter()
    await runner.start()
    load_s = time.perf_counter() - started
    output.start()
    load_before = load_average()
    process = psutil.Process()
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    stamps = await play(runner, clip)
    await asyncio.sleep(1.5)
    wall = time.perf_counter() - wall_started
    cpu_percent = 100 * (time.process_time() - cpu_started) / wall
    load_after = load_average()
    stages = {r.name: r.stage for r in runner.stage_runners}
    snapshot = runner.snapshot()
    await runner.stop()
    await output.stop()
    del process

    mapping = by_sentence(events, sentence_starts)
    true_ends = [sample_time(stamps, e) for e in ends]
    rows = sentence_rows(texts, true_ends, events, mapping, output.packets)
    figures = {key: column_figures(rows, key) for key in ("first_packet_ms", "final_transcript_ms", "first_audio_ms")}
    agreement = [
        r["first_packet_ms"] - r["waterfall"]["total_ms"]
        for r in rows
        if r["first_packet_ms"] is not None and r.get("waterfall")
    ]
    asr, mt, tts = stages.get("asr"), stages.get("translate"), stages.get("tts")
    rtf = {
        "asr_decode": _rtf(getattr(asr, "decodes", [])),
        "tts": _rtf(getattr(tts, "synths", [])),
        "mt_ms_per_call_p50": round(1000 * statistics.median([c["seconds"] for c in mt.calls]), 2)
        if mt is not None and getattr(mt, "calls", None)
        else None,
    }
    wers = [r["wer"] for r in rows if r["wer"] is not None]
    lost = sum(1 for r in rows if r["first_packet_ms"] is None)
    waterfall = summarize_waterfalls(rows)
    result: dict[str, Any] = {
        "pipeline": config.name,
        "overrides": overrides,
        "sentences": len(texts),
        "gap_s": args.gap,
        "load_s": round(load_s, 2),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "latency_ms": figures,
        "waterfall_ms": waterfall,
        "first_packet_minus_node_total_ms": {
            "p50": pct(agreement, 50),
            "min": min(agreement, default=None),
            "max": max(agreement, default=None),
        },
        "lost": lost,
        "utterances_seen": len({e["utterance"] for e in events if e.get("type") == "vad"}),
        "rtf": rtf,
        "cpu_percent_of_one_core": round(cpu_percent, 1),
        "mean_wer": round(float(np.mean(wers)), 3) if wers else None,
        "drops": snapshot.get("drops", {}),
        "rows": rows,
    }
    p, w = figures["first_packet_ms"], waterfall
    parts = ", ".join(f"{k.removesuffix('_ms')} {w[k]['p50']}" for k in COMPONENTS)
    result["summary"] = (
        f"{config.name}: {len(texts)} espeak-ng sentences, {args.gap} s apart, real-time pace, load "
        f"{load_before[0]}->{load_after[0]} on {psutil.cpu_count()} CPUs. Speech end -> first translated packet "
        f"encoded: p50 {p['p50']} / p95 {p['p95']} ms (n={p['n']}), lost {lost}. Node waterfall p50: {parts}; "
        f"total {w['total_ms']['p50']} / p95 {w['total_ms']['p95']} ms. Outside minus node: p50 "
        f"{result['first_packet_minus_node_total_ms']['p50']} ms. RTF Whisper {rtf['asr_decode']}, Piper "
        f"{rtf['tts']}; mean WER {result['mean_wer']}."
    )
    return result


def column_figures(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)}


def sentence_rows(
    texts: list[str],
    true_ends: list[float],
    events: list[dict[str, Any]],
    mapping: dict[int, int],
    packets: list[tuple[float, int]],
) -> list[dict[str, Any]]:
    """One row a sentence: first audible packet after its end, the node's events for its utterances."""
    rows = []
    for index, end in enumerate(true_ends):
        following = true_ends[index + 1] - 0.3 if index + 1 < len(true_ends) else float("inf")
        first = next((at for at, peak in packets if end < at < following and peak > AUDIBLE), None)
        utterances = sorted(u for u, s in mapping.items() if s == index)
        of_it = [e for e in events if e.get("utterance") in utterances]
        finals = [e["text"] for e in of_it if e.get("type") == "transcript" and e.get("final")]
        waterfalls = [e for e in of_it if e.get("type") == "waterfall"]
        latencies = [e for e in of_it if e.get("type") == "latency" and "kind" not in e]
        waterfall = dict(waterfalls[-1]["components"], total_ms=waterfalls[-1]["total_ms"]) if waterfalls else None
        heard = " ".join(finals)
        rows.append(
            {
                "sentence": index + 1,
                "reference": texts[index],
                "transcript": heard or None,
                "wer": round(word_error_rate(texts[index], heard), 3) if heard else None,
                "utterances": len(utterances),
                "first_packet_ms": round((first - end) * 1000, 1) if first is not None else None,
                "waterfall": waterfall,
                "final_transcript_ms": latencies[-1].get("final_transcript_ms") if latencies else None,
                "first_audio_ms": latencies[-1].get("first_audio_ms") if latencies else None,
                "translations": [e["text"] for e in of_it if e.get("type") == "translation" and e.get("text")],
            }
        )
    return rows
