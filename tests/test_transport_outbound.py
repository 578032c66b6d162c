"""Outbound tracks: audio that waited past its deadline is not played (late_audio: drop) and is counted."""

from __future__ import annotations

import math

import numpy as np

from streamai.frames import AudioFrame, now
from streamai.transport.outbound import ProcessedAudioTrack


def tone_frame(deadline: float) -> AudioFrame:
    samples = np.full((960, 1), 8000, np.int16)
    return AudioFrame(samples=samples, sample_rate=48000, capture_time=now(), deadline=deadline)


async def test_audio_past_its_deadline_is_dropped_at_send_and_counted() -> None:
    late: list[AudioFrame] = []
    track = ProcessedAudioTrack(drop_late=True, on_late=late.append)
    stale = tone_frame(deadline=now() - 0.01)
    fresh = tone_frame(deadline=now() + 5)
    track.put(stale)
    track.put(fresh)
    first = (await track.recv()).to_ndarray()
    assert late == [stale]
    assert np.abs(first).max() == 8000  # the fresh frame plays, the stale one never does
    assert track.buffered_seconds == 0
    track.stop()


async def test_play_policy_plays_late_audio() -> None:
    late: list[AudioFrame] = []
    track = ProcessedAudioTrack(drop_late=False, on_late=late.append)
    track.put(tone_frame(deadline=now() - 0.01))
    track.put(tone_frame(deadline=math.inf))
    assert np.abs((await track.recv()).to_ndarray()).max() == 8000
    assert late == []
    track.stop()
