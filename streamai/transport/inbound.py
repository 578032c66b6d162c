"""Inbound tracks -> engine frames, stamped with capture time as they leave aiortc.

Video is consumed real-time: when aiortc has queued several decoded frames, only
the newest is converted and submitted; the skipped ones are counted. Audio is a
stream: every packet is submitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import AudioFrame, Frame, VideoFrame, now

log = logging.getLogger(__name__)


@dataclass
class InboundCounters:
    """What came in on one track."""

    frames: int = 0
    skipped: int = 0
    oversized: int = 0  # video frames over the size limit, never converted
    last_at: float = 0.0


def audio_to_frame(frame: av.AudioFrame, captured: float) -> AudioFrame:
    """An aiortc audio frame as int16 (n, channels) PCM."""
    if frame.format.name != "s16":
        frame = frame.reformat(format="s16")
    channels = len(frame.layout.channels)
    samples = frame.to_ndarray().reshape(-1, channels)
    return AudioFrame(samples=samples, sample_rate=frame.sample_rate, pts=frame.pts or 0, capture_time=captured)


def video_to_frame(frame: av.VideoFrame, captured: float) -> VideoFrame:
    """An aiortc video frame as an RGB uint8 array."""
    time_base = float(frame.time_base) if frame.time_base else 1 / 90000
    return VideoFrame(
        image=frame.to_ndarray(format="rgb24"), pts=frame.pts or 0, time_base=time_base, capture_time=captured
    )


def take_newest(track: MediaStreamTrack, frame: av.VideoFrame, counters: InboundCounters) -> av.VideoFrame:
    """Skip past frames aiortc has already queued behind ``frame`` (its queue is not public)."""
    queue = getattr(track, "_queue", None)
    if not isinstance(queue, asyncio.Queue):
        return frame
    while not queue.empty():
        newer = queue.get_nowait()
        if newer is None:  # end of stream marker: put it back for the next recv()
            queue.put_nowait(None)
            break
        counters.skipped += 1
        frame = newer
    return frame


async def consume_track(
    track: MediaStreamTrack,
    submit: Callable[[Frame], None],
    counters: InboundCounters,
    max_pixels: int | None = None,
    on_oversized: Callable[[int, int], None] | None = None,
) -> None:
    """Read ``track`` until it ends, submitting each frame (the newest, for video).

    Video frames of more than ``max_pixels`` are counted and skipped before conversion
    (a peer may send 8K; no pipeline should pay for it); ``on_oversized`` hears of each.
    """
    try:
        while True:
            frame = await track.recv()
            if track.kind == "video":
                frame = take_newest(track, frame, counters)
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    counters.oversized += 1
                    counters.last_at = now()  # the peer is alive, only too large
                    if on_oversized is not None:
                        on_oversized(frame.width, frame.height)
                    continue
                captured = now()
                converted: Frame = video_to_frame(frame, captured)
            else:
                captured = now()
                converted = audio_to_frame(frame, captured)
            counters.frames += 1
            counters.last_at = captured
            submit(converted)
    except MediaStreamError:
        log.debug("inbound %s track ended", track.kind)
