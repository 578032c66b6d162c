"""Test speech made at test time with espeak-ng (GPL-3 program; the generated audio is ours), and feeders.

``speak(text)`` returns int16 (n, 1) audio at 48 kHz; ``utterance_clip`` pads it with
silence so a VAD can find its start and end. ``feed`` sends 20 ms frames into a
``PipelineRunner`` at real-time pace (``speed=1``) or faster, and returns the capture
time of the last frame that carried speech (the "speech end" an outside observer sees).
"""

from __future__ import annotations

import asyncio

import numpy as np

from ..frames import AudioFrame, ControlFrame, ControlKind, now
from ..media.espeak import EspeakMissing as EspeakMissing  # re-exported: tests skip on it
from ..media.espeak import speak as speak

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz

SENTENCES = {
    "station": "good morning, where is the train station",
    "coffee": "I would like a cup of coffee, please",
    "weather": "the weather is very nice today",
    "help": "can you help me find my hotel",
}


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros((int(seconds * rate), 1), np.int16)


def voiced_end(samples: np.ndarray, rate: int = RATE, floor: int = 300) -> float:
    """Seconds from the clip start to the end of its last loud sample."""
    loud = np.flatnonzero(np.abs(samples[:, 0].astype(np.int32)) > floor)
    return (loud[-1] + 1) / rate if len(loud) else 0.0


def utterance_clip(text: str, lead_s: float = 0.4, trail_s: float = 0.8, **kwargs: object) -> np.ndarray:
    """Silence, the spoken text, silence: one utterance for a VAD."""
    return np.concatenate([silence(lead_s), speak(text, **kwargs), silence(trail_s)])  # type: ignore[arg-type]


async def feed(runner: object, samples: np.ndarray, speed: float = 1.0, rate: int = RATE, eos: bool = False) -> float:
    """Submit ``samples`` as 20 ms frames; real-time pace when ``speed`` is 1, faster when greater.

    Returns the capture time of the frame holding the clip's last voiced sample.
    """
    frame = rate // 50
    end_index = int(voiced_end(samples, rate) * rate)
    start = now()
    speech_end = start
    for index, offset in enumerate(range(0, len(samples), frame)):
        chunk = samples[offset : offset + frame]
        if len(chunk) < frame:
            chunk = np.concatenate([chunk, np.zeros((frame - len(chunk), chunk.shape[1]), np.int16)])
        due = start + (index + 1) * frame / rate / speed
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        out = AudioFrame(samples=chunk, sample_rate=rate, pts=offset)
        if offset <= end_index < offset + frame:
            speech_end = out.capture_time
        runner.submit(out)  # type: ignore[attr-defined]
    if eos:
        runner.submit(ControlFrame(control=ControlKind.END_OF_STREAM))  # type: ignore[attr-defined]
    return speech_end


# The latency clip: five one-clause sentences (no translated audio can start before a speaker stops).
CLIP_SENTENCES = (
    "where is the train station",
    "I would like a cup of coffee please",
    "the weather is very nice today",
    "can you help me find my hotel",
    "how much does this ticket cost",
)


def sentence_clip(
    texts: tuple[str, ...] | list[str] = CLIP_SENTENCES, gap_s: float = 2.0, lead_s: float = 0.5, rate: int = RATE
) -> tuple[np.ndarray, list[float]]:
    """Sentences spoken one after another with ``gap_s`` of silence between them: int16 (n, 1) at
    ``rate`` and, for each sentence, where its speech ends in the clip (seconds: its last voiced sample)."""
    parts = [silence(lead_s, rate)]
    ends: list[float] = []
    position = lead_s
    for text in texts:
        spoken = speak(text, rate=rate)
        ends.append(position + voiced_end(spoken, rate))
        parts += [spoken, silence(gap_s, rate)]
        position += (len(spoken) + int(gap_s * rate)) / rate
    return np.concatenate(parts), ends
