"""``streamai bench fleet-decision``: one routing decision with the fleet's state in Redis, at the seed's scale.

The fleet-sim world (180 PoPs x 10 nodes at real cities) is written into a real
``redis-server`` (started here on loopback) through one router replica's
``RedisFleetState``; a second replica builds its view from Redis alone (a full sync),
then serves requests the way the router does: ``rank_top`` over its in-memory view,
then one Lua round trip that reserves a session at the chosen node atomically. It
reports the decision time (ranking + reservation), the Redis round trip alone, and
what a view sync costs (all 1,800 reports, and the usual few changed ones).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import numpy as np

from ..fleet.config import FleetConfig
from ..fleet.redis_state import RedisFleetState
from ..fleet.routing import NoRoute, rank_top
from ..frames import now
from ..testing.redis_server import RedisServer
from . import fleet_sim
from ._world import build_world, load_cities


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pops", type=int, default=180)
    parser.add_argument("--regions", type=int, default=60)
    parser.add_argument("--nodes-per-pop", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5000, help="routing decisions to time")
    parser.add_argument("--seed", type=int, default=1)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def _timing(values: list[float]) -> dict[str, float]:
    return {"p50_ms": _ms(values, 0.5), "p99_ms": _ms(values, 0.99), "max_ms": _ms(values, 1.0)}


async def _measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    sim_args = argparse.Namespace(
        pops=args.pops, regions=args.regions, nodes_per_pop=args.nodes_per_pop, pop_spacing_km=300.0,
        sessions_per_day=200_000, hours=24.0, session_median_min=6.0, session_sigma=0.9, peak_utilisation=0.65,
        seed=args.seed,
    )  # fmt: skip
    world = build_world(load_cities(), args.pops, args.regions, 300.0, args.seed)
    rng = np.random.default_rng(args.seed)
    local, _fleet = fleet_sim._build_fleet(world, sim_args, rng)
    base = fleet_sim._router_config(world)
    config = FleetConfig(**{**base.model_dump(), "node_secret": "bench-fleet-secret-0123456789",
                            "evict_after_s": 3600, "redis_url": url, "heartbeat_interval_s": 3600})  # fmt: skip
    writer, reader = RedisFleetState(config, url), RedisFleetState(config, url)
    await writer.redis.ping()
    reports = [entry.report for entry in local.view().nodes.values()]
    for report in reports:
        await writer.heartbeat(report)
    started = time.perf_counter()
    await reader.sync(full=True)
    full_sync_s = time.perf_counter() - started
    assert len(reader.view.nodes) == len(reports)
    incremental = []
    for report in reports[:50]:  # a few reports changed since the last sync: the steady state
        await writer.heartbeat(report)
        started = time.perf_counter()
        await reader.sync()
        incremental.append(time.perf_counter() - started)
    population = np.asarray(world.cities.population, dtype=float)
    cities = rng.choice(len(population), size=args.requests, p=population / population.sum())  # by population
    decisions, round_trips, ranking = [], [], []
    refused = 0
    for index in range(args.requests):
        region = world.client_region(int(cities[index]))
        pipeline = fleet_sim.PINNED if index % 10 == 0 else fleet_sim.OPEN
        started = time.perf_counter()
        try:
            decision = rank_top(reader.view, pipeline, region, config, now(), None, 3)
        except NoRoute:
            refused += 1
            continue
        ranked = time.perf_counter()
        node = decision.candidates[0].node
        took = await reader.reserve(node)
        done = time.perf_counter()
        decisions.append(done - started)
        ranking.append(ranked - started)
        round_trips.append(done - ranked)
        if took:
            await reader.release(node)
    await writer.redis.flushdb()
    await writer.close()
    await reader.close()
    return {
        "nodes": len(reports),
        "pops": args.pops,
        "regions": args.regions,
        "requests": len(decisions),
        "refused": refused,
        "decision_with_redis": _timing(decisions),
        "rank_top": _timing(ranking),
        "redis_reserve_round_trip": _timing(round_trips),
        "redis_round_trips_per_decision": 1,
        "view_full_sync_ms": round(full_sync_s * 1000, 1),
        "view_sync_few_changed_ms": {
            "p50": round(statistics.median(incremental) * 1000, 2),
            "max": round(max(incremental) * 1000, 2),
        },
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        result = asyncio.run(_measure(args, server.url))
    result["summary"] = summary(result)
    return result


def summary(result: dict[str, Any]) -> str:
    d, rt = result["decision_with_redis"], result["redis_reserve_round_trip"]
    return (
        f"{result['nodes']} nodes in Redis: decision (rank_top + 1 reservation round trip) p50 {d['p50_ms']} ms, "
        f"p99 {d['p99_ms']} ms; Redis round trip p50 {rt['p50_ms']} / p99 {rt['p99_ms']} ms; "
        f"full view sync {result['view_full_sync_ms']} ms (load {result['load']})"
    )
