"""Node-level scale to zero: an idle node unloads its models, tells the router, and loses warm ties.

A router and two edge nodes run in this process (real HTTP heartbeats, real aiortc
sessions). Node ``a`` unloads after 2 s without a session; node ``b`` never does.
Both ran the Whisper pipeline, so both had its models loaded; after ``a`` scales to
zero, ``GET /v1/models`` on it shows nothing loaded, the router's ``GET /v1/nodes``
shows it cold, and a routed session goes to the warm ``b`` although ``a`` would win
every other tie (same region, capacity and latency; ``a`` sorts first by id).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamai.fleet.config import FleetConfig
from streamai.fleet.router import create_router_app
from streamai.server.app import MODELS, SCALER, SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import free_port, running_app, running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe
from streamai.testing.wait import wait_until

pytestmark = [pytest.mark.models, pytest.mark.slow]

PIPELINE = "speech-transcribe"
ASR_KEY = "asr:whisper-tiny-en:cpu:1"


@asynccontextmanager
async def running_router(config: FleetConfig) -> AsyncIterator[tuple[str, web.Application]]:
    async with running_app(create_router_app(config)) as served:
        yield served


ADMIN_TOKEN = "router-admin-token"


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def run_session(http: aiohttp.ClientSession, url: str, **headers: str) -> Probe:
    """A short session; video only, so no stage measures a service time (latencies stay equal)."""
    probe = Probe(url, PIPELINE, video=BarcodeVideoTrack(160, 120, fps=10), headers=headers)
    await probe.connect(http)
    await asyncio.sleep(0.5)
    await probe.close(http)
    return probe


async def test_idle_node_unloads_models_reports_cold_and_routing_prefers_the_warm_node(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    shutil.copy(Path(__file__).parent.parent / "pipelines" / f"{PIPELINE}.yaml", tmp_path)
    config = FleetConfig(
        port=0, heartbeat_interval_s=0.5, missed_heartbeats=6, default_region="eu-west", admin_token=ADMIN_TOKEN
    )
    async with AsyncExitStack() as stack:
        router_url, _ = await stack.enter_async_context(running_router(config))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        nodes: dict[str, tuple[str, web.Application]] = {}
        for node_id, unload_after in (("a", 2.0), ("b", 0.0)):
            settings = ServerSettings(
                port=free_port(), ice_loopback=True, pipelines_dir=tmp_path, router_url=router_url, region="eu-west",
                node_id=node_id, max_sessions=2, unload_models_after_s=unload_after,
            )  # fmt: skip
            nodes[node_id] = await stack.enter_async_context(running_node(settings))

        async def fleet() -> dict[str, Any]:
            listed = (await get_json(http, f"{router_url}/v1/nodes"))["nodes"]
            return {n["node_id"]: n for n in listed}

        assert await wait_until(lambda: _both(fleet), 15), "nodes did not register"
        # both run the pipeline once: the ASR model loads on each and stays loaded after the session
        for node_id in ("b", "a"):
            url, app = nodes[node_id]
            await run_session(http, url)
            assert await wait_until(lambda app=app: _no_sessions(app), 10)
            assert app[MODELS].loads[ASR_KEY] == 1
        url_a, app_a = nodes["a"]
        models_b = await get_json(http, f"{nodes['b'][0]}/v1/models")
        assert ASR_KEY in models_b["loaded"] and models_b["node"]["state"] == "warm"

        # a: no session for 2 s -> its models are unloaded, and /v1/models says so
        async def a_cold() -> Any:
            models = await get_json(http, f"{url_a}/v1/models")
            return models if not models["loaded"] else None

        models_a = await wait_until(a_cold, 15)
        assert models_a, app_a[SCALER].report()
        assert models_a["node"]["state"] == "cold" and models_a["node"]["unloads"] == 1
        assert ASR_KEY in models_a["node"]["last_unloaded"] and app_a[MODELS].unloads[ASR_KEY] == 1

        # the router learns it from the next heartbeats
        async def router_sees_a_cold() -> Any:
            known = await fleet()
            return known if known["a"]["model_state"] == "cold" else None

        known = await wait_until(router_sees_a_cold, 10)
        assert known, await fleet()
        offers = {n: {p["name"]: p for p in known[n]["pipelines"]}[PIPELINE] for n in ("a", "b")}
        assert offers["a"]["warm"] is False and offers["b"]["warm"] is True
        assert known["b"]["model_state"] == "warm" and ASR_KEY in known["b"]["warm"]
        assert known["a"]["idle_s"] >= 2.0

        # equal latency, capacity and region: the warm node gets the session
        probe = await run_session(http, router_url, **{"X-Client-Region": "eu-west"})
        assert probe.answer["node_id"] == "b", probe.answer.get("routing")
        assert nodes["b"][1][MODELS].loads[ASR_KEY] == 1  # served warm: no second load
        assert app_a[MODELS].loads[ASR_KEY] == 1 and not app_a[SESSIONS].sessions
        async with http.get(f"{url_a}/metrics") as response:
            metrics = await response.text()
        assert "streamai_node_warm 0" in metrics and "streamai_node_model_unloads_total 1" in metrics


async def _both(fleet: Any) -> bool:
    known = await fleet()
    return {"a", "b"} <= set(known) and all(n["state"] == "healthy" for n in known.values())


async def _no_sessions(app: web.Application) -> bool:
    return not app[SESSIONS].sessions
