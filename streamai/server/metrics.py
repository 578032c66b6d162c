"""``/metrics`` in the Prometheus text format: sessions, frames, drops by reason, stage latency."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from ..engine.stats import Histogram
from .sessions import Session, SessionManager


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _histogram(lines: list[str], name: str, histogram: Histogram, **labels: str) -> None:
    for bound, count in histogram.cumulative():
        lines.append(f"{name}_bucket{_labels(**labels, le=bound)} {count}")
    lines.append(f"{name}_sum{_labels(**labels)} {histogram.total:.6f}")
    lines.append(f"{name}_count{_labels(**labels)} {histogram.count}")


def render(manager: SessionManager, extra: Iterable[str] = ()) -> str:
    """Every live and recently closed session, summed by pipeline and stage."""
    sessions: list[Session] = [*manager.sessions.values(), *manager.retired]
    frames_in: Counter[tuple[str, str]] = Counter()
    frames_out: Counter[tuple[str, str]] = Counter()
    drops: Counter[tuple[str, str, str]] = Counter()
    service: defaultdict[tuple[str, str], Histogram] = defaultdict(Histogram)
    queue_wait: defaultdict[tuple[str, str], Histogram] = defaultdict(Histogram)
    end_to_end: defaultdict[str, Histogram] = defaultdict(Histogram)
    for session in sessions:
        stats = session.runner.stats
        for kind, count in stats.frames_in.items():
            frames_in[(session.pipeline, kind)] += count
        for kind, count in stats.frames_out.items():
            frames_out[(session.pipeline, kind)] += count
        for stage in stats.stages.values():
            for reason, count in stage.drops.items():
                drops[(session.pipeline, stage.name, reason)] += count
            service[(session.pipeline, stage.name)].merge(stage.service)
            queue_wait[(session.pipeline, stage.name)].merge(stage.queue_wait)
        end_to_end[session.pipeline].merge(session.video_out.counters.latency)

    lines = [
        "# HELP streamai_sessions Sessions open on this node.",
        "# TYPE streamai_sessions gauge",
        f"streamai_sessions {len(manager.sessions)}",
        "# HELP streamai_sessions_total Sessions by outcome since start.",
        "# TYPE streamai_sessions_total counter",
    ]
    for outcome, count in sorted(manager.totals.items()):
        lines.append(f"streamai_sessions_total{_labels(outcome=outcome)} {count}")
    lines += ["# HELP streamai_frames_in_total Frames received.", "# TYPE streamai_frames_in_total counter"]
    for (pipeline, kind), count in sorted(frames_in.items()):
        lines.append(f"streamai_frames_in_total{_labels(pipeline=pipeline, kind=kind)} {count}")
    lines += ["# HELP streamai_frames_out_total Frames delivered.", "# TYPE streamai_frames_out_total counter"]
    for (pipeline, kind), count in sorted(frames_out.items()):
        lines.append(f"streamai_frames_out_total{_labels(pipeline=pipeline, kind=kind)} {count}")
    lines += ["# HELP streamai_drops_total Frames dropped, by stage and reason.", "# TYPE streamai_drops_total counter"]
    for (pipeline, stage, reason), count in sorted(drops.items()):
        lines.append(f"streamai_drops_total{_labels(pipeline=pipeline, stage=stage, reason=reason)} {count}")
    lines += [
        "# HELP streamai_stage_service_seconds Stage service time.",
        "# TYPE streamai_stage_service_seconds histogram",
    ]
    for (pipeline, stage), histogram in sorted(service.items()):
        _histogram(lines, "streamai_stage_service_seconds", histogram, pipeline=pipeline, stage=stage)
    lines += [
        "# HELP streamai_stage_queue_wait_seconds Time frames waited in a stage's queue.",
        "# TYPE streamai_stage_queue_wait_seconds histogram",
    ]
    for (pipeline, stage), histogram in sorted(queue_wait.items()):
        _histogram(lines, "streamai_stage_queue_wait_seconds", histogram, pipeline=pipeline, stage=stage)
    lines += [
        "# HELP streamai_video_latency_seconds Capture to send of processed video frames.",
        "# TYPE streamai_video_latency_seconds histogram",
    ]
    for pipeline, histogram in sorted(end_to_end.items()):
        _histogram(lines, "streamai_video_latency_seconds", histogram, pipeline=pipeline)
    viewers: Counter[str] = Counter()
    viewer_latency: defaultdict[str, Histogram] = defaultdict(Histogram)
    for session in manager.sessions.values():
        viewers[session.pipeline] += len(session.viewers)
        for viewer in session.viewers.values():
            viewer_latency[session.pipeline].merge(viewer.latency)
    lines += ["# HELP streamai_viewers WHEP viewers watching sessions.", "# TYPE streamai_viewers gauge"]
    for pipeline, count in sorted(viewers.items()):
        lines.append(f"streamai_viewers{_labels(pipeline=pipeline)} {count}")
    lines += [
        "# HELP streamai_viewer_latency_seconds Capture to a viewer's sender, processed video (WHEP).",
        "# TYPE streamai_viewer_latency_seconds histogram",
    ]
    for pipeline, histogram in sorted(viewer_latency.items()):
        _histogram(lines, "streamai_viewer_latency_seconds", histogram, pipeline=pipeline)
    lines.extend(extra)
    return "\n".join(lines) + "\n"
