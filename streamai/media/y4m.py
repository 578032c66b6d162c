"""YUV4MPEG2 (4:2:0) files <-> RGB uint8 frames, numpy only, BT.601.

Written files use limited range (16-235) BT.601 and the ``C420jpeg`` tag, which is
what ffmpeg writes and what Chromium's ``--use-file-for-fake-video-capture`` reads.
Odd widths/heights round the chroma planes up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .wav import MediaFileError

MAGIC = b"YUV4MPEG2"

# BT.601 limited range, RGB in 0..255 -> Y 16..235, Cb/Cr 16..240.
_TO_YUV = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float32
) / np.float32(255.0)
_FROM_YUV = np.linalg.inv(_TO_YUV).astype(np.float32)


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB -> Y (H, W), U and V (ceil(H/2), ceil(W/2)) uint8 planes."""
    height, width = rgb.shape[:2]
    yuv = rgb.astype(np.float32) @ _TO_YUV.T
    y = np.clip(yuv[..., 0] + 16.0 + 0.5, 0, 255).astype(np.uint8)
    chroma = yuv[..., 1:]
    if height % 2 or width % 2:
        chroma = np.pad(chroma, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    h2, w2 = chroma.shape[0] // 2, chroma.shape[1] // 2
    averaged = chroma.reshape(h2, 2, w2, 2, 2).mean(axis=(1, 3))
    uv = np.clip(averaged + 128.0 + 0.5, 0, 255).astype(np.uint8)
    return y, np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Y, U, V uint8 planes (4:2:0, limited range BT.601) -> (H, W, 3) uint8 RGB."""
    height, width = y.shape
    u_full = u.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    v_full = v.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    yuv = np.stack(
        [y.astype(np.float32) - 16.0, u_full.astype(np.float32) - 128.0, v_full.astype(np.float32) - 128.0], -1
    )
    rgb = yuv @ _FROM_YUV.T
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _parse_header(line: bytes, path: str) -> tuple[int, int, Fraction]:
    fields = line.split()
    if not fields or fields[0] != MAGIC:
        raise MediaFileError(f"{path}: not a YUV4MPEG2 file")
    width = height = 0
    fps = Fraction(30)
    for tag in fields[1:]:
        key, value = chr(tag[0]), tag[1:].decode("ascii", "replace")
        try:
            if key == "W":
                width = int(value)
            elif key == "H":
                height = int(value)
            elif key == "F":
                num, _, den = value.partition(":")
                fps = Fraction(int(num), int(den or 1))
        except (ValueError, ZeroDivisionError):
            raise MediaFileError(f"{path}: bad header tag {tag.decode('ascii', 'replace')!r}") from None
        if key == "C" and not value.startswith("420"):
            raise MediaFileError(f"{path}: colour space C{value} not supported (only 4:2:0)")
    if width <= 0 or height <= 0:
        raise MediaFileError(f"{path}: header has no frame size")
    return width, height, fps


class Y4MReader:
    """Iterates the frames of a y4m file as RGB arrays; ``width``, ``height``, ``fps`` from the header."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        except OSError as exc:
            raise MediaFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        header = self._file.readline(4096)
        if not header.endswith(b"\n"):
            self._file.close()
            raise MediaFileError(f"{path}: not a YUV4MPEG2 file")
        try:
            self.width, self.height, self.fps = _parse_header(header, self.path)
        except MediaFileError:
            self._file.close()
            raise
        self._chroma = ((self.height + 1) // 2, (self.width + 1) // 2)

    def __enter__(self) -> Y4MReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def planes(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The raw Y, U, V planes of each frame."""
        luma = self.width * self.height
        chroma = self._chroma[0] * self._chroma[1]
        size = luma + 2 * chroma
        while True:
            marker = self._file.readline(4096)
            if not marker:
                return
            if not marker.startswith(b"FRAME"):
                raise MediaFileError(f"{self.path}: corrupt frame header")
            data = self._file.read(size)
            if len(data) < size:
                return  # a truncated last frame is dropped, like players do
            buffer = np.frombuffer(data, np.uint8)
            yield (
                buffer[:luma].reshape(self.height, self.width),
                buffer[luma : luma + chroma].reshape(self._chroma),
                buffer[luma + chroma :].reshape(self._chroma),
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        for y, u, v in self.planes():
            yield yuv420_to_rgb(y, u, v)


class Y4MWriter:
    """Writes RGB frames of one size to a y4m file."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float | Fraction = 30) -> None:
        self.path, self.width, self.height = str(path), width, height
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()/__exit__
        except OSError as exc:
            raise MediaFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
        header = f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n"
        self._file.write(header.encode("ascii"))
        self.frames = 0

    def __enter__(self) -> Y4MWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise MediaFileError(
                f"{self.path}: frame {rgb.shape} {rgb.dtype} does not match {self.height}x{self.width}x3 uint8"
            )
        y, u, v = rgb_to_yuv420(rgb)
        self._file.write(b"FRAME\n")
        for plane in (y, u, v):
            self._file.write(plane.tobytes())
        self.frames += 1

    def close(self) -> None:
        self._file.close()


def read_y4m(path: str | Path) -> tuple[list[np.ndarray], Fraction]:
    """Every frame of a y4m file as RGB, and its frame rate."""
    with Y4MReader(path) as reader:
        return list(reader), reader.fps


def write_y4m(path: str | Path, frames: Iterable[np.ndarray], fps: float | Fraction = 30) -> int:
    """Write RGB frames (all one size) to a y4m file; returns the number written."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise MediaFileError(f"{path}: no frames to write")
    with Y4MWriter(path, first.shape[1], first.shape[0], fps) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
        return writer.frames
