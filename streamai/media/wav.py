"""16-bit PCM wav files <-> int16 arrays shaped (n_samples, channels), with the stdlib ``wave``."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


class MediaFileError(ValueError):
    """A media file that cannot be read or written; ``str()`` names the file."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav: (int16 samples (n, channels), sample rate)."""
    try:
        with wave.open(str(path), "rb") as reader:
            width, channels, rate = reader.getsampwidth(), reader.getnchannels(), reader.getframerate()
            if width != 2:
                raise MediaFileError(f"{path}: {8 * width}-bit wav, only 16-bit PCM is supported")
            data = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise MediaFileError(f"{path}: not a PCM wav file ({exc})") from None
    except OSError as exc:
        raise MediaFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
    usable = len(samples) - len(samples) % channels
    return samples[:usable].reshape(-1, channels), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 samples (n,) or (n, channels) as a 16-bit PCM wav."""
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.dtype != np.int16:
        raise MediaFileError(f"{path}: samples must be int16, got {samples.dtype}")
    try:
        with wave.open(str(path), "wb") as writer:
            writer.setnchannels(samples.shape[1])
            writer.setsampwidth(2)
            writer.setframerate(int(rate))
            writer.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    except OSError as exc:
        raise MediaFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
