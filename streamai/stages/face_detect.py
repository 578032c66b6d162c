"""``face-detect``: find and follow the main face, emit a square crop of it.

Detector: OpenCV's Haar cascade ``haarcascade_frontalface_default.xml`` (ships in
``opencv-python-headless`` 4.x as ``cv2.data.haarcascades``; nothing to download).
It runs on a downscaled grey copy every ``detect_every`` frames; between detections
the box eases toward the last detection (EMA per frame, with a dead band that
ignores detector wobble), so the crop does not jitter. The emitted frame is the
crop; ``meta["face"]`` holds a :class:`FaceCrop` (the square box and the full
frame) for ``composite`` to paste the result back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, VideoFrame, derived
from ..frames import FrameKind as K
from ..stage import Stage, stage

Box = tuple[float, float, float]  # centre x, centre y, face size (pixels of the full frame)


@dataclass(slots=True, frozen=True)
class FaceCrop:
    """Where a crop came from: the square ``(x, y, side)`` of ``full`` it shows."""

    x: int
    y: int
    side: int
    full: np.ndarray
    found: bool  # False: no face tracked, the crop is the frame's centre


class FaceDetectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detect_every: int = Field(3, ge=1, description="run the detector on every Nth frame")
    detect_width: int = Field(320, ge=80, description="width of the grey copy the detector sees")
    smoothing: float = Field(0.35, gt=0, le=1, description="per-frame EMA weight toward the detection (1: none)")
    deadband: float = Field(0.04, ge=0, le=0.5, description="ignore detection moves under this fraction of the face")
    margin: float = Field(0.3, ge=0, le=2, description="added on each side of the face, as a fraction of its size")
    crop_size: int = Field(256, ge=0, le=2048, description="side of the emitted crop in pixels (0: native)")
    min_face: float = Field(0.08, gt=0, le=1, description="smallest face, as a fraction of the frame height")
    hold_frames: int = Field(30, ge=0, description="frames to keep the last box when the face is not found")
    no_face: Literal["center", "skip"] = "center"
    single_thread: bool = Field(True, description="run OpenCV on one thread (it shares the CPU with the model)")


class BoxTracker:
    """Smooths detections: the box moves toward the latest detection a little every frame."""

    def __init__(self, smoothing: float = 0.35, deadband: float = 0.04, hold_frames: int = 30) -> None:
        self.smoothing = smoothing
        self.deadband = deadband
        self.hold_frames = hold_frames
        self.target: Box | None = None
        self.box: Box | None = None
        self.missed = 0

    def detected(self, found: Box | None) -> None:
        """Feed one detector result (``None``: no face this time)."""
        if found is None:
            self.missed += 1
            if self.missed > self.hold_frames:
                self.target = self.box = None
            return
        self.missed = 0
        if self.target is None or self.box is None:
            self.target = self.box = found
            return
        size = self.target[2]
        if max(abs(a - b) for a, b in zip(found, self.target, strict=True)) > self.deadband * size:
            self.target = found

    def step(self) -> Box | None:
        """Advance one frame; the smoothed box (``None`` when no face is tracked)."""
        if self.target is None or self.box is None:
            return None
        a = self.smoothing
        self.box = tuple(b + a * (t - b) for b, t in zip(self.box, self.target, strict=True))  # type: ignore[assignment]
        return self.box

    def nearest(self, detections: list[tuple[int, int, int, int]]) -> Box | None:
        """The detection to follow: near the tracked face if any, else the largest."""
        if not detections:
            return None
        boxes = [(x + w / 2, y + h / 2, float(max(w, h))) for x, y, w, h in detections]
        largest = max(b[2] for b in boxes)
        candidates = [b for b in boxes if b[2] >= 0.5 * largest]
        if self.target is None:
            return max(candidates, key=lambda b: b[2])
        tx, ty, _ = self.target
        return min(candidates, key=lambda b: (b[0] - tx) ** 2 + (b[1] - ty) ** 2)


def square_crop(box: Box | None, width: int, height: int, margin: float) -> tuple[int, int, int]:
    """The square ``(x, y, side)`` around ``box`` with margin, kept inside the frame."""
    limit = min(width, height)
    if box is None:
        side = limit
        return (width - side) // 2, (height - side) // 2, side
    cx, cy, size = box
    side = round(min(limit, max(16.0, size * (1 + 2 * margin))))
    x = round(min(max(cx - side / 2, 0), width - side))
    y = round(min(max(cy - side / 2, 0), height - side))
    return x, y, side


@stage("face-detect")
class FaceDetect(Stage):
    consumes = frozenset({K.VIDEO})
    emits = frozenset({K.VIDEO})
    Params = FaceDetectParams

    async def start(self) -> None:
        import cv2

        if self.params.single_thread:
            cv2.setNumThreads(1)  # process-wide: leave the cores to the model instead of oversubscribing them
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cv2: Any = cv2
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path} (needs opencv-python-headless 4.x, not 5)")
        p = self.params
        self._tracker = BoxTracker(p.smoothing, p.deadband, p.hold_frames)
        self._count = 0
        self._found = False

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face rectangles ``(x, y, w, h)`` in full-frame pixels."""
        cv2 = self._cv2
        height, width = image.shape[:2]
        scale = min(1.0, self.params.detect_width / width)
        small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)  # no equalizeHist: it loses small faces
        smallest = max(16, int(self.params.min_face * small.shape[0]))
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
        return [tuple(round(v / scale) for v in rect) for rect in found]  # type: ignore[misc]

    def crop(self, image: np.ndarray, detect: bool) -> tuple[np.ndarray, FaceCrop] | None:
        """Detect (when due), advance the tracker and cut the crop; ``None`` to skip the frame."""
        if detect:
            self._tracker.detected(self._tracker.nearest(self.detect(image)))
        box = self._tracker.step()
        if box is None and self.params.no_face == "skip":
            return None
        height, width = image.shape[:2]
        x, y, side = square_crop(box, width, height, self.params.margin)
        patch = image[y : y + side, x : x + side]
        size = self.params.crop_size or side
        if size != side:
            cv2 = self._cv2
            interpolation = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
            patch = cv2.resize(patch, (size, size), interpolation=interpolation)
        return np.ascontiguousarray(patch), FaceCrop(x, y, side, image, box is not None)

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, VideoFrame)
        detect = self._count % self.params.detect_every == 0
        self._count += 1
        result = await self.run_blocking(self.crop, frame.image, detect)
        if result is None:
            self._note(False, None)
            return
        patch, face = result
        self._note(face.found, face)
        await self.push(derived(frame, image=patch, meta={**frame.meta, "face": face}))

    def _note(self, found: bool, face: FaceCrop | None) -> None:
        """An event when the face is found or lost (not every frame)."""
        if found != self._found:
            self._found = found
            box = [face.x, face.y, face.side] if face is not None and found else None
            self.emit_event("face", found=found, box=box)
