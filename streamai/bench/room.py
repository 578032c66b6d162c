"""Conversation rooms: speech end -> first translated audio at the other participant, per direction, and capacity.

The node runs as its own process (``streamai serve --ice-loopback``) so its CPU is measured
alone. For 1, 2, ... ``--max-rooms`` two-person rooms at once (room pipeline
``conversation-en-pt`` unless ``--pipeline``), each room has an English and a Portuguese
speaker, Python aiortc peers in this process sending espeak-ng sentences of one clause at
real-time pace and taking turns. Per utterance, latency is measured on this process's clock
from the speech end (the clip's last voiced sample leaving the speaker's peer) to the first
loud packet of translated speech at the other participant's peer; figures are p50/p95 per
direction (en->pt, pt->en). Also the node's CPU per room and its own view (capture to the
first audio of a clause sent). The peers' jitter buffers hold one packet (``--peer-prefetch``),
as a browser's does on a clean loopback (aiortc's default of 4 adds about 60 ms). The capacity
is the largest number of rooms whose p95 stays within ``--target-ms`` in both directions; the
machine's load average is recorded with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

from ..testing.peer import PacedAudioTrack
from ..testing.room import RoomPeer, bearer, create_room
from ..testing.speech import RATE, silence, speak, voiced_end
from ._node import node_process

# One clause each: no translated audio can start before the speaker stops, so the first loud
# packet after the speech end answers "speech end -> first translated audio".
ENGLISH = [
    "where is the train station",
    "I would like a cup of coffee please",
    "can you help me find my hotel",
    "the weather is very nice today",
]
PORTUGUESE = [
    "eu gostaria de um café por favor",
    "você pode me ajudar",
    "obrigado pela sua ajuda",
    "bom dia como você está",
]
LOUD = 1000  # int16 peak of a packet that carries speech
MAX_LATENCY_S = 6.0  # a first loud packet later than this after a speech end is not its answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="conversation-en-pt", help="room pipeline to measure")
    parser.add_argument("--max-rooms", type=int, default=3, help="measure 1..N rooms at once")
    parser.add_argument("--utterances", type=int, default=6, help="sentences per speaker and step")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between one speaker's sentence and the other's")
    parser.add_argument("--target-ms", type=float, default=600.0, help="p95 both directions must stay within")
    parser.add_argument("--stop-after-miss", action="store_true", help="stop at the first step over the target")
    parser.add_argument(
        "--peer-prefetch", type=int, default=1,
        help="audio packets the peers' jitter buffers hold (aiortc's default 4; a browser holds 1-2 on loopback)",
    )  # fmt: skip


class CuedTrack(PacedAudioTrack):
    """Paced silence until ``cue()``, then the clip from its start (``_start`` is when it began)."""

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__(samples, loop=False)
        self.cued = False
        self._quiet = PacedAudioTrack(np.zeros(960, np.int16))

    def cue(self) -> None:
        self.cued = True

    async def recv(self) -> Any:
        if not self.cued:
            return await self._quiet.recv()
        return await super().recv()


@dataclass
class Speaker:
    """One speaker's clip and where its sentences end (seconds from the clip's start)."""

    peer: RoomPeer
    track: CuedTrack
    ends: list[float] = field(default_factory=list)


def conversation(
    texts: list[str], voice: str, lead_s: float, gap_s: float, count: int
) -> tuple[np.ndarray, list[float]]:
    """``count`` sentences (cycling ``texts``) with ``gap_s`` of silence after each; their voiced ends."""
    parts = [silence(lead_s)]
    ends: list[float] = []
    at = lead_s
    for index in range(count):
        spoken = speak(texts[index % len(texts)], voice=voice)
        ends.append(at + voiced_end(spoken))
        parts += [spoken, silence(gap_s)]
        at += (len(spoken) + int(gap_s * RATE)) / RATE
    return np.concatenate(parts), ends


def latencies(speaker: Speaker, listener: RoomPeer) -> tuple[list[float], int]:
    """ms from each speech end to the first loud packet at the listener after it; and how many had none."""
    assert speaker.track._start is not None
    found, missing = [], 0
    ends = [speaker.track._start + end for end in speaker.ends]
    for index, end in enumerate(ends):
        bound = min(end + MAX_LATENCY_S, ends[index + 1] if index + 1 < len(ends) else end + MAX_LATENCY_S)
        first = listener.first_loud(end, LOUD)
        if first is not None and first < bound:
            found.append((first - end) * 1000)
        else:
            missing += 1
    return found, missing


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def run_step(url: str, admin: str, rooms: int, args: argparse.Namespace, node: Any) -> dict[str, Any]:
    """``rooms`` two-person rooms talking at once; per-direction latencies and the node's CPU."""
    async with aiohttp.ClientSession() as http:
        speakers: list[tuple[Speaker, Speaker]] = []
        created = [await create_room(http, url, pipeline=args.pipeline) for _ in range(rooms)]
        for index, room in enumerate(created):
            stagger = 0.7 * index  # rooms do not all speak in the same instant
            en_audio, en_ends = conversation(ENGLISH, "en-us", 1.0 + stagger, 2 * args.gap, args.utterances)
            pt_audio, pt_ends = conversation(PORTUGUESE, "pt-br", 1.0 + stagger + args.gap, 2 * args.gap,
                                             args.utterances)  # fmt: skip
            pair = []
            for language, audio, ends in (("en", en_audio, en_ends), ("pt", pt_audio, pt_ends)):
                track = CuedTrack(audio[:, 0])  # silence until every speaker of the step is in
                peer = RoomPeer(url, room["room_id"], room["join_token"], language, audio=track, name=language,
                                audio_prefetch=args.peer_prefetch)  # fmt: skip
                pair.append(Speaker(peer, track, ends))
            speakers.append((pair[0], pair[1]))
        # join the pt speakers first (no audio flows until both are in): their say chains then start at once
        for en, pt in speakers:
            await pt.peer.join(http, timeout=60)
            await en.peer.join(http, timeout=60)
        await asyncio.sleep(2.0)  # the say chains start once both languages are present
        for pair in speakers:
            for speaker in pair:
                speaker.track.cue()
        load_at_start = os.getloadavg()
        node.cpu_percent()
        started = time.monotonic()
        longest = max(len(s.track.samples) for pair in speakers for s in pair) / RATE
        await asyncio.sleep(longest + MAX_LATENCY_S / 2)
        cpu = node.cpu_percent()
        seconds = time.monotonic() - started
        load_at_end = os.getloadavg()
        views = []
        for room in created:
            async with http.get(f"{url}/v1/rooms/{room['room_id']}", headers=bearer(admin)) as response:
                views.append(await response.json())
        for en, pt in speakers:
            await en.peer.leave(http)
            await pt.peer.leave(http)
        for room in created:  # each step starts with the node free of the last one's rooms
            async with http.delete(f"{url}/v1/rooms/{room['room_id']}", headers=bearer(room["room_token"])):
                pass
    by_direction: dict[str, list[float]] = {"en->pt": [], "pt->en": []}
    missing = {"en->pt": 0, "pt->en": 0}
    for en, pt in speakers:
        for direction, speaker, listener in (("en->pt", en, pt.peer), ("pt->en", pt, en.peer)):
            found, lost = latencies(speaker, listener)
            by_direction[direction] += found
            missing[direction] += lost
    node_view = {
        direction: [v.get("latency", {}).get(direction, {}).get("p50_ms") for v in views] for direction in by_direction
    }
    problems = [v["error"] for v in views if "error" in v]
    return {
        "rooms": rooms,
        "directions": {
            d: {
                "n": len(v),
                "missing": missing[d],
                "p50_ms": pct(v, 50),
                "p95_ms": pct(v, 95),
                "max_ms": round(max(v), 1) if v else None,
            }
            for d, v in by_direction.items()
        },
        "node_cpu_cores": round(cpu / 100, 2),
        "cpu_cores_per_room": round(cpu / 100 / rooms, 2),
        "seconds": round(seconds, 1),
        "load_average": {"start": [round(x, 2) for x in load_at_start], "end": [round(x, 2) for x in load_at_end]},
        "node_view_p50_ms": node_view,  # capture -> first audio of a clause sent, per room
        "room_errors": problems,  # a room that ended early (e.g. a speaker's chain failed)
        "participants_left": [
            p.get("close_reason") for v in views for p in v.get("participants", []) if p.get("state") == "closed"
        ],
    }


def within(step: dict[str, Any], target_ms: float) -> bool:
    return all(
        d["p95_ms"] is not None and d["p95_ms"] <= target_ms and d["missing"] <= max(1, d["n"] // 10)
        for d in step["directions"].values()
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    admin = secrets.token_urlsafe(16)
    config = {"rooms": {"max_rooms": args.max_rooms + 1, "max_speakers": 2 * args.max_rooms + 2}}
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "node.yaml"
        settings.write_text(yaml.safe_dump(config))
        os.environ["STREAMAI_ADMIN_TOKEN"] = admin
        steps: list[dict[str, Any]] = []
        with node_process("--config", str(settings)) as node:
            warm = await run_step(node.url, admin, 1, argparse.Namespace(**{**vars(args), "utterances": 1}), node)
            for rooms in range(1, args.max_rooms + 1):
                step = await run_step(node.url, admin, rooms, args, node)
                step["within_target"] = within(step, args.target_ms)
                steps.append(step)
                print(
                    f"{rooms} room(s): "
                    + "; ".join(
                        f"{d} p50 {v['p50_ms']} / p95 {v['p95_ms']} ms (n {v['n']}, missed {v['missing']})"
                        for d, v in step["directions"].items()
                    )
                    + f"; node {step['node_cpu_cores']} cores ({step['cpu_cores_per_room']} per room);"
                    f" load {step['load_average']['start'][0]}->{step['load_average']['end'][0]}",
                    flush=True,
                )
                if args.stop_after_miss and not step["within_target"]:
                    break
    holding = [s["rooms"] for s in steps if s["within_target"]]
    capacity = max((r for r in holding if all(s["within_target"] for s in steps if s["rooms"] <= r)), default=0)
    one = steps[0]["directions"] if steps else {}
    summary = (
        f"room ({args.pipeline}), 1 room: "
        + "; ".join(
            f"{d} speech end -> first translated audio p50 {v['p50_ms']} / p95 {v['p95_ms']} ms" for d, v in one.items()
        )
        + f"; node CPU per room {steps[0]['cpu_cores_per_room'] if steps else None} cores; "
        f"rooms held with p95 <= {args.target_ms:.0f} ms both ways: {capacity} "
        f"(load average {steps[0]['load_average']['start'][0] if steps else '?'} at the start)"
    )
    return {
        "summary": summary,
        "pipeline": args.pipeline,
        "target_ms": args.target_ms,
        "utterances_per_speaker": args.utterances,
        "capacity_rooms": capacity,
        "warm_up": {"directions": warm["directions"]},
        "steps": steps,
        "median_cpu_per_room": statistics.median([s["cpu_cores_per_room"] for s in steps]) if steps else None,
    }
