"""Fleet costs: a remote stage's per-call overhead on Ray Serve vs in-process, and routing decision time.

Remote path: the real stand-in (``RemoteStage``) -> Serve handle -> ``StageHost``
replica -> the same stage class -> back, one 640x480 RGB frame per call, one call
at a time, on a local Ray cluster this benchmark starts (and shuts down). The
in-process path awaits the same stage class's ``process`` directly. Overhead is
remote round trip minus in-process time; the replica's own service time is
reported too. Routing: ``rank()`` over fleets of growing size (nodes spread over
regions, each offering a few pipelines).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import numpy as np

from ..config import StageConfig
from ..frames import Frame, VideoFrame, now
from ..stage import Stage, StageContext, StageRegistry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=300, help="calls per stage and path (default 300)")
    parser.add_argument("--stages", default="passthrough,video-transform", help="stage types to measure")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fleet-sizes", default="10,100,1000", help="node counts for the routing benchmark")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")


def _stats(seconds: list[float]) -> dict[str, float | int | None]:
    if not seconds:
        return {"count": 0, "p50_ms": None, "p99_ms": None}
    data = np.asarray(seconds) * 1000
    p50, p99 = np.percentile(data, [50, 99])
    return {"count": len(data), "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


class _Catch:
    """Push target that wakes the caller when the stage emits."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self, frame: Frame) -> None:
        self.event.set()


async def _time_calls(stage: Stage, catch: _Catch, image: np.ndarray, calls: int) -> list[float]:
    times: list[float] = []
    for _ in range(calls):
        frame = VideoFrame(image=image)
        frame.deadline = frame.capture_time + 10.0
        catch.event.clear()
        started = now()
        await stage.process(frame)
        await asyncio.wait_for(catch.event.wait(), 10.0)
        times.append(now() - started)
    return times


async def _measure_stage(type_name: str, registry: StageRegistry, factory: Any, image: np.ndarray, calls: int) -> dict:
    cls = registry.get(type_name)
    params = cls.Params.model_validate({})
    config = StageConfig(type=type_name, name=f"bench-{type_name}", placement="remote")

    local = cls(params, StageContext(name=config.name or type_name))
    local_catch = _Catch()
    local.bind(local_catch)
    await local.start()
    await _time_calls(local, local_catch, image, 20)  # warm-up
    in_process = await _time_calls(local, local_catch, image, calls)
    await local.shutdown()

    remote = factory.build(cls, params, StageContext(name=config.name or type_name), config)
    remote_catch = _Catch()
    remote.bind(remote_catch)
    deploy_started = time.perf_counter()
    await remote.start()
    deploy_s = time.perf_counter() - deploy_started
    await _time_calls(remote, remote_catch, image, 20)  # warm-up: first calls set up the router
    replica_calls_before = sum(remote.replicas.values())
    remote_times = await _time_calls(remote, remote_catch, image, calls)
    await remote.shutdown()
    p50_local = float(np.percentile(in_process, 50))
    overhead = [t - p50_local for t in remote_times]
    return {
        "in_process": _stats(in_process),
        "remote": _stats(remote_times),
        "overhead": _stats(overhead),
        "deploy_s": round(deploy_s, 2),
        "replica_pids": sorted(remote.replica_pids),
        "replica_calls": sum(remote.replicas.values()) - replica_calls_before,
        "drops": {k: v for k, v in remote.counts.items() if k != "remote_ok"},
    }


def _routing(sizes: list[int]) -> dict[str, Any]:
    from ..fleet.config import FleetConfig
    from ..fleet.registry import NodeEntry, NodeReport, PipelineOffer
    from ..fleet.routing import rank

    regions = [f"region-{i}" for i in range(8)]
    config = FleetConfig(
        rtt_ms={a: {b: 20.0 + 10 * abs(i - j) for j, b in enumerate(regions)} for i, a in enumerate(regions)}
    )
    rng = random.Random(7)
    results: dict[str, Any] = {}
    for size in sizes:
        nodes = []
        for i in range(size):
            offers = [
                PipelineOffer(name=p, stage_p90_ms={"a": rng.uniform(1, 20)}) for p in ("transform", "speech", "avatar")
            ]
            report = NodeReport(
                node_id=f"n{i}", url=f"http://10.0.0.{i % 250}:8080", region=rng.choice(regions),
                capacity=8, sessions=rng.randint(0, 8), pipelines=offers,
            )  # fmt: skip
            nodes.append(NodeEntry(report))
        times = []
        at = now()  # the fleet's heartbeats as of now, however long the loop takes
        for _ in range(300):
            started = time.perf_counter()
            rank(nodes, "speech", rng.choice(regions), config, at)
            times.append(time.perf_counter() - started)
        results[str(size)] = _stats(times)
    return results


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from ..fleet.remote import RayServeStageFactory

    routing = _routing([int(s) for s in args.fleet_sizes.split(",") if s])
    started = time.perf_counter()
    ray.init(
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    serve.start(proxy_location="Disabled")
    ray_start_s = time.perf_counter() - started
    image = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
    registry = StageRegistry()
    factory = RayServeStageFactory()
    stages: dict[str, Any] = {}
    try:
        for type_name in [s for s in args.stages.split(",") if s]:
            stages[type_name] = await _measure_stage(type_name, registry, factory, image, args.calls)
    finally:
        serve.shutdown()
        ray.shutdown()
    parts = [
        f"{name}: in-process p50 {r['in_process']['p50_ms']} ms, via Ray Serve p50 {r['remote']['p50_ms']} "
        f"p99 {r['remote']['p99_ms']} ms (overhead p50 {r['overhead']['p50_ms']} p99 {r['overhead']['p99_ms']} ms)"
        for name, r in stages.items()
    ]
    route = "; ".join(f"{n} nodes p50 {r['p50_ms']} p99 {r['p99_ms']} ms" for n, r in routing.items())
    summary = (
        f"remote stage, {args.width}x{args.height} frame, {args.calls} calls each — " + "; ".join(parts)
        + f". Ray+Serve start {ray_start_s:.1f} s. Routing decision: {route}"
    )  # fmt: skip
    return {
        "summary": summary,
        "config": {"calls": args.calls, "frame": [args.height, args.width, 3], "ray_cpus": args.ray_cpus},
        "ray_start_s": round(ray_start_s, 2),
        "stages": stages,
        "routing_decision": routing,
    }
