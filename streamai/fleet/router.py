"""The router: the fleet's one entry point. Nodes heartbeat here; clients ask here for a session.

Proxy mode forwards the offer to the best node and returns its answer with the
node's URL (later DELETE/events go to the node directly; media always flows
client<->node). When a node fails the offer (5xx, 429, connection error, timeout)
the next candidate is tried. Redirect mode answers 307 to the best node instead.

Trust (SECURITY.md): a node registers, reports or leaves only with its own credential
(streamai/fleet/membership.py), except that a router bound to loopback with no
``node_secret`` takes loopback nodes (the local demo). Reports are validated
(registry.py), node URLs are origins only, within ``node_networks`` when set. The
router decides the client's region from its address (a header only from trusted
proxies), tells the node in a signed grant, never follows a node's redirect, reads at
most ``max_answer_bytes`` of an answer and relays only a well-formed session answer
or error. Fleet state lives behind ``FleetState`` (memory or Redis).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import ValidationError

from ..errors import ClientError
from ..frames import now
from ..histogram import Histogram
from ..web.auth import bearer_token, same_secret
from ..web.clients import in_networks, is_loopback, parse_address, parse_networks
from ..web.errors import errors_as_json, json_error
from ..web.grants import HEADER as GRANT_HEADER
from ..web.grants import new_grant
from ..web.metrics import FunctionCollector, add_histogram, histogram_family, metrics_response, registry_of
from ..web.protection import CLIENT, EntryGuard, guard_middleware, json_body, read_body
from .config import FleetConfig
from .membership import is_node_credential, node_token
from .registry import NAME, NodeEntry, NodeReport
from .routing import Decision, NoRoute, parse_client_rtt, rank_top
from .state import FleetFull, FleetState, MemoryFleetState

log = logging.getLogger(__name__)

CONFIG = web.AppKey("fleet_config", FleetConfig)
ROUTER = web.AppKey("router", "Router")
GUARD = web.AppKey("fleet_guard", EntryGuard)
MAX_BODY = 256 * 1024
RETRYABLE = {404, 408, 429}  # besides 5xx: the node lost the pipeline, timed out, or is busy
PIPELINE_NAME = re.compile(NAME)
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SESSION_ID = re.compile(r"^[0-9a-f]{8,64}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class NodeAnswerError(RuntimeError):
    """A node's answer the router will not relay (too large, not JSON, not a session)."""


class Router:
    """Fleet state, routing counters, and the HTTP client used to proxy offers."""

    def __init__(self, config: FleetConfig, state: FleetState | None = None) -> None:
        self.config = config
        self.state: FleetState = state or MemoryFleetState(config)
        self.http: aiohttp.ClientSession | None = None
        self.node_networks = parse_networks(config.node_networks)
        self.decide_time = Histogram()
        self.routed: Counter[tuple[str, str]] = Counter()  # (client region, node region): both bounded
        self.rejected: Counter[str] = Counter()
        self.failovers = 0

    @property
    def registry(self) -> Any:
        """The fleet as routing sees it (``NodeRegistry``)."""
        return self.state.view

    # -- who is asking -------------------------------------------------------------
    def client_region(self, request: web.Request, guard: EntryGuard) -> str | None:
        """The router's decision: ``X-Client-Region`` only from a trusted proxy, else the client's
        address in the configured prefixes, else the default region. Never what a client claims."""
        if guard.addresses.from_trusted_proxy(request):
            header = request.headers.get("X-Client-Region", "").strip()
            if self.config.known_region(header):
                return header
        return self.config.region_of_ip(request.get(CLIENT)) or self.config.default_region

    def label(self, region: str | None) -> str:
        """A region as a metrics label: configured (or well-formed) names only, never free text."""
        if region is None:
            return "unknown"
        if not self.config.known_region(region):
            return "other"
        return region if self.config.regions or len(self.routed) < 256 else "other"

    def node_allowed(self, request: web.Request, node_id: str) -> None:
        """Raise unless the request carries ``node_id``'s credential (or is the loopback demo's node)."""
        secret = self.config.node_secret
        if secret is None:
            if self.config.on_loopback() and is_loopback(request.remote):
                return
            raise ClientError(403, "forbidden", "this router takes no nodes from outside loopback without node_secret")
        presented = bearer_token(request)
        if presented is None:
            raise ClientError(401, "unauthorized", "a node must send its credential (Authorization: Bearer)")
        if not is_node_credential(secret, node_id, presented):
            raise ClientError(403, "forbidden", f"this credential is not node {node_id!r}'s")

    def check_url(self, url: str) -> None:
        """A node URL must be an IP literal inside ``node_networks`` when they are configured."""
        if not self.node_networks:
            return
        host = url.split("://", 1)[1].rsplit(":", 1)[0] if url.count(":") >= 2 else url.split("://", 1)[1]
        if not in_networks(parse_address(host), self.node_networks):
            raise ClientError(400, "bad_report", "the node's URL is not inside the router's node_networks")

    # -- routing ---------------------------------------------------------------------
    def decide(self, pipeline: str, client_region: str | None, client_rtt: dict[str, float]) -> Decision:
        started = time.perf_counter()
        try:
            config = self.config
            return rank_top(
                self.registry, pipeline, client_region, config, now(), client_rtt, config.max_attempts, config.location
            )
        finally:
            self.decide_time.observe(time.perf_counter() - started)

    def grant_for(self, node: NodeEntry, pipeline: str, region: str | None, client: str | None) -> str | None:
        """The signed grant telling ``node`` the client's region and address (None without a fleet secret)."""
        if self.config.node_secret is None:
            return None
        return new_grant(node.id, pipeline, region, client, node_token(self.config.node_secret, node.id))

    async def offer(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """POST an offer to one node; (status, parsed JSON). Never follows a redirect, reads a bounded answer."""
        assert self.http is not None
        timeout = aiohttp.ClientTimeout(total=self.config.offer_timeout_s)
        limit = self.config.max_answer_bytes
        async with self.http.post(
            f"{url}/v1/sessions", data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            raw = await response.content.read(limit + 1)
            if len(raw) > limit:
                raise NodeAnswerError(f"answer over {limit} bytes")
            try:
                return response.status, json.loads(raw)
            except ValueError:
                raise NodeAnswerError("answer is not JSON") from None

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
                row["sessions"] += min(node.load, node.report.capacity)
                row["capacity"] += node.report.capacity
        target = self.config.target_utilisation
        for row in regions.values():
            row["utilisation"] = round(row["sessions"] / row["capacity"], 3) if row["capacity"] else 0.0
            per_node = row["capacity"] / row["healthy"] if row["healthy"] else 0
            row["desired_nodes"] = math.ceil(row["sessions"] / (per_node * target)) if per_node else row["nodes"]
        return dict(regions)

    def collect(self) -> Iterator[Metric]:
        """The router's metrics (prometheus_client collector protocol); labels are bounded region names."""
        regions = self.region_load()
        for name, field, help_ in (
            ("streamai_fleet_sessions", "sessions", "Sessions on healthy nodes, by region."),
            ("streamai_fleet_capacity", "capacity", "Session capacity of healthy nodes, by region."),
            ("streamai_fleet_utilisation", "utilisation", "Sessions / capacity, by region (scale on this)."),
            ("streamai_fleet_nodes_healthy", "healthy", "Nodes with fresh heartbeats, by region."),
            ("streamai_fleet_nodes", "nodes", "Registered nodes, by region."),
            ("streamai_fleet_desired_nodes", "desired_nodes", "Nodes needed at the target utilisation, by region."),
        ):
            family = GaugeMetricFamily(name, help_, labels=["region"])
            for region, row in sorted(regions.items()):
                family.add_metric([region], row[field])
            yield family
        routed = CounterMetricFamily(
            "streamai_fleet_routed", "Sessions routed.", labels=["client_region", "node_region"]
        )
        for (client, node), count in sorted(self.routed.items()):
            routed.add_metric([client, node], count)
        yield routed
        rejected = CounterMetricFamily("streamai_fleet_rejected", "Session requests no node took.", labels=["code"])
        for code, count in sorted(self.rejected.items()):
            rejected.add_metric([code], count)
        yield rejected
        yield CounterMetricFamily("streamai_fleet_failovers", "Offers retried at another node.", value=self.failovers)
        up = getattr(self.state, "up", True)  # a shared store (Redis) reachable now; memory is always up
        yield GaugeMetricFamily("streamai_fleet_store_up", "1 while the fleet's state store answers.", value=int(up))
        decision = histogram_family("streamai_fleet_decision_seconds", "Time to rank nodes for one request.", [])
        add_histogram(decision, [], self.decide_time)
        yield decision


# -- node endpoints ----------------------------------------------------------------
async def heartbeat(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    node_id = request.match_info["id"]
    router.node_allowed(request, node_id)
    body = await read_body(request, MAX_BODY, router.config.protection.body_timeout_s, request.app[GUARD])
    try:
        report = NodeReport.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ClientError(400, "bad_report", f"{where}: {first['msg']}") from None
    if report.node_id != node_id:
        raise ClientError(400, "bad_report", "node_id in the body differs from the URL")
    if router.config.regions and report.region not in router.config.regions:
        raise ClientError(400, "bad_report", f"region {report.region!r} is not one of this fleet's regions")
    router.check_url(report.url)
    try:
        new = await router.state.heartbeat(report)
    except FleetFull as exc:
        raise ClientError(503, "fleet_full", str(exc), retry_after=60) from None
    if new:
        log.info("node %s registered: %s (%s), capacity %d", report.node_id, report.url, report.region, report.capacity)
    return web.json_response({"ok": True, "new": new, "heartbeat_interval_s": router.config.heartbeat_interval_s})


async def leave(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    node_id = request.match_info["id"]
    router.node_allowed(request, node_id)
    return web.json_response({"ok": await router.state.remove(node_id)})


def require_admin(request: web.Request) -> None:
    """The fleet's inventory (node URLs, ids, load) is the operator's: the router's admin token."""
    admin = request.app[CONFIG].admin_token
    caller = bearer_token(request)
    if caller is None:
        raise ClientError(401, "unauthorized", "this endpoint needs the router's admin token")
    if admin is None or not same_secret(caller, admin):
        raise ClientError(403, "forbidden", "this token is not the router's admin token")


async def list_nodes(request: web.Request) -> web.Response:
    require_admin(request)
    router = request.app[ROUTER]
    at = now()
    nodes = [n.describe(at, router.registry.timeout_s) for n in router.registry.nodes.values()]
    return web.json_response(
        {"nodes": sorted(nodes, key=lambda n: n["node_id"]), "heartbeat_timeout_s": router.registry.timeout_s}
    )


async def list_pipelines(request: web.Request) -> web.Response:
    """The union of what healthy nodes offer, with the regions where each runs (no node ids or URLs)."""
    router = request.app[ROUTER]
    union: dict[str, dict[str, Any]] = {}
    for node in router.registry.healthy():
        for offer in node.report.pipelines:
            row = union.setdefault(offer.name, {**offer.model_dump(exclude={"stage_p90_ms"}), "regions": set()})
            row["regions"].add(node.report.region)
    rows = [{**row, "regions": sorted(row["regions"])} for _, row in sorted(union.items())]
    return web.json_response({"pipelines": rows})


# -- client endpoint ---------------------------------------------------------------
async def read_offer(request: web.Request) -> tuple[bytes, str]:
    """The client's JSON body (bounded, on time) and the pipeline it asks for."""
    config = request.app[CONFIG]
    body = await read_body(request, MAX_BODY, config.protection.body_timeout_s, request.app[GUARD])
    offer = json_body(request, body)
    pipeline = offer.get("pipeline") if isinstance(offer, dict) else None
    if not isinstance(pipeline, str) or not PIPELINE_NAME.match(pipeline):
        raise ClientError(400, "bad_request", "'pipeline' (a name from GET /v1/pipelines) is required at the router")
    return body, pipeline


def session_answer(answer: Any, node: NodeEntry) -> dict[str, Any] | None:
    """The node's answer rebuilt from its well-formed fields only, or None when it is not a session."""
    if not isinstance(answer, dict):
        return None
    session_id, sdp = answer.get("session_id"), answer.get("sdp")
    if not (isinstance(session_id, str) and SESSION_ID.match(session_id)):
        return None
    if not (isinstance(sdp, str) and sdp.startswith("v=0")):
        return None
    result: dict[str, Any] = {"session_id": session_id, "sdp": sdp, "type": "answer"}
    if isinstance(answer.get("pipeline"), str) and PIPELINE_NAME.match(answer["pipeline"]):
        result["pipeline"] = answer["pipeline"]
    for key in ("session_token", "viewer_token"):
        if isinstance(answer.get(key), str) and TOKEN.match(answer[key]):
            result[key] = answer[key]
    url = node.report.url
    result.update(
        node_id=node.id,
        node_url=url,
        region=node.report.region,
        session_url=f"{url}/v1/sessions/{session_id}",
        events_url=f"{url}/v1/sessions/{session_id}/events",
    )
    return result


def node_error(status: int, answer: Any) -> ClientError:
    """A node's refusal as the router relays it: its code and a bounded, printable message only."""
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code = code if isinstance(code, str) and ERROR_CODE.match(code) else "node_refused"
    text = message[:300] if isinstance(message, str) and message.isprintable() else "the node refused the offer"
    return ClientError(status if 400 <= status < 500 else 502, code, text)


async def create_session(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER]
    body, pipeline = await read_offer(request)
    client = request.get(CLIENT)
    client_region = router.client_region(request, request.app[GUARD])
    probes = parse_client_rtt(request.headers.get("X-Client-RTT"))
    rtt = {region: ms for region, ms in probes.items() if router.config.known_region(region)}
    try:
        decision = router.decide(pipeline, client_region, rtt)
    except NoRoute as exc:
        router.rejected[exc.code] += 1
        return json_error(exc, client_region=client_region)
    redirect = router.config.mode == "redirect" or request.query.get("redirect") in ("1", "true")
    if redirect:
        return await redirect_to_node(request, router, decision, pipeline, client, client_region)
    headers = {"Content-Type": "application/json"}
    if bearer_token(request) is not None:  # the client's API token, for the node to check
        headers["Authorization"] = request.headers["Authorization"]
    tried: list[dict[str, Any]] = []
    for choice in decision.candidates[: router.config.max_attempts]:
        node = choice.node
        if not await router.state.reserve(node):
            tried.append({"node_id": node.id, "error": "full"})
            continue
        grant = router.grant_for(node, pipeline, client_region, client)
        node_headers = {**headers, GRANT_HEADER: grant} if grant else headers
        try:
            status, answer = await router.offer(node.report.url, body, node_headers)
        except (TimeoutError, aiohttp.ClientError, OSError, NodeAnswerError) as exc:
            await router.state.release(node)
            await router.state.mark_unreachable(node)
            tried.append({"node_id": node.id, "error": type(exc).__name__})
            router.failovers += 1
            continue
        if status == 200 and (relayed := session_answer(answer, node)) is not None:
            router.routed[(router.label(client_region), router.label(node.report.region))] += 1
            relayed["routing"] = {"client_region": client_region, "data_region": decision.data_region, "tried": tried}
            return web.json_response(relayed)
        await router.state.release(node)
        if status == 200 or status >= 500 or status in RETRYABLE:
            code = node_error(status, answer).code
            if code == "over_capacity" or status == 429:
                await router.state.mark_full(node)  # until its next report says otherwise
            else:
                await router.state.mark_failed(node, pipeline)
            tried.append({"node_id": node.id, "status": status, "code": code})
            router.failovers += 1
            continue
        return json_error(node_error(status, answer))  # the client's own mistake: no other node will differ
    router.rejected["all_candidates_failed"] += 1
    refused = ClientError(502, "all_candidates_failed", "every candidate node failed the offer", retry_after=2)
    return json_error(refused, tried=tried)


async def redirect_to_node(
    request: web.Request, router: Router, decision: Decision, pipeline: str, client: str | None, region: str | None
) -> web.StreamResponse:
    """307 to the best node with room; the grant rides in the query, bound to the client's address."""
    for choice in decision.candidates:
        node = choice.node
        if await router.state.reserve(node):
            router.routed[(router.label(region), router.label(node.report.region))] += 1
            location = f"{node.report.url}/v1/sessions"
            grant = router.grant_for(node, pipeline, region, client)
            if grant:
                location += f"?grant={grant}"
            raise web.HTTPTemporaryRedirect(location, headers={"X-Streamai-Node": node.id, "Cache-Control": "no-store"})
    router.rejected["fleet_at_capacity"] += 1
    return json_error(ClientError(503, "fleet_at_capacity", "every candidate node is full", retry_after=5))


# -- autoscaling signal ------------------------------------------------------------
async def fleet_load(request: web.Request) -> web.Response:
    require_admin(request)
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
    return metrics_response(request.app[METRICS])


async def list_models(request: web.Request) -> web.Response:
    """The fleet's models: every catalog entry with the regions that hold it and where it is loaded."""
    from ..models.catalog import Catalog, catalog_row

    nodes = request.app[ROUTER].registry.healthy()
    rows = []
    for entry in Catalog().entries.values():
        holding = [n for n in nodes if entry.id in n.report.models]
        loaded = {n.report.region for n in nodes if any(entry.id in key.split(":") for key in n.report.warm)}
        row = {k: v for k, v in catalog_row(entry).items() if k not in ("status", "installed")}
        row.update(regions=sorted({n.report.region for n in holding}), loaded_in=sorted(loaded))
        rows.append(row)
    return web.json_response({"models": rows})


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[ROUTER].registry
    return web.json_response({"ok": True, "nodes": len(registry.nodes), "healthy": len(registry.healthy())})


METRICS = web.AppKey("fleet_metrics", object)


def create_router_app(config: FleetConfig, state: FleetState | None = None) -> web.Application:
    """The router's application; refuses a public address without node authentication."""
    if not config.on_loopback() and config.node_secret is None:
        raise ValueError(
            f"the router binds {config.host}, not loopback, and has no node_secret: anyone could register a node. "
            "Set node_secret (or STREAMAI_FLEET_SECRET); see SECURITY.md"
        )
    if state is None and config.redis_url:
        from .redis_state import RedisFleetState

        state = RedisFleetState(config, config.redis_url, config.redis_prefix)
    state = state or MemoryFleetState(config)
    # sessions live on the nodes (which cap them per address); the router limits request and session
    # rates, in the shared store when there is one (an attacker gains nothing by spreading over replicas)
    guard = EntryGuard(config.protection, limiter=state.take if config.redis_url else None)
    app = web.Application(
        client_max_size=MAX_BODY + 1,
        middlewares=[errors_as_json, guard_middleware(guard, lambda client, token: (0, 0))],
    )
    app[GUARD] = guard
    router = Router(config, state)
    app[CONFIG] = config
    app[ROUTER] = router
    app[METRICS] = registry_of(FunctionCollector(router.collect), guard)
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
        await router.state.start()

    async def close_client(app: web.Application) -> None:
        await router.state.close()
        if router.http is not None:
            await router.http.close()

    app.on_startup.append(open_client)
    app.on_cleanup.append(close_client)
    return app
