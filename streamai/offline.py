"""Offline runs: drive a pipeline from media files at real-time pace, write its output and a latency report.

Input frames are submitted when their media would have left a live sender (a 20 ms
audio packet when its last sample is captured, a video frame at its frame time),
with ``capture_time`` stamped at submission, so deadlines and drops behave as in a
live session. After the last frame an END_OF_STREAM control frame follows; the run
waits for it to come out of every branch (and for the output to go quiet) or for
``drain_timeout``.

Output placement (what a receiver would have played): every delivered frame is put
on the output timeline at its delivery time since the start of the stream (times
``speed``). Audio: gaps longer than one packet are filled with silence at their
place; smaller delivery jitter is absorbed by writing packets back to back, and a
packet never overwrites an earlier one. Video: each frame takes the frame slot of
its delivery time at the output frame rate (the input's, or 30 fps); empty slots
repeat the previous frame (black before the first). Offline runs keep the delivered
frames in memory: they are meant for clips, not hours.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .config import PipelineConfig
from .engine.runner import CollectingSink, PipelineRunner, split_session_params
from .events import Event
from .frames import AudioFrame, ControlFrame, ControlKind, Frame, FrameKind, TextFrame, VideoFrame, now
from .media.resample import StreamResampler
from .media.source import MediaSource, Y4MSource
from .media.wav import MediaFileError, write_wav
from .media.y4m import Y4MWriter
from .speech.captions import Caption, captions_from_events
from .stage import StageRegistry

OUTPUT_KINDS = {".wav": FrameKind.AUDIO, ".y4m": FrameKind.VIDEO}
QUIET_S = 0.3  # after end of stream: the output must stay quiet this long to count as drained


class OfflineError(RuntimeError):
    """An offline run that could not do what was asked; ``str()`` is one line."""


@dataclass
class OfflineResult:
    """What an offline run produced: the report, the written files, whether it drained in time."""

    report: dict[str, Any]
    written: list[str] = field(default_factory=list)
    drained: bool = True
    problems: list[str] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)  # speech pipelines: one an utterance


def output_kind(path: str | Path) -> FrameKind:
    """The frame kind an output file holds, from its extension."""
    kind = OUTPUT_KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise OfflineError(f"{path}: output must end in .wav (audio) or .y4m (video)")
    return kind


async def _feed(runner: PipelineRunner, source: MediaSource, start: float, speed: float) -> int:
    """Submit one source's frames at their media time; returns how many were submitted."""
    iterator = iter(source)
    count = 0
    while True:
        item = await asyncio.to_thread(next, iterator, None)  # decoding stays off the event loop
        if item is None:
            return count
        at, frame = item
        delay = start + at / speed - now()
        if delay > 0:
            await asyncio.sleep(delay)
        frame.capture_time = now()
        frame.deadline = math.inf  # the runner sets it from the capture time
        runner.submit(frame)
        count += 1
        if runner.failed is not None:
            return count


async def _drain(runner: PipelineRunner, sink: CollectingSink, timeout: float) -> bool:
    """Wait for END_OF_STREAM out of every branch and a quiet output; False on timeout."""
    branches = len(runner.branches)
    give_up = now() + timeout
    while now() < give_up and runner.failed is None:
        ends = sum(1 for _, f in sink.frames if isinstance(f, ControlFrame) and f.control is ControlKind.END_OF_STREAM)
        last = sink.frames[-1][0] if sink.frames else 0.0
        if ends >= branches and now() - last >= QUIET_S:
            return True
        await asyncio.sleep(0.02)
    return False


def _quantiles_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    data = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {
        "count": len(values),
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(data.max()), 3),
    }


def assemble_audio(
    deliveries: list[tuple[float, AudioFrame]], start: float, speed: float = 1.0
) -> tuple[np.ndarray, int]:
    """Delivered audio frames -> one int16 track at the first frame's rate and channel count."""
    if not deliveries:
        raise OfflineError("no audio frames reached the output")
    rate = deliveries[0][1].sample_rate
    channels = deliveries[0][1].channels
    pieces: list[tuple[int, np.ndarray]] = []
    cursor = 0
    converter = StreamResampler(rate)  # frames at another rate: one stream, no clicks between them
    for at, frame in deliveries:
        samples = frame.samples
        if frame.sample_rate != rate:
            samples = converter(samples, frame.sample_rate).reshape(-1, 1)
        if samples.shape[1] != channels:
            mono = samples.astype(np.int32).mean(axis=1, keepdims=True).astype(np.int16)
            samples = np.repeat(mono, channels, axis=1)
        ideal = max(0, round((at - start) * speed * rate))
        position = cursor if ideal - cursor <= len(samples) else ideal  # jitter absorbed, real gaps kept
        pieces.append((position, samples))
        cursor = position + len(samples)
    track = np.zeros((cursor, channels), np.int16)
    for position, samples in pieces:
        track[position : position + len(samples)] = samples
    return track, rate


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return image[rows][:, cols]


def write_video(
    path: str | Path, deliveries: list[tuple[float, VideoFrame]], start: float, fps: Fraction, speed: float = 1.0
) -> int:
    """Write delivered video frames to a y4m at ``fps``, each in the slot of its delivery time."""
    if not deliveries:
        raise OfflineError("no video frames reached the output")
    first = deliveries[0][1].image
    height, width = first.shape[:2]
    held = np.zeros_like(first)
    slot = 0
    with Y4MWriter(path, width, height, fps) as writer:
        for at, frame in deliveries:
            ideal = round((at - start) * speed * float(fps))
            while slot < ideal:  # hold the previous picture through the gap
                writer.write(held)
                slot += 1
            held = _fit(frame.image, height, width)
            writer.write(held)
            slot += 1
        return writer.frames


async def run_offline(
    config: PipelineConfig,
    registry: StageRegistry,
    sources: Sequence[MediaSource],
    outputs: Sequence[str | Path] = (),
    *,
    speed: float = 1.0,
    params: dict[str, Any] | None = None,
    drain_timeout: float = 10.0,
    on_event: Callable[[float, Event], None] | None = None,
) -> OfflineResult:
    """Run ``config`` over ``sources`` at ``speed`` x real time; write ``outputs``; return the report.

    ``on_event(media_seconds, event)`` is called for every session event as it is emitted.
    """
    if speed <= 0:
        raise OfflineError("--speed must be positive")
    kinds = {Path(p): output_kind(p) for p in outputs}
    sink = CollectingSink()
    session_params = split_session_params(params, config.stage_names()) if params else None
    runner = PipelineRunner(config, registry, sink, params=session_params)
    timed: list[tuple[float, Event]] = []  # (media seconds when emitted, event)
    start = now()

    def note(event: Event) -> None:
        at = max(0.0, (now() - start) * speed)
        timed.append((at, event))
        if on_event is not None:
            on_event(at, event)

    unsubscribe = runner.events.on_event(note)
    await runner.start()
    start = now()
    try:
        fed = await asyncio.gather(*(_feed(runner, source, start, speed) for source in sources))
        fed_at = now()
        runner.control(ControlKind.END_OF_STREAM)
        drained = await _drain(runner, sink, drain_timeout)
    finally:
        await runner.stop()
        unsubscribe()
    finished = now()

    result = OfflineResult(report={}, drained=drained)
    if runner.failed is not None:
        result.problems.append(f"pipeline failed: {runner.failed}")
    elif not drained:
        result.problems.append(f"pipeline did not drain within {drain_timeout:g} s after end of stream")

    by_kind: dict[FrameKind, list[tuple[float, Frame]]] = {}
    for at, frame in sink.frames:
        by_kind.setdefault(frame.kind, []).append((at, frame))
    video_fps = next((s.fps for s in sources if isinstance(s, Y4MSource)), Fraction(30))
    for path, kind in kinds.items():
        delivered = by_kind.get(kind, [])
        try:
            if kind is FrameKind.AUDIO:
                track, rate = assemble_audio(delivered, start, speed)  # type: ignore[arg-type]
                write_wav(path, track, rate)
            else:
                write_video(path, delivered, start, video_fps, speed)  # type: ignore[arg-type]
        except (OfflineError, MediaFileError) as exc:
            result.problems.append(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
            continue
        result.written.append(str(path))

    events = [event for _, event in timed]
    result.captions = captions_from_events(timed)
    end_to_end = {
        kind.value: _quantiles_ms([at - f.capture_time for at, f in by_kind.get(kind, [])])
        for kind in (FrameKind.AUDIO, FrameKind.VIDEO)
    }
    snapshot = runner.snapshot()
    result.report = {
        "pipeline": config.name,
        "budget_ms": config.budget_ms,
        "inputs": [{"path": s.path, "kind": s.kind.value, "seconds": round(s.duration, 3)} for s in sources],
        "outputs": result.written,
        "speed": speed,
        "media_seconds": round(max((s.duration for s in sources), default=0.0), 3),
        "wall_seconds": round(finished - start, 3),
        "drain_seconds": round(finished - fed_at, 3),
        "drained": drained,
        "failed": runner.failed,
        "problems": result.problems,
        "frames_submitted": dict(zip([s.path for s in sources], fed, strict=True)),
        "frames_in": snapshot["frames_in"],
        "frames_out": snapshot["frames_out"],
        "end_to_end": end_to_end,
        "drops": snapshot["drops"],
        "stages": snapshot["stages"],
        "latency_events": [e for e in events if e.get("type") == "latency"],
        "events": dict(Counter(str(e.get("type")) for e in events)),
        "errors": [e for e in events if e.get("type") in ("error", "warning")][:50],
        "text": [
            {"t_ms": round((at - start) * 1000, 1), "text": f.text, "final": f.final, "language": f.language}
            for at, f in by_kind.get(FrameKind.TEXT, [])
            if isinstance(f, TextFrame) and f.final
        ],
        **_speech_text(timed),
        "captions": [c.as_dict() for c in result.captions],
    }
    return result


def _speech_text(timed: list[tuple[float, Event]]) -> dict[str, Any]:
    """Final transcripts and translated clauses of a speech run, with media times (empty lists otherwise)."""
    keep = ("utterance", "text", "language", "latency_ms")
    transcripts = [
        {"t_s": round(at, 3), **{k: e[k] for k in keep if k in e}}
        for at, e in timed
        if e.get("type") == "transcript" and e.get("final")
    ]
    translations = [
        {"t_s": round(at, 3), "source": e.get("source"), "final": e.get("final"), **{k: e[k] for k in keep if k in e}}
        for at, e in timed
        if e.get("type") == "translation" and str(e.get("text", "")).strip()
    ]
    return {"transcripts": transcripts, "translations": translations}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines about a report."""
    lines = [
        f"pipeline {report['pipeline']}: {report['media_seconds']:g} s of media in {report['wall_seconds']:g} s, "
        f"frames in {report['frames_in']} out {report['frames_out']}"
    ]
    for kind, q in report["end_to_end"].items():
        if q["count"]:
            lines.append(
                f"  {kind} end-to-end ms: p50 {q['p50_ms']} p95 {q['p95_ms']} p99 {q['p99_ms']} ({q['count']} frames)"
            )
    for stage in report["stages"]:
        service = stage["service"]
        drops = ", ".join(f"{k} {v}" for k, v in stage["drops"].items()) or "none"
        lines.append(
            f"  stage {stage['name']}: processed {stage['processed']}, service p50 {service['p50_ms']} "
            f"p99 {service['p99_ms']} ms, drops: {drops}"
        )
    for event in report["latency_events"][:20]:
        fields = {k: v for k, v in event.items() if k not in ("type", "t")}
        lines.append(f"  latency {json.dumps(fields, default=str)}")
    return lines
