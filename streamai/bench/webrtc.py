"""WebRTC sessions per node: N concurrent Python peers on the transform pipeline, video round trip and CPU."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import aiohttp
import psutil

from ..testing.peer import BarcodeVideoTrack, Probe, marker_audio
from ._node import node_process


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="1,2,3,4", help="comma-separated session counts to try in turn")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement time per step")
    parser.add_argument("--pipeline", default="transform")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--p95-goal-ms", type=float, default=200.0)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _step(url: str, node: Any, count: int, args: argparse.Namespace) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        probes = [
            Probe(url, args.pipeline, video=BarcodeVideoTrack(args.width, args.height, args.fps), audio=marker_audio())
            for _ in range(count)
        ]
        await asyncio.gather(*(p.connect(http) for p in probes))
        await asyncio.sleep(3.0)  # warm-up: bandwidth estimate, encoder start
        for probe in probes:
            probe.report.video_latency_ms.clear()
        node.cpu_percent()
        own = psutil.Process()
        own.cpu_percent(None)
        samples: list[float] = []
        for _ in range(int(args.seconds)):
            await asyncio.sleep(1.0)
            samples.append(node.cpu_percent())
        peers_cpu = own.cpu_percent(None)
        sessions = []
        ended = 0
        for probe in probes:  # each session's own summary, read with its own token
            async with http.get(f"{url}/v1/sessions/{probe.report.session_id}", headers=probe.session_headers()) as r:
                answer = await r.json()
                if r.status == 200:
                    sessions.append(answer)
                elif answer.get("error", {}).get("code") == "session_ended":
                    ended += 1  # the node ended it during the step (e.g. the peers starved of CPU): reported
                else:
                    raise RuntimeError(f"session summary: HTTP {r.status} {answer}")
        await asyncio.gather(*(p.close(http) for p in probes))
    per_session = [
        {
            "p50_ms": _pct(p.report.video_latency_ms, 0.5),
            "p95_ms": _pct(p.report.video_latency_ms, 0.95),
            "frames": len(p.report.video_latency_ms),
            "fps_received": round(len(p.report.video_latency_ms) / args.seconds, 1),
        }
        for p in probes
    ]
    p95s = [s["p95_ms"] for s in per_session if s["p95_ms"] is not None]
    return {
        "sessions": count,
        "per_session": per_session,
        "worst_p95_ms": max(p95s) if p95s else None,
        "median_p50_ms": statistics.median([s["p50_ms"] for s in per_session if s["p50_ms"] is not None] or [0]),
        "server_cpu_percent": round(statistics.mean(samples), 1) if samples else None,
        "peers_cpu_percent": round(peers_cpu, 1),
        "ended_during_step": ended,
        "server_drops": sum(s["drops"] for s in sessions),
        # capture (as the node's aiortc receiver released the frame) -> send, per session, on the node's clock
        "server_p95_ms": [s["video_latency"]["p95_ms"] for s in sessions],
        "inbound_skipped": [s.get("inbound_skipped") for s in sessions],
        "decode_dropped": [s.get("decode_dropped") for s in sessions],
        "server_rss_mb": round(node.rss_mb(), 1),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    steps = []
    # every probe comes from 127.0.0.1: one client, whose share is half of --max-sessions by default
    with node_process("--max-sessions", str(2 * max(counts))) as node:
        for count in counts:
            steps.append(await _step(node.url, node, count, args))
    held = [s["sessions"] for s in steps if s["worst_p95_ms"] is not None and s["worst_p95_ms"] < args.p95_goal_ms]
    lines = [
        f"{s['sessions']} sessions: p50 {s['median_p50_ms']} ms, worst p95 {s['worst_p95_ms']} ms, "
        f"server-side p95 {s['server_p95_ms']} ms, "
        f"decode skips {s['decode_dropped']}, server CPU {s['server_cpu_percent']}% of a core, "
        f"peers {s['peers_cpu_percent']}%, drops {s['server_drops']}, ended early {s['ended_during_step']}"
        for s in steps
    ]
    best = max(held) if held else 0
    summary = (
        f"WebRTC {args.pipeline} {args.width}x{args.height}@{args.fps:g}, {args.seconds:g} s per step "
        f"(peers run on the same 2 cores):\n  "
        + "\n  ".join(lines)
        + f"\n  held with p95 < {args.p95_goal_ms:g} ms: {best} sessions"
    )
    return {"summary": summary, "steps": steps, "sessions_held": best, "p95_goal_ms": args.p95_goal_ms}
