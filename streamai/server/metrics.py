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
from .history import PipelineTotals
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
    yield from stage_observations(by_pipeline)


def stage_observations(by_pipeline: dict[str, PipelineTotals]) -> Iterator[Metric]:
    """What stages measure themselves (``streamai_<name>_seconds``, e.g. the avatar's prompt -> frame
    time) and the quality ladder's steps and frames by level."""
    names = sorted({name for totals in by_pipeline.values() for _, name in totals.observed})
    for name in names:
        family = histogram_family(f"streamai_{name}_seconds", f"Measured by the stage itself ({name}).",
                                  ["pipeline", "stage"])  # fmt: skip
        for pipeline, totals in sorted(by_pipeline.items()):
            for (stage, observed), histogram in sorted(totals.observed.items()):
                if observed == name:
                    add_histogram(family, [pipeline, stage], histogram)
        yield family
    steps = CounterMetricFamily(
        "streamai_degrade_steps", "Quality-ladder steps (degrade: in the pipeline), by direction.",
        labels=["pipeline", "stage", "direction"],
    )  # fmt: skip
    levels = CounterMetricFamily(
        "streamai_stage_level_frames", "Frames a laddered stage processed, by quality level (0: configured).",
        labels=["pipeline", "stage", "level"],
    )  # fmt: skip
    for pipeline, totals in sorted(by_pipeline.items()):
        for (stage, direction), count in sorted(totals.degrade_steps.items()):
            steps.add_metric([pipeline, stage, direction], count)
        for (stage, level), count in sorted(totals.level_frames.items()):
            levels.add_metric([pipeline, stage, level], count)
    yield steps
    yield levels


def node_metrics(
    manager: SessionManager, guard: EntryGuard, scaler: NodeScaler, remote: Any = None
) -> CollectorRegistry:
    """The node's metrics registry: sessions, entry refusals, scale to zero, remote stages when present."""
    collectors: list[object] = [FunctionCollector(lambda: session_metrics(manager)), guard, scaler]
    if remote is not None and hasattr(remote, "collect"):
        collectors.append(remote)  # remote stages: cold starts, edge fallbacks
    return registry_of(*collectors)
