"""Remote stages on Ray Serve: the same stage class, run in a Serve replica instead of in-process.

A stage with ``placement: remote`` (or ``auto``) gets a local stand-in, ``RemoteStage``,
in the session's pipeline. The stand-in forwards each frame to a Ray Serve deployment
that hosts the real stage class (``StageHost``: one deployment per pipeline stage
config, replicas autoscaled from ``remote.autoscaling``, actor options from
``remote.resources``/``num_cpus``/``num_gpus``), and pushes back whatever the remote
stage emitted, plus its events.

Deadlines travel with the frame as times relative to the send moment (monotonic
clocks of two machines do not compare). The stand-in abandons a call at the latest
moment its result could still reach the output in time: the frame is dropped and
counted ``remote_timeout`` (``remote_error`` when the replica died under it). Frame
stages keep up to two calls in flight (a frame beyond that is dropped ``remote_busy``
rather than queued); stream stages (audio into ASR) send every frame, one at a time,
in order.

``placement: auto`` runs the stage at the edge while its measured edge service time
fits the frame's remaining time (``now + edge p90-ish + downstream <= deadline``), and
offloads the frame otherwise; while offloading it re-measures the edge every
``EDGE_PROBE_S`` with one frame, so it comes back when the edge is fast enough again.
``remote.fallback: edge`` runs a frame at the edge when the remote path just failed
(timeout, dead replica, no deployment); ``drop`` (default) counts the drop.

Scale to zero: a deployment with ``autoscaling.min_replicas: 0`` starts with no
replica and Serve removes its last replica after ``idle_timeout_s`` without calls.
The stand-in watches the deployment's running replicas (``serve.status()``, polled
while sessions use it). While none runs, the first frame sends one ``wake`` call
(Serve starts a replica for it; the replica starts this session's stage, which loads
its model) and every frame until it returns is dropped ``cold_start`` or, with
``fallback: edge``, served by an edge copy of the stage started on first need
(counted ``fallback_edge``). The wake's round trip is the measured cold start
(``remote_warm`` event, ``/metrics``).

Ray is imported only here, and only when a node is configured with a Ray address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import BaseModel

from ..config import RemoteConfig, StageConfig
from ..engine.estimator import ServiceTimeEstimator
from ..events import EventBus
from ..frames import ControlFrame, Frame, now
from ..stage import Stage, StageContext

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # calls in flight per frame stage and session
EDGE_PROBE_S = 2.0  # placement auto: one frame at the edge this often while offloading
FAILING_FOR_S = 1.0  # after a failure, fallback: edge serves frames this long
STREAM_MIN_TIMEOUT_S = 1.0  # a stream stage's call is never abandoned sooner
HOSTED_IDLE_S = 120.0  # a replica forgets a session's stage after this long without frames
COLD_START_TIMEOUT_S = 120.0  # a wake call (replica start + model load) is given up after this long
WAKE_RETRY_S = 1.0  # after a failed wake, the next one waits this long
WATCH_INTERVAL_S = 0.5  # replica count poll of a scale-to-zero deployment


# -- what crosses Ray ----------------------------------------------------------------
@dataclass
class RemoteCall:
    """One frame for the remote stage; times are relative to the send moment."""

    session: str
    params: dict[str, Any]
    frame: Frame
    downstream_s: float = 0.0  # service time after this stage on the edge (for stream stages' can_make_it)


@dataclass
class RemoteResult:
    """What the remote stage emitted for one call (times relative to the replica's receive moment)."""

    frames: list[Frame] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    replica: str = ""
    pid: int = 0
    service_s: float = 0.0
    calls: int = 0


def _shift(frame: Frame, offset: float) -> Frame:
    """A shallow copy of ``frame`` with capture time and deadline moved by ``offset`` seconds."""
    return replace(frame, capture_time=frame.capture_time + offset, deadline=frame.deadline + offset)


# -- the replica side ------------------------------------------------------------------
class _Hosted:
    """One session's instance of the stage inside a replica."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.outbox: list[Frame] = []
        self.events: list[dict[str, Any]] = []
        self.downstream_s = 0.0
        self.last_used = time.monotonic()


class StageHost:
    """The body of a Serve deployment: runs one stage class for many sessions (one instance each)."""

    def __init__(self, stage_cls: type[Stage], name: str, device: str, model: str | None, region: str | None) -> None:
        from ..models.shared import SharedModels

        self.stage_cls = stage_cls
        self.name = name
        self.device = device
        self.model = model
        self.region = region
        self.models = SharedModels()  # sessions on this replica share loaded weights
        self.sessions: dict[str, _Hosted] = {}
        self.calls = 0
        self.pid = os.getpid()
        self.replica = _replica_id()
        self.started = time.monotonic()
        self._creating = asyncio.Lock()  # one stage instance per session, even for concurrent first calls

    async def _hosted(self, session: str, params: dict[str, Any]) -> _Hosted:
        hosted = self.sessions.get(session)
        if hosted is not None:
            return hosted
        async with self._creating:
            hosted = self.sessions.get(session)
            if hosted is None:
                hosted = await self._create(session, params)
        return hosted

    async def _create(self, session: str, params: dict[str, Any]) -> _Hosted:
        await self._forget_idle()
        events = EventBus()
        context = StageContext(
            name=self.name,
            device=self.device,
            model=self.model,
            events=events,
            resources=self.models,
            region=self.region,
        )
        stage = self.stage_cls(self.stage_cls.Params.model_validate(params), context)
        hosted = _Hosted(stage)

        async def collect(frame: Frame) -> None:
            hosted.outbox.append(frame)

        stage.bind(collect)
        stage.can_make_it = lambda f: now() + hosted.downstream_s <= f.deadline  # type: ignore[method-assign]
        events.on_event(hosted.events.append)
        await stage.start()
        self.sessions[session] = hosted
        return hosted

    async def wake(self, session: str, params: dict[str, Any]) -> dict[str, Any]:
        """Scale from zero: start ``session``'s stage here (its model loads) and say how long that took."""
        started = time.monotonic()
        await self._hosted(session, params)
        return {
            "replica": self.replica,
            "pid": self.pid,
            "stage_start_s": time.monotonic() - started,
            "replica_age_s": time.monotonic() - self.started,
        }

    async def process(self, call: RemoteCall) -> RemoteResult:
        received = now()
        hosted = await self._hosted(call.session, call.params)
        hosted.downstream_s = call.downstream_s
        hosted.last_used = time.monotonic()
        self.calls += 1
        await hosted.stage.process(_shift(call.frame, received))
        return self._result(hosted, received)

    async def control(self, call: RemoteCall) -> RemoteResult:
        received = now()
        hosted = await self._hosted(call.session, call.params)
        assert isinstance(call.frame, ControlFrame)
        await hosted.stage.on_control(call.frame)
        return self._result(hosted, received)

    def _result(self, hosted: _Hosted, received: float) -> RemoteResult:
        frames = [_shift(f, -received) for f in hosted.outbox]
        events, hosted.outbox, hosted.events = hosted.events, [], []
        return RemoteResult(frames, events, self.replica, self.pid, now() - received, self.calls)

    async def close(self, session: str) -> bool:
        hosted = self.sessions.pop(session, None)
        if hosted is not None:
            await hosted.stage.shutdown()
        return hosted is not None

    async def _forget_idle(self) -> None:
        cutoff = time.monotonic() - HOSTED_IDLE_S
        for session in [k for k, h in self.sessions.items() if h.last_used < cutoff]:
            await self.close(session)

    async def info(self) -> dict[str, Any]:
        return {"replica": self.replica, "pid": self.pid, "calls": self.calls, "sessions": len(self.sessions)}

    def check_health(self) -> None:
        """Serve's health check: a replica that answers is healthy."""


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside Serve (benchmarks calling the host in-process)
        return f"local-{os.getpid()}"


# -- the edge side -------------------------------------------------------------------
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


class ReplicaWatch:
    """The running replicas of one scale-to-zero deployment, polled while stand-ins on this node use it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.states: dict[str, int] = {}
        self.users: set[RemoteStage] = set()
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
        self.totals: Counter[tuple[str, str]] = Counter()  # (stage, cold_starts|fallback_edge|...) -> count
        self.cold_start_s: dict[str, list[float]] = {}  # stage -> measured cold starts

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
        standin = _standin_class(cls)
        return standin(params, context, factory=self, config=config)

    async def handle(self, cls: type[Stage], context: StageContext, config: StageConfig) -> Any:
        """The deployment's handle, deploying it first if the cluster has none (slow: seconds)."""
        name = deployment_name(cls, context, config)
        async with self._lock:
            if name not in self._handles:
                loop = asyncio.get_running_loop()
                self._handles[name] = await loop.run_in_executor(None, self._deploy, name, cls, context, config)
        return self._handles[name]

    async def watch(
        self, cls: type[Stage], context: StageContext, config: StageConfig, user: RemoteStage
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

    def unwatch(self, watch: ReplicaWatch, user: RemoteStage) -> None:
        watch.users.discard(user)  # the poll ends by itself when nobody is left

    def metrics_lines(self) -> list[str]:
        """Prometheus lines: cold starts of scale-to-zero stages and frames served at the edge meanwhile."""
        lines = [
            "# HELP streamai_remote_events_total Remote stage events on this node (cold_starts, fallback_edge).",
            "# TYPE streamai_remote_events_total counter",
        ]
        for (stage, what), count in sorted(self.totals.items()):
            lines.append(f'streamai_remote_events_total{{stage="{stage}",event="{what}"}} {count}')
        lines += [
            "# HELP streamai_remote_cold_start_seconds Replica start + model load, first frame to warm.",
            "# TYPE streamai_remote_cold_start_seconds summary",
        ]
        for stage, seconds in sorted(self.cold_start_s.items()):
            lines.append(f'streamai_remote_cold_start_seconds_sum{{stage="{stage}"}} {sum(seconds):.3f}')
            lines.append(f'streamai_remote_cold_start_seconds_count{{stage="{stage}"}} {len(seconds)}')
        return lines

    def _deploy(self, name: str, cls: type[Stage], context: StageContext, config: StageConfig) -> Any:
        import ray
        from ray import serve

        if not ray.is_initialized():
            self.connect()
        with contextlib.suppress(Exception):  # already deployed by this or another edge node: share it
            status = serve.status().applications.get(name)
            if status is not None and str(status.status).endswith("RUNNING"):
                return serve.get_app_handle(name)
        remote = config.remote or RemoteConfig()
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
        options: dict[str, Any] = {
            "name": "stage",
            "ray_actor_options": {
                "num_cpus": remote.num_cpus,
                "num_gpus": remote.num_gpus,
                "resources": remote.resources,
            },
            "autoscaling_config": autoscaling,
            "health_check_period_s": 1.0,
            "health_check_timeout_s": 5.0,
        }
        with warnings.catch_warnings():  # metrics_interval_s is deprecated in favour of cluster-wide env vars
            warnings.simplefilter("ignore", DeprecationWarning)
            app = serve.deployment(StageHost).options(**options)
        bound = app.bind(cls, context.name, context.device, context.model, context.region)
        log.info("deploying remote stage %s as Serve application %s", context.name, name)
        return serve.run(bound, name=name, route_prefix=None, blocking=False)


_STANDINS: dict[type[Stage], type[RemoteStage]] = {}


def _standin_class(cls: type[Stage]) -> type[RemoteStage]:
    """A stand-in class with the wrapped class's kinds, params and admission."""
    if cls not in _STANDINS:
        attrs = {
            "type_name": cls.type_name,
            "consumes": cls.consumes,
            "emits": cls.emits,
            "Params": cls.Params,
            "admission": cls.admission,
            "live_params": cls.live_params,  # accepted here, forwarded to the replica's on_control
            "wrapped": cls,
            "__doc__": f"Ray Serve stand-in for {cls.__name__}.",
        }
        _STANDINS[cls] = type(f"Remote{cls.__name__}", (RemoteStage,), attrs)
    return _STANDINS[cls]


class RemoteStage(Stage):
    """The local stand-in of a remote (or ``auto``) stage; see the module docstring for the rules."""

    wrapped: ClassVar[type[Stage]] = Stage

    def __init__(
        self, params: BaseModel, context: StageContext, *, factory: RayServeStageFactory, config: StageConfig
    ) -> None:
        super().__init__(params, context)
        self.factory = factory
        self.config = config
        self.placement = config.placement
        self.fallback = (config.remote or RemoteConfig()).fallback
        self.edge_capable = self.placement == "auto" or self.fallback == "edge"
        self.scale_to_zero = (config.remote or RemoteConfig()).autoscaling.min_replicas == 0
        self.watch: ReplicaWatch | None = None  # scale to zero: the deployment's replica count
        self.cold_starts: list[float] = []  # seconds, first frame to warm
        self.last_wake: dict[str, Any] = {}  # the replica's answer to the last wake call
        self._waking: asyncio.Task[None] | None = None
        self._wake_retry_at = -math.inf
        self._local_lock = asyncio.Lock()
        self.key = uuid.uuid4().hex
        self.params_dict = params.model_dump()
        self.handle: Any = None
        self.local: Stage | None = None
        prior = (config.expected_ms or 0.0) / 1000
        self.remote_time = ServiceTimeEstimator(prior_s=prior)  # successful round trips only
        self.edge_time = ServiceTimeEstimator(prior_s=prior)
        self.counts: Counter[str] = Counter()  # remote_ok, edge, remote_timeout, ...
        self.replicas: Counter[str] = Counter()  # results per replica id
        self.replica_pids: set[int] = set()
        self.last_failure = -math.inf
        self.last_edge_probe = -math.inf
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_pushed = -math.inf
        self._stream = self.admission == "stream"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self.placement == "auto":
            await self._start_local()
        try:
            self.handle = await self.factory.handle(self.wrapped, self.context, self.config)
        except Exception as exc:
            if not self.edge_capable:
                raise
            log.warning("remote stage %s unavailable, serving at the edge: %s", self.context.name, exc)
            self.emit_event("warning", message=f"remote stage unavailable, running at the edge: {exc}")
            await self._start_local()
            return
        if self.scale_to_zero:
            self.watch = await self.factory.watch(self.wrapped, self.context, self.config, self)

    async def _start_local(self) -> Stage:
        """The edge copy of the stage: at start for ``auto``, on first need for ``fallback: edge``."""
        async with self._local_lock:
            if self.local is None:
                local = self.wrapped(self.params, self.context)
                local.bind(self.push)
                local.can_make_it = lambda frame: now() + self.downstream_estimate() <= frame.deadline  # type: ignore[method-assign]
                await local.start()
                self.local = local
            return self.local

    async def stop(self) -> None:
        if self.watch is not None:
            self.factory.unwatch(self.watch, self)
        if self._waking is not None:
            self._waking.cancel()
        for task in list(self._in_flight):
            task.cancel()
        if self.handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._await(self.handle.close.remote(self.key)), 2.0)
        if self.local is not None:
            await self.local.shutdown()

    # -- frames ----------------------------------------------------------------------
    async def process(self, frame: Frame) -> None:
        at = now()
        if self._use_edge(frame, at):
            await self._run_edge(frame)
            return
        if self.cold:
            await self._while_cold(frame)
            return
        if self._stream:
            await self._call(frame)
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self.drop(frame, "remote_busy")
            return
        if at + self.remote_time.estimate + self.downstream_estimate() > frame.deadline:
            self.drop(frame, "remote_would_miss")
            return
        task = asyncio.create_task(self._call(frame), name=f"remote:{self.context.name}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _use_edge(self, frame: Frame, at: float) -> bool:
        """The placement rule for this frame (see the module docstring)."""
        if not self.edge_capable:
            return False
        if self.handle is None or at - self.last_failure < FAILING_FOR_S:
            return True  # no remote, or it just failed: fallback edge / auto keeps serving here
        if self.placement != "auto":
            return False
        if at - self.last_edge_probe >= EDGE_PROBE_S:
            self.last_edge_probe = at
            return True  # refresh the edge measurement now and then
        return at + self.edge_time.estimate + self.downstream_estimate() <= frame.deadline

    async def _run_edge(self, frame: Frame) -> None:
        local = await self._start_local()
        started = now()
        await local.process(frame)
        self.edge_time.update(now() - started)
        self.counts["edge"] += 1

    async def _call(self, frame: Frame) -> None:
        sent = now()
        remaining = frame.deadline - sent - self.downstream_estimate()
        timeout = max(remaining, STREAM_MIN_TIMEOUT_S) if self._stream else remaining
        timeout = min(timeout, self.factory.call_timeout_s)
        if timeout <= 0:
            self.drop(frame, "remote_would_miss")
            return
        call = RemoteCall(self.key, self.params_dict, _shift(frame, -sent), self.downstream_estimate())
        try:
            response = self.handle.process.remote(call)
        except Exception as exc:
            await self._failed(frame, "remote_error", exc)
            return
        task = asyncio.ensure_future(self._await(response))
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            with contextlib.suppress(Exception):
                response.cancel()
            task.cancel()
            task.add_done_callback(_consume)
            await self._failed(frame, "remote_timeout", None)
            return
        if task.exception() is not None:
            await self._failed(frame, "remote_error", task.exception())
            return
        result: RemoteResult = task.result()
        back = now()
        self.remote_time.update(back - sent)
        self.counts["remote_ok"] += 1
        self._note_replica(result)
        for event in result.events:
            fields = {k: v for k, v in event.items() if k not in ("type", "t")}
            self.context.events.emit(event.get("type", "event"), **fields)
        for out in result.frames:
            out = _shift(out, sent)
            if not self._stream and out.capture_time < self._last_pushed:
                self.drop(out, "remote_stale")  # a later frame already came back first
                continue
            self._last_pushed = max(self._last_pushed, out.capture_time)
            await self.push(out)

    async def _failed(self, frame: Frame, reason: str, exc: BaseException | None) -> None:
        if reason == "remote_timeout" and self.cold:
            await self._while_cold(frame)  # the call waited for a replica that is not there (scaled to zero)
            return
        self.last_failure = now()
        self.counts[reason] += 1
        if self.counts[reason] in (1, 10) or self.counts[reason] % 100 == 0:
            log.warning("remote stage %s: %s (%d so far): %s", self.context.name, reason, self.counts[reason], exc)
        if self.edge_capable and now() + self.downstream_estimate() <= frame.deadline:
            await self._run_edge(frame)  # fallback: edge
            return
        self.drop(frame, reason)

    # -- scale to zero -----------------------------------------------------------------
    @property
    def cold(self) -> bool:
        """A scale-to-zero deployment with no replica running, or this stand-in is waking it."""
        return self.watch is not None and (self._waking is not None or self.watch.cold)

    async def _while_cold(self, frame: Frame) -> None:
        """A frame while no replica runs: start waking it; serve the frame at the edge or drop it."""
        self._wake()
        if self.edge_capable and now() + self.downstream_estimate() <= frame.deadline:
            self.counts["fallback_edge"] += 1
            self.factory.totals[(self.context.name, "fallback_edge")] += 1
            await self._run_edge(frame)
            return
        self.drop(frame, "cold_start")

    def _wake(self) -> None:
        if self._waking is None and now() >= self._wake_retry_at and self.handle is not None:
            before = self.counts.copy()  # frames dropped or served at the edge during this cold start
            self._waking = asyncio.create_task(self._wake_up(before), name=f"wake:{self.context.name}")

    async def _wake_up(self, before: Counter[str]) -> None:
        """One call that makes Serve start a replica and the replica start this session's stage."""
        sent = now()
        name = self.context.name
        self.emit_event("remote_cold_start", fallback=self.fallback)
        try:
            info = await asyncio.wait_for(
                self._await(self.handle.wake.remote(self.key, self.params_dict)), COLD_START_TIMEOUT_S
            )
        except Exception as exc:
            self._wake_retry_at = now() + WAKE_RETRY_S
            self.counts["cold_start_failed"] += 1
            self.factory.totals[(name, "cold_start_failed")] += 1
            log.warning("remote stage %s: cold start failed: %r", name, exc)
            self.emit_event("warning", message=f"remote stage cold start failed: {exc!r}")
            return
        finally:
            self._waking = None
        took = now() - sent
        self.last_wake = {**info, "cold_start_s": took}
        if self.watch is not None:
            self.watch.warmed()
        self.cold_starts.append(took)
        self.factory.totals[(name, "cold_starts")] += 1
        self.factory.cold_start_s.setdefault(name, []).append(took)
        stage_start = float(info.get("stage_start_s", 0.0))
        log.info("remote stage %s warm after %.2f s (stage start %.2f s)", name, took, stage_start)
        self.emit_event(
            "remote_warm",
            cold_start_ms=round(took * 1000, 1),
            stage_start_ms=round(stage_start * 1000, 1),  # in the replica: the stage's start, model load included
            replica=info.get("replica"),
            pid=info.get("pid"),
            dropped=self.counts["dropped_cold_start"] - before["dropped_cold_start"],
            fallback_edge=self.counts["fallback_edge"] - before["fallback_edge"],
        )

    async def warm_up(self) -> float | None:
        """Cold-start the deployment now if no replica runs, and wait; returns the cold start in seconds."""
        if not self.cold:
            return None
        count = len(self.cold_starts)
        self._wake()
        if self._waking is not None:
            await asyncio.shield(self._waking)
        return self.cold_starts[-1] if len(self.cold_starts) > count else None

    def scaled_to_zero(self) -> None:
        """The deployment's last replica went away (idle): the next frame starts a cold start."""
        self.emit_event("remote_scaled_to_zero")

    def _note_replica(self, result: RemoteResult) -> None:
        if result.replica not in self.replicas:
            self.emit_event("remote", replica=result.replica, pid=result.pid, replicas_seen=len(self.replicas) + 1)
        self.replicas[result.replica] += 1
        self.replica_pids.add(result.pid)

    async def on_control(self, frame: ControlFrame) -> None:
        if self.local is not None:
            await self.local.on_control(frame)
        if self.handle is None or self.cold:
            return  # a cold replica has no state to reset: the session's stage starts fresh there
        call = RemoteCall(self.key, self.params_dict, frame)
        try:
            result: RemoteResult = await asyncio.wait_for(self._await(self.handle.control.remote(call)), 2.0)
        except Exception as exc:
            log.warning("remote stage %s did not take control %s: %s", self.context.name, frame.control.value, exc)
            return
        for out in result.frames:
            await self.push(_shift(out, now()))

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    async def _await(response: Any) -> Any:
        return await response

    def drop(self, frame: Frame, reason: str) -> None:
        """Count a frame this stage gave up on: in the engine's counters, and in this stand-in's own."""
        self.counts[f"dropped_{reason}"] += 1
        super().drop(frame, reason)

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "replicas": dict(self.replicas),
            "pids": sorted(self.replica_pids),
            "remote_ms": round(self.remote_time.estimate * 1000, 3),
            "edge_ms": round(self.edge_time.estimate * 1000, 3),
            "cold_starts_ms": [round(s * 1000, 1) for s in self.cold_starts],
            "replicas_running": self.watch.running if self.watch is not None else None,
        }


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
