"""A session kept up: when it fails with a retryable error, a new one opens after a backoff.

The JS client's ``reconnect()``: network failures, timeouts, ICE failure, a vanished
node, 429 and 5xx open a new session (through the same URLs, so a router sends it to
a node that is alive) after an exponential backoff that is never shorter than the
server's ``Retry-After``; anything else, or ``backoff.retries`` failures in a row, ends
it with that error. Events and received frames continue across sessions, with a
:class:`ReconnectingEvent` between; what is sent goes to each new session through an
aiortc ``MediaRelay`` (the source is opened once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import av
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from .errors import Backoff, ClientCode, StreamaiError
from .events import Event, ReconnectingEvent
from .media import SAMPLE_RATE, AudioInput, VideoInput, audio_source, video_source
from .received import FrameQueue, ReceivedTrack
from .session import Session, SessionOptions
from .signaling import Endpoints

FrameListener = Callable[[Any, float], None]


class ReconnectingSession:
    """Sessions one after another until closed or a failure that cannot be retried; see :func:`reconnect`.

    ``session`` is the current :class:`Session`; ``sessions`` counts those opened;
    ``error`` is what ended it (None after ``close()`` or a clean end by the node).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        backoff: Backoff | None = None,
        audio: AudioInput | None = None,
        video: VideoInput | None = None,
        sample_rate: int = SAMPLE_RATE,
        fps: float = 30.0,
        event_buffer: int = 4096,
        **options: Any,
    ) -> None:
        self.endpoints = Endpoints(url)
        self.backoff = backoff or Backoff()
        self.options = options
        self.session: Session | None = None
        self.sessions = 0
        self.error: StreamaiError | None = None
        self._relay = MediaRelay()
        self._sources: dict[str, MediaStreamTrack] = {}
        if audio is not None:
            self._sources["audio"] = audio_source(audio, sample_rate)
        if video is not None:
            self._sources["video"] = video_source(video, fps)
        self._events: deque[Event] = deque(maxlen=max(1, event_buffer))
        self._event_ready = asyncio.Event()
        self._frame_listeners: dict[str, list[FrameListener]] = {"audio": [], "video": []}
        self._frame_queues: dict[str, list[FrameQueue[Any]]] = {"audio": [], "video": []}
        self._up = asyncio.Event()
        self._done = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> ReconnectingSession:
        """Open the first session (retrying as configured); raises its error when none could be opened."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streamai-reconnect")
        up = asyncio.ensure_future(self._up.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({up, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            done.cancel()
        if not self._up.is_set():
            await self.close()
            raise self.error or StreamaiError("closed while connecting", code=ClientCode.ABORTED)
        return self

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                session = self._new_session()
                error: StreamaiError | None = None
                try:
                    await session.start()
                except StreamaiError as exc:
                    error = exc
                else:
                    self.session = session
                    self.sessions += 1
                    attempt = 0
                    self._up.set()
                    with contextlib.suppress(StreamaiError):
                        await session.wait_closed()
                    if self._closing:
                        return
                    error = session.error
                    if error is None:  # the node ended it: done, not a failure
                        return
                if self._closing:
                    return
                if not error.retryable or attempt >= self.backoff.retries:
                    self.error = error
                    return
                delay = max(self.backoff.delay(attempt, error), self.endpoints.wait_s())
                attempt += 1
                self._push(ReconnectingEvent(type="reconnecting", attempt=attempt, delay_s=round(delay, 3),
                                             code=error.code, message=error.message))  # fmt: skip
                await asyncio.sleep(delay)
        finally:
            self._done.set()
            self._event_ready.set()
            for queues in self._frame_queues.values():
                for queue in queues:
                    queue.end()

    def _new_session(self) -> Session:
        # audio buffered (every packet), video unbuffered (the newest picture); the relay keeps reading the
        # source between sessions, so a live source never bursts its backlog into the next one
        media = {kind: self._relay.subscribe(track, buffered=kind == "audio") for kind, track in self._sources.items()}
        session = Session(self.endpoints.urls, endpoints=self.endpoints, audio=media.get("audio"),
                          video=media.get("video"), **self.options)  # fmt: skip
        session.on_event(self._push)
        session.on_track(self._follow)
        return session

    def _follow(self, received: ReceivedTrack[Any]) -> None:
        kind = received.kind
        received.on_frame(lambda frame, arrived: self._on_frame(kind, frame, arrived))

    def _push(self, event: Event) -> None:
        self._events.append(event)
        self._event_ready.set()

    def _on_frame(self, kind: str, frame: av.AudioFrame | av.VideoFrame, arrived: float) -> None:
        for listener in list(self._frame_listeners[kind]):
            listener(frame, arrived)
        for queue in self._frame_queues[kind]:
            queue.put(frame)

    async def events(self) -> AsyncIterator[Event]:
        """Every session's events in turn, a :class:`ReconnectingEvent` between; raises the final error."""
        while True:
            while self._events:
                yield self._events.popleft()
            if self._done.is_set():
                break
            self._event_ready.clear()
            await self._event_ready.wait()
        if self.error is not None:
            raise self.error

    def on_frame(self, kind: str, listener: FrameListener) -> None:
        """Call ``listener(frame, arrived)`` for each received ``kind`` frame of every session."""
        self._frame_listeners[kind].append(listener)

    async def frames(self, kind: str, buffer: int | None = None) -> AsyncIterator[Any]:
        """Received ``kind`` ("audio" or "video") frames across sessions, until the last one ends."""
        queue: FrameQueue[Any] = FrameQueue(buffer or (2 if kind == "video" else 250))
        if self._done.is_set():
            queue.end()
        self._frame_queues[kind].append(queue)
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            self._frame_queues[kind].remove(queue)

    def _current(self) -> Session:
        if self.session is None or self.session.state != "connected":
            raise StreamaiError("no session is connected now", code=ClientCode.NOT_CONNECTED, fatal=False)
        return self.session

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send a control message to the current session."""
        await self._current().send(message)

    async def send_prompt(self, text: str) -> None:
        """Set the prompt on the current session (not replayed on later ones)."""
        await self._current().send_prompt(text)

    async def set_params(self, params: Mapping[str, Any]) -> None:
        """Change live parameters of the current session (not replayed on later ones)."""
        await self._current().set_params(params)

    async def interrupt(self) -> None:
        """Interrupt the current session's speech."""
        await self._current().interrupt()

    async def wait_closed(self) -> None:
        """Return when no further session will open; raises the error that ended it, if any."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Close the current session and open no other."""
        self._closing = True
        if self.session is not None:
            await self.session.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._done.set()
        for track in self._sources.values():
            track.stop()

    async def __aenter__(self) -> ReconnectingSession:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


def reconnect(
    url: str | Sequence[str],
    *,
    pipeline: str | None = None,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    audio: AudioInput | None = None,
    video: VideoInput | None = None,
    backoff: Backoff | None = None,
    **options: Unpack[SessionOptions],
) -> ReconnectingSession:
    """A session that reopens itself after retryable failures: ``async with reconnect(url, ...) as live:``.

    Takes :func:`connect`'s arguments plus ``backoff`` (default :class:`Backoff`: 5 retries
    from 0.5 s, doubling, at most 15 s, never shorter than ``Retry-After``).
    """
    if "endpoints" in options:
        raise TypeError("reconnect() keeps its own Endpoints")
    return ReconnectingSession(url, backoff=backoff, pipeline=pipeline, params=params, token=token, audio=audio,
                               video=video, **options)  # fmt: skip
