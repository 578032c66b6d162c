"""Remote stages on a local Ray cluster (2 CPUs, custom resources standing for regions).

A WebRTC session runs ``invert (remote) -> echo (edge)``: the invert stage executes
in a Ray Serve replica, not in the node's process; a replica killed mid-session
costs counted drops, the session survives, and the replacement replica serves.
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

REMOTE_TRANSFORM = """
name: transform-remote
budget_ms: 500
stages:
  - name: invert
    type: video-transform
    params: {effect: invert}
    queue: latest
    placement: remote
    remote:
      num_cpus: 0.5
      resources: {region-eu-west: 1}
      autoscaling: {min_replicas: 1, max_replicas: 1}
  - name: loopback
    type: echo
"""


def replica_actors(ray: Any, app_prefix: str) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app_prefix}")
    ]


async def test_remote_stage_runs_in_serve_replica_and_survives_replica_loss(ray_cluster: Any, tmp_path: Path) -> None:
    ray = ray_cluster
    (tmp_path / "transform-remote.yaml").write_text(REMOTE_TRANSFORM)
    settings = ServerSettings(
        port=0, ice_loopback=True, pipelines_dir=tmp_path, ray_address="auto", region="eu-west", max_sessions=2
    )
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        video = BarcodeVideoTrack(640, 480, fps=15)
        probe = Probe(url, "transform-remote", video=video)
        await probe.connect(http)  # first session deploys the stage: seconds
        try:
            session = next(iter(app[SESSIONS].sessions.values()))
            invert = session.runner.stage_runners[0].stage
            assert type(invert).__name__ == "RemoteVideoTransform"

            # frames come back inverted: the real VideoTransform ran, in a replica with another pid
            assert await wait_for(lambda: probe.report.video_inverted >= 15, 20), probe.report.summary()
            assert invert.replica_pids and os.getpid() not in invert.replica_pids
            first_replica = next(iter(invert.replicas))
            assert await wait_for(lambda: any(e.get("type") == "remote" for e in probe.report.events), 5)
            remote_events = [e for e in probe.report.events if e.get("type") == "remote"]
            assert remote_events[0]["replica"] == first_replica and remote_events[0]["pid"] != os.getpid()
            # it is a Serve replica actor holding the region resource
            actors = replica_actors(ray, "streamai-video-transform-invert-")
            assert len(actors) == 1 and first_replica in actors[0]
            assert ray.available_resources().get("region-eu-west", 0) <= 1.0

            # kill the replica mid-session
            ray.kill(ray.get_actor(actors[0], namespace="serve"), no_restart=True)
            stats = session.runner.stats.stages["invert"]

            def remote_drops() -> int:
                return stats.drops["remote_timeout"] + stats.drops["remote_error"] + stats.drops["remote_busy"]

            assert await wait_for(lambda: remote_drops() > 0, 10), dict(stats.drops)
            # Serve starts a new replica; frames flow through it; the session never ended
            assert await wait_for(lambda: len(invert.replicas) >= 2, 45), invert.snapshot()
            inverted_before = probe.report.video_inverted
            assert await wait_for(lambda: probe.report.video_inverted >= inverted_before + 10, 15)
            assert session.state == "connected" and session.id in app[SESSIONS].sessions
            assert session.runner.failed is None
            # the drops are in the node's metrics with their reason
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
            assert 'stage="invert"' in metrics and "remote_" in metrics
            print("remote stage:", invert.snapshot(), "drops:", dict(stats.drops))
        finally:
            await probe.close(http)
        assert await wait_for(lambda: not app[SESSIONS].sessions, 10)
