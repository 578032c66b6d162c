"""The remote stand-in's two policies, without Ray: where a frame runs, and the cold-start state machine."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from streamai.fleet.remote.coldstart import ColdStart
from streamai.fleet.remote.placement import Placement, Where


def test_remote_with_drop_never_runs_at_the_edge() -> None:
    placement = Placement("remote", "drop")
    assert placement.choose(0.0, 1.0, 0.0, remote_available=True) is Where.REMOTE
    placement.remote_failed(0.0)
    assert placement.choose(0.1, 1.0, 0.0, remote_available=True) is Where.REMOTE
    assert placement.choose(0.1, 1.0, 0.0, remote_available=False) is Where.REMOTE
    assert not placement.can_fall_back(0.1, 1.0, 0.0)


def test_fallback_edge_serves_at_the_edge_for_a_while_after_a_failure() -> None:
    placement = Placement("remote", "edge", failing_for_s=1.0)
    assert placement.choose(10.0, 11.0, 0.0, remote_available=True) is Where.REMOTE
    placement.remote_failed(10.0)
    assert placement.choose(10.5, 11.5, 0.0, remote_available=True) is Where.EDGE
    assert placement.choose(10.99, 11.99, 0.0, remote_available=True) is Where.EDGE
    assert placement.choose(11.0, 12.0, 0.0, remote_available=True) is Where.REMOTE  # the window is over
    assert placement.choose(11.0, 12.0, 0.0, remote_available=False) is Where.EDGE  # no deployment at all
    # a frame whose call failed runs at the edge only while its deadline can still be met
    assert placement.can_fall_back(11.0, 11.2, downstream_s=0.1)
    assert not placement.can_fall_back(11.0, 11.05, downstream_s=0.1)


def test_auto_runs_at_the_edge_while_the_edge_fits_and_probes_it_while_offloading() -> None:
    placement = Placement("auto", "drop", probe_every_s=2.0)
    for _ in range(5):
        placement.edge_served(0.02)
    # 20 ms at the edge + 10 ms downstream fit 100 ms
    assert placement.choose(0.0, 0.1, 0.01, remote_available=True) is Where.EDGE
    # but not 25 ms: offload (the first such frame is a probe of the edge, then no probe for 2 s)
    assert placement.choose(0.0, 0.025, 0.01, remote_available=True) is Where.EDGE_PROBE
    assert placement.choose(0.5, 0.525, 0.01, remote_available=True) is Where.REMOTE
    assert placement.choose(1.9, 1.925, 0.01, remote_available=True) is Where.REMOTE
    assert placement.choose(2.0, 2.025, 0.01, remote_available=True) is Where.EDGE_PROBE
    # the edge turns slow: frames it fitted before go to the replica now
    for _ in range(5):
        placement.edge_served(0.7)
    assert placement.choose(2.5, 3.0, 0.01, remote_available=True) is Where.REMOTE
    # and fast again (the probes measured it): back at the edge
    for _ in range(20):
        placement.edge_served(0.02)
    assert placement.choose(3.0, 3.5, 0.01, remote_available=True) is Where.EDGE
    # a failure sends auto to the edge too, even when the edge does not fit
    placement.remote_failed(3.0)
    assert placement.choose(3.1, 3.11, 0.01, remote_available=True) is Where.EDGE


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, **fields: Any) -> None:
        self.seen.append((type_, fields))

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [fields for kind, fields in self.seen if kind == type_]


async def test_cold_start_wakes_once_and_reports_what_the_frames_meanwhile_became() -> None:
    calls = 0
    release = asyncio.Event()

    async def wake() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"replica": "r1", "pid": 42, "stage_start_s": 0.25}

    warmed: list[bool] = []
    events = Events()
    counts: Counter[str] = Counter()
    cold = ColdStart(
        "asr", wake, events, counts, on_warm=lambda: warmed.append(True), start_fields={"fallback": "edge"}
    )
    cold.begin()
    cold.begin()  # a second frame while waking: no second wake call
    assert cold.waking
    cold.frame_arrived(served_at_edge=True)
    cold.frame_arrived(served_at_edge=False)
    cold.frame_arrived(served_at_edge=False)
    await asyncio.sleep(0.05)
    release.set()
    took = await cold.wait()
    assert calls == 1 and not cold.waking and warmed == [True]
    assert took is not None and took >= 0.05 and cold.seconds == [took]
    assert events.of("remote_cold_start") == [{"fallback": "edge"}]
    warm = events.of("remote_warm")[0]
    assert warm["dropped"] == 2 and warm["fallback_edge"] == 1 and warm["stage_start_ms"] == 250.0, warm
    assert cold.last["replica"] == "r1" and cold.last["cold_start_s"] == took
    assert counts == Counter({"cold_frames": 3, "fallback_edge": 1})

    # the next cold start counts only its own frames
    release.clear()
    cold.begin()
    cold.frame_arrived(served_at_edge=False)
    release.set()
    await cold.wait()
    assert events.of("remote_warm")[1]["dropped"] == 1 and events.of("remote_warm")[1]["fallback_edge"] == 0
    assert len(cold.seconds) == 2 and calls == 2


async def test_a_failed_cold_start_is_counted_and_retried_only_after_the_pause() -> None:
    calls = 0

    async def wake() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise RuntimeError("no resources")

    events = Events()
    counts: Counter[str] = Counter()
    cold = ColdStart("asr", wake, events, counts, retry_s=0.3)
    assert await cold.wait() is None
    assert counts["cold_start_failed"] == 1 and not cold.seconds
    assert "no resources" in events.of("warning")[0]["message"]
    cold.begin()  # within the pause: nothing starts
    assert not cold.waking and calls == 1
    await asyncio.sleep(0.35)
    cold.begin()
    assert cold.waking
    await asyncio.sleep(0.05)
    assert calls == 2 and counts["cold_start_failed"] == 2


async def test_a_wake_that_hangs_is_given_up_after_its_timeout() -> None:
    async def wake() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    counts: Counter[str] = Counter()
    cold = ColdStart("asr", wake, Events(), counts, timeout_s=0.1)
    started = asyncio.get_running_loop().time()
    assert await cold.wait() is None
    assert asyncio.get_running_loop().time() - started < 2.0
    assert counts["cold_start_failed"] == 1


@pytest.mark.parametrize("placement", ["remote", "auto"])
def test_placement_edge_capability(placement: str) -> None:
    assert Placement(placement, "edge").edge_capable  # type: ignore[arg-type]
    assert Placement(placement, "drop").edge_capable is (placement == "auto")  # type: ignore[arg-type]
