"""What a session receives: each processed track read as it arrives, fanned out to async iterators.

The session reads every received track from the start, whether anyone iterates it or
not (aiortc would otherwise queue frames without bound). Video is read like a
real-time player: when several decoded frames wait, only the newest is taken (the
others are counted in ``skipped``). Each ``frames()`` iterator has its own bounded
buffer: when it falls behind, its oldest frames go (counted in ``lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import now
from ..transport.inbound import InboundCounters, take_newest
from .errors import StreamaiError
from .media import audio_frame_samples

log = logging.getLogger(__name__)

FrameT = TypeVar("FrameT", av.AudioFrame, av.VideoFrame)

AUDIO_BUFFER = 250  # 5 s of 20 ms packets per iterator
VIDEO_BUFFER = 2


class FrameQueue(Generic[FrameT]):
    """One reader's bounded view of a received track (oldest frames go when it is full)."""

    def __init__(self, limit: int) -> None:
        self._items: deque[FrameT] = deque(maxlen=max(1, limit))
        self._ready = asyncio.Event()
        self._ended = False
        self.lost = 0

    def put(self, frame: FrameT) -> None:
        """Add a frame (dropping the oldest when full)."""
        if len(self._items) == self._items.maxlen:
            self.lost += 1
        self._items.append(frame)
        self._ready.set()

    def end(self) -> None:
        """No more frames will come."""
        self._ended = True
        self._ready.set()

    async def get(self) -> FrameT | None:
        """The next frame, or None once the track has ended and the buffer is empty."""
        while not self._items:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class ReceivedTrack(Generic[FrameT]):
    """A processed track coming back from the node (``kind`` audio or video).

    ``async for frame in track`` (or ``track.frames()``) yields PyAV frames from now on;
    ``arrays()`` yields numpy arrays; ``on_frame(fn)`` calls ``fn(frame, arrived)`` for
    every frame as it is read (``arrived`` on ``streamai.frames.now()``'s clock). The
    raw aiortc track is ``track.track`` (read it only through this object).
    """

    def __init__(self, track: MediaStreamTrack, failure: Callable[[], StreamaiError | None]) -> None:
        self.track = track
        self.kind: str = track.kind
        self.counters = InboundCounters()
        self._failure = failure
        self._listeners: list[Callable[[FrameT, float], None]] = []
        self._queues: list[FrameQueue[FrameT]] = []
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] = asyncio.create_task(self._pump(), name=f"streamai-receive-{self.kind}")

    @property
    def frames_received(self) -> int:
        """Frames read so far (for video, the newest of each backlog)."""
        return self.counters.frames

    @property
    def skipped(self) -> int:
        """Video frames skipped because a newer one was already waiting."""
        return self.counters.skipped

    @property
    def ended(self) -> bool:
        """Whether the track has ended (the session closed or failed)."""
        return self._ended.is_set()

    def on_frame(self, listener: Callable[[FrameT, float], None]) -> Callable[[], None]:
        """Call ``listener(frame, arrived)`` for each frame as it is read; returns a function that removes it.

        It runs in the receiving task: keep it short (a slow listener makes video skip frames).
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe(self, buffer: int | None = None) -> FrameQueue[FrameT]:
        """A queue of the frames from now on (``buffer`` frames at most); ended with the track."""
        queue: FrameQueue[FrameT] = FrameQueue(buffer or (VIDEO_BUFFER if self.kind == "video" else AUDIO_BUFFER))
        if self.ended:
            queue.end()
        else:
            self._queues.append(queue)
        return queue

    async def frames(self, buffer: int | None = None) -> AsyncIterator[FrameT]:
        """The frames from now on, until the session ends; raises the session's error if it failed."""
        queue = self.subscribe(buffer)
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            if queue in self._queues:
                self._queues.remove(queue)
        failure = self._failure()
        if failure is not None:
            raise failure

    def __aiter__(self) -> AsyncIterator[FrameT]:
        return self.frames()

    async def arrays(self, buffer: int | None = None) -> AsyncIterator[np.ndarray]:
        """Like ``frames()``, as numpy: audio int16 (n, channels), video RGB (h, w, 3) uint8."""
        async for frame in self.frames(buffer):
            yield frame_array(frame)

    async def wait_ended(self) -> None:
        """Return once the track has ended."""
        await self._ended.wait()

    async def _pump(self) -> None:
        counters = self.counters
        try:
            while True:
                frame = cast(FrameT, await self.track.recv())
                if isinstance(frame, av.VideoFrame):
                    frame = take_newest(self.track, frame, counters)
                arrived = now()
                counters.frames += 1
                counters.last_at = arrived
                for listener in list(self._listeners):
                    try:
                        listener(frame, arrived)
                    except Exception:
                        log.exception("a frame listener failed; it is removed")
                        self._listeners.remove(listener)
                for queue in self._queues:
                    queue.put(frame)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        finally:
            self._ended.set()
            for queue in self._queues:
                queue.end()

    async def stop(self) -> None:
        """Stop reading (the session does this when it ends)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def frame_array(frame: av.AudioFrame | av.VideoFrame) -> np.ndarray:
    """A PyAV frame as numpy: audio int16 (n, channels), video RGB (h, w, 3) uint8."""
    if isinstance(frame, av.VideoFrame):
        return frame.to_ndarray(format="rgb24")
    samples = audio_frame_samples(frame)
    if samples.dtype.kind == "f":
        samples = np.clip(samples, -1.0, 1.0) * 32767.0
    return samples.astype(np.int16, copy=False)
