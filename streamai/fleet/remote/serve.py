"""Serve plumbing on the node: deployment names, replica states, ``ReplicaWatch``, and the factory.

``RayServeStageFactory`` joins the Ray cluster, deploys ``StageHost`` once per pipeline
stage config (and region), builds the stand-ins, follows the replica count of
scale-to-zero deployments, and writes the node's remote-stage metrics from the
stand-ins' own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import CounterMetricFamily, Metric, SummaryMetricFamily
from pydantic import BaseModel

from ...config import RemoteConfig, StageConfig
from ...frames import now
from ...stage import Stage, StageContext
from .host import StageHost

if TYPE_CHECKING:
    from .standin import RemoteStage

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5  # replica count poll of a scale-to-zero deployment
METRIC_EVENTS = ("fallback_edge", "cold_start_failed")  # stand-in counts exported as events (with cold_starts)


def deployment_name(cls: type[Stage], context: StageContext, config: StageConfig) -> str:
    """One Serve application per pipeline stage config (and region, which can change the model)."""
    digest = hashlib.sha1(f"{config.model_dump_json()}|{context.region}|{context.model}".encode()).hexdigest()[:10]
    base = re.sub(r"[^a-z0-9-]+", "-", f"{cls.type_name}-{context.name}".lower()).strip("-")
    return f"streamai-{base}-{digest}"


def replica_states(name: str) -> dict[str, int]:
    """Replicas of Serve application ``name`` by state (``RUNNING``, ``STARTING``, ...); blocking."""
    from ray import serve

    app = serve.status().applications.get(name)
    deployment = app.deployments.get("stage") if app is not None else None
    if deployment is None:
        return {}
    return {str(state).rsplit(".", 1)[-1]: int(count) for state, count in deployment.replica_states.items()}


class WatchUser(Protocol):
    """A stand-in that follows a deployment's replicas."""

    def scaled_to_zero(self) -> None: ...


class ReplicaWatch:
    """The running replicas of one scale-to-zero deployment, polled while stand-ins on this node use it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.states: dict[str, int] = {}
        self.users: set[WatchUser] = set()
        self.warmed_at = -math.inf  # when a wake call last came back (a replica is up)
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return self.states.get("RUNNING", 0)

    @property
    def cold(self) -> bool:
        """No replica is running: the next call waits for one to start."""
        return self.running == 0

    def warmed(self) -> None:
        """A wake call came back: a replica runs, whatever the last (older) poll said."""
        self.warmed_at = now()
        self.states = {**self.states, "RUNNING": max(1, self.running)}

    def update(self, states: dict[str, int], asked_at: float) -> None:
        if asked_at < self.warmed_at and not states.get("RUNNING"):
            return  # asked before the replica came up
        was_running = self.running
        self.states = states
        if was_running and self.cold:
            for user in list(self.users):
                user.scaled_to_zero()

    async def poll(self) -> None:
        """Refresh ``states`` every ``WATCH_INTERVAL_S`` while someone uses the deployment."""
        loop = asyncio.get_running_loop()
        while self.users:
            asked_at = now()
            try:
                states = await loop.run_in_executor(None, replica_states, self.name)
            except Exception as exc:  # the controller is briefly unreachable: keep the last view
                log.debug("replica states of %s: %s", self.name, exc)
            else:
                self.update(states, asked_at)
            await asyncio.sleep(WATCH_INTERVAL_S)


class RayServeStageFactory:
    """``RemoteStageFactory`` on Ray Serve: builds stand-ins, deploys ``StageHost`` once per stage config."""

    def __init__(self, address: str | None = None, region: str | None = None, call_timeout_s: float = 10.0) -> None:
        self.address = address
        self.region = region
        self.call_timeout_s = call_timeout_s
        self.started_ray = False
        self._handles: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.watches: dict[str, ReplicaWatch] = {}  # scale-to-zero deployments in use here
        self.standins: set[RemoteStage] = set()  # running stand-ins: their counters are the live part of totals
        self._retired: Counter[tuple[str, str]] = Counter()  # (stage, event) of stand-ins that stopped
        self._retired_cold_starts: dict[str, list[float]] = {}

    def connect(self) -> None:
        """Join (or, for ``local``, start) the Ray cluster and make sure Serve runs (blocking)."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            if self.address in (None, "local"):
                ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
                self.started_ray = True
            else:
                ray.init(address=self.address, log_to_driver=False)
        serve.start(proxy_location="Disabled")

    def close(self) -> None:
        """Leave the cluster; a cluster this node started goes down with it (deployments elsewhere stay)."""
        if self.started_ray:
            import ray
            from ray import serve

            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
            self.started_ray = False

    def build(self, cls: type[Stage], params: BaseModel, context: StageContext, config: StageConfig) -> Stage:
        from .standin import standin_class

        return standin_class(cls)(params, context, factory=self, config=config)

    async def handle(self, cls: type[Stage], context: StageContext, config: StageConfig) -> Any:
        """The deployment's handle, deploying it first if the cluster has none (slow: seconds)."""
        name = deployment_name(cls, context, config)
        async with self._lock:
            if name not in self._handles:
                loop = asyncio.get_running_loop()
                self._handles[name] = await loop.run_in_executor(None, self._deploy, name, cls, context, config)
        return self._handles[name]

    async def watch(
        self, cls: type[Stage], context: StageContext, config: StageConfig, user: WatchUser
    ) -> ReplicaWatch:
        """Follow the replica count of the stage's (scale-to-zero) deployment while ``user`` runs."""
        name = deployment_name(cls, context, config)
        watch = self.watches.get(name)
        if watch is None:
            watch = self.watches[name] = ReplicaWatch(name)
            asked_at = now()
            watch.update(await asyncio.get_running_loop().run_in_executor(None, replica_states, name), asked_at)
        watch.users.add(user)
        if watch.task is None or watch.task.done():
            watch.task = asyncio.create_task(watch.poll(), name=f"replicas:{name}")
        return watch

    def unwatch(self, watch: ReplicaWatch, user: WatchUser) -> None:
        watch.users.discard(user)  # the poll ends by itself when nobody is left

    # -- the node's view of its stand-ins (one counter per event: the stand-in's) ---------
    def attach(self, standin: RemoteStage) -> None:
        self.standins.add(standin)

    def detach(self, standin: RemoteStage) -> None:
        """A stand-in stopped: keep its counts in the node's totals."""
        if standin in self.standins:
            self.standins.discard(standin)
            name = standin.context.name
            for event, count in standin.counts.items():
                self._retired[(name, event)] += count
            self._retired_cold_starts.setdefault(name, []).extend(standin.cold_starts)

    def totals(self) -> Counter[tuple[str, str]]:
        """(stage, event) -> count on this node since it started, stopped and running stand-ins together."""
        totals = self._retired.copy()
        for standin in self.standins:
            for event, count in standin.counts.items():
                totals[(standin.context.name, event)] += count
        return totals

    def cold_start_seconds(self) -> dict[str, list[float]]:
        """Stage -> every measured cold start on this node."""
        seconds = {name: list(values) for name, values in self._retired_cold_starts.items()}
        for standin in self.standins:
            seconds.setdefault(standin.context.name, []).extend(standin.cold_starts)
        return seconds

    def collect(self) -> Iterator[Metric]:
        """Cold starts of scale-to-zero stages and frames served at the edge meanwhile (prometheus_client)."""
        events_family = CounterMetricFamily(
            "streamai_remote_events", "Remote stage events on this node (cold_starts, fallback_edge).",
            labels=["stage", "event"],
        )  # fmt: skip
        cold = self.cold_start_seconds()
        events = Counter({key: n for key, n in self.totals().items() if key[1] in METRIC_EVENTS})
        for stage, seconds in cold.items():
            if seconds:
                events[(stage, "cold_starts")] = len(seconds)
        for (stage, what), count in sorted(events.items()):
            events_family.add_metric([stage, what], count)
        yield events_family
        starts = SummaryMetricFamily(
            "streamai_remote_cold_start_seconds", "Replica start + model load, first frame to warm.", labels=["stage"]
        )
        for stage, seconds in sorted(cold.items()):
            if seconds:
                starts.add_metric([stage], count_value=len(seconds), sum_value=sum(seconds))
        yield starts

    def _deploy(self, name: str, cls: type[Stage], context: StageContext, config: StageConfig) -> Any:
        import ray
        from ray import serve

        if not ray.is_initialized():
            self.connect()
        with contextlib.suppress(Exception):  # already deployed by this or another edge node: share it
            status = serve.status().applications.get(name)
            if status is not None and str(status.status).endswith("RUNNING"):
                return serve.get_app_handle(name)
        options = deployment_options(config.remote or RemoteConfig())
        with warnings.catch_warnings():  # metrics_interval_s is deprecated in favour of cluster-wide env vars
            warnings.simplefilter("ignore", DeprecationWarning)
            app = serve.deployment(StageHost).options(**options)
        bound = app.bind(cls, context.name, context.device, context.model, context.region)
        log.info("deploying remote stage %s as Serve application %s", context.name, name)
        return serve.run(bound, name=name, route_prefix=None, blocking=False)


def deployment_options(remote: RemoteConfig) -> dict[str, Any]:
    """``serve.deployment(...).options`` for a stage's ``remote`` config: actor options and autoscaling."""
    scaling = remote.autoscaling
    autoscaling: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "initial_replicas": scaling.min_replicas if scaling.min_replicas == 0 else max(1, scaling.min_replicas),
        "max_replicas": max(scaling.max_replicas, scaling.min_replicas, 1),
        "target_ongoing_requests": scaling.target_ongoing_requests,
        "downscale_delay_s": scaling.idle_timeout_s,
    }
    if scaling.min_replicas == 0:
        # scale to zero within about 2 x idle_timeout_s: Serve averages ongoing requests over
        # look_back_period_s (default 30 s), fed every metrics_interval_s (default 10 s)
        look_back = min(30.0, scaling.idle_timeout_s)
        autoscaling["look_back_period_s"] = look_back
        autoscaling["metrics_interval_s"] = min(10.0, max(0.25, look_back / 4))
    return {
        "name": "stage",
        "ray_actor_options": {"num_cpus": remote.num_cpus, "num_gpus": remote.num_gpus, "resources": remote.resources},
        "autoscaling_config": autoscaling,
        "health_check_period_s": 1.0,
        "health_check_timeout_s": 5.0,
    }
