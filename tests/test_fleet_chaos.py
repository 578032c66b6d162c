"""Chaos on loopback: a real fleet (Redis, two router replicas, three nodes, all processes) loses a node,
a router, or Redis while real peers stream. Figures are printed and written to test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from streamai.frames import now
from streamai.testing.fleet import FleetProcesses
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
STALL_S = 0.6  # a client that got no video for this long calls its node gone


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetProcesses]:
    processes = FleetProcesses(tmp_path)
    try:
        processes.start_redis()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        processes.start_router("a")
        processes.start_router("b")
        for node_id in ("n1", "n2", "n3"):
            processes.start_node(node_id)
        processes.wait_healthy({"n1", "n2", "n3"})
        yield processes
    finally:
        processes.stop()


async def open_session(http: aiohttp.ClientSession, routers: list[str]) -> Probe:
    """A streaming peer through the first router replica that answers (the next on a connection error or 5xx)."""
    last: Exception | None = None
    for router in routers:
        probe = Probe(router, "transform", video=BarcodeVideoTrack(160, 120, 15))
        try:
            await probe.connect(http)
            return probe
        except (aiohttp.ClientError, OSError, ProbeError) as exc:
            await probe.close(http, delete=False)
            if isinstance(exc, ProbeError) and 0 < exc.status < 500 and exc.status != 429:
                raise  # the client's own mistake (status 0: no answer at all, try the next replica)
            last = exc
    raise RuntimeError(f"no router replica took the session: {last}")


async def frames_after(probe: Probe, count: int, timeout: float) -> bool:
    start = probe.report.video_frames
    deadline = now() + timeout
    while now() < deadline:
        if probe.report.video_frames - start >= count:
            return True
        await asyncio.sleep(0.02)
    return False


async def stalled(probe: Probe, timeout: float) -> float | None:
    """When the peer's video stopped (no frame for ``STALL_S``), or None within ``timeout``."""
    deadline = now() + timeout
    last_count, last_change = probe.report.video_frames, now()
    while now() < deadline:
        await asyncio.sleep(0.02)
        if probe.report.video_frames != last_count:
            last_count, last_change = probe.report.video_frames, now()
        elif now() - last_change >= STALL_S:
            return now()
    return None


async def test_a_killed_node_s_client_is_back_on_another_node_within_5_s(fleet: FleetProcesses) -> None:
    routers = [url for url, _ in fleet.routers.values()]
    recoveries: list[float] = []
    async with aiohttp.ClientSession() as http:
        for attempt in range(10):
            probe = await open_session(http, routers)
            victim = probe.answer["node_id"]
            assert await frames_after(probe, 5, 15), "no video before the kill"
            fleet.kill_node(victim)
            killed = now()
            assert await stalled(probe, 10) is not None, "the client never noticed its node died"
            await probe.close(http, delete=False)
            replacement = await open_session(http, routers)
            assert replacement.answer["node_id"] != victim
            assert await frames_after(replacement, 1, 10)
            recoveries.append(now() - killed)
            await replacement.close(http)
            fleet.respawn_node(victim)
            fleet.wait_healthy({"n1", "n2", "n3"})
            print(f"try {attempt}: {victim} killed, back on {replacement.answer['node_id']} in {recoveries[-1]:.2f} s")
    result = {"tries": len(recoveries), "p50_s": round(statistics.median(recoveries), 2),
              "max_s": round(max(recoveries), 2), "all_s": [round(r, 2) for r in recoveries]}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chaos-node-kill.json").write_text(json.dumps(result, indent=2))
    print("node SIGKILL -> client on another node:", json.dumps(result))
    assert max(recoveries) <= 5.0, result


async def test_a_killed_router_replica_leaves_new_sessions_to_the_other_and_running_ones_untouched(
    fleet: FleetProcesses,
) -> None:
    routers = [url for url, _ in fleet.routers.values()]
    async with aiohttp.ClientSession() as http:
        running = await open_session(http, routers)
        assert await frames_after(running, 5, 15)
        fleet.kill_router("a")
        outcomes: list[bool] = []
        failures: list[str] = []
        started = time.monotonic()
        while time.monotonic() - started < 10:
            try:
                probe = await open_session(http, routers)  # A first, as a client that knew A was primary
                outcomes.append(True)
                await probe.close(http)
            except (RuntimeError, ProbeError) as exc:
                outcomes.append(False)
                failures.append(str(exc)[:300])
            await asyncio.sleep(0.1)
        assert await frames_after(running, 10, 5), "the running session stopped when a router died"
        await running.close(http)
    rate = sum(outcomes) / len(outcomes)
    print(f"router SIGKILL: {sum(outcomes)}/{len(outcomes)} new sessions in 10 s went through the other replica")
    assert len(outcomes) >= 10 and rate >= 0.99, failures


async def test_a_redis_restart_ends_no_running_session_and_routing_goes_on(fleet: FleetProcesses) -> None:
    routers = [url for url, _ in fleet.routers.values()]
    async with aiohttp.ClientSession() as http:
        sessions = [await open_session(http, routers) for _ in range(3)]
        for probe in sessions:
            assert await frames_after(probe, 5, 15)
        await asyncio.get_running_loop().run_in_executor(None, fleet.redis.stop)
        # while Redis is down the replicas route from their last view
        during = await open_session(http, routers)
        assert await frames_after(during, 3, 10)
        await asyncio.sleep(2.0)
        await asyncio.get_running_loop().run_in_executor(None, fleet.redis.start)
        for probe in [*sessions, during]:
            assert await frames_after(probe, 10, 10), "a running session stopped across the Redis restart"

        # the replicas are back on Redis, and the nodes' heartbeats have refilled it
        async def store_up(url: str) -> bool:
            async with http.get(f"{url}/metrics") as response:
                return "streamai_fleet_store_up 1.0" in await response.text()

        deadline = now() + 15
        while now() < deadline and not all([await store_up(url) for url in routers]):
            await asyncio.sleep(0.2)
        assert all([await store_up(url) for url in routers])
        fleet.wait_healthy({"n1", "n2", "n3"}, timeout=15)
        after = await open_session(http, routers)
        assert await frames_after(after, 3, 10)
        for probe in [*sessions, during, after]:
            await probe.close(http)
