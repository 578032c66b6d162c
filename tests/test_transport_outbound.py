"""Outbound tracks: audio that waited past its deadline is not played (late_audio: drop) and is counted;
video that waited past its deadline is never sent."""

from __future__ import annotations

import math

import numpy as np

from streamai.frames import AudioFrame, Frame, VideoFrame, now
from streamai.transport.outbound import ProcessedAudioTrack, ProcessedVideoTrack


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


def video_frame(value: int, deadline: float) -> VideoFrame:
    image = np.full((48, 64, 3), value, np.uint8)
    return VideoFrame(image=image, capture_time=now(), deadline=deadline)


async def test_video_that_waited_past_its_deadline_is_never_sent_and_the_last_frame_repeats() -> None:
    late: list[Frame] = []
    sent: list[float] = []
    track = ProcessedVideoTrack(on_sent=lambda kind, latency, frame: sent.append(latency), on_late=late.append)
    track.put(video_frame(200, deadline=now() + 5))
    first = (await track.recv()).to_ndarray(format="rgb24")
    assert first.mean() > 150 and len(sent) == 1
    stale = video_frame(20, deadline=now() - 0.01)  # e.g. the encoder took longer than the budget
    track.put(stale)
    second = (await track.recv()).to_ndarray(format="rgb24")
    assert late == [stale] and track.counters.late == 1
    assert second.mean() > 150  # the last frame repeats; the stale one is never shown
    assert len(sent) == 1 and track.counters.sent == 1 and track.counters.repeated == 1
    track.stop()
