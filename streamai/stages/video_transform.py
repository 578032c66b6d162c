"""``video-transform``: a cheap, visible change to every video frame (invert, edges, gray, mirror)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..frames import Frame, VideoFrame, derived
from ..frames import FrameKind as K
from ..stage import Stage, stage


class VideoTransformParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effect: Literal["invert", "edges", "gray", "mirror"] = "invert"


def apply_effect(image: np.ndarray, effect: str) -> np.ndarray:
    """The transformed copy of an RGB uint8 image."""
    if effect == "invert":
        return np.subtract(255, image, dtype=np.uint8)
    if effect == "mirror":
        return np.ascontiguousarray(image[:, ::-1])
    gray = (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    if effect == "gray":
        return np.repeat(gray[:, :, None], 3, axis=2)
    g = gray.astype(np.int16)
    magnitude = np.zeros_like(g)
    magnitude[1:-1, 1:-1] = np.abs(g[1:-1, 2:] - g[1:-1, :-2]) + np.abs(g[2:, 1:-1] - g[:-2, 1:-1])
    edges = np.clip(magnitude * 2, 0, 255).astype(np.uint8)
    return np.repeat(edges[:, :, None], 3, axis=2)


@stage("video-transform")
class VideoTransform(Stage):
    consumes = frozenset({K.VIDEO})
    emits = frozenset({K.VIDEO})
    Params = VideoTransformParams
    client_settable = frozenset({"effect"})

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, VideoFrame)
        image = await self.run_blocking(apply_effect, frame.image, self.params.effect)
        await self.push(derived(frame, image=image))
