"""Streaming audio conversion for the speech stages: any rate and layout -> mono int16 at one rate."""

from __future__ import annotations

import numpy as np


class StreamResampler:
    """Stateful resampler (libswresample through PyAV): chunk boundaries leave no clicks.

    Feed int16 (n, channels) or (n,) chunks at any rate; get mono int16 (m,) at ``rate``.
    A change of input rate or channel count starts a new resampler.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = None
        self._source: tuple[int, int] | None = None

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        import av

        mono = mono_int16(samples)
        if sample_rate == self.rate:
            return mono
        if self._source != (sample_rate, 1) or self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._source = (sample_rate, 1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono.reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler's filter (end of a clip)."""
        if self._resampler is None:
            return np.zeros(0, np.int16)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None)]
        self._resampler = None
        self._source = None
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)


def mono_int16(samples: np.ndarray) -> np.ndarray:
    """Average the channels of int16 (n, channels) audio into (n,) int16."""
    if samples.ndim == 1:
        return samples.astype(np.int16, copy=False)
    if samples.shape[1] == 1:
        return samples[:, 0].astype(np.int16, copy=False)
    return samples.astype(np.int32).mean(axis=1).astype(np.int16)


def resample_once(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole clip (a synthesized sentence) to mono int16 at ``target_rate``."""
    resampler = StreamResampler(target_rate)
    head = resampler(samples, source_rate)
    return np.concatenate([head, resampler.flush()]) if source_rate != target_rate else head


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 audio in dB relative to full scale (-inf for silence)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768) if rms > 0 else float("-inf")
