"""Fleet costs: a remote stage's per-call overhead on Ray Serve vs in-process, and routing decision time.

Remote path: the real stand-in (``RemoteStage``) -> Serve handle -> ``StageHost``
replica -> the same stage class -> back, one 640x480 RGB frame per call, one call
at a time, on a local Ray cluster this benchmark starts (and shuts down). The
in-process path awaits the same stage class's ``process`` directly. Overhead is
remote round trip minus in-process time; the replica's own service time is
reported too. Routing: ``rank()`` over fleets of growing size (nodes spread over
regions, each offering a few pipelines). Cold start (``--coldstart``): a
``min_replicas: 0`` deployment of each stage type, woken through the stand-in —
Serve starts a replica, the replica starts the stage (model load) — timed from the
wake call to its answer, on fresh deployments; then the time until Serve removes the
idle replica again.
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
    parser.add_argument(
        "--coldstart", default="video-transform,asr",
        help="stage types whose scale-from-zero cold start is measured ('' to skip; default video-transform,asr)",
    )  # fmt: skip
    parser.add_argument("--coldstart-runs", type=int, default=3, help="cold starts per stage type (default 3)")
    parser.add_argument("--idle-timeout", type=float, default=2.0, help="idle_timeout_s of the cold-start stages")


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
    drops: dict[str, int] = {}
    remote.bind(remote_catch, lambda frame, reason: drops.__setitem__(reason, drops.get(reason, 0) + 1))
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
        "drops": drops,
    }


async def _cold_starts(type_name: str, registry: StageRegistry, factory: Any, args: argparse.Namespace) -> dict:
    """Scale from zero, ``args.coldstart_runs`` times on fresh deployments, then once back to zero."""
    from ray import serve

    from ..config import AutoscalingConfig, RemoteConfig
    from ..fleet.remote import deployment_name, replica_states

    cls = registry.get(type_name)
    params = cls.Params.model_validate({})
    runs: list[dict[str, float]] = []
    to_zero_s: float | None = None
    scaling = AutoscalingConfig(min_replicas=0, max_replicas=1, idle_timeout_s=args.idle_timeout)
    for run in range(args.coldstart_runs):
        remote_config = RemoteConfig(num_cpus=0.5, autoscaling=scaling)
        config = StageConfig(type=type_name, name=f"cold-{type_name}-{run}", placement="remote", remote=remote_config)
        context = StageContext(name=config.name or type_name)
        stage = factory.build(cls, params, context, config)
        stage.bind(_Catch())
        await stage.start()
        name = deployment_name(cls, context, config)
        started_cold = stage.cold
        took = await stage.warm_up()
        await stage.shutdown()
        if took is None or not started_cold:
            raise RuntimeError(f"{type_name}: deployment {name} was not cold ({stage.snapshot()})")
        stage_start = float(stage.last_wake.get("stage_start_s", 0.0))
        runs.append({"cold_start_s": took, "stage_start_s": stage_start, "replica_start_s": took - stage_start})
        if run == 0:  # idle -> zero replicas, measured once
            idle_from = time.perf_counter()
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, replica_states, name)).get("RUNNING", 0):
                if time.perf_counter() - idle_from > 120:
                    break
                await asyncio.sleep(0.25)
            else:
                to_zero_s = time.perf_counter() - idle_from
        await asyncio.get_running_loop().run_in_executor(None, serve.delete, name)

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {
            "median": round(float(np.median(values)), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    return {
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "cold_start_s": summary("cold_start_s"),
        "replica_start_s": summary("replica_start_s"),
        "stage_start_s": summary("stage_start_s"),  # in the replica: the stage's start, model load included
        "idle_to_zero_s": round(to_zero_s, 2) if to_zero_s is not None else None,
        "idle_timeout_s": args.idle_timeout,
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
    cold: dict[str, Any] = {}
    try:
        for type_name in [s for s in args.coldstart.split(",") if s]:  # first: the warm stages hold CPUs
            cold[type_name] = await _cold_starts(type_name, registry, factory, args)
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
    colds = "; ".join(
        f"{n} {r['cold_start_s']['median']} s (replica {r['replica_start_s']['median']} s + stage/model "
        f"{r['stage_start_s']['median']} s), back to zero after {r['idle_to_zero_s']} s idle"
        for n, r in cold.items()
    )
    summary = (
        f"remote stage, {args.width}x{args.height} frame, {args.calls} calls each — " + "; ".join(parts)
        + f". Ray+Serve start {ray_start_s:.1f} s. Routing decision: {route}"
        + (f". Cold start from zero replicas (median of {args.coldstart_runs}): {colds}" if cold else "")
    )  # fmt: skip
    return {
        "summary": summary,
        "config": {"calls": args.calls, "frame": [args.height, args.width, 3], "ray_cpus": args.ray_cpus},
        "ray_start_s": round(ray_start_s, 2),
        "stages": stages,
        "routing_decision": routing,
        "cold_start": cold,
    }
