"""Speech synthesized with espeak-ng (a GPL-3 program run as a process; the audio it makes is ours).

Used where a spoken clip is needed without a model: model self-tests (``streamai models
check``), test media, benchmarks.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np

from ..speech.audio import resample_once

RATE = 48_000


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed (apt-get install espeak-ng)."""


def speak(text: str, voice: str = "en-us", words_per_minute: int = 160, rate: int = RATE) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng: int16 (n, 1) at ``rate``."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise EspeakMissing("test speech needs espeak-ng: apt-get install -y espeak-ng")
    wav = subprocess.run(
        [program, "-v", voice, "-s", str(words_per_minute), "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav), "rb") as reader:
        source_rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.int16)
    return resample_once(samples, source_rate, rate).reshape(-1, 1)
