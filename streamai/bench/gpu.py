"""One-shot accelerator check (``scripts/gpu-check``): SD-Turbo's full architecture on this machine.

Builds ``sd-turbo-architecture-random`` (SD-Turbo's exact shapes, random weights, float16 on
disk, see ``streamai.models.sd_turbo_architecture``) into the cache, loads it through the
project's own loader (``from_pretrained(..., local_files_only=True)``; fp16 + channels-last on
CUDA, its TAESD-shaped tiny autoencoder), and drives the real ``avatar-diffusion`` stage through
the engine: img2img at ``--size`` (2 steps x strength 0.5 = one UNet pass), one frame in flight,
back to back. Prints frames per second, per-frame p50/p99, and prompt-change latency (a PROMPT
control to the first frame generated with it). Then Whisper's path on the same device
(float16 on CUDA, int8 on CPU) when faster-whisper and a Whisper model are importable here.

``--device cpu --scale small --size 64`` runs the same code end to end in seconds (the test
suite does). Published reference: StreamDiffusion's img2img with SD-Turbo, 1 step, TAESD, on an
RTX 4090: 93.9 fps (its README; stream batch and TensorRT, which this check does not use).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from typing import Any

import numpy as np

STREAMDIFFUSION_4090_FPS = 93.9  # StreamDiffusion README, img2img, SD-Turbo, 1 step, TAESD, RTX 4090


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--scale", choices=["full", "small"], default="full", help="small: same code, tiny widths")
    parser.add_argument("--size", type=int, default=512, help="side of the img2img input and output")
    parser.add_argument("--frames", type=int, default=100, help="timed frames after warm-up")
    parser.add_argument("--prompts", type=int, default=10, help="prompt changes timed")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (minutes of compiling)")
    parser.add_argument("--cache", default=None, help="where the generated model goes (default: STREAMAI_CACHE)")
    parser.add_argument("--no-whisper", action="store_true")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    else:
        info["cpus"] = len(os.sched_getaffinity(0))
    return info


async def _diffusion(args: argparse.Namespace, device: str) -> dict[str, Any]:
    from ..config import PipelineConfig
    from ..engine import CollectingSink, PipelineRunner
    from ..frames import ControlKind, VideoFrame, now
    from ..models.sd_turbo_architecture import ensure_sd_turbo_architecture
    from ..stage import StageRegistry

    started = time.perf_counter()
    folder = ensure_sd_turbo_architecture(args.cache, args.scale)
    build_s = time.perf_counter() - started
    params = {
        "size": args.size,
        "steps": args.steps,
        "strength": args.strength,
        "tiny_vae": "taesd",
        "compile_unet": args.compile,
        "event_every": 1_000_000,
    }
    stage = {"name": "diffusion", "type": "avatar-diffusion", "model": str(folder), "device": device, "params": params}
    # raw speed: a budget nothing is dropped for
    config = PipelineConfig.model_validate({"name": "gpu-check", "budget_ms": 60_000, "stages": [stage]})
    registry = StageRegistry()
    sink = CollectingSink()
    runner = PipelineRunner(config, registry, sink)
    started = time.perf_counter()
    await runner.start()  # load + two warm-up passes
    load_s = time.perf_counter() - started
    image = np.random.default_rng(1).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)

    def video() -> list[tuple[float, Any]]:
        return [(at, f) for at, f in sink.frames if isinstance(f, VideoFrame)]

    async def one(pts: int) -> tuple[float, VideoFrame]:
        """One frame in, wait for it out: (seconds, the frame)."""
        before = len(video())
        sent = now()
        runner.submit(VideoFrame(image=image, pts=pts))
        while len(video()) == before:
            if runner.failed:
                raise RuntimeError(runner.failed)
            await asyncio.sleep(0.0005)
        at, frame = video()[-1]
        return at - sent, frame

    for pts in range(3):  # past the warm-up's shapes
        await one(pts)
    times: list[float] = []
    began = now()
    for pts in range(args.frames):
        elapsed, _ = await one(100 + pts)
        times.append(elapsed)
    wall = now() - began

    prompt_wall: list[float] = []  # the control's submission to the first frame with it, here
    for index in range(args.prompts):
        text = f"a portrait, style {index}"
        asked = now()
        runner.control(ControlKind.PROMPT, {"text": text})
        for pts in range(50):
            _, frame = await one(1000 + index * 50 + pts)
            if frame.meta.get("prompt") == text:
                prompt_wall.append(now() - asked)
                break
    stage_prompt = runner.stats.stages["diffusion"].histograms.get("prompt_to_frame")
    await runner.stop()
    return {
        "model": "sd-turbo-architecture-random",
        "scale": args.scale,
        "folder": str(folder),
        "build_s": round(build_s, 1),
        "load_and_warmup_s": round(load_s, 1),
        "size": args.size,
        "unet_passes_per_frame": int(args.steps * args.strength),
        "tiny_vae": "taesd",
        "dtype": "float16" if device == "cuda" else "float32",
        "frames": len(times),
        "fps": round(len(times) / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": _ms(_pct(times, 0.5)), "p99": _ms(_pct(times, 0.99)), "max": _ms(max(times))},
        "prompt_change_ms": {
            "applied": len(prompt_wall),
            "p50": _ms(_pct(prompt_wall, 0.5)),
            "max": _ms(max(prompt_wall, default=None)),
            "stage_p50": _ms(stage_prompt.quantile(0.5)) if stage_prompt else None,
        },
    }


def _whisper(device: str) -> dict[str, Any]:
    """Whisper tiny.en through faster-whisper on ``device`` (float16 on CUDA, int8 on CPU), or why not."""
    try:
        from ..models.speech import load_whisper
    except ImportError as exc:
        return {"skipped": f"faster-whisper is not importable here ({exc})"}
    compute = "float16" if device == "cuda" else "int8"
    try:
        model = load_whisper("whisper-tiny-en", device=device)
    except Exception as exc:  # a missing model package or a CUDA library (libcublas.so.12) not on this machine
        return {"skipped": f"{type(exc).__name__}: {exc}"[:400], "compute_type": compute}
    rng = np.random.default_rng(0)
    clip = (0.05 * rng.standard_normal(16000 * 5)).astype(np.float32)  # 5 s; timing, not words
    times = []
    for _ in range(6):
        started = time.perf_counter()
        segments, _info = model.transcribe(clip, beam_size=1, language="en", without_timestamps=True)
        list(segments)
        times.append(time.perf_counter() - started)
    times = times[1:]
    return {"model": "whisper-tiny-en", "compute_type": compute, "clip_s": 5.0, "p50_ms": _ms(_pct(times, 0.5))}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    info = _device_info(device)
    diffusion = await _diffusion(args, device)
    whisper = {"skipped": "--no-whisper"} if args.no_whisper else await asyncio.to_thread(_whisper, device)
    lat, prompt = diffusion["latency_ms"], diffusion["prompt_change_ms"]
    where = info.get("gpu") or f"{info.get('cpus')} CPU cores"
    lines = [
        f"{where}, torch {info['torch']}: SD-Turbo architecture ({args.scale}), img2img {args.size}x{args.size}, "
        f"{diffusion['unet_passes_per_frame']} UNet pass, TAESD, {diffusion['dtype']}",
        f"  {diffusion['fps']} fps, per frame p50/p99 {lat['p50']}/{lat['p99']} ms "
        f"(StreamDiffusion, RTX 4090, published: {STREAMDIFFUSION_4090_FPS} fps)",
        f"  prompt change -> first frame with it: p50 {prompt['p50']} ms, max {prompt['max']} ms "
        f"({prompt['applied']} of {args.prompts}); stage-side p50 {prompt['stage_p50']} ms",
        f"  build {diffusion['build_s']} s, load + warm-up {diffusion['load_and_warmup_s']} s",
    ]
    if "skipped" in whisper:
        lines.append(f"  Whisper: skipped: {whisper['skipped']}")
    else:
        lines.append(f"  Whisper tiny.en {whisper['compute_type']}: 5 s clip in p50 {whisper['p50_ms']} ms")
    return {"device_info": info, "diffusion": diffusion, "whisper": whisper, "summary": "\n".join(lines)}
