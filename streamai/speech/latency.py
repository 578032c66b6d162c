"""Per-utterance latency of the speech chain, published as one ``latency`` event.

Each speech stage declares what it measures (``expect``) when it starts and records
its figure for an utterance (``record``), all in ms after the utterance's speech end
(the capture time of its last voiced audio). When every expected figure of an
utterance is in, the tracker emits ``latency``; an utterance that never completes
(a dropped translation) is emitted with nulls when a later one completes.
"""

from __future__ import annotations

import weakref
from typing import Any

KEYS = ("final_transcript_ms", "translation_ms", "first_audio_ms")


class LatencyTracker:
    """Collects the figures of one session's event bus."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self.expected: set[str] = set()
        self.pending: dict[int, dict[str, float]] = {}

    def expect(self, key: str) -> None:
        self.expected.add(key)

    def record(self, utterance: int, key: str, ms: float) -> None:
        figures = self.pending.setdefault(utterance, {})
        figures.setdefault(key, round(ms, 1))
        if self.expected <= figures.keys():
            for older in sorted(u for u in self.pending if u < utterance):
                self._emit(older, self.pending.pop(older))
            self._emit(utterance, self.pending.pop(utterance))

    def _emit(self, utterance: int, figures: dict[str, float]) -> None:
        self.events.emit(
            "latency", utterance=utterance, **{k: figures.get(k) for k in KEYS if k in self.expected or k in figures}
        )


_trackers: weakref.WeakKeyDictionary[Any, LatencyTracker] = weakref.WeakKeyDictionary()


def tracker(events: Any) -> LatencyTracker:
    """The tracker of an event bus (one per session)."""
    found = _trackers.get(events)
    if found is None:
        found = _trackers[events] = LatencyTracker(events)
    return found
