"""Regression tests for the security review's router findings (R1-R5) and the node agent's (A1).

Each test is named after its finding (../shared/notes/security-review.md) and uses a real
router, real nodes and real peers on loopback; each failed on commit 95b23c0.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from streamai.fleet.config import FleetConfig
from streamai.fleet.membership import node_token
from streamai.fleet.router import ROUTER, create_router_app
from streamai.server.settings import ServerSettings
from streamai.testing.node import free_port, running_app, running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe
from streamai.testing.wait import wait_for

SECRET = "review-fleet-secret-0123456789"
ADMIN = {"Authorization": "Bearer review-admin"}
JSON = {"Content-Type": "application/json"}


def credential(node_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {node_token(SECRET, node_id)}"}


def report(node_id: str, url: str, **changes: Any) -> dict[str, Any]:
    base = {"node_id": node_id, "url": url, "region": "eu-west", "capacity": 4,
            "pipelines": [{"name": "transform", "stage_p90_ms": {"invert": 2.0}}]}  # fmt: skip
    return {**base, **changes}


def fleet_config(**changes: Any) -> FleetConfig:
    values: dict[str, Any] = {
        "port": 0, "heartbeat_interval_s": 0.5, "node_secret": SECRET, "admin_token": "review-admin",
        "regions": {"eu-west": {}, "us-east": {}}, "default_region": "eu-west",
    }  # fmt: skip
    return FleetConfig(**{**values, **changes})


@asynccontextmanager
async def fleet_with_node(**config: Any) -> AsyncIterator[tuple[str, str, web.Application]]:
    """A router and one real node 'eu1' registered with its own credential."""
    async with running_app(create_router_app(fleet_config(**config))) as (router_url, router_app):
        settings = ServerSettings(
            port=free_port(), ice_loopback=True, router_url=router_url, region="eu-west", node_id="eu1",
            node_token=node_token(SECRET, "eu1"),
        )  # fmt: skip
        async with running_node(settings) as (node_url, _node_app):
            assert await wait_for(lambda: "eu1" in router_app[ROUTER].registry.nodes, 10)
            yield router_url, node_url, router_app


async def post(http: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def test_R1_a_fake_node_without_a_credential_or_with_another_nodes_is_refused_and_routing_is_unchanged() -> None:
    async with fleet_with_node() as (router, node_url, app), aiohttp.ClientSession() as http:
        evil = "http://127.0.0.1:9"
        hijack = report("eu1", evil, pipelines=[{"name": "transform", "stage_p90_ms": {"x": 0.0}}])
        assert (await post(http, f"{router}/v1/nodes/eu1/heartbeat", hijack))[0] == 401  # no credential
        other = credential("eu2")  # a real node's credential, for another id
        assert (await post(http, f"{router}/v1/nodes/eu1/heartbeat", hijack, **other))[0] == 403
        async with http.delete(f"{router}/v1/nodes/eu1", headers=other) as response:
            assert response.status == 403
        fake = report("evil", evil)
        assert (await post(http, f"{router}/v1/nodes/evil/heartbeat", fake))[0] == 401
        nodes = app[ROUTER].registry.nodes
        assert set(nodes) == {"eu1"} and nodes["eu1"].report.url == node_url
        probe = Probe(router, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        assert probe.answer["node_id"] == "eu1" and probe.answer["node_url"] == node_url
        await probe.close(http)
    # a router on a public address without node authentication refuses to start
    with pytest.raises(ValueError, match="node_secret"):
        create_router_app(FleetConfig(host="0.0.0.0"))


async def test_R1_report_figures_must_be_finite_bounded_and_from_known_regions() -> None:
    async with fleet_with_node() as (router, _node_url, app), aiohttp.ClientSession() as http:
        for bad in (
            report("n2", "http://127.0.0.1:2", pipelines=[{"name": "transform", "stage_p90_ms": {"x": -1e9}}]),
            report("n2", "http://127.0.0.1:2", capacity=10**9),
            report("n2", "http://127.0.0.1:2", region="mars"),
            report("n2", "http://127.0.0.1:2", region='eu"\nstreamai_fleet_desired_nodes{region="x"} 1000'),
            report("n2", "http://127.0.0.1:2/path"),
        ):
            status, body = await post(http, f"{router}/v1/nodes/n2/heartbeat", bad, **credential("n2"))
            assert status == 400 and body["error"]["code"] == "bad_report", bad
        assert set(app[ROUTER].registry.nodes) == {"eu1"}


class FakeNode:
    """An authenticated node that misbehaves on offers; and an 'internal' service it points at."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.internal_hits = 0

    def node_app(self, internal_url: str) -> web.Application:
        async def offer(request: web.Request) -> web.StreamResponse:
            if self.behaviour == "redirect":
                raise web.HTTPTemporaryRedirect(f"{internal_url}/secret")
            if self.behaviour == "huge":
                return web.json_response({"session_id": "ab" * 8, "sdp": "v=0" + "x" * 200_000, "type": "answer"})
            if self.behaviour == "not-a-session":
                return web.json_response({"internal": "metadata", "token": "leaked"})
            return web.json_response({"error": {"code": "bad\nthing", "message": "x\x00" * 10}}, status=400)

        app = web.Application()
        app.router.add_post("/v1/sessions", offer)
        return app

    def internal_app(self) -> web.Application:
        async def secret(request: web.Request) -> web.Response:
            self.internal_hits += 1
            return web.json_response({"secret": "internal data"})

        app = web.Application()
        app.router.add_route("*", "/secret", secret)
        return app


@pytest.mark.parametrize("behaviour", ["redirect", "huge", "not-a-session", "odd-error"])
async def test_R2_the_router_never_follows_a_node_elsewhere_nor_relays_what_is_not_a_session(behaviour: str) -> None:
    fake = FakeNode(behaviour)
    async with (
        running_app(create_router_app(fleet_config())) as (router, _app),
        running_app(fake.internal_app()) as (internal, _),
        running_app(fake.node_app(internal)) as (fake_url, _),
        aiohttp.ClientSession() as http,
    ):
        status, _ = await post(http, f"{router}/v1/nodes/n1/heartbeat", report("n1", fake_url), **credential("n1"))
        assert status == 200
        # a node URL with a path or query (that would choose the router's request path) is refused
        sneaky = report("n1", f"{internal}/secret?x=")
        assert (await post(http, f"{router}/v1/nodes/n1/heartbeat", sneaky, **credential("n1")))[0] == 400
        status, body = await post(http, f"{router}/v1/sessions", {"pipeline": "transform", "sdp": "v=0"}, **JSON)
        text = json.dumps(body)
        assert fake.internal_hits == 0 and "internal data" not in text and "leaked" not in text and "xxxx" not in text
        if behaviour == "odd-error":  # the node's refusal, sanitised: a code of the allowed shape, printable text
            assert status == 400 and body["error"]["code"] == "node_refused", body
            assert body["error"]["message"] == "the node refused the offer"
        else:
            assert status == 502 and body["error"]["code"] == "all_candidates_failed", body


async def test_R3_nan_and_infinite_figures_never_break_routing() -> None:
    async with fleet_with_node() as (router, _node_url, _app), aiohttp.ClientSession() as http:
        raw = json.dumps(report("n2", "http://127.0.0.1:2")).replace("2.0}", "NaN}")
        async with http.post(
            f"{router}/v1/nodes/n2/heartbeat", data=raw, headers={**credential("n2"), **JSON}
        ) as response:
            assert response.status == 400
        for probe_header in ("eu-west=nan", "eu-west=inf", "eu-west=-5", "us-east=1e400"):
            probe = Probe(router, "transform", video=BarcodeVideoTrack(160, 120, 10),
                          headers={"X-Client-RTT": probe_header})  # fmt: skip
            await probe.connect(http)  # a 500 would raise ProbeError here
            assert probe.answer["node_id"] == "eu1"
            await probe.close(http)


async def test_R4_router_metrics_stay_well_formed_with_bounded_labels() -> None:
    async with fleet_with_node() as (router, _node_url, _app), aiohttp.ClientSession() as http:
        for claimed in ('a"b', "x} 1 \\", "zz" * 100):
            video = BarcodeVideoTrack(160, 120, 10)
            probe = Probe(router, "transform", video=video, headers={"X-Client-Region": claimed})
            await probe.connect(http)
            assert probe.answer["routing"]["client_region"] == "eu-west"  # decided by the router, not the header
            await probe.close(http)
        async with http.get(f"{router}/metrics") as response:
            text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # raises on a malformed exposition
    routed = families["streamai_fleet_routed"].samples
    labels = {(s.labels["client_region"], s.labels["node_region"]) for s in routed if s.name.endswith("_total")}
    assert labels == {("eu-west", "eu-west")}


async def test_R5_silent_nodes_are_evicted_the_fleet_is_bounded_and_its_inventory_is_the_admins() -> None:
    config = {"evict_after_s": 1.0, "max_nodes": 2}
    async with fleet_with_node(**config) as (router, _node_url, app), aiohttp.ClientSession() as http:
        for node_id in ("n2", "n3"):
            status, _ = await post(http, f"{router}/v1/nodes/{node_id}/heartbeat",
                                   report(node_id, "http://127.0.0.1:2"), **credential(node_id))  # fmt: skip
            assert status == (200 if node_id == "n2" else 503)  # eu1 + n2 = max_nodes
        assert await wait_for(lambda: "n2" not in app[ROUTER].registry.nodes, 10)  # evicted: it never beat again
        assert "eu1" in app[ROUTER].registry.nodes  # the live node keeps beating
        for path in ("/v1/nodes", "/v1/fleet/load"):
            async with http.get(f"{router}{path}") as response:
                assert response.status == 401
            async with http.get(f"{router}{path}", headers={"Authorization": "Bearer nope"}) as response:
                assert response.status == 403
            async with http.get(f"{router}{path}", headers=ADMIN) as response:
                assert response.status == 200
        async with http.get(f"{router}/v1/pipelines") as response:
            assert "eu1" not in await response.text() and "127.0.0.1" not in await response.text()


async def test_A1_the_node_agent_survives_a_hostile_router_and_bounds_its_interval() -> None:
    answers: list[Any] = [{"ok": True, "heartbeat_interval_s": 0}, ["not", "an", "object"], "text", None]
    beats: list[float] = []

    async def heartbeat(request: web.Request) -> web.Response:
        beats.append(asyncio.get_running_loop().time())
        answer = answers[min(len(beats) - 1, len(answers) - 1)]
        return web.Response(text=json.dumps(answer), content_type="application/json")

    router = web.Application()
    router.router.add_post("/v1/nodes/{id}/heartbeat", heartbeat)
    async with running_app(router) as (router_url, _):
        settings = ServerSettings(port=0, ice_loopback=True, router_url=router_url, node_id="a1")
        async with running_node(settings) as (_url, _node_app):
            assert await wait_for(lambda: len(beats) >= 5, 10)
            agent_tasks = [t for t in asyncio.all_tasks() if t.get_name() == "fleet-heartbeat"]
            assert agent_tasks and not agent_tasks[0].done()  # a non-object answer did not kill the loop
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert min(gaps) >= 0.15  # an interval of 0 became the 0.2 s floor, not a busy loop
