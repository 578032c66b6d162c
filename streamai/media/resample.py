"""Audio sample-rate conversion: a numpy polyphase windowed-sinc resampler (no scipy needed)."""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

_HALF_TAPS = 10  # filter half-length in periods of the lower rate
_BETA = 6.0  # Kaiser window: ~60 dB stop band


@lru_cache(maxsize=32)
def _filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """Low-pass FIR at the upsampled rate with cut-off at the lower Nyquist, gain ``up``; and its centre."""
    factor = max(up, down)
    half = _HALF_TAPS * factor
    n = np.arange(-half, half + 1)
    taps = np.sinc(n / factor) / factor * np.kaiser(2 * half + 1, _BETA) * up
    return taps.astype(np.float64), half


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample int16 (n,) or (n, channels) audio; output length is ceil(n * target / source)."""
    if source_rate == target_rate or len(samples) == 0:
        return samples
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError("sample rates must be positive")
    mono = samples.ndim == 1
    x = samples[:, None] if mono else samples
    g = gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    taps, centre = _filter(up, down)
    per_phase = -(-len(taps) // up)
    padded_taps = np.zeros(per_phase * up)
    padded_taps[: len(taps)] = taps
    phases = padded_taps.reshape(per_phase, up).T  # phases[p, j] = taps[p + j * up]
    pad = per_phase + 1
    source = np.concatenate([np.zeros((pad, x.shape[1])), x.astype(np.float64), np.zeros((pad, x.shape[1]))])
    count = -(-len(x) * up // down)
    out = np.empty((count, x.shape[1]), np.float64)
    offsets = np.arange(per_phase)
    chunk = max(1, 2_000_000 // per_phase)
    for start in range(0, count, chunk):
        m = np.arange(start, min(count, start + chunk))
        t = m * down + centre
        phase, base = t % up, t // up
        index = base[:, None] - offsets[None, :] + pad  # (outputs, taps)
        weights = phases[phase]  # (outputs, taps)
        out[m] = np.einsum("ot,otc->oc", weights, source[index])
    result = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return result[:, 0] if mono else result
