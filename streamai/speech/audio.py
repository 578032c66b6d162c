"""Audio helpers of the speech stages: mono conversion, resampling (see ``streamai.media.resample``), loudness."""

from __future__ import annotations

import numpy as np

from ..media.resample import StreamResampler, mono_int16, resample

__all__ = ["StreamResampler", "mono_int16", "resample_once", "rms_dbfs"]


def resample_once(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole clip (a synthesized sentence) to mono int16 (n,) at ``target_rate`` (soxr)."""
    return resample(mono_int16(samples), source_rate, target_rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 audio in dB relative to full scale (-inf for silence)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768) if rms > 0 else float("-inf")
