"""``composite``: paste a generated face back into its frame with a feathered mask, or pass the crop.

Reads ``meta["face"]`` (a :class:`~streamai.stages.face_detect.FaceCrop` set by
``face-detect``). In ``paste`` mode the crop is resized to its box and blended
through a soft ellipse (or square) that is exactly zero on the box edge, so pixels
outside the box are the camera's own. In ``crop`` mode, or for a frame without a
face box, the frame passes unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, VideoFrame, derived
from ..frames import FrameKind as K
from ..stage import Stage, stage


class CompositeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["paste", "crop"] = "paste"
    shape: Literal["ellipse", "square"] = "ellipse"
    feather: float = Field(0.2, gt=0, le=1, description="width of the soft edge, as a fraction of the box half-side")


def soft_mask(side: int, shape: str = "ellipse", feather: float = 0.2) -> np.ndarray:
    """A (side, side, 1) float32 mask: 1 inside, ramping smoothly to 0 at the box edge."""
    coords = np.linspace(-1, 1, side, dtype=np.float32)  # the outermost pixels sit on radius 1
    dx, dy = np.abs(coords)[None, :], np.abs(coords)[:, None]
    radius = np.sqrt(dx**2 + dy**2) if shape == "ellipse" else np.maximum(dx, dy)
    ramp = np.clip((1 - radius) / feather, 0, 1)
    return (ramp * ramp * (3 - 2 * ramp))[:, :, None]  # smoothstep


@stage("composite")
class Composite(Stage):
    consumes = frozenset({K.VIDEO})
    emits = frozenset({K.VIDEO})
    Params = CompositeParams
    client_settable = frozenset({"mode", "shape", "feather"})

    async def start(self) -> None:
        import cv2

        self._cv2: Any = cv2
        self._masks: dict[int, np.ndarray] = {}

    def paste(self, crop: np.ndarray, full: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
        """``full`` with ``crop`` blended into the square at (x, y)."""
        cv2 = self._cv2
        if crop.shape[0] != side or crop.shape[1] != side:
            interpolation = cv2.INTER_AREA if crop.shape[0] > side else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (side, side), interpolation=interpolation)
        mask = self._masks.get(side)
        if mask is None:
            mask = self._masks[side] = soft_mask(side, self.params.shape, self.params.feather)
        out = full.copy()
        region = out[y : y + side, x : x + side].astype(np.float32)
        region += (crop.astype(np.float32) - region) * mask
        out[y : y + side, x : x + side] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        return out

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, VideoFrame)
        face = frame.meta.get("face")
        if self.params.mode == "crop" or face is None:
            await self.push(frame)
            return
        image = await self.run_blocking(self.paste, frame.image, face.full, face.x, face.y, face.side)
        await self.push(derived(frame, image=image))
