"""Audio helpers of the speech stages: mono conversion, resampling (see ``streamai.media.resample``), loudness."""

from __future__ import annotations

import numpy as np

from ..media.resample import StreamResampler, mono_int16, resample

__all__ = ["StreamResampler", "mono_int16", "resample_once", "rms_dbfs", "trim_leading_silence"]

AUDIBLE_DBFS = -40.0  # a sample above this peak level is audible (the VAD's energy floor too)


def resample_once(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole clip (a synthesized sentence) to mono int16 (n,) at ``target_rate`` (soxr)."""
    return resample(mono_int16(samples), source_rate, target_rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 audio in dB relative to full scale (-inf for silence)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768) if rms > 0 else float("-inf")


def trim_leading_silence(
    samples: np.ndarray, rate: int, keep_ms: float = 5.0, floor_dbfs: float = AUDIBLE_DBFS
) -> np.ndarray:
    """Drop the silence before the first sample above ``floor_dbfs``, keeping ``keep_ms`` of it.

    A synthesized clause that starts with silence delays the first sound the listener
    hears by that much; all-silent audio is returned as it is.
    """
    mono = samples.reshape(len(samples), -1)[:, 0] if samples.ndim > 1 else samples
    loud = np.flatnonzero(np.abs(mono.astype(np.int32)) > 32768 * 10 ** (floor_dbfs / 20))
    if not len(loud):
        return samples
    start = max(0, int(loud[0]) - int(rate * keep_ms / 1000))
    return samples[start:]
