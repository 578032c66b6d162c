"""Latency histograms: cumulative buckets for Prometheus plus a window of recent samples for quantiles.

Shared by the engine, the transport, the node and the router; it imports nothing of theirs.
"""

from __future__ import annotations

import bisect
from collections import deque

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
