"""Speech translation latency: N espeak-ng utterances at real-time pace through speech-translate.

Per utterance, measured from the true end of speech in the input (the capture time of the
frame holding the clip's last voiced sample, known from the clip, not from the VAD):
final transcript, final translation, and the first translated audio delivered to the
sink after speech end (audio of the utterance's last clause; audio of earlier clauses
may have started before the speaker stopped). Also the real-time factor of each model
and the process's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..config import load_pipeline
from ..engine import PipelineRunner
from ..frames import AudioFrame, Frame, FrameKind, now
from ..models import SharedModels
from ..speech.text import word_error_rate
from ..stage import StageRegistry
from ..testing.speech import SENTENCES, feed, silence, speak

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "speech-translate.yaml"))
    parser.add_argument("--utterances", type=int, default=8, help="how many utterances (sentences cycle)")
    parser.add_argument("--gap", type=float, default=3.5, help="seconds of silence after each utterance")


class _TimedSink:
    def __init__(self) -> None:
        self.audio: list[tuple[float, AudioFrame]] = []
        self.frames: list[tuple[float, Frame]] = []

    def deliver(self, frame: Frame) -> None:
        at = now()
        self.frames.append((at, frame))
        if isinstance(frame, AudioFrame):
            self.audio.append((at, frame))


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _rtf(records: list[dict[str, float]]) -> float | None:
    audio = sum(r["audio_s"] for r in records)
    return round(sum(r["seconds"] for r in records) / audio, 3) if audio else None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    registry = StageRegistry()
    config = load_pipeline(args.pipeline, registry)
    sink = _TimedSink()
    runner = PipelineRunner(config, registry, sink, resources=SharedModels())
    events: list[tuple[float, dict[str, Any]]] = []
    runner.events.on_event(lambda e: events.append((now(), e)))
    started = time.perf_counter()
    await runner.start()
    load_s = time.perf_counter() - started
    texts = list(SENTENCES.values())
    process = psutil.Process()
    process.cpu_percent(None)
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    speech_ends: list[float] = []
    references: list[str] = []
    for index in range(args.utterances):
        text = texts[index % len(texts)]
        clip = np.concatenate([silence(0.3), speak(text), silence(args.gap)])
        speech_ends.append(await feed(runner, clip, speed=1.0))
        references.append(text)
    await asyncio.sleep(1.0)
    wall = time.perf_counter() - wall_started
    cpu_percent = 100 * (time.process_time() - cpu_started) / wall
    stages = {r.name: r.stage for r in runner.stage_runners}
    snapshot = runner.snapshot()
    await runner.stop()

    finals = [(at, e) for at, e in events if e["type"] == "transcript" and e["final"]]
    translations = [(at, e) for at, e in events if e["type"] == "translation" and e["final"]]
    rows = []
    for index, end in enumerate(speech_ends):
        next_end = speech_ends[index + 1] if index + 1 < len(speech_ends) else float("inf")
        final = next(((at, e) for at, e in finals if end - 1.0 < at < next_end), None)
        translation = next((at for at, _ in translations if end - 1.0 < at < next_end), None)
        audio = next((at for at, f in sink.audio if end < at < next_end and f.capture_time >= end - 0.05), None)
        rows.append(
            {
                "utterance": index + 1,
                "reference": references[index],
                "transcript": final[1]["text"] if final else None,
                "wer": round(word_error_rate(references[index], final[1]["text"]), 3) if final else None,
                "final_transcript_ms": round((final[0] - end) * 1000, 1) if final else None,
                "translation_ms": round((translation - end) * 1000, 1) if translation else None,
                "first_audio_ms": round((audio - end) * 1000, 1) if audio else None,
            }
        )

    def column(key: str) -> list[float]:
        return [r[key] for r in rows if r[key] is not None]

    figures = {
        key: {"p50": _pct(column(key), 50), "p95": _pct(column(key), 95), "n": len(column(key))}
        for key in ("final_transcript_ms", "translation_ms", "first_audio_ms")
    }
    asr, mt, tts = stages.get("asr"), stages.get("translate"), stages.get("tts")
    rtf = {
        "asr_decode": _rtf(getattr(asr, "decodes", [])),
        "tts": _rtf(getattr(tts, "synths", [])),
        "mt_ms_per_call_p50": round(1000 * statistics.median([c["seconds"] for c in mt.calls]), 2)
        if mt is not None and mt.calls
        else None,
    }
    wers = column("wer")
    stage_events = [e for _, e in events if e["type"] == "latency"]
    result: dict[str, Any] = {
        "pipeline": config.name,
        "utterances": args.utterances,
        "load_s": round(load_s, 2),
        "latency_ms": figures,
        "rtf": rtf,
        "cpu_percent_of_one_core": round(cpu_percent, 1),
        "mean_wer": round(float(np.mean(wers)), 3) if wers else None,
        "drops": snapshot.get("drops", {}),
        "late_audio_frames": sum(1 for at, f in sink.audio if at > f.deadline),
        "server_side_latency_events": stage_events,
        "rows": rows,
        "frames_out": {k: v for k, v in snapshot.get("frames_out", {}).items()},
        "audio_out_s": round(sum(f.duration for _, f in sink.audio), 2),
        "text_frames_out": sum(1 for _, f in sink.frames if f.kind is FrameKind.TEXT),
    }
    f, t, a = (figures[k] for k in ("final_transcript_ms", "translation_ms", "first_audio_ms"))
    result["summary"] = (
        f"{config.name}: {args.utterances} espeak-ng utterances at real-time pace on {psutil.cpu_count()} CPUs. "
        f"Speech end -> final transcript p50 {f['p50']} ms / p95 {f['p95']} ms; -> final translation "
        f"p50 {t['p50']} / p95 {t['p95']} ms; -> first translated audio of the last clause at the output "
        f"p50 {a['p50']} / p95 {a['p95']} ms (n={a['n']}). RTF: Whisper decodes {rtf['asr_decode']}, "
        f"Piper {rtf['tts']}; MT {rtf['mt_ms_per_call_p50']} ms a call. CPU {result['cpu_percent_of_one_core']}% "
        f"of one core; mean WER {result['mean_wer']}. The VAD's endpoint silence sits inside every figure."
    )
    return result
