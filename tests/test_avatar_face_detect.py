"""face-detect: a real face is found on the astronaut photo and the crop box holds still."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import FrameKind, VideoFrame
from streamai.stage import StageRegistry
from streamai.stages.composite import soft_mask
from streamai.stages.face_detect import BoxTracker, FaceCrop, square_crop
from streamai.testing.face_media import camera_frame

pytest.importorskip("cv2")

FACE_CENTRE = (160 + 98 + 47, 80 + 67 + 47)  # the astronaut's face on camera_frame(), from the Haar detector


def face_pipeline(registry: StageRegistry, **params: object) -> PipelineRunner:
    text = f"""
name: face-only
budget_ms: 2000
stages:
  - name: face
    type: face-detect
    params: {dict({"crop_size": 128}, **params)!r}
"""
    return PipelineRunner(parse_pipeline(text, "<test>", registry), registry, CollectingSink())


async def run_frames(runner: PipelineRunner, images: list[np.ndarray]) -> list[VideoFrame]:
    sink = runner.sink
    assert isinstance(sink, CollectingSink)
    await runner.start()
    for index, image in enumerate(images):
        runner.submit(VideoFrame(image=image, pts=index))
        for _ in range(200):  # one frame at a time, whatever the CPU load: nothing is replaced
            await asyncio.sleep(0.01)
            if len(sink.frames) > index or runner.stats.total_drops():
                break
    await asyncio.sleep(0.1)
    await runner.stop()
    return [f for f in sink.of_kind(FrameKind.VIDEO) if isinstance(f, VideoFrame)]


async def test_face_found_on_astronaut(registry: StageRegistry) -> None:
    runner = face_pipeline(registry, detect_every=1)
    frames = await run_frames(runner, [camera_frame()] * 3)
    assert len(frames) == 3
    for frame in frames:
        face = frame.meta["face"]
        assert isinstance(face, FaceCrop) and face.found
        assert frame.image.shape == (128, 128, 3)
        # the crop is a square around the real face, with margin, inside the frame
        assert face.x < FACE_CENTRE[0] < face.x + face.side and face.y < FACE_CENTRE[1] < face.y + face.side
        assert abs(face.x + face.side / 2 - FACE_CENTRE[0]) < 12 and abs(face.y + face.side / 2 - FACE_CENTRE[1]) < 12
        assert 100 < face.side < 200
    found = [e for e in runner.events.history if e["type"] == "face"]
    assert found and found[0]["found"] is True


async def test_no_face_gives_centre_crop_or_skips(registry: StageRegistry) -> None:
    blank = np.full((240, 320, 3), 128, np.uint8)
    frames = await run_frames(face_pipeline(registry, detect_every=1), [blank] * 2)
    assert [(f.meta["face"].found, f.meta["face"].x, f.meta["face"].side) for f in frames] == [(False, 40, 240)] * 2
    assert await run_frames(face_pipeline(registry, no_face="skip"), [blank]) == []


async def test_crop_box_does_not_jitter_under_camera_noise(registry: StageRegistry) -> None:
    """Sensor noise moves the raw Haar box by pixels; the emitted crop box barely moves."""
    rng = np.random.default_rng(1)
    base = camera_frame().astype(np.int16)
    images = [np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8) for _ in range(24)]
    frames = await run_frames(face_pipeline(registry, detect_every=1), images)
    boxes = np.array([(f.meta["face"].x, f.meta["face"].y, f.meta["face"].side) for f in frames[1:]])
    assert len(boxes) >= 20
    steps = np.abs(np.diff(boxes, axis=0)).max(axis=1)
    assert steps.max() <= 6  # eases, never jumps
    assert (steps == 0).mean() >= 0.8  # and mostly holds perfectly still


def test_tracker_smooths_noise_and_still_follows_a_move() -> None:
    rng = np.random.default_rng(0)
    tracker = BoxTracker(smoothing=0.35, deadband=0.04, hold_frames=5)
    raw, smoothed = [], []
    for _ in range(60):
        found = (300 + rng.normal(0, 4), 200 + rng.normal(0, 4), 100 + rng.normal(0, 4))
        tracker.detected(found)
        raw.append(found)
        smoothed.append(tracker.step())
    raw_steps = np.abs(np.diff(np.array(raw), axis=0)).mean()
    smooth_steps = np.abs(np.diff(np.array(smoothed), axis=0)).mean()
    assert smooth_steps < raw_steps / 3
    for _ in range(20):  # the face really moves 80 px right: the box follows within 20 frames
        tracker.detected((380, 200, 100))
        box = tracker.step()
    assert box is not None and abs(box[0] - 380) < 2
    for _ in range(6):  # lost for longer than hold_frames: no box
        tracker.detected(None)
    assert tracker.step() is None


def test_square_crop_stays_inside_the_frame() -> None:
    assert square_crop((10, 10, 50), 640, 480, 0.3) == (0, 0, 80)
    assert square_crop((630, 470, 50), 640, 480, 0.3) == (560, 400, 80)
    assert square_crop((320, 240, 900), 640, 480, 0.3) == (80, 0, 480)


def test_soft_mask_is_zero_on_the_edge_and_one_in_the_middle() -> None:
    mask = soft_mask(64, "ellipse", 0.2)[:, :, 0]
    assert mask[32, 32] == 1.0
    assert mask[0, :].max() == 0 and mask[:, -1].max() == 0
    assert 0 < mask[32, 4] < 1  # feathered, not a hard edge
