"""Engine overhead per frame per hop for a chain of passthrough stages at live audio/video rates.

Video: 30 fps 640x480 RGB frames (one array, passed by reference, never copied);
audio: 50 packets/s of 20 ms at 48 kHz. Each frame is stamped when submitted and
when the sink receives it; overhead per hop = (delivery - submit) / stages. Also
reported: each stage's queue wait and service time, and the event-loop lag (how
late a 1 ms timer fires) while the chain runs.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import numpy as np

from ..config import parse_pipeline
from ..engine.runner import PipelineRunner
from ..frames import AudioFrame, Frame, VideoFrame, now
from ..stage import StageRegistry

GOAL_P99_US = 1000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    parser.add_argument("--stages", type=int, default=5, help="passthrough stages in the chain (default 5)")
    parser.add_argument("--fps", type=float, default=30.0, help="video frames per second (0: no video)")
    parser.add_argument("--audio-pps", type=float, default=50.0, help="audio packets per second (0: no audio)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)


class _TimingSink:
    """Keeps (submit, delivery) times per delivered media frame."""

    def __init__(self) -> None:
        self.video: list[float] = []
        self.audio: list[float] = []

    def deliver(self, frame: Frame) -> None:
        at = now()
        if isinstance(frame, VideoFrame):
            self.video.append(at - frame.capture_time)
        elif isinstance(frame, AudioFrame):
            self.audio.append(at - frame.capture_time)


def _us(values: list[float] | np.ndarray, scale: float = 1.0) -> dict[str, float | int | None]:
    if len(values) == 0:
        return {"count": 0, "p50_us": None, "p99_us": None, "max_us": None}
    data = np.asarray(values) * 1e6 / scale
    p50, p99 = np.percentile(data, [50, 99])
    return {
        "count": len(data),
        "p50_us": round(float(p50), 1),
        "p99_us": round(float(p99), 1),
        "max_us": round(float(data.max()), 1),
    }


async def _paced(rate: float, duration: float, make: Any, runner: PipelineRunner, start: float) -> int:
    if rate <= 0:
        return 0
    count = int(duration * rate)
    for index in range(count):
        delay = start + index / rate - now()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = make(index)
        frame.capture_time = now()
        runner.submit(frame)
    return count


async def _loop_lag(stop: asyncio.Event, samples: list[float], interval: float = 0.001) -> None:
    while not stop.is_set():
        before = now()
        await asyncio.sleep(interval)
        samples.append(now() - before - interval)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.stages < 1:
        raise SystemExit("--stages must be at least 1")
    stages = "\n".join(f"  - {{name: p{i + 1}, type: passthrough}}" for i in range(args.stages))
    config = parse_pipeline(f"name: engine-bench\nbudget_ms: 1000\nstages:\n{stages}\n", "<bench>", StageRegistry())
    sink = _TimingSink()
    runner = PipelineRunner(config, StageRegistry(), sink)
    image = np.zeros((args.height, args.width, 3), np.uint8)
    silence = np.zeros((960, 1), np.int16)

    def video(index: int) -> VideoFrame:
        return VideoFrame(image=image, pts=index * 3000)

    def audio(index: int) -> AudioFrame:
        return AudioFrame(samples=silence, sample_rate=48_000, pts=index * 960)

    await runner.start()
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(_loop_lag(stop, lag))
    start = now() + 0.05
    sent_video, sent_audio = await asyncio.gather(
        _paced(args.fps, args.duration, video, runner, start),
        _paced(args.audio_pps, args.duration, audio, runner, start),
    )
    await asyncio.sleep(0.2)
    stop.set()
    await lag_task
    await runner.stop()

    hops = args.stages
    both = sink.video + sink.audio
    per_hop = {"all": _us(both, hops), "video": _us(sink.video, hops), "audio": _us(sink.audio, hops)}
    stage_rows = [
        {
            "name": s.name,
            "queue_wait_us": _us(list(s.queue_wait.recent)),
            "service_us": _us(list(s.service.recent)),
            "drops": dict(s.drops),
        }
        for s in runner.stats.stages.values()
    ]
    p99 = per_hop["all"]["p99_us"]
    verdict = "meets" if p99 is not None and p99 < GOAL_P99_US else "MISSES"
    lag_stats = _us(lag)
    summary = (
        f"engine overhead per hop, {hops} passthrough stages, {args.duration:g} s, "
        f"{len(sink.video)}/{sent_video} video + {len(sink.audio)}/{sent_audio} audio frames delivered: "
        f"p50 {per_hop['all']['p50_us']} µs, p99 {p99} µs ({verdict} the p99 < {GOAL_P99_US:g} µs goal); "
        f"end-to-end p99 {_us(both)['p99_us']} µs; event-loop lag p50 {lag_stats['p50_us']} "
        f"p99 {lag_stats['p99_us']} µs"
    )
    return {
        "summary": summary,
        "config": {
            "stages": hops,
            "duration_s": args.duration,
            "fps": args.fps,
            "audio_pps": args.audio_pps,
            "frame": [args.height, args.width, 3],
        },
        "sent": {"video": sent_video, "audio": sent_audio},
        "delivered": {"video": len(sink.video), "audio": len(sink.audio)},
        "per_hop": per_hop,
        "end_to_end": _us(both),
        "event_loop_lag": lag_stats,
        "stages": stage_rows,
        "goal_p99_us": GOAL_P99_US,
        "meets_goal": verdict == "meets",
    }
