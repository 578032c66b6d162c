"""Server events as typed objects, and client control messages as checked JSON.

Each event the node sends (data channel or events WebSocket) becomes one of the
models below by its ``type``; an event of a type this client does not know, or one
whose fields do not fit its model, becomes :class:`UnknownEvent` with every field
kept, so a newer server never breaks an older client. Every model keeps fields it
does not name (``event.model_extra``) and ``event.raw()`` gives the dict back.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ClientCode, StreamaiError

MAX_MESSAGE_BYTES = 16 * 1024
"""The server's limit on one control message, in bytes of UTF-8."""

CLIENT_MESSAGE_TYPES = ("prompt", "params", "interrupt", "ping")
"""Control message types the server accepts."""


class Event(BaseModel):
    """Base of every event: its ``type`` and ``t`` (the server's wall clock, seconds; a pong's echo)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    t: float | None = None

    def raw(self) -> dict[str, Any]:
        """The event as the server sent it: a plain dict of the fields it had (none the model only defaults)."""
        return {"type": self.type, **self.model_dump(exclude_unset=True)}


class StateEvent(Event):
    """The session's state on the server: ``connected``, ``closed`` (with ``reason``), ...; or a client state."""

    type: Literal["state"] = "state"
    state: str
    session: str | None = None
    reason: str | None = None


class TranscriptEvent(Event):
    """Recognised speech: partial (``final`` false, ``stable`` = the committed prefix) or final."""

    type: Literal["transcript"] = "transcript"
    text: str = ""
    final: bool = False
    stable: str | None = None
    utterance: int | None = None
    language: str | None = None
    latency_ms: float | None = None
    stage: str | None = None


class TranslationEvent(Event):
    """A translated clause of ``utterance`` (``source``: the text it translates)."""

    type: Literal["translation"] = "translation"
    text: str = ""
    source: str | None = None
    final: bool = True
    utterance: int | None = None
    language: str | None = None
    source_language: str | None = None
    latency_ms: float | None = None
    stage: str | None = None


class LatencyEvent(Event):
    """A sent frame's capture->send latency (``kind`` video|audio, ``ms``), or an utterance's figures.

    Per utterance: ``final_transcript_ms``, ``translation_ms`` and ``first_audio_ms``, each
    from the utterance's last audio frame as the node received it.
    """

    type: Literal["latency"] = "latency"
    kind: str | None = None
    ms: float | None = None
    seq: int | None = None
    utterance: int | None = None
    final_transcript_ms: float | None = None
    translation_ms: float | None = None
    first_audio_ms: float | None = None

    @property
    def per_utterance(self) -> bool:
        """True for an utterance's figures, False for one frame's latency."""
        return self.utterance is not None and self.ms is None


class DropEvent(Event):
    """Frames a stage dropped since the last report (``count``), by ``reason``; ``total`` so far."""

    type: Literal["drop"] = "drop"
    stage: str | None = None
    reason: str = ""
    count: int = 1
    total: int | None = None


class StatsEvent(Event):
    """About once a second: frames in/out by kind, drops, video latency summary."""

    type: Literal["stats"] = "stats"
    frames_in: dict[str, int] = {}
    frames_out: dict[str, int] = {}
    drops: int = 0
    video_latency: dict[str, Any] | None = None
    inbound_skipped: int = 0
    decode_dropped: int = 0


class ErrorEvent(Event):
    """An error on the session; ``fatal`` ones end it (the client then raises :class:`StreamaiError`)."""

    type: Literal["error"] = "error"
    code: str | None = None
    message: str = "server error"
    fatal: bool = False

    def to_error(self) -> StreamaiError:
        """This event as a :class:`StreamaiError` (status 0; code from the event)."""
        return StreamaiError(self.message, code=self.code or ClientCode.SERVER_ERROR, body=self.raw(), fatal=self.fatal)


class WarningEvent(Event):
    """Something the session survived (a stage's control error, oversized video, a remote fallback)."""

    type: Literal["warning"] = "warning"
    code: str | None = None
    message: str = ""
    stage: str | None = None


class PongEvent(Event):
    """The answer to a ping: ``t`` echoes the ping's, ``server_t`` is the server's clock."""

    type: Literal["pong"] = "pong"
    server_t: float | None = None


class PromptEvent(Event):
    """A prompt the server received (``status``) and applies from the next frame."""

    type: Literal["prompt"] = "prompt"
    text: str = ""
    status: str | None = None


class ParamsEvent(Event):
    """Live parameters one stage applied: ``changed`` maps each name to its new value."""

    type: Literal["params"] = "params"
    stage: str | None = None
    changed: dict[str, Any] = {}


class VadEvent(Event):
    """Speech started or ended (``state`` start|end) at ``audio_ms`` into the input."""

    type: Literal["vad"] = "vad"
    state: str = ""
    utterance: int | None = None
    audio_ms: float | None = None
    stage: str | None = None


class InterruptionEvent(Event):
    """Translated speech was cut: ``reason`` client | barge_in."""

    type: Literal["interruption"] = "interruption"
    reason: str | None = None
    utterance: int | None = None
    stage: str | None = None


class ReconnectingEvent(Event):
    """Made by the client, not the server: the session failed and a new one opens after ``delay_s``."""

    type: Literal["reconnecting"] = "reconnecting"
    attempt: int
    delay_s: float
    code: str
    message: str


class UnknownEvent(Event):
    """An event of a type this client does not model (or whose fields do not fit); all fields kept."""


EVENT_TYPES: dict[str, type[Event]] = {
    "state": StateEvent,
    "transcript": TranscriptEvent,
    "translation": TranslationEvent,
    "latency": LatencyEvent,
    "drop": DropEvent,
    "stats": StatsEvent,
    "error": ErrorEvent,
    "warning": WarningEvent,
    "pong": PongEvent,
    "prompt": PromptEvent,
    "params": ParamsEvent,
    "vad": VadEvent,
    "interruption": InterruptionEvent,
    "reconnecting": ReconnectingEvent,
}
"""The event model of each known ``type``."""


class BadEvent(ValueError):
    """A server message that is no event at all (not UTF-8 JSON, not an object, no ``type``)."""


def decode_event(data: str | bytes) -> dict[str, Any]:
    """One data-channel/WebSocket message as a dict with a string ``type``; :class:`BadEvent` otherwise."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise BadEvent("message is not UTF-8 text") from None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise BadEvent("message is not JSON") from None
    if not isinstance(value, dict):
        raise BadEvent("message is not a JSON object")
    if not isinstance(value.get("type"), str) or not value["type"]:
        raise BadEvent('message has no "type"')
    return value


def event_from_dict(value: dict[str, Any]) -> Event:
    """The typed event for a decoded message; :class:`UnknownEvent` for new types or fields that do not fit."""
    model = EVENT_TYPES.get(str(value.get("type")))
    if model is not None:
        try:
            return model.model_validate(value)
        except ValidationError:
            pass
    try:
        return UnknownEvent.model_validate(value)
    except ValidationError:  # a non-numeric "t": keep the rest
        return UnknownEvent.model_validate({k: v for k, v in value.items() if k != "t"})


def parse_event(data: str | bytes) -> Event:
    """Decode and type one server message (:class:`BadEvent` when it is no event)."""
    return event_from_dict(decode_event(data))


def encode_message(message: dict[str, Any]) -> str:
    """Check and serialise a control message; :class:`StreamaiError` (bad_message / message_too_large) if wrong."""
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise StreamaiError('a control message needs a string "type"', code="bad_message", fatal=False)
    if kind == "prompt" and not isinstance(message.get("text"), str):
        raise StreamaiError('a prompt message needs a string "text"', code="bad_message", fatal=False)
    if kind == "params" and not isinstance(message.get("params"), dict):
        raise StreamaiError('a params message needs an object "params"', code="bad_message", fatal=False)
    try:
        text = json.dumps(message, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StreamaiError(f"control message is not JSON: {exc}", code="bad_message", fatal=False) from None
    size = len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        raise StreamaiError(
            f"control message is {size} bytes; the server accepts at most {MAX_MESSAGE_BYTES}",
            code=ClientCode.MESSAGE_TOO_LARGE,
            fatal=False,
        )
    return text
