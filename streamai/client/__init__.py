"""The Python client of streamai: sessions with a node (or through routers) from your own code.

::

    import streamai.client

    async with streamai.client.connect("http://127.0.0.1:8080", pipeline="speech-translate",
                                       audio="hello.wav") as session:
        async for event in session.events():
            if isinstance(event, streamai.client.TranslationEvent):
                print(event.text)

``connect`` sends audio/video from an aiortc track, a file, PCM arrays or iterators
(:mod:`streamai.client.media`, and ``microphone()`` where PortAudio is installed) and
receives the processed tracks (``session.audio`` / ``session.video``, async iterators
of frames) and the events, typed (:mod:`streamai.client.events`). ``reconnect`` keeps a
session up across failures; ``watch_events`` reads a session's events over its
WebSocket without media. Every refusal is a :class:`StreamaiError` with the HTTP
status, the server's code and message, and ``Retry-After``.
"""

from __future__ import annotations

from .errors import Backoff, ClientCode, StreamaiError, error_from_response, is_retryable, parse_retry_after
from .events import (
    DropEvent,
    ErrorEvent,
    Event,
    InterruptionEvent,
    LatencyEvent,
    ParamsEvent,
    PongEvent,
    PromptEvent,
    ReconnectingEvent,
    StateEvent,
    StatsEvent,
    TranscriptEvent,
    TranslationEvent,
    UnknownEvent,
    VadEvent,
    WarningEvent,
    parse_event,
)
from .media import (
    AudioArrayTrack,
    AudioInput,
    ImageIteratorTrack,
    PacedVideoTrack,
    PcmIteratorTrack,
    VideoInput,
    Y4MFileTrack,
    audio_file,
    microphone,
    video_file,
)
from .received import ReceivedTrack, frame_array
from .reconnect import ReconnectingSession, reconnect
from .session import Connecting, Session, SessionOptions, connect
from .signaling import Endpoints
from .watch import EventWatcher, watch_events

__all__ = [
    "AudioArrayTrack",
    "AudioInput",
    "Backoff",
    "ClientCode",
    "Connecting",
    "DropEvent",
    "Endpoints",
    "ErrorEvent",
    "Event",
    "EventWatcher",
    "ImageIteratorTrack",
    "InterruptionEvent",
    "LatencyEvent",
    "PacedVideoTrack",
    "ParamsEvent",
    "PcmIteratorTrack",
    "PongEvent",
    "PromptEvent",
    "ReceivedTrack",
    "ReconnectingEvent",
    "ReconnectingSession",
    "Session",
    "SessionOptions",
    "StateEvent",
    "StatsEvent",
    "StreamaiError",
    "TranscriptEvent",
    "TranslationEvent",
    "UnknownEvent",
    "VadEvent",
    "VideoInput",
    "WarningEvent",
    "Y4MFileTrack",
    "audio_file",
    "connect",
    "error_from_response",
    "frame_array",
    "is_retryable",
    "microphone",
    "parse_event",
    "parse_retry_after",
    "reconnect",
    "video_file",
    "watch_events",
]
