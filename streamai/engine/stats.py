"""Counters and latency histograms: per stage, per reason, end to end."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..histogram import Histogram


@dataclass
class StageStats:
    """What one stage did: frames processed, drops by reason, queue wait, service time."""

    name: str
    processed: int = 0
    forwarded: int = 0
    emitted: int = 0
    errors: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    queue_wait: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    # what a stage observes itself (``Stage.observe``), e.g. the avatar's prompt -> frame time; by metric name
    histograms: defaultdict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    # the quality ladder (``degrade:`` in YAML): steps by direction, frames processed by level, level now
    degrade_steps: Counter[str] = field(default_factory=Counter)
    level_frames: Counter[int] = field(default_factory=Counter)
    level: int = 0

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "processed": self.processed,
            "emitted": self.emitted,
            "errors": self.errors,
            "drops": dict(self.drops),
            "queue_wait": self.queue_wait.summary_ms(),
            "service": self.service.summary_ms(),
        }
        if self.histograms:
            out["observed"] = {name: h.summary_ms() for name, h in self.histograms.items()}
        if self.level_frames or self.degrade_steps:
            out["quality"] = {
                "level": self.level,
                "steps": dict(self.degrade_steps),
                "frames_by_level": dict(self.level_frames),
            }
        return out


@dataclass
class PipelineStats:
    """The whole run: frames in and out, end-to-end latency, every stage's stats."""

    frames_in: Counter[str] = field(default_factory=Counter)
    frames_out: Counter[str] = field(default_factory=Counter)
    end_to_end: Histogram = field(default_factory=Histogram)
    stages: dict[str, StageStats] = field(default_factory=dict)

    def drops(self) -> dict[str, dict[str, int]]:
        return {name: dict(s.drops) for name, s in self.stages.items() if s.drops}

    def total_drops(self) -> int:
        return sum(sum(s.drops.values()) for s in self.stages.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "frames_in": dict(self.frames_in),
            "frames_out": dict(self.frames_out),
            "end_to_end": self.end_to_end.summary_ms(),
            "drops": self.drops(),
            "stages": [s.snapshot() for s in self.stages.values()],
        }
