"""The few frame types that flow through a pipeline.

Every frame carries ``capture_time`` (monotonic seconds, taken when its media left
the transport, or inherited from the newest input it depends on) and ``deadline``
(capture time + the pipeline's budget, set by the engine on submit). A frame whose
deadline is ``inf`` is never dropped for lateness (control frames, the tail of an
already admitted TTS clause).
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

_sequence = itertools.count()


def now() -> float:
    """The clock every capture time and deadline is measured on."""
    return time.monotonic()


class FrameKind(enum.Enum):
    AUDIO = "audio"
    VIDEO = "video"
    TEXT = "text"
    CONTROL = "control"


class ControlKind(enum.Enum):
    PROMPT = "prompt"
    PARAMS = "params"
    INTERRUPTION = "interruption"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    END_OF_STREAM = "end_of_stream"


@dataclass(slots=True, kw_only=True)
class Frame:
    """Base of every frame: timing and identity."""

    capture_time: float = field(default_factory=now)
    deadline: float = math.inf
    seq: int = field(default_factory=lambda: next(_sequence))

    kind = FrameKind.CONTROL

    @property
    def is_media(self) -> bool:
        return self.kind in (FrameKind.AUDIO, FrameKind.VIDEO)

    def remaining(self, at: float | None = None) -> float:
        """Seconds left before the deadline (negative when late)."""
        return self.deadline - (now() if at is None else at)


@dataclass(slots=True, kw_only=True)
class AudioFrame(Frame):
    """PCM audio: ``samples`` is int16 with shape (n_samples, channels)."""

    samples: np.ndarray
    sample_rate: int
    pts: int = 0

    kind = FrameKind.AUDIO

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate


@dataclass(slots=True, kw_only=True)
class VideoFrame(Frame):
    """A picture: ``image`` is an (H, W, 3) uint8 RGB array."""

    image: np.ndarray
    pts: int = 0
    time_base: float = 1 / 90000
    meta: dict[str, Any] = field(default_factory=dict)  # stage annotations (face box, prompt); copy to change

    kind = FrameKind.VIDEO

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(slots=True, kw_only=True)
class TextFrame(Frame):
    """Text: a partial or final transcript, a translation, a caption."""

    text: str
    final: bool = True
    language: str | None = None
    utterance_id: int = 0
    stable_prefix: str = ""

    kind = FrameKind.TEXT


@dataclass(slots=True, kw_only=True)
class ControlFrame(Frame):
    """A command riding the same queues as media: prompt, interruption, end of stream."""

    control: ControlKind
    data: dict[str, Any] = field(default_factory=dict)

    kind = FrameKind.CONTROL


F = TypeVar("F", bound=Frame)


def derived(frame: F, **changes: Any) -> F:
    """A copy of ``frame`` with new content, keeping its timing (capture time, deadline)."""
    changes.setdefault("seq", next(_sequence))
    return replace(frame, **changes)


def inherit_timing(target: F, *sources: Frame) -> F:
    """Give ``target`` the capture time and deadline of the newest of ``sources``."""
    newest = max(sources, key=lambda f: f.capture_time)
    target.capture_time = newest.capture_time
    target.deadline = newest.deadline
    return target
