"""A WebRTC test camera showing the astronaut's face, each frame numbered by a barcode."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .face_media import ASSET
from .media import draw_barcode
from .peer import PacedVideoTrack


class FaceCameraTrack(PacedVideoTrack):
    """640x480 at 30 fps: the face (300x300 at x 170, y 120) on grey, the frame number in the top band."""

    def __init__(self) -> None:
        super().__init__(fps=30.0)
        canvas = np.full((480, 640, 3), 90, np.uint8)
        face = Image.open(ASSET).convert("RGB").resize((300, 300))
        canvas[120:420, 170:470] = np.asarray(face)
        self.canvas = canvas

    def picture(self, index: int) -> np.ndarray:
        return draw_barcode(self.canvas.copy(), index)
