"""Counters and latency histograms: per stage, per reason, end to end."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

# Bucket upper bounds in seconds: 50 µs .. 10 s, roughly 1-2-5 spaced.
BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Cumulative buckets (for Prometheus) plus a window of recent samples (for quantiles)."""

    def __init__(self, window: int = 4096) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=window)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1
        self.recent.append(seconds)

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts (a finished session's, into the node's total)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.count += other.count
        self.recent.extend(other.recent)

    def quantile(self, q: float) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "count": self.count,
            "p50_ms": ms(self.quantile(0.5)),
            "p95_ms": ms(self.quantile(0.95)),
            "p99_ms": ms(self.quantile(0.99)),
        }

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, the last being ``+Inf``."""
        running, rows = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


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
