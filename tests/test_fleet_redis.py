"""Router replicas on one real Redis (Debian's redis-server, started here on loopback).

Two routers, three real nodes: both replicas see the whole fleet whichever one a node
reports to; sessions opened concurrently through both never exceed a node's capacity;
a report written into Redis by hand, without the fleet secret's signature, is ignored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection

from streamai.fleet.config import FleetConfig
from streamai.fleet.membership import node_token
from streamai.fleet.redis_state import RedisFleetState
from streamai.fleet.registry import NodeReport
from streamai.fleet.router import ROUTER, create_router_app
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import free_port, running_app, running_node
from streamai.testing.redis_server import RedisServer
from streamai.testing.wait import wait_for
from streamai.transport.ice import rtc_configuration
from streamai.web.protection import ProtectionSettings

pytestmark = pytest.mark.slow
SECRET = "redis-fleet-secret-0123456789"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


def config(redis_url: str, **changes: Any) -> FleetConfig:
    values: dict[str, Any] = {
        "port": 0, "heartbeat_interval_s": 0.5, "missed_heartbeats": 4, "node_secret": SECRET,
        "redis_url": redis_url, "sync_interval_s": 0.1, "default_region": "eu-west",
        "protection": {"requests_per_s": 1e3, "requests_burst": 1000, "sessions_per_min": 6e3, "sessions_burst": 1000},
    }  # fmt: skip
    return FleetConfig(**{**values, **changes})


@asynccontextmanager
async def two_routers_three_nodes(
    redis_url: str, capacity: int = 2
) -> AsyncIterator[tuple[list[str], list[Any], list[Any]]]:
    """Routers A and B on one Redis; node n1 reports to A, n2 to B, n3 to both (A first)."""
    async with AsyncExitStack() as stack:
        routers = [await stack.enter_async_context(running_app(create_router_app(config(redis_url)))) for _ in "AB"]
        urls = [url for url, _ in routers]
        nodes = []
        for node_id, router_url in (("n1", urls[0]), ("n2", urls[1]), ("n3", f"{urls[0]},{urls[1]}")):
            settings = ServerSettings(
                port=free_port(), ice_loopback=True, router_url=router_url, region="eu-west", node_id=node_id,
                node_token=node_token(SECRET, node_id), max_sessions=capacity,
                protection=ProtectionSettings(max_sessions_per_client=capacity),  # every client is 127.0.0.1 here
            )  # fmt: skip
            nodes.append((await stack.enter_async_context(running_node(settings)))[1])
        apps = [app for _, app in routers]
        assert await wait_for(lambda: all(len(a[ROUTER].registry.healthy()) == 3 for a in apps), 15)
        yield urls, apps, nodes


async def offer_sdp() -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_two_router_replicas_see_the_same_fleet_whichever_replica_a_node_reports_to(
    redis_server: RedisServer,
) -> None:
    async with two_routers_three_nodes(redis_server.url) as (urls, apps, _nodes):
        for app in apps:
            assert set(app[ROUTER].registry.nodes) == {"n1", "n2", "n3"}
            assert app[ROUTER].state.up
        # n1 only ever reports to A, n2 only to B: each replica knows the other's node from Redis
        async with aiohttp.ClientSession() as http:
            for url in urls:
                async with http.get(f"{url}/v1/pipelines") as response:
                    names = {p["name"] for p in (await response.json())["pipelines"]}
                assert "transform" in names


async def test_sessions_created_concurrently_through_both_routers_never_exceed_a_nodes_capacity(
    redis_server: RedisServer,
) -> None:
    capacity = 2
    fleet = two_routers_three_nodes(redis_server.url, capacity)
    async with fleet as (urls, _apps, nodes), aiohttp.ClientSession() as http:
        offers = [await offer_sdp() for _ in range(12)]

        async def one(index: int) -> int:
            body = {"pipeline": "transform", "sdp": offers[index]}
            async with http.post(f"{urls[index % 2]}/v1/sessions", json=body) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(12)))
        assert statuses.count(200) == 3 * capacity, statuses  # the whole fleet, and not one more
        assert all(s in (200, 502, 503) for s in statuses), statuses
        assert all(len(app[SESSIONS].sessions) <= capacity for app in nodes)
        assert sum(len(app[SESSIONS].sessions) for app in nodes) == 3 * capacity
        assert all(app[SESSIONS].totals["rejected_capacity"] == 0 for app in nodes)  # no node was ever over-asked


async def test_a_report_written_into_redis_without_the_fleet_secret_is_ignored(redis_server: RedisServer) -> None:
    async with two_routers_three_nodes(redis_server.url) as (urls, apps, _nodes):
        store = aioredis.from_url(redis_server.url, decode_responses=True)
        fake = NodeReport(node_id="evil", url="http://127.0.0.1:9", region="eu-west", capacity=100,
                          pipelines=[{"name": "transform", "stage_p90_ms": {"x": 0.0}}])  # fmt: skip
        body = f"{time.time()!r}|{fake.model_dump_json()}"  # the record's shape, without the fleet secret
        prefix = "streamai:fleet:"
        await store.set(f"{prefix}node:evil", json.dumps({"body": body, "sig": "0" * 64}), ex=60)  # forged signature
        await store.set(f"{prefix}node:n1", json.dumps({"body": body.replace("evil", "n1"), "sig": ""}), ex=60)
        await store.zadd(f"{prefix}seen", {"evil": time.time(), "n1": time.time()})
        await store.hset(f"{prefix}capacity", "evil", "100,0")
        state = apps[0][ROUTER].state
        assert isinstance(state, RedisFleetState)
        before = state.ignored_reports
        assert await wait_for(lambda: state.ignored_reports >= before + 2, 5)
        for app in apps:
            nodes = app[ROUTER].registry.nodes
            assert "evil" not in nodes and nodes["n1"].report.url != "http://127.0.0.1:9"
        async with aiohttp.ClientSession() as http:
            body = {"pipeline": "transform", "sdp": await offer_sdp()}
            async with http.post(f"{urls[1]}/v1/sessions", json=body) as response:
                answer = await response.json()
        assert answer["node_id"] in {"n1", "n2", "n3"}  # routing never picked the forged node
        await store.aclose()


async def test_a_steady_fleets_sync_reads_only_the_heartbeats_it_has_not_seen(redis_server: RedisServer) -> None:
    """Syncs overlap by 2 s (clock skew between replicas): a record the view already holds is not read again,
    so a router's sync costs the heartbeats since the last one, not the whole fleet each time."""
    settings = config(redis_server.url, heartbeat_interval_s=60)
    writer, reader = RedisFleetState(settings, redis_server.url), RedisFleetState(settings, redis_server.url)
    try:
        reports = [
            NodeReport(node_id=f"n{i}", url=f"http://127.0.0.1:{9000 + i}", region="eu-west", capacity=4)
            for i in range(40)
        ]
        for report in reports:
            await writer.heartbeat(report)
        await reader.sync()
        assert reader.records_read == 40 and len(reader.view.nodes) == 40
        await reader.sync()
        assert reader.records_read == 40  # nothing changed: nothing read
        await writer.heartbeat(reports[3].model_copy(update={"sessions": 2}))
        await reader.sync()
        assert reader.records_read == 41 and reader.view.nodes["n3"].report.sessions == 2
        await reader.sync(full=True)
        assert reader.records_read == 81  # a full sync reads everything again
    finally:
        await writer.close()
        await reader.close()
