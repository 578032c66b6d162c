"""``rank_top`` (regions nearest first, from the registry's index) gives exactly ``rank``'s first candidates.

Random fleets: regions with locations and a partial RTT matrix, nodes that are stale,
unreachable, full, recently failed, warm or cold, measured or not; pipelines with every
``data_region`` policy; clients with and without a region and measured RTTs. The
fleets reach the registry through heartbeats, re-registrations that move nodes
between regions or change their pipelines, and removals, so the index is tested too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection

import pytest

from streamai.fleet.config import FleetConfig
from streamai.fleet.registry import NodeEntry, NodeRegistry, NodeReport, PipelineOffer
from streamai.fleet.routing import Decision, NoRoute, rank, rank_top

AT = 1000.0
PIPELINES = ("p-any", "p-preferred", "p-required", "p-mixed")


class CountingRegistry(NodeRegistry):
    """A registry that counts how often ranking fell back to reading the whole fleet."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.whole_fleet_reads = 0

    def all_nodes(self) -> Collection[NodeEntry]:
        self.whole_fleet_reads += 1
        return super().all_nodes()


def random_config(rng: random.Random, regions: list[str]) -> FleetConfig:
    locations = {r: {"location": (rng.uniform(-60, 70), rng.uniform(-180, 180))} for r in regions if rng.random() < 0.8}
    matrix: dict[str, dict[str, float]] = {}
    for a in regions:
        for b in regions:
            if rng.random() < 0.15:
                matrix.setdefault(a, {})[b] = round(rng.uniform(0, 200), 1)
    return FleetConfig(
        heartbeat_interval_s=1.0,
        missed_heartbeats=2,
        regions=locations,
        rtt_ms=matrix,
        warm_tie_ms=rng.choice([0.0, 5.0, 20.0]),
        load_penalty_ms=rng.choice([0.0, 50.0]),
    )


def random_report(rng: random.Random, node_id: str, regions: list[str], measured_share: float) -> NodeReport:
    offers = []
    for name in PIPELINES:
        if rng.random() < 0.7:
            policy = {"p-any": "any", "p-preferred": "preferred", "p-required": "required"}.get(
                name, rng.choice(["any", "any", "preferred", "required"])
            )
            p90 = {"s": round(rng.uniform(0, 80), 1)} if rng.random() < measured_share else {}
            offers.append(PipelineOffer(name=name, data_region=policy, stage_p90_ms=p90, warm=rng.random() < 0.5))  # type: ignore[arg-type]
    capacity = rng.randint(0, 6)
    return NodeReport(
        node_id=node_id,
        url=f"http://{node_id}",
        region=rng.choice(regions),
        location=(rng.uniform(-60, 60), rng.uniform(-170, 170)) if rng.random() < 0.8 else None,
        capacity=capacity,
        sessions=rng.randint(0, capacity),
        pipelines=offers,
    )


def random_fleet(rng: random.Random, registry: NodeRegistry, regions: list[str], measured_share: float) -> None:
    count = rng.randint(0, 60)
    for i in range(count):
        registry.heartbeat(random_report(rng, f"n{i:03d}", regions, measured_share))
    for node_id in list(registry.nodes):  # changes after registration: moves, new pipelines, removals
        roll = rng.random()
        if roll < 0.1:
            registry.heartbeat(random_report(rng, node_id, regions, measured_share))
        elif roll < 0.15:
            registry.remove(node_id)
    for entry in registry.nodes.values():
        entry.last_seen = AT - rng.choice([0.1, 0.5, 1.5, 2.5, 10.0])  # the timeout is 2 s
        entry.routed_since_heartbeat = rng.choice([0, 0, 0, 1, 2])
        if rng.random() < 0.05:
            entry.unreachable_at = AT - 1
        for offer in entry.report.pipelines:
            if rng.random() < 0.1:
                entry.offer_failed_at[offer.name] = AT - rng.choice([1.0, 100.0])


def outcome(ranking: Callable[..., Decision], *args: object) -> tuple[str, object]:
    try:
        decision = ranking(*args)
    except NoRoute as exc:
        return "refused", (exc.status, exc.code, exc.message, exc.retry_after)
    assert isinstance(decision, Decision)
    rows = [(c.node.id, c.same_region, c.expected_ms, c.recently_failed, c.warm) for c in decision.candidates]
    return "routed", (rows, decision.client_region, decision.data_region)


@pytest.mark.parametrize("measured_share", [1.0, 0.9])
def test_rank_top_equals_the_first_candidates_of_rank_on_random_fleets(measured_share: float) -> None:
    rng = random.Random(int(measured_share * 100))
    decisions = fast = 0
    for _ in range(250):
        regions = [f"r{i}" for i in range(rng.randint(1, 12))]
        config = random_config(rng, regions)
        registry = CountingRegistry(config.heartbeat_timeout_s)
        random_fleet(rng, registry, regions, measured_share)
        for _ in range(8):
            pipeline = rng.choice([*PIPELINES, "unknown"])
            client = rng.choice([*regions, None, "elsewhere"])
            measured = {r: round(rng.uniform(1, 250), 1) for r in regions if rng.random() < 0.3} or None
            limit = rng.randint(1, 5)
            where = (rng.uniform(-60, 60), rng.uniform(-170, 170)) if rng.random() < 0.6 else None
            nodes = list(registry.nodes.values())
            expected = outcome(rank, nodes, pipeline, client, config, AT, measured, where)
            if expected[0] == "routed":
                rows, *rest = expected[1]  # type: ignore[misc]
                expected = ("routed", (rows[:limit], *rest))
            reads = registry.whole_fleet_reads
            got = outcome(rank_top, registry, pipeline, client, config, AT, measured, limit, where)
            assert got == expected, (pipeline, client, measured, limit)
            decisions += 1
            fast += expected[0] == "routed" and registry.whole_fleet_reads == reads
    assert decisions == 2000
    if measured_share == 1.0:
        assert fast > 1000  # most routed decisions never read the whole fleet


def test_the_index_follows_moves_pipeline_changes_and_removals() -> None:
    registry = NodeRegistry(3.0)
    offer = PipelineOffer(name="p", data_region="required")
    registry.heartbeat(NodeReport(node_id="a", url="http://a", region="eu", capacity=1, pipelines=[offer]))
    registry.heartbeat(NodeReport(node_id="b", url="http://b", region="eu", capacity=1, pipelines=[offer]))
    assert set(registry.regions_offering("p")) == {"eu"} and set(registry.data_regions("p")) == {"required"}
    registry.heartbeat(NodeReport(node_id="a", url="http://a", region="us", capacity=1, pipelines=[]))
    assert [n.id for n in registry.offering("p", "eu")] == ["b"] and not list(registry.offering("p", "us"))
    registry.heartbeat(NodeReport(node_id="a", url="http://a", region="us", capacity=1, pipelines=[offer]))
    assert {n.id for n in registry.offering("p", "us")} == {"a"}
    registry.remove("b")
    assert set(registry.regions_offering("p")) == {"us"}
    registry.remove("a")
    assert not registry.regions_offering("p") and not registry.data_regions("p")


def test_the_least_service_time_follows_heartbeats_so_a_faster_far_node_is_found() -> None:
    """The index's least service time bounds what farther regions can offer; a heartbeat that lowers it
    (a far node got faster) must make ranking look there again."""
    config = FleetConfig(
        regions={"c": {"location": (0.0, 0.0)}, "a": {"location": (0.0, 1.0)}, "b": {"location": (0.0, 20.0)}},
        warm_tie_ms=0.0,
    )
    registry = NodeRegistry(config.heartbeat_timeout_s)

    def report(node_id: str, region: str, service: float) -> NodeReport:
        offer = PipelineOffer(name="p", stage_p90_ms={"s": service})
        return NodeReport(node_id=node_id, url="http://x", region=region, capacity=4, pipelines=[offer])

    for i, region in enumerate(["a", "a", "a", "b"]):
        registry.heartbeat(report(f"n{i}", region, 400.0))
    for entry in registry.nodes.values():
        entry.last_seen = AT
    assert registry.service_floor("p") == 400.0
    assert [c.node.id for c in rank_top(registry, "p", "c", config, AT, None, 2).candidates] == ["n0", "n1"]
    registry.heartbeat(report("n3", "b", 1.0))  # region b is ~33 ms away, but 399 ms faster
    registry.nodes["n3"].last_seen = AT
    assert registry.service_floor("p") == 1.0
    expected = [c.node.id for c in rank(registry.nodes.values(), "p", "c", config, AT).candidates[:2]]
    assert expected[0] == "n3"
    assert [c.node.id for c in rank_top(registry, "p", "c", config, AT, None, 2).candidates] == expected
    registry.heartbeat(report("n3", "b", 500.0))  # and slower again: the floor goes back up
    assert registry.service_floor("p") == 400.0
