"""The Python client when things break: a node killed mid-session, a router down, a node full.

Nodes that get killed are real ``streamai serve`` processes (SIGKILL: no goodbye, no
closing of sockets by the node); routers are ``create_router_app`` in this process,
with nodes registering over real HTTP heartbeats. Every session is a real aiortc peer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import streamai.client as client
from streamai.client import Backoff, StreamaiError
from streamai.client.signaling import Endpoints
from streamai.fleet.config import FleetConfig
from streamai.fleet.router import create_router_app
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import free_port, running_app, running_node
from streamai.testing.peer import BarcodeVideoTrack
from streamai.testing.wait import wait_for, wait_until

ROOT = Path(__file__).resolve().parent.parent
TRANSFORM = (ROOT / "pipelines" / "transform.yaml").read_text()
pytestmark = pytest.mark.slow


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "transform.yaml").write_text(TRANSFORM)
    return folder


@contextmanager
def serve(pipelines: Path, log: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``streamai serve`` process on a free port; yields its URL and process (killed at the end)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "streamai", "serve", "--port", str(port), "--ice-loopback"]
    args += ["--pipelines-dir", str(pipelines), "--public-url", url, *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def healthy(http: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"streamai serve exited early:\n{log.read_text()[-3000:]}")
        try:
            async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    assert await wait_until(up, 60), f"node at {url} did not start:\n{log.read_text()[-3000:]}"


@asynccontextmanager
async def running_router() -> AsyncIterator[str]:
    config = FleetConfig(
        port=0, heartbeat_interval_s=0.5, missed_heartbeats=4, default_region="eu-west", admin_token=ADMIN_TOKEN
    )
    async with running_app(create_router_app(config)) as (url, _app):
        yield url


ADMIN_TOKEN = "failover-admin-token"  # the fleet inventory is the router admin's


async def nodes_at(http: aiohttp.ClientSession, router: str) -> dict[str, Any]:
    async with http.get(f"{router}/v1/nodes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        return {n["node_id"]: n for n in (await response.json())["nodes"] if n["state"] == "healthy"}


async def test_a_node_killed_mid_session_ends_the_session_with_an_error_never_a_hang(
    pipelines: Path, tmp_path: Path
) -> None:
    log = tmp_path / "node.log"
    with serve(pipelines, log) as (url, process):
        async with aiohttp.ClientSession() as http:
            await healthy(http, url, process, log)
        session = await client.connect(url, pipeline="transform", video=BarcodeVideoTrack(320, 240, 15),
                                       ice_loopback=True, server_timeout=3)  # fmt: skip
        assert session.video is not None
        watcher = await client.watch_events(url, session.session_id or "", session.session_token,
                                            reconnect=Backoff(retries=2, base_s=0.2, max_s=1)).open()  # fmt: skip
        outcomes: dict[str, Any] = {}

        async def read(name: str, iterator: AsyncIterator[Any]) -> None:
            count = 0
            try:
                async for _ in iterator:
                    count += 1
                outcomes[name] = ("ended", count)
            except StreamaiError as error:
                outcomes[name] = (error, count)

        readers = [
            asyncio.create_task(read("events", session.events())),
            asyncio.create_task(read("video", session.video.frames())),
            asyncio.create_task(read("socket", watcher.events())),
        ]
        assert await wait_for(lambda: session.video is not None and session.video.frames_received >= 10, 15)
        process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(StreamaiError) as failed:
            await asyncio.wait_for(session.wait_closed(), 20)  # the bound: a hang fails here
        ended_s = time.monotonic() - killed
        await asyncio.wait_for(asyncio.gather(*readers), 20)
    error = failed.value
    assert error.code in (client.ClientCode.SERVER_GONE, client.ClientCode.ICE_FAILED), error
    assert error.retryable and session.state == "closed" and session.error is error
    # every iterator of the session ended by raising that error, after having delivered what came before
    for name in ("events", "video"):
        raised, count = outcomes[name]
        assert raised is error and count > 0, (name, outcomes[name])
    # the events WebSocket lost its TCP connection at once, tried twice more, and gave up with a network error
    raised, count = outcomes["socket"]
    assert isinstance(raised, StreamaiError) and raised.code == client.ClientCode.NETWORK and count > 0, raised
    print(f"node SIGKILLed: the session ended with {error.code} after {ended_s:.1f} s")


async def test_through_two_routers_the_first_down_then_the_first_full_the_client_lands_through_the_second(
    pipelines: Path,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # a router that is not there: connection refused
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        first = await stack.enter_async_context(running_router())
        second = await stack.enter_async_context(running_router())
        node_settings = {"ice_loopback": True, "pipelines_dir": pipelines, "region": "eu-west"}
        full_url, _ = await stack.enter_async_context(running_node(ServerSettings(
            port=free_port(), router_url=first, node_id="full", max_sessions=1, **node_settings,
        )))  # fmt: skip
        free_url, free_app = await stack.enter_async_context(running_node(ServerSettings(
            port=free_port(), router_url=second, node_id="free", max_sessions=4, **node_settings,
        )))  # fmt: skip
        assert await wait_until(lambda: nodes_at(http, first), 15) and await wait_until(
            lambda: nodes_at(http, second), 15
        )

        # the first router is down: the client moves on to the second, which routes to its node
        routed = await client.connect([down, second], pipeline="transform", video=BarcodeVideoTrack(160, 120, 10),
                                      ice_loopback=True)  # fmt: skip
        async with routed:
            assert routed.answer["node_id"] == "free" and routed.node_url == free_url
            assert routed.session_id in free_app[SESSIONS].sessions
            assert await wait_for(lambda: routed.video is not None and routed.video.frames_received >= 5, 10)
        assert await wait_for(lambda: routed.session_id not in free_app[SESSIONS].sessions, 5)  # DELETE on the node

        # the first router's only node fills up: it answers 5xx with Retry-After, and that router is not
        # asked again before then, while the second serves
        holder = await client.connect(full_url, pipeline="transform", ice_loopback=True)
        assert await wait_until(lambda: _full(http, first), 10), "the router did not learn that its node is full"
        endpoints = Endpoints([first, second])
        async with client.connect([first, second], endpoints=endpoints, pipeline="transform",
                                  ice_loopback=True) as spilled:  # fmt: skip
            assert spilled.answer["node_id"] == "free"
        refusal = endpoints.soonest_error()
        assert refusal is not None and refusal.status in (502, 503) and refusal.retry_after
        assert endpoints.available() == [second]
        await holder.close()

        # nothing reachable at all: the last failure is raised, typed
        with pytest.raises(StreamaiError) as nowhere:
            await client.connect([down, f"http://127.0.0.1:{free_port()}"], pipeline="transform", ice_loopback=True)
        assert nowhere.value.code == client.ClientCode.NETWORK and nowhere.value.retryable


async def _full(http: aiohttp.ClientSession, router: str) -> bool:
    nodes = await nodes_at(http, router)
    return bool(nodes) and all(n["sessions"] >= n["capacity"] for n in nodes.values())


async def test_reconnect_gets_a_new_session_on_another_node_after_its_node_is_killed(
    pipelines: Path, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        router = await stack.enter_async_context(running_router())
        nodes: dict[str, subprocess.Popen[bytes]] = {}
        for node_id in ("a", "b"):
            log = tmp_path / f"{node_id}.log"
            args = ("--router", router, "--region", "eu-west", "--node-id", node_id)
            _url, process = stack.enter_context(serve(pipelines, log, *args))
            nodes[node_id] = process
        assert await wait_until(lambda: _both(http, router), 60), "the nodes did not register"

        live = client.reconnect(router, pipeline="transform", video=BarcodeVideoTrack(160, 120, 10),
                                ice_loopback=True, server_timeout=2,
                                backoff=Backoff(retries=5, base_s=0.2, max_s=2))  # fmt: skip
        await stack.enter_async_context(live)
        frames: list[float] = []
        live.on_frame("video", lambda frame, arrived: frames.append(time.monotonic()))
        events: list[client.Event] = []

        async def read() -> None:
            async for event in live.events():
                events.append(event)

        reader = asyncio.create_task(read())
        assert live.session is not None
        first = live.session.answer["node_id"]
        assert await wait_for(lambda: len(frames) >= 5, 15)
        nodes[first].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert await wait_for(lambda: live.sessions == 2 and frames[-1] > killed + 0.5, 30), (live.sessions, events)
        back_s = next(t for t in frames if t > killed) - killed
        assert live.session.answer["node_id"] != first
        reconnecting = [e for e in events if isinstance(e, client.ReconnectingEvent)]
        assert reconnecting and reconnecting[0].code in (client.ClientCode.SERVER_GONE, client.ClientCode.ICE_FAILED)
        await live.close()
        await asyncio.wait_for(reader, 10)
    print(f"node SIGKILLed: frames back from another node after {back_s:.1f} s")


async def _both(http: aiohttp.ClientSession, router: str) -> bool:
    return set(await nodes_at(http, router)) == {"a", "b"}
