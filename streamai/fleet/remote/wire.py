"""What crosses Ray between a node's stand-in and a Serve replica: one call and its result.

Monotonic clocks of two machines do not compare, so frame times travel relative to the
send moment (node -> replica) or to the replica's receive moment (replica -> node).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...frames import Frame


@dataclass
class RemoteCall:
    """One frame (or control frame) for the remote stage; times are relative to the send moment."""

    session: str
    params: dict[str, Any]
    frame: Frame
    downstream_s: float = 0.0  # service time after this stage on the edge (the stage's can_make_it)


@dataclass
class RemoteResult:
    """What the remote stage emitted for one call (times relative to the replica's receive moment)."""

    frames: list[Frame] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)  # reasons of frames the remote stage gave up on
    replica: str = ""
    pid: int = 0
    service_s: float = 0.0
    calls: int = 0


def shift(frame: Frame, offset: float) -> Frame:
    """A shallow copy of ``frame`` with capture time and deadline moved by ``offset`` seconds."""
    return replace(frame, capture_time=frame.capture_time + offset, deadline=frame.deadline + offset)
