"""Media files as timed frame sources: a wav as 20 ms AudioFrames, a y4m as VideoFrames.

A source yields ``(offset_s, frame)``: when, counted from the start of the stream,
the frame's media would have left a live sender. Frames are built lazily and their
``capture_time`` is stamped again by whoever submits them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ..frames import AudioFrame, Frame, FrameKind, VideoFrame
from .resample import resample
from .wav import MediaFileError, read_wav
from .y4m import Y4MReader

VIDEO_CLOCK = 90_000  # RTP video clock: VideoFrame.pts counts 1/90000 s


class MediaSource(Protocol):
    """A file turned into frames of one kind, paced by their media time."""

    path: str
    kind: FrameKind

    @property
    def duration(self) -> float: ...

    def __iter__(self) -> Iterator[tuple[float, Frame]]: ...


class WavSource:
    """A wav file as ``frame_ms`` AudioFrames at ``rate`` (resampled when the file differs)."""

    kind = FrameKind.AUDIO

    def __init__(self, path: str | Path, rate: int | None = 48_000, frame_ms: int = 20) -> None:
        self.path = str(path)
        samples, file_rate = read_wav(path)
        self.file_rate = file_rate
        self.rate = rate or file_rate
        self.samples = resample(samples, file_rate, self.rate)
        self.frame_samples = self.rate * frame_ms // 1000
        if self.frame_samples <= 0:
            raise MediaFileError(f"{path}: frame of {frame_ms} ms at {self.rate} Hz is empty")

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def __iter__(self) -> Iterator[tuple[float, Frame]]:
        step = self.frame_samples
        for start in range(0, len(self.samples), step):
            chunk = self.samples[start : start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), chunk.shape[1]), np.int16)])
            # A packet leaves the sender when its last sample has been captured.
            yield (start + step) / self.rate, AudioFrame(samples=chunk, sample_rate=self.rate, pts=start)


class Y4MSource:
    """A y4m file as VideoFrames with 90 kHz pts at the file's frame rate."""

    kind = FrameKind.VIDEO

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with Y4MReader(path) as reader:
            self.width, self.height, self.fps = reader.width, reader.height, reader.fps
            self.frame_count = sum(1 for _ in reader.planes())

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps)

    def __iter__(self) -> Iterator[tuple[float, Frame]]:
        with Y4MReader(self.path) as reader:
            for index, image in enumerate(reader):
                at = float(index / self.fps)
                yield at, VideoFrame(image=image, pts=round(at * VIDEO_CLOCK), time_base=1 / VIDEO_CLOCK)


def open_source(path: str | Path, audio_rate: int | None = 48_000) -> WavSource | Y4MSource:
    """A source for a ``.wav`` or ``.y4m`` file (by content, then by extension)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except OSError as exc:
        raise MediaFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(b"YUV4MPEG2"):
        return Y4MSource(path)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WavSource(path, audio_rate)
    raise MediaFileError(f"{path}: not a wav or y4m file")
