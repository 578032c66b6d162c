"""``/metrics`` in the Prometheus text format: sessions, frames, drops by reason, stage latency."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..engine.stats import Histogram
from .history import PipelineTotals
from .sessions import SessionManager


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
    by_pipeline = manager.history.with_live(list(manager.sessions.values()))
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
    for pipeline, totals in sorted(by_pipeline.items()):
        for kind, count in sorted(totals.frames_in.items()):
            lines.append(f"streamai_frames_in_total{_labels(pipeline=pipeline, kind=kind)} {count}")
    lines += ["# HELP streamai_frames_out_total Frames delivered.", "# TYPE streamai_frames_out_total counter"]
    for pipeline, totals in sorted(by_pipeline.items()):
        for kind, count in sorted(totals.frames_out.items()):
            lines.append(f"streamai_frames_out_total{_labels(pipeline=pipeline, kind=kind)} {count}")
    lines += ["# HELP streamai_drops_total Frames dropped, by stage and reason.", "# TYPE streamai_drops_total counter"]
    for pipeline, totals in sorted(by_pipeline.items()):
        for (stage, reason), count in sorted(totals.drops.items()):
            lines.append(f"streamai_drops_total{_labels(pipeline=pipeline, stage=stage, reason=reason)} {count}")
    lines += [
        "# HELP streamai_stage_service_seconds Stage service time.",
        "# TYPE streamai_stage_service_seconds histogram",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        for stage, histogram in sorted(totals.service.items()):
            _histogram(lines, "streamai_stage_service_seconds", histogram, pipeline=pipeline, stage=stage)
    lines += [
        "# HELP streamai_stage_queue_wait_seconds Time frames waited in a stage's queue.",
        "# TYPE streamai_stage_queue_wait_seconds histogram",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        for stage, histogram in sorted(totals.queue_wait.items()):
            _histogram(lines, "streamai_stage_queue_wait_seconds", histogram, pipeline=pipeline, stage=stage)
    lines += [
        "# HELP streamai_video_latency_seconds Capture to send of processed video frames.",
        "# TYPE streamai_video_latency_seconds histogram",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        _histogram(lines, "streamai_video_latency_seconds", totals.video_latency, pipeline=pipeline)
    viewers: Counter[str] = Counter()
    for session in manager.sessions.values():
        viewers[session.pipeline] += len(session.viewers)
    lines += ["# HELP streamai_viewers WHEP viewers watching sessions.", "# TYPE streamai_viewers gauge"]
    for pipeline, count in sorted(viewers.items()):
        lines.append(f"streamai_viewers{_labels(pipeline=pipeline)} {count}")
    lines += [
        "# HELP streamai_viewer_latency_seconds Capture to a viewer's sender, processed video (WHEP).",
        "# TYPE streamai_viewer_latency_seconds histogram",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        if totals.viewer_latency.count:
            _histogram(lines, "streamai_viewer_latency_seconds", totals.viewer_latency, pipeline=pipeline)
    lines += _stage_observations(by_pipeline)
    lines.extend(extra)
    return "\n".join(lines) + "\n"


def _stage_observations(by_pipeline: dict[str, PipelineTotals]) -> list[str]:
    """What stages measure themselves (``streamai_<name>_seconds``, e.g. the avatar's prompt -> frame
    time) and the quality ladder's steps and frames by level."""
    lines: list[str] = []
    names = sorted({name for totals in by_pipeline.values() for _, name in totals.observed})
    for name in names:
        metric = f"streamai_{name}_seconds"
        lines += [f"# HELP {metric} Measured by the stage itself ({name}).", f"# TYPE {metric} histogram"]
        for pipeline, totals in sorted(by_pipeline.items()):
            for (stage, observed), histogram in sorted(totals.observed.items()):
                if observed == name:
                    _histogram(lines, metric, histogram, pipeline=pipeline, stage=stage)
    lines += [
        "# HELP streamai_degrade_steps_total Quality-ladder steps (degrade: in the pipeline), by direction.",
        "# TYPE streamai_degrade_steps_total counter",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        for (stage, direction), count in sorted(totals.degrade_steps.items()):
            lines.append(
                f"streamai_degrade_steps_total{_labels(pipeline=pipeline, stage=stage, direction=direction)} {count}"
            )
    lines += [
        "# HELP streamai_stage_level_frames_total Frames a laddered stage processed, by quality level (0: configured).",
        "# TYPE streamai_stage_level_frames_total counter",
    ]
    for pipeline, totals in sorted(by_pipeline.items()):
        for (stage, level), count in sorted(totals.level_frames.items()):
            lines.append(
                f"streamai_stage_level_frames_total{_labels(pipeline=pipeline, stage=stage, level=level)} {count}"
            )
    return lines
