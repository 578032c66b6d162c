"""Scale to zero on a local Ray cluster: a ``min_replicas: 0`` remote stage through real WebRTC sessions.

The stage's deployment starts with no replica. The first frame of a session makes
Serve start one (the cold start); frames meanwhile are dropped ``cold_start`` or,
with ``fallback: edge``, served by the edge copy of the stage. Once warm, frames
flow through the replica; after the idle timeout the replica count returns to zero,
and the next session cold-starts again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe
from streamai.testing.wait import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PIPELINE = """
name: {name}
budget_ms: 500
stages:
  - name: invert
    type: video-transform
    params: {{effect: invert}}
    queue: latest
    placement: remote
    remote:
      num_cpus: 0.5
      autoscaling: {{min_replicas: 0, max_replicas: 1, idle_timeout_s: 2}}
      fallback: {fallback}
  - name: loopback
    type: echo
"""


def running_replicas(prefix: str) -> int:
    """Running replicas of the Serve application whose name starts with ``prefix`` (from ``serve.status()``)."""
    from ray import serve

    apps = [(n, a) for n, a in serve.status().applications.items() if n.startswith(prefix)]
    assert len(apps) == 1, list(serve.status().applications)
    return sum(d.replica_states.get("RUNNING", 0) for d in apps[0][1].deployments.values())


def events(probe: Probe, kind: str) -> list[dict[str, Any]]:
    return [e for e in probe.report.events if e.get("type") == kind]


async def open_session(url: str, http: aiohttp.ClientSession, app: Any, pipeline: str) -> tuple[Probe, Any, Any]:
    probe = Probe(url, pipeline, video=BarcodeVideoTrack(320, 240, fps=15))
    await probe.connect(http)
    session = next(s for s in app[SESSIONS].sessions.values() if s.pipeline == pipeline)
    return probe, session, session.runner.stage_runners[0].stage


def settings_for(tmp_path: Path, name: str, fallback: str) -> ServerSettings:
    (tmp_path / f"{name}.yaml").write_text(PIPELINE.format(name=name, fallback=fallback))
    return ServerSettings(port=0, ice_loopback=True, pipelines_dir=tmp_path, ray_address="auto", max_sessions=2)


async def test_min_replicas_zero_cold_start_drops_then_flows_then_idles_to_zero(
    ray_cluster: Any, tmp_path: Path
) -> None:
    async with running_node(settings_for(tmp_path, "cold-drop", "drop")) as (url, app), aiohttp.ClientSession() as http:
        probe, session, invert = await open_session(url, http, app, "cold-drop")
        try:
            app_prefix = invert.watch.name
            stats = session.runner.stats.stages["invert"]
            # the first frames found no replica: a cold start began, frames meanwhile dropped as cold_start
            assert await wait_for(lambda: events(probe, "remote_cold_start"), 10), probe.report.summary()
            assert await wait_for(lambda: invert.cold_starts, 60), invert.snapshot()
            warm = await wait_for(lambda: events(probe, "remote_warm"), 5) and events(probe, "remote_warm")[0]
            assert warm and warm["dropped"] > 0 and warm["cold_start_ms"] > 0, warm
            assert stats.drops["cold_start"] >= warm["dropped"], dict(stats.drops)
            assert invert.counts["fallback_edge"] == 0 and invert.local is None  # fallback: drop, no edge copy
            # warm: frames flow through the replica (another process)
            before = probe.report.video_inverted
            assert await wait_for(lambda: probe.report.video_inverted >= before + 15, 20), probe.report.summary()
            assert invert.replica_pids and os.getpid() not in invert.replica_pids
            assert running_replicas(app_prefix) == 1
            cold_drops = stats.drops["cold_start"]
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert 'streamai_remote_cold_start_seconds_count{stage="invert"} 1' in metrics
            assert 'reason="cold_start"' in metrics
            print("cold start:", invert.snapshot(), "drops:", dict(stats.drops))
        finally:
            await probe.close(http)
        assert stats.drops["cold_start"] == cold_drops  # none once warm
        # idle: Serve removes the last replica (idle_timeout_s 2: within about 2 x 2 s + metrics lag)
        assert await wait_for(lambda: running_replicas(app_prefix) == 0, 40)

        # the next session's first frame cold-starts it again
        probe, session, invert = await open_session(url, http, app, "cold-drop")
        try:
            assert await wait_for(lambda: invert.cold_starts, 60), invert.snapshot()
            assert session.runner.stats.stages["invert"].drops["cold_start"] > 0
            before = probe.report.video_inverted
            assert await wait_for(lambda: probe.report.video_inverted >= before + 10, 20), probe.report.summary()
            print("second cold start:", invert.snapshot())
        finally:
            await probe.close(http)


async def test_min_replicas_zero_with_edge_fallback_serves_frames_before_the_replica_is_up(
    ray_cluster: Any, tmp_path: Path
) -> None:
    async with running_node(settings_for(tmp_path, "cold-edge", "edge")) as (url, app), aiohttp.ClientSession() as http:
        probe, session, invert = await open_session(url, http, app, "cold-edge")
        at_warm: dict[str, Any] = {}

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "remote_warm" and not at_warm:
                at_warm.update(event, inverted=probe.report.video_inverted, remote_ok=invert.counts["remote_ok"])

        session.events.on_event(on_event)
        try:
            assert await wait_for(lambda: at_warm, 60), invert.snapshot()
            # frames inverted by the edge copy reached the client before any replica answered
            assert at_warm["fallback_edge"] > 0 and at_warm["remote_ok"] == 0, at_warm
            assert at_warm["inverted"] > 0, at_warm
            assert invert.local is not None
            # then the replica serves
            assert await wait_for(lambda: invert.counts["remote_ok"] >= 15, 20), invert.snapshot()
            assert invert.replica_pids and os.getpid() not in invert.replica_pids
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert 'streamai_remote_events_total{event="fallback_edge",stage="invert"}' in metrics
            print("edge fallback during cold start:", at_warm, invert.snapshot())
        finally:
            await probe.close(http)
