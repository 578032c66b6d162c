"""A router and three edge nodes in two regions, each its own process, on loopback.

eu1 (eu-west, 1 session), us1 (us-east, 2 sessions) and us2 (us-east, 4 sessions;
its ``transform`` places a stage remote but it has no Ray cluster, so every such
offer fails with 503). Sessions are real aiortc peers; the router proxies their
offers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from streamai.fleet.membership import node_token
from streamai.testing.node import free_port
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_S = 0.5
MISSED = 3  # a node silent 1.5 s is never picked

TRANSFORM = (ROOT / "pipelines" / "transform.yaml").read_text()
PINNED = TRANSFORM.replace("name: transform", "name: transform-pinned", 1) + "data_region: required\n"
BROKEN = TRANSFORM.replace("queue: latest", "queue: latest\n    placement: remote", 1)
SECRET = "fleet-secret-for-tests-0123456789"  # nodes get HMAC(SECRET, node id) as their credential
ADMIN = {"Authorization": "Bearer router-admin-token"}


@dataclass
class Fleet:
    router: str
    nodes: dict[str, tuple[str, subprocess.Popen[bytes]]]
    router_process: subprocess.Popen[bytes]

    def node_url(self, node_id: str) -> str:
        return self.nodes[node_id][0]


def _start(args: list[str], log: Path, **env_vars: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "streamai", *args], cwd=ROOT, stdout=out, stderr=out, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    good, broken = tmp / "pipelines-good", tmp / "pipelines-broken"
    good.mkdir()
    broken.mkdir()
    (good / "transform.yaml").write_text(TRANSFORM)
    (good / "transform-pinned.yaml").write_text(PINNED)
    (broken / "transform.yaml").write_text(BROKEN)
    (broken / "transform-pinned.yaml").write_text(PINNED)
    router_port = free_port()
    config = {
        "port": router_port,
        "heartbeat_interval_s": HEARTBEAT_S,
        "missed_heartbeats": MISSED,
        "regions": {"eu-west": {"location": [53.3, -6.3]}, "us-east": {"location": [39.0, -77.5]}},
        "rtt_ms": {"eu-west": {"us-east": 75}},
        "node_secret": SECRET,
        "admin_token": ADMIN["Authorization"].split()[1],
        # the tests stand in for the front proxy that tells the router each client's region
        "protection": {"trusted_proxies": ["127.0.0.1/32"]},
    }
    # every client is 127.0.0.1 here: lift the nodes' per-address cap (it is tested elsewhere)
    (tmp / "node.yaml").write_text(yaml.safe_dump({"protection": {"max_sessions_per_client": 8}}))
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(config))
    router_url = f"http://127.0.0.1:{router_port}"
    router = _start(["router", "--config", str(tmp / "fleet.yaml")], tmp / "router.log")
    nodes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    for node_id, region, capacity, folder in (
        ("eu1", "eu-west", 1, good),
        ("us1", "us-east", 2, good),
        ("us2", "us-east", 4, broken),
    ):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", "--port", str(port), "--ice-loopback", "--pipelines-dir", str(folder)]
        args += ["--router", router_url, "--region", region, "--node-id", node_id, "--public-url", url]
        args += ["--max-sessions", str(capacity), "--config", str(tmp / "node.yaml")]
        token = node_token(SECRET, node_id)
        nodes[node_id] = (url, _start(args, tmp / f"{node_id}.log", STREAMAI_NODE_TOKEN=token))
    fleet = Fleet(router_url, nodes, router)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_healthy(router_url)) == 3:
                break
            for _, process in [*nodes.values(), (router_url, router)]:
                if process.poll() is not None:
                    logs = "\n".join(p.read_text()[-2000:] for p in tmp.glob("*.log"))
                    pytest.fail(f"a fleet process exited early:\n{logs}")
            time.sleep(0.3)
        else:
            pytest.fail("the nodes did not register with the router in 60 s")
        yield fleet
    finally:
        for _, process in nodes.values():
            _stop(process)
        _stop(router)


def _healthy(router_url: str) -> set[str]:
    import json
    import urllib.request

    try:
        request = urllib.request.Request(f"{router_url}/v1/nodes", headers=ADMIN)
        with urllib.request.urlopen(request, timeout=2) as response:
            nodes = json.load(response)["nodes"]
    except OSError:
        return set()
    return {n["node_id"] for n in nodes if n["state"] == "healthy"}


async def nodes_by_id(http: aiohttp.ClientSession, router: str) -> dict[str, dict[str, Any]]:
    async with http.get(f"{router}/v1/nodes", headers=ADMIN) as response:
        return {n["node_id"]: n for n in (await response.json())["nodes"]}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_session(http: aiohttp.ClientSession, fleet: Fleet, region: str, pipeline: str) -> tuple[Probe, dict]:
    """A real peer through the router; returns it and the router's answer (node, routing)."""
    video = BarcodeVideoTrack(320, 240, fps=15)
    probe = Probe(fleet.router, pipeline, video=video, headers={"X-Client-Region": region})
    try:
        await probe.connect(http)
    except BaseException:
        await probe.close(http)
        raise
    return probe, probe.answer


async def frames_flow(probe: Probe, at_least: int = 5, timeout: float = 10.0) -> bool:
    start = probe.report.video_frames
    for _ in range(int(timeout / 0.1)):
        if probe.report.video_frames - start >= at_least:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_fleet_view_and_pipeline_union(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    nodes = await nodes_by_id(http, fleet.router)
    assert set(nodes) == {"eu1", "us1", "us2"}
    assert {n["region"] for n in nodes.values()} == {"eu-west", "us-east"}
    assert nodes["eu1"]["capacity"] == 1 and nodes["eu1"]["url"] == fleet.node_url("eu1")
    async with http.get(f"{fleet.router}/v1/pipelines") as response:
        pipelines = {p["name"]: p for p in (await response.json())["pipelines"]}
    assert pipelines["transform"]["regions"] == ["eu-west", "us-east"]
    assert pipelines["transform-pinned"]["data_region"] == "required"
    assert "nodes" not in pipelines["transform-pinned"]  # node ids and URLs are the operator's (admin) view


async def test_region_capacity_and_offer_fallthrough(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    probes: list[Probe] = []
    try:
        # a client in eu-west lands on eu-west's node, and media flows client <-> node
        probe, answer = await open_session(http, fleet, "eu-west", "transform")
        probes.append(probe)
        assert answer["node_id"] == "eu1" and answer["region"] == "eu-west"
        assert probe.url == fleet.node_url("eu1")  # later calls go to the node, not the router
        assert await frames_flow(probe), "no video came back through eu1"

        # eu1 is full (1 session; wait for a heartbeat that says so: one sent before the session
        # opened would not): skipped without being tried; the next nearest region serves.
        await _wait_reported(http, fleet, "eu1", 1)
        # us2 ranks first there (more free capacity) but fails the offer -> the router falls through to us1.
        probe, answer = await open_session(http, fleet, "eu-west", "transform")
        probes.append(probe)
        assert answer["node_id"] == "us1"
        tried = answer["routing"]["tried"]
        assert [t["node_id"] for t in tried] == ["us2"] and tried[0]["status"] == 503
        assert tried[0]["code"] == "pipeline_unavailable"
        assert await frames_flow(probe), "no video came back through us1"

        # us2 failed that pipeline lately: it is now tried last, so us1 is asked first
        probe, answer = await open_session(http, fleet, "us-east", "transform")
        probes.append(probe)
        assert answer["node_id"] == "us1" and answer["routing"]["tried"] == []

        # us1 is now full too (2 sessions); us2 still fails transform; eu1 is full: no node takes it
        with pytest.raises(ProbeError) as refused:
            await open_session(http, fleet, "us-east", "transform")
        assert refused.value.status in (502, 503)

        # redirect mode: the router answers 307 to the chosen node instead of proxying
        body = {"pipeline": "transform-pinned", "type": "offer", "sdp": "v=0"}
        headers = {"X-Client-Region": "us-east"}
        url = f"{fleet.router}/v1/sessions?redirect=1"
        async with http.post(url, json=body, headers=headers, allow_redirects=False) as response:
            assert response.status == 307
            assert response.headers["Location"].startswith(f"{fleet.node_url('us2')}/v1/sessions?grant=v1.")

        async with http.get(f"{fleet.router}/v1/fleet/load", headers=ADMIN) as response:
            load = await response.json()
        assert load["regions"]["eu-west"]["sessions"] == 1 and load["regions"]["eu-west"]["capacity"] == 1
        async with http.get(f"{fleet.router}/metrics") as response:
            metrics = await response.text()
        assert 'streamai_fleet_utilisation{region="eu-west"} 1.0' in metrics
        assert 'streamai_fleet_routed_total{client_region="eu-west",node_region="us-east"} 1.0' in metrics
    finally:
        for probe in probes:
            await probe.close(http)


async def test_missed_heartbeats_are_never_picked(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    us1 = fleet.nodes["us1"][1]
    await _wait_healthy(http, fleet, {"eu1", "us1", "us2"})
    us1.send_signal(signal.SIGSTOP)  # alive to TCP, silent to the router
    try:
        for _ in range(50):
            if (await nodes_by_id(http, fleet.router))["us1"]["state"] == "missed_heartbeats":
                break
            await asyncio.sleep(0.1)
        assert (await nodes_by_id(http, fleet.router))["us1"]["state"] == "missed_heartbeats"
        probe, answer = await open_session(http, fleet, "us-east", "transform-pinned")
        try:
            assert answer["node_id"] == "us2" and answer["routing"]["tried"] == []
        finally:
            await probe.close(http)
    finally:
        us1.send_signal(signal.SIGCONT)
    await _wait_healthy(http, fleet, {"eu1", "us1", "us2"})


async def test_node_loss_reroutes_or_refuses_pinned(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    await _wait_healthy(http, fleet, {"eu1", "us1", "us2"})
    probe, answer = await open_session(http, fleet, "eu-west", "transform-pinned")
    assert answer["node_id"] == "eu1"
    await probe.close(http)
    await _wait_load(http, fleet, "eu1", 0)

    eu1 = fleet.nodes["eu1"][1]
    eu1.kill()  # no goodbye: the router learns from the failed offer or the missed heartbeats
    eu1.wait(5)
    killed = time.monotonic()
    probe, answer = await open_session(http, fleet, "eu-west", "transform")
    try:
        assert answer["node_id"] == "us1"  # us2 is known to fail transform: us1 is the next nearest
        assert time.monotonic() - killed < HEARTBEAT_S * MISSED + 5  # generous: one offer round trip
        assert await frames_flow(probe)
    finally:
        await probe.close(http)

    async with http.post(
        f"{fleet.router}/v1/sessions",
        json={"pipeline": "transform-pinned", "type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"},
        headers={"X-Client-Region": "eu-west"},
    ) as response:
        refusal = await response.json()
        assert response.status == 503
    assert refusal["error"]["code"] == "no_node_in_region"
    assert "eu-west" in refusal["error"]["message"]

    await asyncio.sleep(HEARTBEAT_S * MISSED + 0.2)
    assert (await nodes_by_id(http, fleet.router))["eu1"]["state"] == "missed_heartbeats"


async def _wait_healthy(http: aiohttp.ClientSession, fleet: Fleet, expected: set[str], timeout: float = 10.0) -> None:
    def healthy(nodes: dict[str, dict[str, Any]]) -> set[str]:
        return {n for n, node in nodes.items() if node["state"] == "healthy"}

    for _ in range(int(timeout / 0.1)):
        if healthy(await nodes_by_id(http, fleet.router)) >= expected:
            return
        await asyncio.sleep(0.1)
    assert healthy(await nodes_by_id(http, fleet.router)) >= expected


async def _wait_load(http: aiohttp.ClientSession, fleet: Fleet, node: str, sessions: int) -> None:
    for _ in range(100):
        if (await nodes_by_id(http, fleet.router))[node]["load"] == sessions:
            return
        await asyncio.sleep(0.1)
    assert (await nodes_by_id(http, fleet.router))[node]["load"] == sessions


async def _wait_reported(http: aiohttp.ClientSession, fleet: Fleet, node: str, sessions: int) -> None:
    """Until the node's own report (not the router's count of what it sent there) says ``sessions``."""
    for _ in range(150):
        if (await nodes_by_id(http, fleet.router))[node]["sessions"] == sessions:
            return
        await asyncio.sleep(0.1)
    assert (await nodes_by_id(http, fleet.router))[node]["sessions"] == sessions
