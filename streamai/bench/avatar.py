"""Face avatar (face-detect -> avatar-diffusion -> composite) through the engine at 30 fps: fps, latency, drops.

Frames of the public-domain astronaut face on a 640x480 camera frame are fed at
``--fps`` to ``pipelines/face-avatar-tiny.yaml`` (the tiny generated model unless
``--model`` says otherwise), once per crop size. Latency is capture -> delivery on the
engine's clock (the engine's ``end_to_end`` histogram). Time shares come from each
stage's summed service time; the codec share uses a standalone VP8 encode + decode
of the delivered 640x480 frames with PyAV (the WebRTC path decodes every camera frame
and encodes one output frame per camera frame, repeating the last good one).

Prompt -> face: every ``--prompt-every`` seconds a new prompt is sent as a control frame
while the camera runs; the diffusion stage reports the time from its arrival to the first
frame generated with it (``prompt_to_frame``), given as p50/p95 with how many prompts were
applied. ``--degrade 384,256`` adds a quality ladder to the diffusion stage (sizes to step
down to); its steps and the frames processed at each level are reported.
`--model sd-turbo-architecture-random --tiny-vae taesd` measures SD-Turbo's full architecture.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "face-avatar-tiny.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="256,512", help="crop sizes (the model runs at the crop size)")
    parser.add_argument("--seconds", type=float, default=8.0, help="feeding time per size")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate fed in")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--model", default=None, help="catalog id or folder (default: the pipeline's tiny model)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--pipeline", default=str(PIPELINE))
    parser.add_argument("--no-codec", action="store_true", help="skip the VP8 encode/decode timing")
    parser.add_argument("--prompt-every", type=float, default=2.0, help="seconds between prompt changes (0: none)")
    parser.add_argument("--tiny-vae", default=None, help="tiny autoencoder folder ('taesd' inside the model's)")
    parser.add_argument("--degrade", default="", help="quality ladder for the diffusion stage: sizes, e.g. 384,256")
    parser.add_argument("--budget-ms", type=float, default=None, help="pipeline budget (default: the YAML's)")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def _run_size(args: argparse.Namespace, size: int, image: np.ndarray) -> tuple[dict[str, Any], list[np.ndarray]]:
    from ..config import load_pipeline
    from ..engine import CollectingSink, PipelineRunner
    from ..frames import ControlKind, VideoFrame, now
    from ..stage import StageRegistry

    registry = StageRegistry()
    config = load_pipeline(args.pipeline, registry)
    for stage_config in config.stages or []:
        if stage_config.type == "avatar-diffusion":
            stage_config.model = args.model or stage_config.model
            stage_config.device = args.device or stage_config.device
        if stage_config.type == "avatar-diffusion" and args.degrade:
            stage_config.degrade = [{"size": int(s)} for s in args.degrade.split(",") if s.strip()]
    if args.budget_ms:
        config = config.model_copy(update={"budget_ms": args.budget_ms})
    names = {c.type: (c.name or c.type) for c in config.stages or []}
    diffusion_params: dict[str, Any] = {"size": size, "steps": args.steps, "strength": args.strength}
    if args.tiny_vae:
        diffusion_params["tiny_vae"] = args.tiny_vae
    params = {names["face-detect"]: {"crop_size": size}, names["avatar-diffusion"]: diffusion_params}
    sink = CollectingSink()
    runner = PipelineRunner(config, registry, sink, params=params)
    loading = now()
    await runner.start()
    start_s = now() - loading
    period, sent, prompts = 1 / args.fps, 0, 0
    started = now()
    while now() - started < args.seconds:
        if args.prompt_every > 0 and now() - started >= (prompts + 1) * args.prompt_every:
            prompts += 1
            runner.control(ControlKind.PROMPT, {"text": f"a portrait, style {prompts}"})
        runner.submit(VideoFrame(image=image, pts=sent))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * period - now()))
    fed_s = now() - started
    await asyncio.sleep(runner.budget_s + 0.2)  # let admitted frames finish
    await runner.stop()

    stats = runner.stats
    out = stats.frames_out.get("video", 0)
    e2e = stats.end_to_end
    labels = {"face-detect": "face", "avatar-diffusion": "diffusion", "composite": "composite"}
    busy = {label: stats.stages[names[kind]].service.total for kind, label in labels.items() if kind in names}
    diffusion = stats.stages[names["avatar-diffusion"]]
    prompt = diffusion.histograms.get("prompt_to_frame")
    quality = diffusion.snapshot().get("quality")
    steps = [
        {k: e[k] for k in ("direction", "level", "params", "estimate_ms", "slack_ms", "retry")}
        for e in runner.events.history
        if e["type"] == "degrade"
    ]
    result = {
        "crop": size,
        "start_s": round(start_s, 2),
        "prompts_sent": prompts,
        "prompt_to_frame_ms": {
            "applied": prompt.count if prompt else 0,
            "p50": _ms(prompt.quantile(0.5)) if prompt else None,
            "p95": _ms(prompt.quantile(0.95)) if prompt else None,
        },
        "quality": quality,
        "degrade_steps": steps[:50],
        "frames_in": sent,
        "frames_out": out,
        "fps_in": round(sent / fed_s, 2),
        "fps_out": round(out / fed_s, 2),
        "latency_ms": {"p50": _ms(e2e.quantile(0.5)), "p95": _ms(e2e.quantile(0.95)), "p99": _ms(e2e.quantile(0.99))},
        "max_latency_ms": _ms(max((at - f.capture_time for at, f in sink.frames), default=None)),
        "late_delivered": sum(1 for at, f in sink.frames if at > f.deadline),
        "drops": {name: dict(s.drops) for name, s in stats.stages.items() if s.drops},
        "service_ms": {name: s.service.summary_ms() for name, s in stats.stages.items() if s.service.count},
        "busy_s_per_s": {name: round(total / fed_s, 3) for name, total in busy.items()},
    }
    images = [f.image for _, f in sink.frames if hasattr(f, "image")]
    return result, images


def _vp8_ms(images: list[np.ndarray], fps: float) -> dict[str, float]:
    """Mean VP8 encode (RGB -> I420 -> VP8) and decode (VP8 -> RGB) time per frame, PyAV/libvpx realtime."""
    import av

    height, width = images[0].shape[:2]
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, round(fps))
    encoder.bit_rate = 1_500_000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    decoder = av.CodecContext.create("vp8", "r")
    encode_s = decode_s = 0.0
    count = 0
    for index, image in enumerate(images):
        t0 = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets = encoder.encode(frame)
        t1 = time.perf_counter()
        for packet in packets:
            for decoded in decoder.decode(packet):
                decoded.to_ndarray(format="rgb24")
        t2 = time.perf_counter()
        encode_s += t1 - t0
        decode_s += t2 - t1
        count += 1
    return {"encode_ms": round(encode_s / count * 1000, 2), "decode_ms": round(decode_s / count * 1000, 2)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from ..testing.face_media import camera_frame

    image = camera_frame()
    load_before = round(os.getloadavg()[0], 2)
    runs: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        result, delivered = await _run_size(args, size, image)
        if not args.no_codec:
            frames = delivered[:60] or [image] * 30
            result["vp8_640x480"] = await asyncio.to_thread(_vp8_ms, frames, args.fps)
        result["time_share"] = _shares(result, args.fps)
        runs.append(result)
    lines = []
    for r in runs:
        lat = r["latency_ms"]
        share = ", ".join(f"{k} {v:.0%}" for k, v in r["time_share"].items())
        lines.append(
            f"crop {r['crop']}: {r['fps_in']} fps in -> {r['fps_out']} fps out, latency p50/p95/p99 "
            f"{lat['p50']}/{lat['p95']}/{lat['p99']} ms, {r['late_delivered']} late, "
            f"drops {sum(sum(d.values()) for d in r['drops'].values())}; time: {share}"
        )
        pf = r["prompt_to_frame_ms"]
        if r["prompts_sent"]:
            lines.append(
                f"  prompt -> first frame with it: p50/p95 {pf['p50']}/{pf['p95']} ms "
                f"({pf['applied']} of {r['prompts_sent']} prompts applied)"
            )
        if r["quality"]:
            q = r["quality"]
            lines.append(
                f"  quality ladder: steps {q['steps']}, frames by level {q['frames_by_level']}, ends at {q['level']}"
            )
    return {
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),  # the CPU is shared: high means noisy figures
        "pipeline": Path(args.pipeline).name,
        "budget_ms": args.budget_ms,
        "degrade": args.degrade or None,
        "tiny_vae": args.tiny_vae,
        "model": args.model or "pipeline default (tiny-sd-generated)",
        "steps": args.steps,
        "strength": args.strength,
        "runs": runs,
        "summary": "\n".join(lines),
    }


def _shares(result: dict[str, Any], fps: float) -> dict[str, float]:
    """Fractions of busy CPU time: face detection, diffusion, composite, and (estimated) VP8 codecs."""
    shares = dict(result["busy_s_per_s"])
    codec = result.get("vp8_640x480")
    if codec:  # decode every camera frame, encode one output frame per camera frame
        shares["vp8"] = (codec["encode_ms"] + codec["decode_ms"]) / 1000 * fps
    total = sum(shares.values()) or 1.0
    return {k: round(v / total, 3) for k, v in shares.items()}
