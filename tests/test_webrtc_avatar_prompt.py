"""Prompt -> face through WebRTC with the tiny generated model: a real aiortc peer sends a still
face, then prompts over the data channel; for each prompt, the time from its send to the first
received frame whose face pixels changed, on the peer's clock. Fails when a prompt does not
change the face (the tiny model's noise is fixed, so only the prompt can move it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from streamai.frames import now
from streamai.server.settings import ServerSettings
from streamai.testing.face_camera import FaceCameraTrack
from streamai.testing.node import running_node
from streamai.testing.peer import Probe

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.models, pytest.mark.slow]
FACE = (slice(180, 360), slice(230, 410))  # inside the 300x300 face the camera shows at (170, 120)
PROMPTS = ["a bronze statue", "a watercolor portrait"] * 3
CHANGED = 1.5  # mean grey levels of 16x16 block means: a prompt moves them by ~3, codec noise by < 1
SUSTAINED = 3  # frames in a row that must show the change


class FaceWatch:
    """The face region of every received frame, with its arrival time."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []

    def __call__(self, arrived: float, image: np.ndarray) -> None:
        if image.shape[:2] == (480, 640):  # not the node's 320x240 filler before its first processed frame
            self.frames.append((arrived, image[FACE].astype(np.float32)))

    def since(self, at: float) -> list[tuple[float, np.ndarray]]:
        return [(t, face) for t, face in self.frames if t > at]


def blocks(face: np.ndarray, k: int = 16) -> np.ndarray:
    """Mean colour of k x k blocks: a face box a few pixels elsewhere barely moves these."""
    h, w = face.shape[0] // k * k, face.shape[1] // k * k
    return face[:h, :w].reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))


def change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(blocks(a) - blocks(b)).mean())


async def settle(watch: FaceWatch, camera: FaceCameraTrack, stable_s: float = 1.5, limit_s: float = 60.0) -> np.ndarray:
    """Wait for restyled frames that have stopped changing for ``stable_s`` (same prompt, still input, the
    codec's quality settled); their face."""
    deadline = now() + limit_s
    seen: list[tuple[float, float]] = []
    while now() < deadline:
        await asyncio.sleep(0.3)
        recent = watch.since(now() - stable_s)
        if len(recent) >= 10 and recent[0][0] < now() - stable_s * 0.8:
            faces = [face for _, face in recent]
            restyled = change(faces[-1], camera.canvas[FACE].astype(np.float32))
            moving = max(change(faces[-1], f) for f in faces[:-1])
            seen.append((round(restyled, 1), round(moving, 2)))
            if restyled > 8 and moving < CHANGED / 3:
                return faces[-1]
    raise AssertionError(f"the restyled face never settled (change from input, from the frames before): {seen[-10:]}")


def first_run(frames: list[tuple[float, np.ndarray]], moved: Callable[[np.ndarray], bool]) -> float | None:
    """Arrival of the first of ``SUSTAINED`` frames in a row whose face ``moved``; None when none."""
    for index in range(len(frames) - SUSTAINED + 1):
        run = frames[index : index + SUSTAINED]
        if all(moved(face) for _, face in run):
            return run[0][0]
    return None


async def wait_run(watch: FaceWatch, since: float, moved: Callable[[np.ndarray], bool], limit_s: float) -> float | None:
    """Wait up to ``limit_s`` for a ``first_run`` among the frames received after ``since``."""
    deadline = now() + limit_s
    while now() < deadline:
        found = first_run(watch.since(since), moved)
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    return None


async def test_prompt_to_first_changed_face_over_webrtc_tiny_generated_model(tmp_path: Path) -> None:
    # the shipped tiny pipeline with a budget a loaded 2-core machine can meet (a pass of the tiny model
    # takes 70 ms on a quiet one, seconds under load): this test is about the prompt, not the budget
    # and a wide dead band: the camera is still, the codec's noise must not move the face box
    text = (ROOT / "pipelines" / "face-avatar-tiny.yaml").read_text().replace("budget_ms: 500", "budget_ms: 4000")
    text = text.replace("params: {detect_every:", "params: {deadband: 0.3, detect_every:")
    (tmp_path / "face-avatar-tiny.yaml").write_text(text)
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=tmp_path)
    camera = FaceCameraTrack()
    watch = FaceWatch()
    latencies: list[float] = []
    changes: list[float] = []
    async with (
        running_node(settings) as (url, _app),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(300)) as http,
    ):
        probe = Probe(url, "face-avatar-tiny", video=camera, on_video=watch)
        await probe.connect(http)
        try:
            # the first time, the sender's bandwidth estimate is still climbing (a quality step looks like
            # a change): wait for a longer still stretch
            before = await settle(watch, camera, stable_s=4.0)
            for text in PROMPTS:
                sent = now()
                probe.send({"type": "prompt", "text": text})
                # the face moves away from the old prompt's (3 frames in a row: a codec blip does not) ...
                moved = await wait_run(watch, sent, lambda face, old=before: change(face, old) > CHANGED, 20)
                if moved is None:
                    seen = [round(change(face, before), 2) for _, face in watch.since(sent)]
                    events = [e for e in probe.report.events if e.get("type") == "avatar_prompt"][-3:]
                    raise AssertionError(f"prompt {text!r} did not change the face within 20 s: {seen[::10]}, {events}")
                # ... and settles on the new prompt's face. The change is the first frames nearer to that
                # face than to the old one: frames the old prompt made, drifted by the codec or a burst of
                # late arrivals on a loaded peer, are not counted as the prompt's
                after = await settle(watch, camera)
                nearer = first_run(
                    watch.since(sent), lambda face, old=before, new=after: change(face, new) < change(face, old)
                )
                assert nearer is not None, f"no frame after {text!r} is nearer its settled face than the old one"
                latencies.append(nearer - sent)
                changes.append(change(after, before))
                before = after
            await asyncio.sleep(0.5)
        finally:
            await probe.close(http)
    events = [e for e in probe.report.events if e.get("type") == "avatar_prompt" and e.get("changed")]
    applied = [e for e in events if e.get("prompt") in PROMPTS]
    ordered = sorted(latencies)
    p50, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    result = {
        "prompts": len(PROMPTS),
        "prompt_to_changed_face_ms": [round(v * 1000, 1) for v in latencies],
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "face_change": [round(c, 2) for c in changes],
        "node_side_ms": [e.get("latency_ms") for e in applied],
    }
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "webrtc-avatar-prompt.json").write_text(json.dumps(result, indent=2))
    print("prompt -> changed face over WebRTC:", json.dumps(result))
    # every prompt was applied by the stage (its event names it, with the node-side latency) ...
    assert len(applied) >= len(PROMPTS), events
    assert all(isinstance(e.get("latency_ms"), float) and e["latency_ms"] > 0 for e in applied), applied
    # ... and the change the peer saw is that frame, not codec drift: no face changed before the node made it
    node_side = [e["latency_ms"] / 1000 for e in applied[: len(PROMPTS)]]
    assert all(seen >= made - 0.005 for seen, made in zip(latencies, node_side, strict=True)), result
