"""The node's ``/metrics``: sessions, frames, drops by reason, stage latency, refusals, scaling.

Built at scrape time from the session manager's live and folded-in totals; rendered by
``prometheus_client`` (streamai/web/metrics.py), so label values are always escaped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..web.metrics import FunctionCollector, add_histogram, histogram_family, registry_of
from ..web.protection import EntryGuard
from .scale import NodeScaler
from .sessions import SessionManager


def session_metrics(manager: SessionManager) -> Iterator[Metric]:
    """Every live and finished session, summed by pipeline and stage."""
    by_pipeline = manager.history.with_live(list(manager.sessions.values()))
    yield GaugeMetricFamily("streamai_sessions", "Sessions open on this node.", value=len(manager.sessions))
    outcomes = CounterMetricFamily("streamai_sessions", "Sessions by outcome since start.", labels=["outcome"])
    for outcome, count in sorted(manager.totals.items()):
        outcomes.add_metric([outcome], count)
    yield outcomes
    frames_in = CounterMetricFamily("streamai_frames_in", "Frames received.", labels=["pipeline", "kind"])
    frames_out = CounterMetricFamily("streamai_frames_out", "Frames delivered.", labels=["pipeline", "kind"])
    drops = CounterMetricFamily("streamai_drops", "Frames dropped, by stage and reason.",
                                labels=["pipeline", "stage", "reason"])  # fmt: skip
    service = histogram_family("streamai_stage_service_seconds", "Stage service time.", ["pipeline", "stage"])
    queue_wait = histogram_family(
        "streamai_stage_queue_wait_seconds", "Time frames waited in a stage's queue.", ["pipeline", "stage"]
    )
    video = histogram_family(
        "streamai_video_latency_seconds", "Capture to send of processed video frames.", ["pipeline"]
    )
    viewer = histogram_family(
        "streamai_viewer_latency_seconds", "Capture to a viewer's sender, processed video (WHEP).", ["pipeline"]
    )
    waterfall = histogram_family(
        "streamai_speech_waterfall_seconds",
        "Speech end to the first translated packet handed to the transport, per utterance, by component "
        "(vad, asr, mt, tts, outbound, encode, total).",
        ["pipeline", "component"],
    )
    for pipeline, totals in sorted(by_pipeline.items()):
        for kind, count in sorted(totals.frames_in.items()):
            frames_in.add_metric([pipeline, kind], count)
        for kind, count in sorted(totals.frames_out.items()):
            frames_out.add_metric([pipeline, kind], count)
        for (stage, reason), count in sorted(totals.drops.items()):
            drops.add_metric([pipeline, stage, reason], count)
        for stage, histogram in sorted(totals.service.items()):
            add_histogram(service, [pipeline, stage], histogram)
        for stage, histogram in sorted(totals.queue_wait.items()):
            add_histogram(queue_wait, [pipeline, stage], histogram)
        add_histogram(video, [pipeline], totals.video_latency)
        if totals.viewer_latency.count:
            add_histogram(viewer, [pipeline], totals.viewer_latency)
        for component, histogram in sorted(totals.waterfall.items()):
            add_histogram(waterfall, [pipeline, component], histogram)
    yield from (frames_in, frames_out, drops, service, queue_wait, video, viewer, waterfall)
    viewers: Counter[str] = Counter()
    for session in manager.sessions.values():
        viewers[session.pipeline] += len(session.viewers)
    watching = GaugeMetricFamily("streamai_viewers", "WHEP viewers watching sessions.", labels=["pipeline"])
    for pipeline, count in sorted(viewers.items()):
        watching.add_metric([pipeline], count)
    yield watching


def node_metrics(
    manager: SessionManager, guard: EntryGuard, scaler: NodeScaler, remote: Any = None
) -> CollectorRegistry:
    """The node's metrics registry: sessions, entry refusals, scale to zero, remote stages when present."""
    collectors: list[object] = [FunctionCollector(lambda: session_metrics(manager)), guard, scaler]
    if remote is not None and hasattr(remote, "collect"):
        collectors.append(remote)  # remote stages: cold starts, edge fallbacks
    return registry_of(*collectors)
