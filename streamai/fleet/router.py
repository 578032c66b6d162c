"""The router: the fleet's one entry point. Nodes heartbeat here; clients ask here for a session.

Proxy mode forwards the offer to the best node and returns its answer with the
node's URL (later DELETE/events go to the node directly; media always flows
client↔node). When a node fails the offer (5xx, 429, connection error, timeout)
the next candidate is tried. Redirect mode answers 307 to the best node instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from ..frames import now
from ..histogram import Histogram
from ..web.auth import bearer_token, same_secret
from ..web.protection import EntryGuard, Refused, guard_middleware, read_body
from .config import FleetConfig
from .registry import NodeRegistry, NodeReport
from .routing import Decision, NoRoute, parse_client_rtt, rank_top

log = logging.getLogger(__name__)

CONFIG = web.AppKey("fleet_config", FleetConfig)
ROUTER = web.AppKey("router", "Router")
GUARD = web.AppKey("fleet_guard", EntryGuard)
MAX_BODY = 256 * 1024
RETRYABLE = {404, 408, 429}  # besides 5xx: the node lost the pipeline, timed out, or is busy


def _error(status: int, code: str, message: str, retry_after: int | None = None, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status, headers=headers)


class Router:
    """Node registry, routing counters and the HTTP client used to proxy offers."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.registry = NodeRegistry(config.heartbeat_timeout_s)
        self.http: aiohttp.ClientSession | None = None
        self.decide_time = Histogram()
        self.routed: Counter[tuple[str, str]] = Counter()  # (client region, node region)
        self.rejected: Counter[str] = Counter()
        self.failovers = 0
        self.node_token = config.node_token or os.environ.get("STREAMAI_NODE_TOKEN")

    def client_region(self, request: web.Request) -> str | None:
        """``X-Client-Region``, else the configured IP prefix table, else the default region."""
        header = request.headers.get("X-Client-Region", "").strip()
        return header or self.config.region_of_ip(request.remote) or self.config.default_region

    def decide(self, pipeline: str, client_region: str | None, client_rtt: dict[str, float]) -> Decision:
        started = time.perf_counter()
        try:
            config = self.config
            return rank_top(self.registry, pipeline, client_region, config, now(), client_rtt, config.max_attempts)
        finally:
            self.decide_time.observe(time.perf_counter() - started)

    async def offer(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """POST an offer to one node; returns (status, JSON or text)."""
        assert self.http is not None
        timeout = aiohttp.ClientTimeout(total=self.config.offer_timeout_s)
        async with self.http.post(f"{url}/v1/sessions", data=body, headers=headers, timeout=timeout) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    def region_load(self) -> dict[str, dict[str, Any]]:
        """Per region: healthy nodes, sessions, capacity, utilisation, and the nodes it would take."""
        at = now()
        regions: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"nodes": 0, "healthy": 0, "sessions": 0, "capacity": 0, "utilisation": 0.0}
        )
        for node in self.registry.nodes.values():
            row = regions[node.report.region]
            row["nodes"] += 1
            if node.state(at, self.registry.timeout_s) == "healthy":
                row["healthy"] += 1
                row["sessions"] += node.load
                row["capacity"] += node.report.capacity
        target = self.config.target_utilisation
        for row in regions.values():
            row["utilisation"] = round(row["sessions"] / row["capacity"], 3) if row["capacity"] else 0.0
            per_node = row["capacity"] / row["healthy"] if row["healthy"] else 0
            row["desired_nodes"] = math.ceil(row["sessions"] / (per_node * target)) if per_node else row["nodes"]
        return dict(regions)


# -- node endpoints ----------------------------------------------------------------
def _node_token_refused(request: web.Request, router: Router) -> web.Response | None:
    """A 401 when the router requires a node token and the request does not carry it."""
    if not router.node_token:
        return None
    if same_secret(bearer_token(request), router.node_token):
        return None
    return _error(401, "unauthorized", "missing or wrong node token")


async def heartbeat(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    refused = _node_token_refused(request, router)
    if refused is not None:
        return refused
    try:
        report = NodeReport.model_validate_json(await request.read())
    except ValidationError as exc:
        return _error(400, "bad_report", str(exc.errors()[0]["msg"]))
    if report.node_id != request.match_info["id"]:
        return _error(400, "bad_report", "node_id in the body differs from the URL")
    _, new = router.registry.heartbeat(report)
    if new:
        log.info("node %s registered: %s (%s), capacity %d", report.node_id, report.url, report.region, report.capacity)
    return web.json_response({"ok": True, "new": new, "heartbeat_interval_s": router.config.heartbeat_interval_s})


async def leave(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    refused = _node_token_refused(request, router)
    if refused is not None:
        return refused
    removed = router.registry.remove(request.match_info["id"])
    return web.json_response({"ok": removed})


async def list_nodes(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    at = now()
    nodes = [n.describe(at, router.registry.timeout_s) for n in router.registry.nodes.values()]
    return web.json_response(
        {"nodes": sorted(nodes, key=lambda n: n["node_id"]), "heartbeat_timeout_s": router.registry.timeout_s}
    )


async def list_pipelines(request: web.Request) -> web.Response:
    """The union of what healthy nodes offer, with where each pipeline runs."""
    router = request.app[ROUTER]
    union: dict[str, dict[str, Any]] = {}
    for node in router.registry.healthy():
        for offer in node.report.pipelines:
            row = union.setdefault(
                offer.name,
                {**offer.model_dump(exclude={"stage_p90_ms"}), "regions": set(), "nodes": []},
            )
            row["regions"].add(node.report.region)
            row["nodes"].append(node.id)
    rows = [{**row, "regions": sorted(row["regions"])} for _, row in sorted(union.items())]
    return web.json_response({"pipelines": rows})


# -- client endpoint ---------------------------------------------------------------
async def create_session(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER]
    config = request.app[CONFIG]
    try:
        body = await read_body(request, MAX_BODY, config.protection.body_timeout_s, request.app[GUARD])
    except Refused as exc:
        return exc.response()
    try:
        offer = json.loads(body)
    except ValueError:
        return _error(400, "bad_json", "request body is not valid JSON")
    pipeline = offer.get("pipeline") if isinstance(offer, dict) else None
    if not isinstance(pipeline, str) or not pipeline:
        return _error(400, "bad_request", "'pipeline' (a name from GET /v1/pipelines) is required at the router")
    client_region = router.client_region(request)
    try:
        decision = router.decide(pipeline, client_region, parse_client_rtt(request.headers.get("X-Client-RTT")))
    except NoRoute as exc:
        router.rejected[exc.code] += 1
        return _error(exc.status, exc.code, exc.message, exc.retry_after, client_region=client_region)
    redirect = router.config.mode == "redirect" or request.query.get("redirect") in ("1", "true")
    if redirect:
        best = decision.candidates[0].node
        best.routed_since_heartbeat += 1
        router.routed[(client_region or "?", best.report.region)] += 1
        raise web.HTTPTemporaryRedirect(
            f"{best.report.url}/v1/sessions", headers={"X-Streamai-Node": best.id, "Cache-Control": "no-store"}
        )
    headers = {"Content-Type": "application/json"}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    tried: list[dict[str, Any]] = []
    for choice in decision.candidates[: router.config.max_attempts]:
        node = choice.node
        try:
            status, answer = await router.offer(node.report.url, body, headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            router.registry.mark_unreachable(node.id)
            tried.append({"node_id": node.id, "error": type(exc).__name__})
            router.failovers += 1
            continue
        if status == 200 and isinstance(answer, dict):
            node.routed_since_heartbeat += 1
            router.routed[(client_region or "?", node.report.region)] += 1
            url = node.report.url
            answer.update(
                node_id=node.id,
                node_url=url,
                region=node.report.region,
                session_url=f"{url}/v1/sessions/{answer.get('session_id')}",
                events_url=f"{url}{answer.get('events_url', '')}",
                routing={"client_region": client_region, "data_region": decision.data_region, "tried": tried},
            )
            return web.json_response(answer)
        if status >= 500 or status in RETRYABLE:
            code = answer.get("error", {}).get("code") if isinstance(answer, dict) else None
            if code == "over_capacity" or status == 429:
                # full until its next report says otherwise
                node.routed_since_heartbeat = max(0, node.report.capacity - node.report.sessions)
            else:
                node.offer_failed_at[pipeline] = now()
            tried.append({"node_id": node.id, "status": status, "code": code})
            router.failovers += 1
            continue
        return web.json_response(answer, status=status)  # the client's own mistake: no other node will differ
    router.rejected["all_candidates_failed"] += 1
    return _error(502, "all_candidates_failed", "every candidate node failed the offer", 2, tried=tried)


# -- autoscaling signal ------------------------------------------------------------
async def fleet_load(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    regions = router.region_load()
    total_sessions = sum(r["sessions"] for r in regions.values())
    total_capacity = sum(r["capacity"] for r in regions.values())
    return web.json_response(
        {
            "regions": regions,
            "sessions": total_sessions,
            "capacity": total_capacity,
            "utilisation": round(total_sessions / total_capacity, 3) if total_capacity else 0.0,
            "target_utilisation": router.config.target_utilisation,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    lines = [
        "# HELP streamai_fleet_sessions Sessions on healthy nodes, by region.",
        "# TYPE streamai_fleet_sessions gauge",
    ]
    regions = router.region_load()
    for name, field, help_ in (
        ("streamai_fleet_capacity", "capacity", "Session capacity of healthy nodes, by region."),
        ("streamai_fleet_utilisation", "utilisation", "Sessions / capacity, by region (scale on this)."),
        ("streamai_fleet_nodes_healthy", "healthy", "Nodes with fresh heartbeats, by region."),
        ("streamai_fleet_nodes", "nodes", "Registered nodes, by region."),
        ("streamai_fleet_desired_nodes", "desired_nodes", "Nodes needed at the target utilisation, by region."),
    ):
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{region="{r}"}} {row[field]}' for r, row in sorted(regions.items())]
    lines[2:2] = [f'streamai_fleet_sessions{{region="{r}"}} {row["sessions"]}' for r, row in sorted(regions.items())]
    lines += ["# HELP streamai_fleet_routed_total Sessions routed.", "# TYPE streamai_fleet_routed_total counter"]
    for (client, node), count in sorted(router.routed.items()):
        lines.append(f'streamai_fleet_routed_total{{client_region="{client}",node_region="{node}"}} {count}')
    lines += [
        "# HELP streamai_fleet_rejected_total Session requests no node took.",
        "# TYPE streamai_fleet_rejected_total counter",
    ]
    lines += [f'streamai_fleet_rejected_total{{code="{c}"}} {n}' for c, n in sorted(router.rejected.items())]
    lines += ["# TYPE streamai_fleet_failovers_total counter", f"streamai_fleet_failovers_total {router.failovers}"]
    lines += ["# TYPE streamai_fleet_decision_seconds histogram"]
    for bound, count in router.decide_time.cumulative():
        lines.append(f'streamai_fleet_decision_seconds_bucket{{le="{bound}"}} {count}')
    lines.append(f"streamai_fleet_decision_seconds_sum {router.decide_time.total:.6f}")
    lines.append(f"streamai_fleet_decision_seconds_count {router.decide_time.count}")
    lines += request.app[GUARD].metrics_lines()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


async def list_models(request: web.Request) -> web.Response:
    """The fleet's models: every catalog entry with the regions and nodes that hold it, and where it is loaded."""
    from ..models.catalog import Catalog, catalog_row

    nodes = request.app[ROUTER].registry.healthy()
    rows = []
    for entry in Catalog().entries.values():
        holding = [n for n in nodes if entry.id in n.report.models]
        loaded = [n.id for n in nodes if any(entry.id in key.split(":") for key in n.report.warm)]
        row = {k: v for k, v in catalog_row(entry).items() if k not in ("status", "installed")}
        row.update(
            regions=sorted({n.report.region for n in holding}), nodes=sorted(n.id for n in holding), loaded_on=loaded
        )
        rows.append(row)
    return web.json_response({"models": rows})


async def healthz(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    registry = router.registry
    return web.json_response({"ok": True, "nodes": len(registry.nodes), "healthy": len(registry.healthy())})


def create_router_app(config: FleetConfig) -> web.Application:
    """The router's application."""
    guard = EntryGuard(config.protection)
    # sessions live on the nodes (which cap them per address); the router limits request and session rates
    app = web.Application(
        client_max_size=MAX_BODY + 1, middlewares=[guard_middleware(guard, lambda client, token: (0, 0))]
    )
    app[GUARD] = guard
    router = Router(config)
    app[CONFIG] = config
    app[ROUTER] = router
    app.router.add_post("/v1/nodes/{id}/heartbeat", heartbeat)
    app.router.add_delete("/v1/nodes/{id}", leave)
    app.router.add_get("/v1/nodes", list_nodes)
    app.router.add_get("/v1/pipelines", list_pipelines)
    app.router.add_post("/v1/sessions", create_session)
    app.router.add_get("/v1/fleet/load", fleet_load)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/models", list_models)

    async def open_client(app: web.Application) -> None:
        router.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def close_client(app: web.Application) -> None:
        if router.http is not None:
            await router.http.close()

    app.on_startup.append(open_client)
    app.on_cleanup.append(close_client)
    return app
