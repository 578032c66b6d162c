"""``streamai bench fleet-sim`` on a small world: the invariants of a simulated day, outage included."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamai.bench import fleet_sim

pytestmark = pytest.mark.slow


def small_day(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(tmp_path / "fleet-sim.json"))
    fleet_sim.add_arguments(parser)
    return parser.parse_args(
        ["--pops", "40", "--regions", "12", "--nodes-per-pop", "3", "--sessions-per-day", "40000", "--hours", "4",
         "--outage-hour", "2", "--plain-rank-every", "50", *extra]
    )  # fmt: skip


def test_a_simulated_day_keeps_the_routing_rules_and_reports_the_outage(tmp_path: Path) -> None:
    args = small_day(tmp_path)
    sim, report = fleet_sim.simulate(args)
    results = sim.results
    assert report["requests"] == len(results) > 3000
    assert report["routed"] + sum(report["refused"].values()) == len(results)
    assert report["world"] == {**report["world"], "pops": 40, "regions": 12, "nodes": 120}
    routed = [r for r in results if r.node_region is not None]
    # nobody gets a better RTT than the best possible assignment at that moment (same access latency)
    assert all(r.rtt_ms >= r.best_ms - 1e-6 for r in routed if r.best_ms is not None)  # type: ignore[operator]
    # data_region: required never leaves the client's region
    pinned = [r for r in routed if r.pipeline == fleet_sim.PINNED]
    assert pinned and all(r.node_region == r.client_region for r in pinned)
    # the outage: once its heartbeats are missed, nothing goes to the dead region; its pinned clients are refused
    outage = report["outage"]
    at = args.outage_hour * 3600
    later = [r for r in results if r.t > at + sim.config.heartbeat_timeout_s]
    assert not [r for r in later if r.node_region == outage["region"]]
    hit = [r for r in later if r.client_region == outage["region"]]
    assert hit and all(r.refused == "no_node_in_region" for r in hit if r.pipeline == fleet_sim.PINNED)
    assert all(r.node_region for r in hit if r.pipeline == fleet_sim.OPEN)  # the others went elsewhere
    assert outage["sessions_cut"] > 0 and outage["reconnects_routed"] > 0
    assert report["decision_time"]["rank_top_cpu"]["count"] == len(results)
    assert report["normal_load"]["p95_over_best"] >= 1.0
    assert {Path(p).name for p in report["plots"]} == {"rtt-cdf.png", "day.png", "map.png"}
    assert all(Path(p).stat().st_size > 10_000 for p in report["plots"])
