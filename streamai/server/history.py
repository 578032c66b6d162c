"""What finished sessions leave behind: per-pipeline totals for ``/metrics`` and routing.

A closed session is folded into its pipeline's totals and then let go, so counters
stay monotonic however many sessions a node has served, and no session object is
kept alive for bookkeeping.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from ..histogram import Histogram


@dataclass
class PipelineTotals:
    """Sums over sessions of one pipeline."""

    frames_in: Counter[str] = field(default_factory=Counter)
    frames_out: Counter[str] = field(default_factory=Counter)
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason)
    service: defaultdict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    queue_wait: defaultdict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    video_latency: Histogram = field(default_factory=Histogram)
    viewer_latency: Histogram = field(default_factory=Histogram)
    # stage-reported histograms (``Stage.observe``) and the quality ladder, by (stage, name / direction / level)
    observed: defaultdict[tuple[str, str], Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    degrade_steps: Counter[tuple[str, str]] = field(default_factory=Counter)
    level_frames: Counter[tuple[str, str]] = field(default_factory=Counter)
    waterfall: defaultdict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))  # speech

    def add_session(self, session: Any) -> None:
        """Add one session's counters and histograms (live or just closed)."""
        stats = session.runner.stats
        self.frames_in.update(stats.frames_in)
        self.frames_out.update(stats.frames_out)
        for stage in stats.stages.values():
            for reason, count in stage.drops.items():
                self.drops[(stage.name, reason)] += count
            if stage.service.count:
                self.service[stage.name].merge(stage.service)
            if stage.queue_wait.count:
                self.queue_wait[stage.name].merge(stage.queue_wait)
            for name, histogram in stage.histograms.items():
                self.observed[(stage.name, name)].merge(histogram)
            for direction, count in stage.degrade_steps.items():
                self.degrade_steps[(stage.name, direction)] += count
            for level, count in stage.level_frames.items():
                self.level_frames[(stage.name, str(level))] += count
        self.video_latency.merge(session.video_out.counters.latency)
        for viewer in getattr(session, "viewers", {}).values():
            self.viewer_latency.merge(viewer.latency)
        for component, histogram in getattr(session, "waterfall", {}).items():
            self.waterfall[component].merge(histogram)

    def add(self, other: PipelineTotals) -> None:
        self.frames_in.update(other.frames_in)
        self.frames_out.update(other.frames_out)
        self.drops.update(other.drops)
        for name, histogram in other.service.items():
            self.service[name].merge(histogram)
        for name, histogram in other.queue_wait.items():
            self.queue_wait[name].merge(histogram)
        self.video_latency.merge(other.video_latency)
        self.viewer_latency.merge(other.viewer_latency)
        for key, histogram in other.observed.items():
            self.observed[key].merge(histogram)
        self.degrade_steps.update(other.degrade_steps)
        self.level_frames.update(other.level_frames)
        for component, histogram in other.waterfall.items():
            self.waterfall[component].merge(histogram)


@dataclass(frozen=True)
class ClosedSession:
    """The little a node remembers of one finished session."""

    id: str
    pipeline: str
    created: float
    closed: float
    reason: str | None


@dataclass
class SessionHistory:
    """Totals of every finished session, and the last few of them."""

    totals: defaultdict[str, PipelineTotals] = field(default_factory=lambda: defaultdict(PipelineTotals))
    recent: deque[ClosedSession] = field(default_factory=lambda: deque(maxlen=64))

    def record(self, session: Any) -> None:
        self.totals[session.pipeline].add_session(session)
        self.recent.append(
            ClosedSession(session.id, session.pipeline, session.created, time.time(), session.close_reason)
        )

    def with_live(self, sessions: list[Any]) -> dict[str, PipelineTotals]:
        """Finished totals plus the live sessions' current figures, by pipeline (fresh objects)."""
        combined: defaultdict[str, PipelineTotals] = defaultdict(PipelineTotals)
        for pipeline, totals in self.totals.items():
            combined[pipeline].add(totals)
        for session in sessions:
            combined[session.pipeline].add_session(session)
        return dict(combined)
