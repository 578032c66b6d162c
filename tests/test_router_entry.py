"""The router's own entry point: the fleet's model union, and the same flood protection as a node."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from streamai.fleet.config import FleetConfig
from streamai.fleet.membership import node_token
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.web.protection import ProtectionSettings
from tests.test_node_scale_to_zero import free_port, running_router

JSON = {"Content-Type": "application/json"}


async def test_router_lists_the_fleets_models_with_their_regions() -> None:
    async with running_router(FleetConfig(heartbeat_interval_s=0.5)) as (router_url, _router):
        port = free_port()
        settings = ServerSettings(
            port=port, ice_loopback=True, router_url=router_url, region="eu-west", node_id="eu1", preload=["transform"]
        )
        async with running_node(settings) as (_url, _app), aiohttp.ClientSession() as http:
            models: list[dict] = []
            for _ in range(50):
                async with http.get(f"{router_url}/v1/models") as response:
                    models = (await response.json())["models"]
                if any(m["regions"] for m in models):
                    break
                await asyncio.sleep(0.2)
        by_id = {m["id"]: m for m in models}
        assert by_id["whisper-tiny-en"]["regions"] == ["eu-west"]
        assert by_id["sd-turbo"]["regions"] == []  # a folder model no node has
        assert all("nodes" not in m for m in models)  # node ids are the operator's (GET /v1/nodes, admin)
        assert all("license" in m and "size_mb" in m for m in models)


@pytest.mark.slow
async def test_router_limits_a_flood_and_a_slow_body() -> None:
    protection = ProtectionSettings(sessions_per_min=60, sessions_burst=5, body_timeout_s=1.0)
    async with running_router(FleetConfig(protection=protection)) as (router_url, _router):
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:
            body = json.dumps({"pipeline": "transform", "sdp": "v=0"})

            async def one() -> None:
                async with http.post(f"{router_url}/v1/sessions", data=body, headers=JSON) as response:
                    statuses.append(response.status)

            await asyncio.gather(*(one() for _ in range(50)))
            async with http.get(f"{router_url}/metrics") as response:
                metrics = await response.text()
        assert statuses.count(429) >= 40 and 500 not in statuses
        assert 'streamai_refusals_total{reason="session_rate"}' in metrics
        host, port = router_url.removeprefix("http://").split(":")
        # from another address: this one's session bucket is empty after the flood
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.3", 0))
        writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n{")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert b" 408 " in status_line


async def test_nodes_need_their_own_credential_to_register_or_leave() -> None:
    secret = "fleet-secret-0123456789abcdef"
    async with running_router(FleetConfig(node_secret=secret)) as (router_url, _router_app):
        report = {"node_id": "n1", "url": "http://127.0.0.1:1", "region": "eu-west", "capacity": 1}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{router_url}/v1/nodes/n1/heartbeat", json=report) as response:
                assert response.status == 401
            async with http.delete(f"{router_url}/v1/nodes/n1") as response:
                assert response.status == 401
            other = {"Authorization": f"Bearer {node_token(secret, 'n2')}"}  # another node's credential
            async with http.post(f"{router_url}/v1/nodes/n1/heartbeat", json=report, headers=other) as response:
                assert response.status == 403
            auth = {"Authorization": f"Bearer {node_token(secret, 'n1')}"}
            async with http.post(f"{router_url}/v1/nodes/n1/heartbeat", json=report, headers=auth) as response:
                assert response.status == 200 and (await response.json())["new"] is True
            async with http.delete(f"{router_url}/v1/nodes/n1", headers=other) as response:
                assert response.status == 403
            async with http.delete(f"{router_url}/v1/nodes/n1", headers=auth) as response:
                assert (await response.json())["ok"] is True
