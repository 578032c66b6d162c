"""A bounded inbound video decode queue: when decoding falls behind, skip to a fresh keyframe.

aiortc hands every complete encoded video frame to its decoder thread through an
unbounded queue. When the node cannot decode as fast as frames arrive (CPU busy,
many sessions), that queue grows and so does latency, seconds of it, before the
engine ever sees a frame. This queue holds at most ``max_frames``: past that it drops
what waits, drops inter frames until the next keyframe (they cannot be decoded
without their references), and asks the sender for a keyframe (RTCP PLI).
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether an encoded VP8 or H.264 frame can be decoded on its own."""
    if not data:
        return False
    name = codec_name.lower()
    if name == "vp8":
        return (data[0] & 0x01) == 0  # VP8 frame tag: bit 0 clear = key frame
    if name == "h264":
        index = data.find(b"\x00\x00\x01")
        while index != -1 and index + 3 < len(data):
            if data[index + 3] & 0x1F == 5:  # an IDR slice
                return True
            index = data.find(b"\x00\x00\x01", index + 3)
        return False
    return True  # unknown codec: never wait for something we cannot recognise


class LatestDecodeQueue(queue.Queue):  # type: ignore[type-arg]
    """Drop-in for aiortc's decoder input queue that never lets a backlog build up."""

    def __init__(self, max_frames: int, request_keyframe: Callable[[], None]) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.request_keyframe = request_keyframe
        self.waiting_for_keyframe = False
        self.dropped = 0
        self.resyncs = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # end of stream marker
            super().put(item, block, timeout)
            return
        codec, encoded = item
        key = is_keyframe(codec.name, bytes(encoded.data))
        if self.waiting_for_keyframe and not key:
            self.dropped += 1
            return
        self.waiting_for_keyframe = False
        if self.qsize() >= self.max_frames and not key:
            with self.mutex:
                self.dropped += len(self.queue) + 1
                self.queue.clear()
            self.waiting_for_keyframe = True
            self.resyncs += 1
            self.request_keyframe()
            return
        super().put(item, block, timeout)


def bound_video_decoding(receiver: Any, max_frames: int = 8) -> LatestDecodeQueue | None:
    """Give an aiortc video receiver a bounded decode queue (before its decoder thread starts).

    aiortc exposes no setting for it; this replaces its private queue and returns the new
    one (with drop counters), or None when the receiver's internals are not as expected.
    """
    attribute = "_RTCRtpReceiver__decoder_queue"
    if not isinstance(getattr(receiver, attribute, None), queue.Queue):
        return None

    def request_keyframe() -> None:
        ssrcs = list(getattr(receiver, "_RTCRtpReceiver__active_ssrc", {}) or [])
        for ssrc in ssrcs:
            task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    bounded = LatestDecodeQueue(max_frames, request_keyframe)
    setattr(receiver, attribute, bounded)
    return bounded
