"""The routing rules as a pure function: region first, RTT + load, capacity, heartbeats, pinning."""

from __future__ import annotations

import pytest

from streamai.fleet.config import FleetConfig
from streamai.fleet.registry import NodeEntry, NodeReport, PipelineOffer
from streamai.fleet.routing import NoRoute, parse_client_rtt, rank

CONFIG = FleetConfig(
    heartbeat_interval_s=1.0,
    missed_heartbeats=2,
    regions={"eu-west": {"location": (53.3, -6.3)}, "eu-central": {"location": (50.1, 8.7)}},
    rtt_ms={"eu-west": {"us-east": 75}, "us-east": {"ap-northeast": 160}},
    client_prefixes={"10.1.0.0/16": "eu-west", "10.1.2.0/24": "us-east"},
)


def node(node_id: str, region: str, capacity: int = 4, sessions: int = 0, policy: str = "any") -> NodeEntry:
    offer = PipelineOffer(name="p", data_region=policy)  # type: ignore[arg-type]
    report = NodeReport(
        node_id=node_id, url=f"http://{node_id}", region=region, capacity=capacity, sessions=sessions, pipelines=[offer]
    )
    return NodeEntry(report, last_seen=100.0)


def order(nodes: list[NodeEntry], region: str | None, at: float = 100.5, **kw: object) -> list[str]:
    return [c.node.id for c in rank(nodes, "p", region, CONFIG, at, **kw).candidates]  # type: ignore[arg-type]


def test_same_region_first_then_rtt_then_free_capacity() -> None:
    nodes = [node("ap", "ap-northeast"), node("us", "us-east"), node("eu", "eu-west", sessions=3)]
    assert order(nodes, "eu-west") == ["eu", "us", "ap"]  # busy, but in the client's region
    nodes = [node("us-small", "us-east", capacity=2), node("us-big", "us-east", capacity=8)]
    assert order(nodes, "us-east") == ["us-big", "us-small"]
    # load: a half-full node costs load_penalty_ms/2 more than an idle one
    nodes = [node("a", "eu-west", capacity=2, sessions=1), node("b", "eu-west", capacity=8, sessions=1)]
    assert order(nodes, "eu-west") == ["b", "a"]


def test_load_costs_little_until_a_node_fills() -> None:
    """The load penalty grows with utilisation squared: a node 40 % busy next to the client
    beats an idle one 1000 km (10 ms) away; 80 % busy, it loses to it."""
    near = node("near", "eu-west", capacity=10, sessions=4)
    far = node("far", "eu-west", capacity=10)
    near.report.location, far.report.location = (53.3, -6.3), (53.3 + 1000 / 111.2, -6.3)
    dublin = (53.3, -6.3)
    assert order([far, near], "eu-west", client_location=dublin) == ["near", "far"]  # 50 x 0.16 = 8 ms < 10 ms
    near.report.sessions = 8
    assert order([far, near], "eu-west", client_location=dublin) == ["far", "near"]  # 50 x 0.64 = 32 ms > 10 ms


def test_client_latency_probes_override_the_matrix() -> None:
    nodes = [node("ap", "ap-northeast"), node("us", "us-east")]
    assert order(nodes, "eu-west") == ["us", "ap"]
    assert order(nodes, "eu-west", client_rtt_ms=parse_client_rtt("us-east=300, ap-northeast=40, bad")) == ["ap", "us"]


def test_missed_heartbeats_and_full_nodes_are_skipped() -> None:
    stale, full, ok = node("stale", "eu-west"), node("full", "eu-west", capacity=1, sessions=1), node("ok", "us-east")
    stale.last_seen = 97.0  # 3.5 s silent, the timeout is 2 s
    decision = rank([stale, full, ok], "p", "eu-west", CONFIG, 100.5)
    assert [c.node.id for c in decision.candidates] == ["ok"]
    assert decision.skipped == {"stale": "missed_heartbeats", "full": "at_capacity"}
    with pytest.raises(NoRoute) as refused:
        rank([full], "p", "eu-west", CONFIG, 100.5)
    assert refused.value.code == "fleet_at_capacity"


def test_required_region_never_leaves_it() -> None:
    nodes = [node("eu", "eu-west", policy="required"), node("us", "us-east", policy="required")]
    assert order(nodes, "eu-west") == ["eu"]
    nodes[0].last_seen = 90.0
    with pytest.raises(NoRoute) as refused:
        rank(nodes, "p", "eu-west", CONFIG, 100.5)
    assert refused.value.status == 503 and refused.value.code == "no_node_in_region"
    assert "eu-west" in refused.value.message
    with pytest.raises(NoRoute) as unknown:
        rank(nodes, "p", None, CONFIG, 100.5)
    assert unknown.value.code == "client_region_unknown"
    # preferred: leaves the region when it must
    nodes = [node("eu", "eu-west", policy="preferred"), node("us", "us-east", policy="preferred")]
    nodes[0].last_seen = 90.0
    assert order(nodes, "eu-west") == ["us"]


def test_recent_offer_failure_is_tried_last() -> None:
    a, b = node("a", "eu-west", capacity=8), node("b", "eu-west", capacity=2)
    assert order([a, b], "eu-west") == ["a", "b"]
    a.offer_failed_at["p"] = 100.0
    assert order([a, b], "eu-west") == ["b", "a"]
    later = 100.0 + CONFIG.failure_cooldown_s + 1
    a.last_seen = b.last_seen = later
    assert order([a, b], "eu-west", at=later) == ["a", "b"]


def test_region_from_ip_prefix_and_rtt_from_locations() -> None:
    assert CONFIG.region_of_ip("10.1.7.9") == "eu-west"
    assert CONFIG.region_of_ip("10.1.2.3") == "us-east"  # the longest prefix wins
    assert CONFIG.region_of_ip("192.168.0.1") is None and CONFIG.region_of_ip("not-an-ip") is None
    assert CONFIG.rtt("us-east", "eu-west") == 75  # symmetric
    assert 15 < CONFIG.rtt("eu-west", "eu-central") < 30  # ~1100 km apart, no matrix entry
    with pytest.raises(NoRoute) as unknown:
        rank([node("a", "eu-west")], "other", "eu-west", CONFIG, 100.5)
    assert unknown.value.status == 404


def warm(entry: NodeEntry, is_warm: bool = True, p90_ms: float | None = None) -> NodeEntry:
    """Set what the node's heartbeat says about pipeline ``p``: models loaded, measured service time."""
    offer = entry.report.pipelines[0]
    offer.warm = is_warm
    if p90_ms is not None:
        offer.stage_p90_ms = {"stage": p90_ms}
    return entry


def test_warm_node_first_when_latency_is_otherwise_equal() -> None:
    a, b = node("a", "eu-west"), node("b", "eu-west")
    assert order([a, b], "eu-west") == ["a", "b"]  # all equal: by id
    warm(b)
    assert order([a, b], "eu-west") == ["b", "a"]  # the warm node wins the tie
    # both measured the pipeline, 2 ms apart (within warm_tie_ms): still a tie, warm first
    warm(a, False, p90_ms=30.0), warm(b, True, p90_ms=32.0)
    assert order([a, b], "eu-west") == ["b", "a"]
    # a node that never ran the pipeline is expected to take what the others measured
    c = warm(node("c", "eu-west"), True, p90_ms=300.0)
    d = node("d", "eu-west")
    assert order([c, d], "eu-west") == ["c", "d"]
    assert [ch.expected_ms for ch in rank([c, d], "p", "eu-west", CONFIG, 100.5).candidates] == [300.0, 300.0]


def test_warmth_never_beats_a_clearly_lower_latency_or_the_region() -> None:
    busy_warm = warm(node("busy", "eu-west", capacity=2, sessions=1))  # +25 ms load penalty
    idle_cold = node("idle", "eu-west", capacity=2)
    assert order([busy_warm, idle_cold], "eu-west") == ["idle", "busy"]
    far_warm = warm(node("far", "us-east"))
    assert order([far_warm, node("near", "eu-west")], "eu-west") == ["near", "far"]
    # no tolerance: only exactly equal latencies tie
    strict = CONFIG.model_copy(update={"warm_tie_ms": 0.0})
    a, b = warm(node("a", "eu-west"), False, p90_ms=30.0), warm(node("b", "eu-west"), True, p90_ms=31.0)
    assert [c.node.id for c in rank([a, b], "p", "eu-west", strict, 100.5).candidates] == ["a", "b"]
    assert [c.node.id for c in rank([a, b], "p", "eu-west", CONFIG, 100.5).candidates] == ["b", "a"]
