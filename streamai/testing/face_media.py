"""A real face for the avatar tests and benchmark: the public-domain astronaut photo on a camera-sized frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ASSET = Path(__file__).resolve().parents[2] / "assets" / "astronaut-face.jpg"
FACE_SIDE = 320  # the asset is square


def face_image() -> np.ndarray:
    """The 320x320 RGB astronaut crop: ``assets/astronaut-face.jpg``, or rebuilt from scikit-image."""
    if ASSET.is_file():
        import cv2

        bgr = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)
        if bgr is not None:
            return np.ascontiguousarray(bgr[:, :, ::-1])
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[0:FACE_SIDE, 80 : 80 + FACE_SIDE])


def camera_frame(
    width: int = 640, height: int = 480, x: int = 160, y: int = 80, face: np.ndarray | None = None
) -> np.ndarray:
    """A ``height`` x ``width`` grey frame with the face crop pasted at (x, y)."""
    face = face_image() if face is None else face
    frame = np.full((height, width, 3), 96, np.uint8)
    h, w = min(face.shape[0], height - y), min(face.shape[1], width - x)
    frame[y : y + h, x : x + w] = face[:h, :w]
    return frame
