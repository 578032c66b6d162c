"""Which nodes may serve a session, best first: a pure function of the fleet's state.

Order: healthy nodes offering the pipeline (never one that missed heartbeats), not at
capacity, restricted to the client's region when the pipeline says
``data_region: required``; then the client's own region first, then the lowest
expected latency (client↔region RTT + a load penalty that grows with the square of the
node's utilisation, as queueing delay does: little until a node fills + the node's measured pipeline
time, or the fleet's median measurement for a node that has not run it yet), a warm node
(the pipeline's models loaded) before a cold one when their expected latencies are
within ``warm_tie_ms``, then the most free capacity. A node that failed an offer of
this pipeline lately (``failure_cooldown_s``) is kept, but tried last.

``rank`` is the rule written plainly: it looks at every node. ``rank_top`` gives the
same first ``limit`` candidates (what the router tries) from a ``FleetView`` that hands
out the nodes offering a pipeline region by region: it visits regions by RTT from the
client and stops once no node of a farther region could still enter the top ``limit``.
It falls back to ``rank`` for the rare cases that need the whole fleet (errors, too few
candidates, a node that has not measured the pipeline yet).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ClientError
from .config import KM_PER_MS_RTT, FleetConfig, great_circle_km
from .registry import NodeEntry


class NoRoute(ClientError):
    """No node can take the session; ``status``/``code``/``message`` go to the client."""


@dataclass
class Choice:
    """A ranked candidate and why it ranks there."""

    node: NodeEntry
    same_region: bool
    expected_ms: float
    recently_failed: bool = False
    warm: bool = False  # the pipeline's models are loaded there
    tie_ms: float = 0.0  # expected latencies this close count as equal (FleetConfig.warm_tie_ms)


@dataclass
class Decision:
    """Candidates best first, plus the nodes left out and why."""

    candidates: list[Choice]
    client_region: str | None
    data_region: str
    skipped: dict[str, str] = field(default_factory=dict)


def rank(
    nodes: Iterable[NodeEntry],
    pipeline: str,
    client_region: str | None,
    config: FleetConfig,
    at: float,
    client_rtt_ms: dict[str, float] | None = None,
    client_location: tuple[float, float] | None = None,
) -> Decision:
    """Rank ``nodes`` for one session of ``pipeline``; raises ``NoRoute`` when none fits.

    ``client_location`` (where the client entered the network: the router's own PoP under
    anycast) orders the nodes of the client's own region by distance as well; other regions
    keep the region-to-region RTT.
    """
    timeout = config.heartbeat_timeout_s
    offers = {n: o for n in nodes if (o := n.offer(pipeline)) is not None}
    offering = list(offers)
    if not offering:
        raise NoRoute(404, "unknown_pipeline", f"no node in the fleet offers pipeline {pipeline!r}")
    policies = {o.data_region for o in offers.values()}
    data_region = "required" if "required" in policies else "preferred" if "preferred" in policies else "any"
    skipped: dict[str, str] = {}
    usable: list[NodeEntry] = []
    for node in offering:
        state = node.state(at, timeout)
        if state != "healthy":
            skipped[node.id] = state
        elif data_region == "required" and node.report.region != client_region:
            skipped[node.id] = "outside_required_region"
        elif node.load >= node.report.capacity:
            skipped[node.id] = "at_capacity"
        else:
            usable.append(node)
    if data_region == "required" and client_region is None:
        raise NoRoute(
            400,
            "client_region_unknown",
            f"pipeline {pipeline!r} keeps data in the client's region, and the client's region is unknown "
            "(send X-Client-Region, or configure client_prefixes)",
        )
    if not usable:
        in_region = sum(1 for n in offering if n.report.region == client_region)
        full = any(reason == "at_capacity" for reason in skipped.values())
        raise _no_route(pipeline, client_region, data_region, in_region, full, config)
    rtt = {r: client_rtt_ms[r] if client_rtt_ms and r in client_rtt_ms else config.rtt(client_region, r)
           for r in {n.report.region for n in usable}}  # fmt: skip
    measured = [offers[n].expected_ms() for n in usable if offers[n].stage_p90_ms]
    unmeasured_ms = statistics.median(measured) if measured else 0.0  # a node that has not run it yet
    choices = []
    for node in usable:
        region = node.report.region
        offer = offers[node]
        service = offer.expected_ms() if offer.stage_p90_ms else unmeasured_ms
        same = client_region is not None and region == client_region
        nearby = _distance_ms(client_location, node) if same else 0.0
        filled = node.utilisation
        expected = rtt[region] + nearby + config.load_penalty_ms * filled * filled + service
        failed = node.recently_failed(pipeline, at, config.failure_cooldown_s)
        choices.append(Choice(node, same, expected, failed, offer.warm, config.warm_tie_ms))
    choices.sort(key=_order)
    return Decision(choices, client_region, data_region, skipped)


class FleetView(Protocol):
    """What ``rank_top`` needs from the fleet's state: the nodes offering a pipeline, by region.

    ``NodeRegistry`` keeps this index in memory; a shared store answers the same calls
    (one key per pipeline and region), so ranking never reads the whole fleet.
    """

    def all_nodes(self) -> Iterable[NodeEntry]:
        """Every node (for the rare whole-fleet fallback)."""
        ...

    def data_regions(self, pipeline: str) -> Collection[str]:
        """The ``data_region`` policies the nodes offering ``pipeline`` declare (empty: nobody offers it)."""
        ...

    def regions_offering(self, pipeline: str) -> Collection[str]:
        """Regions with at least one node offering ``pipeline`` (healthy or not)."""
        ...

    def offering(self, pipeline: str, region: str) -> Collection[NodeEntry]:
        """The nodes of ``region`` offering ``pipeline``."""
        ...

    def service_floor(self, pipeline: str) -> float:
        """The least measured service time (ms) of ``pipeline`` on any node offering it (inf: none measured)."""
        ...


def _no_route(
    pipeline: str, client_region: str | None, data_region: str, in_region: int, full: bool, config: FleetConfig
) -> NoRoute:
    """Why no node can take the session (``in_region``: nodes of the client's region offering the pipeline)."""
    if data_region == "required":
        detail = (
            f"{in_region} node(s) there, none healthy with free capacity" if in_region else "no node there offers it"
        )
        return NoRoute(
            503,
            "no_node_in_region",
            f"pipeline {pipeline!r} requires data to stay in region {client_region!r}: {detail}",
            retry_after=max(1, round(config.heartbeat_interval_s)),
        )
    if full:
        return NoRoute(503, "fleet_at_capacity", "every healthy node offering the pipeline is full", retry_after=5)
    return NoRoute(503, "no_healthy_node", f"no healthy node offers pipeline {pipeline!r}", retry_after=5)


def rank_top(
    view: FleetView,
    pipeline: str,
    client_region: str | None,
    config: FleetConfig,
    at: float,
    client_rtt_ms: dict[str, float] | None = None,
    limit: int = 3,
    client_location: tuple[float, float] | None = None,
) -> Decision:
    """The first ``limit`` candidates of ``rank`` over ``view.all_nodes()``, found by visiting regions nearest first.

    Same candidates, same order, same errors as ``rank``; ``skipped`` lists only the
    nodes it looked at. Raises ``NoRoute`` like ``rank``.
    """
    policies = set(view.data_regions(pipeline))
    if not policies:
        raise NoRoute(404, "unknown_pipeline", f"no node in the fleet offers pipeline {pipeline!r}")
    data_region = "required" if "required" in policies else "preferred" if "preferred" in policies else "any"
    if data_region == "required" and client_region is None:  # rank raises the 400
        return _whole_fleet(view, pipeline, client_region, config, at, client_rtt_ms, limit, client_location)
    offering = view.regions_offering(pipeline)
    if data_region == "required":
        offering = [client_region] if client_region in offering else []
    regions = _regions_by_rtt(config, client_region, offering, client_rtt_ms)
    if regions is None:  # an RTT that is not a finite non-negative number: let rank sort it out
        return _whole_fleet(view, pipeline, client_region, config, at, client_rtt_ms, limit, client_location)
    timeout, tie = config.heartbeat_timeout_s, config.warm_tie_ms
    floor = view.service_floor(pipeline)  # every node's expected latency is at least its RTT + this
    penalty = config.load_penalty_ms
    skipped: dict[str, str] = {}
    fresh: list[Choice] = []  # usable and not recently failed
    failed: list[Choice] = []  # usable, failed an offer lately: they rank after every fresh one
    for _, rtt, region in regions:
        if len(fresh) >= limit:
            fresh.sort(key=_order)
            del fresh[limit:]
            last = fresh[-1]
            # nodes here or farther expect >= rtt + floor (a node that has not measured the pipeline
            # expects the median of measured ones, >= floor), so a tier >= this bound: stop if the last
            # of the top `limit` beats that bound outright (equal tiers go on to warmth, load, id)
            bound = rtt + floor
            if last.same_region or _tier(last) < (bound if tie <= 0 else round(bound / tie)):
                break
        same = client_region is not None and region == client_region
        for node in view.offering(pipeline, region):
            report = node.report  # NodeEntry.state/load/utilisation, inlined: this loop is the decision's cost
            if at - node.last_seen > timeout or node.unreachable_at is not None:
                skipped[report.node_id] = node.state(at, timeout)
                continue
            load = report.sessions + node.routed_since_heartbeat
            if load >= report.capacity:
                skipped[report.node_id] = "at_capacity"
                continue
            offer = node.offer(pipeline)
            # unmeasured: expected from the whole fleet's median; below the floor: a report changed in place
            # (the index follows heartbeats, not edits of a report it holds), so the bound cannot be trusted
            if offer is None or not offer.stage_p90_ms or (service := offer.expected_ms()) < floor:
                return _whole_fleet(view, pipeline, client_region, config, at, client_rtt_ms, limit, client_location)
            nearby = _distance_ms(client_location, node) if same else 0.0  # >= 0: the bounds above still hold
            filled = load / report.capacity
            expected = rtt + nearby + penalty * filled * filled + service
            recently = node.recently_failed(pipeline, at, config.failure_cooldown_s)
            (failed if recently else fresh).append(Choice(node, same, expected, recently, offer.warm, tie))
    else:  # every region visited: these are all the usable nodes
        if not fresh and not failed:
            in_region = len(view.offering(pipeline, client_region)) if client_region is not None else 0
            full = any(reason == "at_capacity" for reason in skipped.values())
            raise _no_route(pipeline, client_region, data_region, in_region, full, config)
        if len(fresh) < limit:
            fresh += failed
    fresh.sort(key=_order)
    return Decision(fresh[:limit], client_region, data_region, skipped)


RegionOrder = list[tuple[float, float, str]]  # (visit order, RTT, region): the client's region first, then by RTT


def _regions_by_rtt(
    config: FleetConfig, client: str | None, regions: Collection[str], measured: dict[str, float] | None
) -> RegionOrder | None:
    """``regions`` in visiting order for a client; None if an RTT is not a finite non-negative number.

    Without client-measured RTTs the order depends only on the config, the client's region
    and the set of regions, so it is memoised per config (a router's config is fixed once
    loaded): most decisions then read the order instead of estimating every region's RTT.
    """
    key = tuple(regions)
    memo: dict[str | None, tuple[tuple[str, ...], RegionOrder | None]] | None = None
    if not measured and len(key) > 4:  # a short list (a required pipeline: one region) is cheaper to sort
        entry = _ORDER_MEMO.get(id(config))
        if entry is None or entry[0] is not config:
            if len(_ORDER_MEMO) >= 16:
                _ORDER_MEMO.clear()
            entry = _ORDER_MEMO[id(config)] = (config, {})
        memo = entry[1]
        known = memo.get(client)
        if known is not None and known[0] == key:
            return known[1]
    order: RegionOrder | None = []
    for region in key:
        rtt = measured[region] if measured and region in measured else config.rtt(client, region)
        if not (math.isfinite(rtt) and rtt >= 0):
            order = None
            break
        order.append((-1.0 if region == client else rtt, rtt, region))
    if order is not None:
        order.sort()
    if memo is not None:
        memo[client] = (key, order)
    return order


# config -> client region -> (the regions it was computed for, their visiting order)
_ORDER_MEMO: dict[int, tuple[FleetConfig, dict[str | None, tuple[tuple[str, ...], RegionOrder | None]]]] = {}


def _whole_fleet(
    view: FleetView,
    pipeline: str,
    client_region: str | None,
    config: FleetConfig,
    at: float,
    client_rtt_ms: dict[str, float] | None,
    limit: int,
    client_location: tuple[float, float] | None = None,
) -> Decision:
    decision = rank(view.all_nodes(), pipeline, client_region, config, at, client_rtt_ms, client_location)
    decision.candidates = decision.candidates[:limit]
    return decision


def _distance_ms(client_location: tuple[float, float] | None, node: NodeEntry) -> float:
    """Round-trip time the distance from the client's entry point to ``node`` adds (0 when unknown)."""
    location = node.report.location
    if client_location is None or location is None:
        return 0.0
    return great_circle_km(client_location, location) / KM_PER_MS_RTT


def _tier(choice: Choice) -> float:
    return round(choice.expected_ms / choice.tie_ms) if choice.tie_ms > 0 else choice.expected_ms


def _order(choice: Choice) -> tuple[bool, bool, float, bool, float, int, str]:
    """Recently failed last, then the client's region, lowest expected latency (warm first among
    equals: within ``tie_ms``), most free capacity."""
    free = choice.node.report.capacity - choice.node.load
    return (
        choice.recently_failed,
        not choice.same_region,
        _tier(choice),
        not choice.warm,
        choice.expected_ms,
        -free,
        choice.node.id,
    )


def parse_client_rtt(header: str | None, max_regions: int = 16) -> dict[str, float]:
    """``X-Client-RTT: eu-west=21, us-east=95`` (latency probes the client ran) -> {region: ms}.

    Only finite figures from 0 to 10 s count, for at most ``max_regions`` regions: a NaN or
    an infinity would break every ranking, a negative one would rank a region first.
    """
    result: dict[str, float] = {}
    for part in (header or "").split(",")[: max_regions * 2]:
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            ms = float(value)
        except ValueError:
            continue
        if name and len(name) <= 32 and math.isfinite(ms) and 0 <= ms <= 10_000 and len(result) < max_regions:
            result[name] = ms
    return result
