"""Synthetic test media: a frame-number barcode, a moving test pattern, tones and marker bursts.

The barcode is a row of 32 big black/white cells across the top of the picture:
a start pattern, 20 data bits (the frame number), a CRC-8 and a stop cell. Cells are
measured in fractions of the picture, so a frame the sender scaled down still reads;
the reader also undoes the ``invert`` and ``mirror`` effects and reports that it did.

Audio helpers make 48 kHz int16 arrays shaped (n, channels), cut them into 20 ms
packets, and find the onsets of a marker tone burst in received audio (audio latency
= onset received - onset sent).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# -- frame-number barcode ------------------------------------------------------------

BARCODE_CELLS = 32
BARCODE_START = (1, 1, 0)
BARCODE_STOP = (0,)
BARCODE_DATA_BITS = 20
BARCODE_CRC_BITS = 8
BARCODE_MAX = (1 << BARCODE_DATA_BITS) - 1
BARCODE_BAND = 1 / 12  # height of the barcode band as a fraction of the picture height
_MIN_CONTRAST = 60.0  # luma levels between the darkest and brightest cell, or no barcode

assert len(BARCODE_START) + BARCODE_DATA_BITS + BARCODE_CRC_BITS + len(BARCODE_STOP) == BARCODE_CELLS


@dataclass(frozen=True, slots=True)
class Barcode:
    """A decoded barcode: the number and how the picture had been changed."""

    value: int
    inverted: bool = False
    mirrored: bool = False


def _crc8(value: int, bits: int = BARCODE_DATA_BITS) -> int:
    """CRC-8 (polynomial 0x07) of the low ``bits`` of ``value``, most significant bit first."""
    crc = 0
    for shift in reversed(range(bits)):
        feedback = ((value >> shift) & 1) ^ (crc >> 7)
        crc = (crc << 1) & 0xFF
        if feedback:
            crc ^= 0x07
    return crc


def barcode_bits(value: int) -> list[int]:
    """The 32 cell values (1 = white) that encode ``value`` (taken modulo 2**20)."""
    value &= BARCODE_MAX
    data = [(value >> i) & 1 for i in reversed(range(BARCODE_DATA_BITS))]
    crc = _crc8(value)
    check = [(crc >> i) & 1 for i in reversed(range(BARCODE_CRC_BITS))]
    return [*BARCODE_START, *data, *check, *BARCODE_STOP]


def _cell_edges(width: int) -> np.ndarray:
    return (np.arange(BARCODE_CELLS + 1) * width) // BARCODE_CELLS


def band_height(height: int) -> int:
    """Rows the barcode occupies in a picture ``height`` rows tall."""
    return max(4, round(height * BARCODE_BAND))


def draw_barcode(image: np.ndarray, value: int) -> np.ndarray:
    """Draw the barcode of ``value`` into the top rows of an (H, W, 3) uint8 image, in place."""
    height, width = image.shape[:2]
    rows = band_height(height)
    edges = _cell_edges(width)
    for index, bit in enumerate(barcode_bits(value)):
        image[:rows, edges[index] : edges[index + 1]] = 255 if bit else 0
    return image


def _cell_levels(image: np.ndarray) -> np.ndarray:
    """Mean luma of the centre of each barcode cell."""
    height, width = image.shape[:2]
    rows = band_height(height)
    top, bottom = rows // 4, max(rows // 4 + 1, (3 * rows) // 4)
    band = image[top:bottom].astype(np.float32)
    luma = band @ np.array([0.299, 0.587, 0.114], np.float32) if band.ndim == 3 else band
    edges = _cell_edges(width)
    levels = np.empty(BARCODE_CELLS, np.float32)
    for index in range(BARCODE_CELLS):
        left, right = edges[index], edges[index + 1]
        margin = (right - left) // 4
        levels[index] = luma[:, left + margin : max(left + margin + 1, right - margin)].mean()
    return levels


def _decode_bits(bits: list[int]) -> int | None:
    start, stop = len(BARCODE_START), BARCODE_CELLS - len(BARCODE_STOP)
    if tuple(bits[:start]) != BARCODE_START or tuple(bits[stop:]) != BARCODE_STOP:
        return None
    value = 0
    for bit in bits[start : start + BARCODE_DATA_BITS]:
        value = (value << 1) | bit
    crc = 0
    for bit in bits[start + BARCODE_DATA_BITS : stop]:
        crc = (crc << 1) | bit
    return value if crc == _crc8(value) else None


def decode_barcode(image: np.ndarray) -> Barcode | None:
    """Read the barcode from an RGB (or gray) image; ``None`` when there is none or it is damaged."""
    if image.ndim not in (2, 3) or image.shape[0] < 8 or image.shape[1] < BARCODE_CELLS * 2:
        return None
    levels = _cell_levels(image)
    low, high = float(levels.min()), float(levels.max())
    if high - low < _MIN_CONTRAST:
        return None
    bits = [int(level > (low + high) / 2) for level in levels]
    for mirrored in (False, True):
        ordered = bits[::-1] if mirrored else bits
        for inverted in (False, True):
            candidate = [1 - b for b in ordered] if inverted else ordered
            value = _decode_bits(candidate)
            if value is not None:
                return Barcode(value, inverted=inverted, mirrored=mirrored)
    return None


def read_barcode(image: np.ndarray) -> int | None:
    """The frame number drawn by ``draw_barcode`` (inverted or mirrored pictures too), or ``None``."""
    code = decode_barcode(image)
    return None if code is None else code.value


# -- moving test pattern -------------------------------------------------------------

_BARS = np.array(
    [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192]],
    dtype=np.uint8,
)


class TestPattern:
    """A moving test picture: colour bars, a gradient, a bouncing square, the frame number as a barcode."""

    __test__ = False  # not a pytest class

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, barcode: bool = True) -> None:
        if width < 64 or height < 48:
            raise ValueError("test pattern needs at least 64x48")
        self.width, self.height, self.fps, self.barcode = width, height, fps, barcode
        background = np.empty((height, width, 3), np.uint8)
        bar_edges = (np.arange(len(_BARS) + 1) * width) // len(_BARS)
        split = height * 2 // 3
        for index, colour in enumerate(_BARS):
            background[:split, bar_edges[index] : bar_edges[index + 1]] = colour
        ramp = np.linspace(16, 235, width, dtype=np.float32).astype(np.uint8)
        background[split:] = ramp[None, :, None]
        self._background = background
        self._size = max(16, height // 6)

    def frame(self, index: int) -> np.ndarray:
        """Picture number ``index`` as a fresh (H, W, 3) uint8 RGB array."""
        image = self._background.copy()
        size = self._size
        top_min = band_height(self.height) + 4
        span_x, span_y = self.width - size, self.height - size - top_min
        x = _bounce(index * 7, span_x)
        y = top_min + _bounce(index * 5, span_y)
        image[y : y + size, x : x + size] = (255, 255, 255)
        image[y + size // 4 : y + 3 * size // 4, x + size // 4 : x + 3 * size // 4] = (16, 16, 16)
        if self.barcode:
            draw_barcode(image, index)
        return image

    def frames(self, count: int | None = None, start: int = 0) -> Iterator[np.ndarray]:
        """Pictures ``start``, ``start + 1``, ... (forever when ``count`` is ``None``)."""
        index = start
        while count is None or index < start + count:
            yield self.frame(index)
            index += 1


def _bounce(position: int, span: int) -> int:
    if span <= 0:
        return 0
    period = 2 * span
    position %= period
    return position if position <= span else period - position


def test_pattern(width: int = 640, height: int = 480, fps: float = 30.0) -> TestPattern:
    """The default 640x480@30 moving test pattern."""
    return TestPattern(width, height, fps)


test_pattern.__test__ = False  # type: ignore[attr-defined]


# -- audio -----------------------------------------------------------------------------

SAMPLE_RATE = 48_000
FRAME_MS = 20
MARKER_HZ = 1_000.0


def _to_int16(wave: np.ndarray, channels: int) -> np.ndarray:
    samples = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)
    return np.repeat(samples[:, None], channels, axis=1)


def silence(seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """``seconds`` of digital silence, int16 (n, channels)."""
    return np.zeros((round(seconds * rate), channels), np.int16)


def tone(
    frequency: float = 440.0, seconds: float = 1.0, rate: int = SAMPLE_RATE, level: float = 0.3, channels: int = 1
) -> np.ndarray:
    """A steady sine tone at ``level`` (fraction of full scale), int16 (n, channels)."""
    t = np.arange(round(seconds * rate)) / rate
    return _to_int16(level * np.sin(2 * np.pi * frequency * t), channels)


def tone_burst(
    frequency: float = MARKER_HZ,
    seconds: float = 0.1,
    rate: int = SAMPLE_RATE,
    level: float = 0.5,
    ramp_ms: float = 1.0,
    channels: int = 1,
) -> np.ndarray:
    """A tone with short raised-cosine ramps (no click), for marking a moment in a track."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    wave = level * np.sin(2 * np.pi * frequency * t)
    ramp = min(n // 2, round(ramp_ms * rate / 1000))
    if ramp > 0:
        envelope = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        wave[:ramp] *= envelope
        wave[n - ramp :] *= envelope[::-1]
    return _to_int16(wave, channels)


def click(rate: int = SAMPLE_RATE, level: float = 0.8, samples: int = 48, channels: int = 1) -> np.ndarray:
    """A short rectangular click (``samples`` long, 1 ms at 48 kHz)."""
    return _to_int16(np.full(samples, level), channels)


def marker_track(
    seconds: float,
    period: float = 1.0,
    burst: float = 0.1,
    frequency: float = MARKER_HZ,
    rate: int = SAMPLE_RATE,
    level: float = 0.5,
    offset: float = 0.5,
    channels: int = 1,
) -> tuple[np.ndarray, list[float]]:
    """Silence with a marker burst every ``period`` s from ``offset``; returns (samples, onset times in s)."""
    track = silence(seconds, rate, channels)
    pulse = tone_burst(frequency, burst, rate, level, channels=channels)
    onsets: list[float] = []
    at = offset
    while at + burst <= seconds:
        start = round(at * rate)
        track[start : start + len(pulse)] = pulse
        onsets.append(float(start) / rate)
        at += period
    return track, onsets


def audio_chunks(samples: np.ndarray, rate: int = SAMPLE_RATE, frame_ms: int = FRAME_MS) -> Iterator[np.ndarray]:
    """Cut (n, channels) int16 audio into ``frame_ms`` packets; the last one is padded with silence."""
    if samples.ndim == 1:
        samples = samples[:, None]
    step = rate * frame_ms // 1000
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        if len(chunk) < step:
            chunk = np.concatenate([chunk, np.zeros((step - len(chunk), samples.shape[1]), samples.dtype)])
        yield chunk


def tone_envelope(
    samples: np.ndarray, rate: int = SAMPLE_RATE, frequency: float = MARKER_HZ, window_ms: float = 5.0
) -> np.ndarray:
    """Per-sample amplitude (fraction of full scale) of the ``frequency`` component, centred window."""
    mono = samples.astype(np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    mono /= 32768.0
    t = np.arange(len(mono)) / rate
    mixed = mono * np.exp(-2j * np.pi * frequency * t)
    window = max(1, round(window_ms * rate / 1000))
    kernel = np.full(window, 2.0 / window)
    real = np.convolve(mixed.real, kernel, mode="same")
    imag = np.convolve(mixed.imag, kernel, mode="same")
    return np.hypot(real, imag)


def detect_bursts(
    samples: np.ndarray,
    rate: int = SAMPLE_RATE,
    frequency: float = MARKER_HZ,
    min_level: float = 0.05,
    min_gap: float = 0.2,
    window_ms: float = 5.0,
) -> list[float]:
    """Onset times (s from the first sample) of marker bursts at ``frequency`` in received audio.

    An onset is where the tone's envelope first rises past half of the loudest burst
    (and past ``min_level``); with a centred window that is the true start within a
    sample or two, whatever gain or codec the path applied. Onsets closer than
    ``min_gap`` to the previous one belong to the same burst.
    """
    if len(samples) == 0:
        return []
    envelope = tone_envelope(samples, rate, frequency, window_ms)
    peak = float(envelope.max())
    if peak < min_level:
        return []
    above = envelope > peak / 2
    rising = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    if above[0]:
        rising = np.concatenate([[0], rising])
    onsets: list[float] = []
    last_end = -np.inf
    falling = np.flatnonzero(~above[1:] & above[:-1]) + 1
    for start in rising:
        if start / rate - last_end < min_gap and onsets:
            continue
        onsets.append(float(start) / rate)
        ends = falling[falling > start]
        last_end = (ends[0] if len(ends) else len(above)) / rate
    return onsets
