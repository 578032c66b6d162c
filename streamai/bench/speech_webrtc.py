"""Speech translation measured at the client: first translated audio packet after each sentence, over WebRTC.

A node runs in a subprocess (``streamai serve --ice-loopback``, the pipeline preloaded);
N outside-style aiortc clients (``streamai.bench._speech_client``: its own clock, packets
stamped as they arrive from the network, before any jitter buffer) each speak the
five-sentence clip of ``streamai bench speech`` (2 s between sentences) into their own
session, for each N of ``--sessions`` (default 1, 2, 4, 6). Client i starts speaking
``i x --stagger`` s after the first (default: one sentence period divided by N, so the
sessions' sentence ends are spread evenly, as independent speakers' would be).

Per sentence: client figure = arrival of the first audible packet - the sentence's
true end (its last voiced sample, as captured by the client's microphone); the node's
``waterfall`` event for the utterance (its ``total_ms`` ends when that packet was handed
to the transport) and the difference, the *transport's share*: the client's packetisation
(the packet with the last voiced sample leaves up to 20 ms after it), Opus's algorithmic
delay, the network and the node's receive path (jitter buffer, decode) before the node
stamps capture, and the return trip of the answer packet. A sentence with no translated
audio before the next one begins is *lost*. The load average is recorded with each N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from ..speech.latency import COMPONENTS
from ..testing.speech import CLIP_SENTENCES, sentence_clip, silence
from ._node import node_process
from ._speech_client import RATE, SpeechClient, loopback_ice_only
from .speech import pct

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="1,2,4,6", help="comma-separated session counts")
    parser.add_argument("--pipeline", default="speech-translate")
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--stagger", type=float, help="seconds between clients' starts (default: period / N)")
    parser.add_argument("--audio-prefetch", type=int, help="the node's audio jitter prefetch (default: its own)")
    parser.add_argument("--node-arg", action="append", default=[], help="extra argument for streamai serve")


def utterance_sentences(events: list[dict[str, Any]], starts_s: list[float]) -> dict[int, int]:
    """Node utterance -> sentence, by where the node's VAD saw it start (ms since the client's first sample)."""
    mapping: dict[int, int] = {}
    for event in events:
        if event.get("type") == "vad" and event.get("state") == "start":
            at = float(event.get("audio_ms", 0)) / 1000
            mapping[int(event["utterance"])] = max((i for i, s in enumerate(starts_s) if s - 0.4 <= at), default=0)
    return mapping


def client_rows(client: SpeechClient, ends_s: list[float], starts_s: list[float], gap_s: float) -> list[dict[str, Any]]:
    start = client.microphone.start
    assert start is not None
    mapping = utterance_sentences(client.events, starts_s)
    rows = []
    for index, end_s in enumerate(ends_s):
        end = start + end_s
        before = end + gap_s if index + 1 < len(ends_s) else float("inf")  # the next sentence begins after it
        arrival = client.first_audible_after(end, before)
        utterances = [u for u, s in mapping.items() if s == index]
        waterfalls = [e for e in client.events if e.get("type") == "waterfall" and e.get("utterance") in utterances]
        node = waterfalls[-1] if waterfalls else None
        client_ms = round((arrival - end) * 1000, 1) if arrival is not None else None
        rows.append(
            {
                "sentence": index + 1,
                "client_ms": client_ms,
                "node_total_ms": node["total_ms"] if node else None,
                "node_components": node["components"] if node else None,
                "transport_share_ms": round(client_ms - node["total_ms"], 1)
                if node is not None and client_ms is not None
                else None,
                "utterances": len(utterances),
                "heard": [
                    e["text"]
                    for e in client.events
                    if e.get("type") == "transcript" and e.get("final") and e.get("utterance") in utterances
                ],
            }
        )
    return rows


async def run_sessions(url: str, pipeline: str, count: int, clip: np.ndarray, ends_s: list[float],
                       starts_s: list[float], stagger: float, gap_s: float) -> dict[str, Any]:  # fmt: skip
    """``count`` clients at once, client i delayed by i x stagger; their rows and the summary."""
    clients = []
    for i in range(count):
        lead = silence(i * stagger)[:, 0]
        clients.append((i * stagger, SpeechClient(url, pipeline, np.concatenate([lead, clip[:, 0]]))))
    load_before = [round(x, 2) for x in os.getloadavg()]
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(c.connect(http) for _, c in clients))
            duration = len(clip) / RATE + (count - 1) * stagger + 2.0
            await asyncio.sleep(duration)
        finally:
            await asyncio.gather(*(c.close(http) for _, c in clients), return_exceptions=True)
    load_after = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, Any]] = []
    for delay, client in clients:
        shifted_ends = [e + delay for e in ends_s]
        shifted_starts = [s + delay for s in starts_s]
        for row in client_rows(client, shifted_ends, shifted_starts, gap_s):
            rows.append({"session": clients.index((delay, client)) + 1, **row})
    values = [r["client_ms"] for r in rows if r["client_ms"] is not None]
    shares = [r["transport_share_ms"] for r in rows if r["transport_share_ms"] is not None]
    components = {
        name: pct([r["node_components"][name] for r in rows if r["node_components"]
                   and r["node_components"].get(name) is not None], 50)
        for name in COMPONENTS
    }  # fmt: skip
    return {
        "sessions": count,
        "stagger_s": stagger,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "client_first_packet_ms": {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)},
        "lost": sum(1 for r in rows if r["client_ms"] is None),
        "node_total_ms": {"p50": pct([r["node_total_ms"] for r in rows if r["node_total_ms"] is not None], 50)},
        "node_waterfall_p50_ms": components,
        "transport_share_ms": {
            "p50": pct(shares, 50),
            "min": min(shares, default=None),
            "max": max(shares, default=None),
        },
        "rows": rows,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    loopback_ice_only()
    clip, ends_s = sentence_clip(CLIP_SENTENCES, gap_s=args.gap)
    starts_s = [0.5] + [e + args.gap / 2 for e in ends_s[:-1]]
    period = len(clip) / RATE / len(CLIP_SENTENCES)
    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    extra = ["--preload", args.pipeline, "--max-sessions", str(max(16, 2 * max(counts))), *args.node_arg]
    if args.audio_prefetch is not None:
        extra += ["--audio-prefetch", str(args.audio_prefetch)]
    runs = []
    with node_process(*extra, timeout=120) as node:
        for count in counts:
            stagger = args.stagger if args.stagger is not None else (period / count if count > 1 else 0.0)
            node.cpu_percent()
            run = await run_sessions(node.url, args.pipeline, count, clip, ends_s, starts_s, stagger, args.gap)
            run["node_cpu_percent_of_one_core"] = round(node.cpu_percent(), 1)
            runs.append(run)
            await asyncio.sleep(1.0)
    single = next((r for r in runs if r["sessions"] == 1), None)
    lines = []
    for r in runs:
        c = r["client_first_packet_ms"]
        ratio = ""
        if single and single["client_first_packet_ms"]["p50"] and c["p50"]:
            ratio = f" ({100 * (c['p50'] / single['client_first_packet_ms']['p50'] - 1):+.0f} % vs 1)"
        lines.append(
            f"{r['sessions']} session(s): client first packet p50 {c['p50']}{ratio} / p95 {c['p95']} ms, "
            f"lost {r['lost']}/{c['n'] + r['lost']}; node total p50 {r['node_total_ms']['p50']} ms, transport "
            f"share p50 {r['transport_share_ms']['p50']} ms; node CPU {r['node_cpu_percent_of_one_core']} %; "
            f"load {r['loadavg_before'][0]}->{r['loadavg_after'][0]}"
        )
    return {"pipeline": args.pipeline, "gap_s": args.gap, "runs": runs, "summary": "\n".join(lines)}
