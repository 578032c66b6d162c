"""Runs a pipeline: stages linked by policy queues, deadline admission, stats, isolation.

The engine knows frames, stages and queues; it imports no stage and no transport.
Input enters with ``submit`` (the transport stamps capture time; the engine sets the
deadline), output leaves through a ``Sink``. A stage that keeps raising ends the run
with an error event, never the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from ..config import PipelineConfig, StageConfig, stage_name
from ..events import EventBus
from ..frames import ControlFrame, ControlKind, Frame, FrameKind, now
from ..stage import Stage, StageContext, StageRegistry
from .estimator import ServiceTimeEstimator
from .ladder import LadderStep, QualityLadder
from .live_params import LiveParamsError, merged_params, plan_live_params
from .queues import StageQueue
from .stats import PipelineStats, StageStats

log = logging.getLogger(__name__)

SEND_COST_S = 0.002  # fixed allowance for handing a frame to the transport
PROBE_AFTER_S = 1.0  # a stage that refused every frame this long admits one, so a stale estimate can recover
MAX_PENDING_PARAMS = 16  # accepted params messages not yet taken by every stage (a stuck stage holds them)
# Control frames later stages see at once, ahead of their queues (Stage.on_urgent), besides in order.
URGENT_CONTROLS = frozenset({ControlKind.INTERRUPTION, ControlKind.SPEECH_START})


class Sink(Protocol):
    """Where finished frames go (an outbound track, a file writer, a test list)."""

    def deliver(self, frame: Frame) -> None: ...


class CollectingSink:
    """A sink that keeps every delivered frame with its delivery time (offline runs, tests)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, Frame]] = []

    def deliver(self, frame: Frame) -> None:
        self.frames.append((now(), frame))

    def of_kind(self, kind: FrameKind) -> list[Frame]:
        return [f for _, f in self.frames if f.kind is kind]


class RemoteStageFactory(Protocol):
    """Builds the stand-in for a stage placed off this node (see ``streamai.fleet``)."""

    def build(self, cls: type[Stage], params: BaseModel, context: StageContext, config: StageConfig) -> Stage: ...


class ParamsError(ValueError):
    """Per-session parameters that do not fit the pipeline's stages."""


class PipelineStartError(RuntimeError):
    """A stage failed to start (a missing model, a bad device)."""


class StageRunner:
    """One stage at work: its queue, its worker task, its stats and service-time estimate."""

    def __init__(
        self,
        stage: Stage,
        config: StageConfig,
        pipeline: PipelineRunner,
        budget_s: float,
        levels: list[BaseModel] | None = None,
    ) -> None:
        self.stage = stage
        self.config = config
        self.name = stage.context.name
        self.pipeline = pipeline
        self.admission = config.admission or stage.admission
        self.budget_s = config.budget_ms / 1000 if config.budget_ms else None
        self.stats = StageStats(self.name)
        prior_s = (config.expected_ms or 0.0) / 1000
        self.ladder: QualityLadder | None = None
        if levels and len(levels) > 1:  # ``degrade:`` in YAML: step down before dropping
            self.ladder = QualityLadder(
                levels, [{}, *config.degrade], prior_s=prior_s, budget_s=self.budget_s or budget_s
            )
            stage.ladder_params = list(levels)
        self._estimator = ServiceTimeEstimator(prior_s=prior_s)
        policy = config.queue or ("latest" if FrameKind.VIDEO in stage.consumes else "fifo")
        self.queue = StageQueue(policy, config.queue_size, self.drop)
        self.downstream: list[StageRunner] = []
        self.next: Callable[[Frame], None] = pipeline.deliver
        self.consecutive_errors = 0
        self.refusing_since: float | None = None
        self.task: asyncio.Task[None] | None = None
        stage.bind(
            self.emit,
            self.drop,
            self.downstream_estimate,
            service=self.observe_service,
            histogram=self.stats.histograms.__getitem__,
        )

    @property
    def estimator(self) -> ServiceTimeEstimator:
        """The service-time estimate at the stage's current quality level."""
        return self.ladder.estimator if self.ladder is not None else self._estimator

    def expected_s(self) -> float:
        """Seconds the next frame is expected to spend in this stage (estimate + one-off pending work)."""
        return self.estimator.estimate + self.stage.pending_cost_s()

    def drop(self, frame: Frame, reason: str) -> None:
        self.stats.drops[reason] += 1
        self.pipeline.note_drop(self.name, frame, reason)

    def observe_service(self, seconds: float) -> None:
        """One frame's service time: into the stats and the estimate that admission (here and upstream) uses."""
        self.stats.service.observe(seconds)
        self.estimator.update(seconds)

    def downstream_estimate(self) -> float:
        return sum(r.expected_s() for r in self.downstream) + SEND_COST_S

    def remaining(self) -> float:
        """Service time still ahead of a frame admitted here, to the end of the pipeline."""
        return self.expected_s() + self.downstream_estimate()

    async def emit(self, frame: Frame) -> None:
        self.stats.emitted += 1
        if isinstance(frame, ControlFrame) and frame.control in URGENT_CONTROLS:
            self.pipeline.urgent(frame, self.downstream)
        self.next(frame)

    def receive(self, frame: Frame) -> None:
        """Queue ``frame`` for the stage; media of a kind the stage never touches passes at once.

        Audio through a video stage (the transform pipeline's invert) must not wait behind the
        frame the stage is working on: it would arrive late, or overflow the queue, for nothing.
        Order is kept within a kind; control frames always queue, in order with what the stage consumes.
        """
        if frame.is_media and frame.kind not in self.stage.consumes:
            self.stats.forwarded += 1
            self.next(frame)
            return
        self.queue.put(frame, now())

    async def run(self) -> None:
        stage, stats = self.stage, self.stats
        while True:
            frame, arrived = await self.queue.get()
            started = now()
            stats.queue_wait.observe(started - arrived)
            if isinstance(frame, ControlFrame):
                await self._control(frame)
                continue
            if frame.kind not in stage.consumes:
                stats.forwarded += 1
                self.next(frame)
                continue
            if self.admission == "frame" and not self._admit(frame, started):
                continue
            try:
                await stage.process(frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad frame never ends the loop
                self._failed_frame(frame, exc)
                continue
            self.consecutive_errors = 0
            stats.processed += 1
            if not stage.reports_service_time:
                self.observe_service(now() - started)
            if self.ladder is not None:
                self.ladder.processed()
                stats.level_frames[self.ladder.level] += 1

    def _admit(self, frame: Frame, at: float) -> bool:
        deadline = frame.deadline
        if self.budget_s is not None:
            deadline = min(deadline, frame.capture_time + self.budget_s)
        if math.isinf(deadline):
            return True
        if at > deadline:
            self.drop(frame, "expired")
            return False
        ladder = self.ladder
        if at + self.remaining() > deadline:
            slack = deadline - at - self.downstream_estimate() - self.stage.pending_cost_s()
            step = ladder.down(at, slack) if ladder is not None else None
            if step is not None:  # a cheaper level makes it: step down instead of dropping
                self._stepped(step)
                self.refusing_since = None
                return True
            if self.refusing_since is None:
                self.refusing_since = at
            elif at - self.refusing_since >= PROBE_AFTER_S:
                self.refusing_since = None  # probe: one slow outlier must not refuse every frame forever
                self.estimator.forget()
                return True
            self.drop(frame, "would_miss")
            return False
        self.refusing_since = None
        if ladder is not None:
            slack = deadline - at - self.downstream_estimate() - self.stage.pending_cost_s()
            step = ladder.up(at, slack)
            if step is not None:
                self._stepped(step)
        return True

    def _stepped(self, step: LadderStep) -> None:
        """Apply a quality step to the stage, count it and tell the session."""
        assert self.ladder is not None
        self.stage.set_params(self.ladder.params)
        self.stats.degrade_steps[step.direction] += 1
        self.stats.level = step.level
        log.info("stage %s quality %s to level %d %s", self.name, step.direction, step.level, step.params)
        self.pipeline.events.emit(
            "degrade",
            stage=self.name,
            direction=step.direction,
            level=step.level,
            levels=len(self.ladder.levels),
            params=step.params,
            estimate_ms=step.estimate_ms,
            slack_ms=step.slack_ms,
            retry=step.retry,
        )

    async def _control(self, frame: ControlFrame) -> None:
        if frame.control is ControlKind.PARAMS:
            await self._apply_params(frame)
        try:
            await self.stage.on_control(frame)
        except Exception as exc:
            log.warning("stage %s failed on control %s: %s", self.name, frame.control.value, exc)
            self.pipeline.events.emit("warning", stage=self.name, message=f"control {frame.control.value}: {exc}")
        self.next(frame)

    async def _apply_params(self, frame: ControlFrame) -> None:
        """This stage's part of an accepted ``params`` message, re-validated against its params now."""
        changes = self.pipeline.take_live_params(frame.seq, self.name)
        if not changes:
            return
        try:
            await self.stage.apply_params(merged_params(self.stage, changes))
        except (ValueError, ValidationError) as exc:
            self.pipeline.events.emit("error", code="bad_params", message=f"stage {self.name!r}: {exc}", fatal=False)
            return
        self.pipeline.events.emit("params", stage=self.name, changed=changes)

    def _failed_frame(self, frame: Frame, exc: Exception) -> None:
        self.stats.errors += 1
        self.consecutive_errors += 1
        self.drop(frame, "error")
        errors = self.stats.errors
        if errors & (errors - 1) == 0:  # 1st, 2nd, 4th, 8th... error: the log stays readable
            log.warning("stage %s raised on a frame (%d so far): %s: %s", self.name, errors, type(exc).__name__, exc)
        if self.consecutive_errors >= self.config.max_errors:
            self.pipeline.fail(f"stage {self.name!r} raised {self.consecutive_errors} times in a row: {exc}")


class PipelineRunner:
    """A running pipeline for one session (or one offline run)."""

    def __init__(
        self,
        config: PipelineConfig,
        registry: StageRegistry,
        sink: Sink,
        *,
        events: EventBus | None = None,
        params: dict[str, Any] | None = None,
        resources: Any = None,
        region: str | None = None,
        remote: RemoteStageFactory | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.events = events or EventBus()
        self.budget_s = config.budget_ms / 1000
        self.stats = PipelineStats()
        self.failed: str | None = None
        self._on_fatal = on_fatal
        self._started = False
        self._stopped = False
        self._live_params: dict[int, dict[str, dict[str, Any]]] = {}  # PARAMS frame seq -> stage -> changes
        self._delivered_urgently: deque[int] = deque(maxlen=64)  # seqs of interruptions the sink already has
        self.branches: dict[str, list[StageRunner]] = {}
        overrides = dict(params or {})
        used_flat: set[str] = set()
        for branch, chain in config.chains().items():
            runners: list[StageRunner] = []
            for index, stage_config in enumerate(chain):
                name = stage_name(stage_config, index, branch)
                cls = registry.get(stage_config.type)
                stage_params = _stage_params(cls, stage_config, name, overrides, used_flat)
                model = (config.region_models.get(region or "", {})).get(name, stage_config.model)
                context = StageContext(
                    name=name,
                    device=stage_config.device,
                    model=model,
                    events=self.events,
                    resources=resources,
                    region=region,
                )
                levels = _levels(cls, stage_config, stage_params, name)
                if stage_config.placement == "edge":
                    instance = cls(stage_params, context)
                elif remote is None:
                    raise PipelineStartError(
                        f"stage {name!r} has placement {stage_config.placement!r} but this node has no remote "
                        "stage engine configured (see 'Running a fleet' in the README)"
                    )
                else:
                    instance = remote.build(cls, stage_params, context, stage_config)
                runner = StageRunner(instance, stage_config, self, self.budget_s, levels)
                self.stats.stages[name] = runner.stats
                runners.append(runner)
            for position, runner in enumerate(runners):
                runner.downstream = runners[position + 1 :]
                if position + 1 < len(runners):
                    runner.next = runners[position + 1].receive
            self.branches[branch] = runners
        unknown = (set(overrides) - {"_flat"}) | (set(overrides.get("_flat", {})) - used_flat)
        if unknown:
            raise ParamsError(f"params fit no stage of pipeline {config.name!r}: {', '.join(sorted(unknown))}")
        self._routes = self._route_table()

    def _route_table(self) -> dict[FrameKind, list[StageRunner]]:
        """Media kind -> the head of each branch that handles it (default: the first branch).

        Branches whose first stage consumes the kind win; only when none does, a branch
        with any stage consuming it (a generic stage deep in the video branch must not
        pull in, and duplicate, the audio).
        """
        routes: dict[FrameKind, list[StageRunner]] = {}
        first = next(iter(self.branches.values()))[0]
        for kind in (FrameKind.AUDIO, FrameKind.VIDEO, FrameKind.TEXT):
            heads = [chain[0] for chain in self.branches.values() if kind in chain[0].stage.consumes]
            heads = heads or [c[0] for c in self.branches.values() if any(kind in r.stage.consumes for r in c)]
            routes[kind] = heads or [first]
        return routes

    @property
    def stage_runners(self) -> list[StageRunner]:
        return [r for chain in self.branches.values() for r in chain]

    async def start(self) -> None:
        """Start every stage (model loading), then the workers."""
        started: list[StageRunner] = []
        try:
            for runner in self.stage_runners:
                await runner.stage.start()
                started.append(runner)
        except Exception as exc:
            for runner in started:
                with contextlib.suppress(Exception):
                    await runner.stage.shutdown()
            raise PipelineStartError(f"stage {runner.name!r} failed to start: {exc}") from exc
        for runner in self.stage_runners:
            runner.task = asyncio.create_task(runner.run(), name=f"stage:{runner.name}")
        self._started = True

    def submit(self, frame: Frame) -> None:
        """Feed one frame from the transport; media frames get their deadline here."""
        if self.failed is not None or self._stopped:
            return
        if frame.is_media and math.isinf(frame.deadline):
            frame.deadline = frame.capture_time + self.budget_s
        self.stats.frames_in[frame.kind.value] += 1
        if isinstance(frame, ControlFrame):
            if frame.control in URGENT_CONTROLS:
                for chain in self.branches.values():
                    self.urgent(frame, chain)
            for runner in self.stage_runners:  # slow preparation (prompt embeddings) starts now, off the frame path
                try:
                    runner.stage.prepare_control(frame)
                except Exception as exc:
                    log.warning("stage %s failed to prepare %s: %s", runner.name, frame.control.value, exc)
            for chain in self.branches.values():
                chain[0].receive(frame)
            return
        for head in self._routes[frame.kind]:
            head.receive(frame)

    def control(self, kind: ControlKind, data: dict[str, Any] | None = None) -> None:
        """Send a control frame (prompt, interruption, params) down every branch.

        PARAMS is checked first against the stages' ``live_params``: a refused message
        becomes an ``error`` event (code ``bad_params``) and goes no further.
        """
        frame = ControlFrame(control=kind, data=dict(data or {}))
        if self._stopped:  # a session's late control message must not pile up in a stopped pipeline
            return
        if kind is ControlKind.PARAMS and len(self._live_params) >= MAX_PENDING_PARAMS:
            self.events.emit("error", code="rate_limited", message="too many params changes waiting; slow down",
                             fatal=False)  # fmt: skip
            return
        if kind is ControlKind.PARAMS:
            stages = {r.name: r.stage for r in self.stage_runners}
            try:
                self._live_params[frame.seq] = plan_live_params(frame.data, stages)
            except LiveParamsError as exc:
                self.events.emit("error", code="bad_params", message=str(exc), fatal=False)
                return
        self.submit(frame)

    def take_live_params(self, seq: int, stage: str) -> dict[str, Any] | None:
        """The changes an accepted PARAMS frame brings to ``stage`` (each stage takes its own once)."""
        pending = self._live_params.get(seq)
        if pending is None:
            return None
        changes = pending.pop(stage, None)
        if not pending:
            del self._live_params[seq]
        return changes

    def urgent(self, frame: ControlFrame, runners: list[StageRunner]) -> None:
        """Show an urgent control frame to ``runners`` at once, ahead of their queues (``Stage.on_urgent``).

        An INTERRUPTION also reaches the sink at once (the transport flushes its queued
        audio); its in-band copy, arriving later in order, is then not delivered again.
        A stage's answer (an INTERRUPTION of its own) goes on the same way from its place.
        """
        for index, runner in enumerate(runners):
            try:
                answer = runner.stage.on_urgent(frame)
            except Exception as exc:
                log.warning("stage %s failed on urgent %s: %s", runner.name, frame.control.value, exc)
                continue
            if answer is not None:
                runner.stats.emitted += 1
                self.urgent(answer, runners[index + 1 :])
                runner.next(answer)
        if frame.control is ControlKind.INTERRUPTION and frame.seq not in self._delivered_urgently:
            self._delivered_urgently.append(frame.seq)
            self.stats.frames_out[frame.kind.value] += 1
            self.sink.deliver(frame)

    def deliver(self, frame: Frame) -> None:
        """The end of a branch: late media never leaves; everything else goes to the sink."""
        if isinstance(frame, ControlFrame) and frame.seq in self._delivered_urgently:
            return  # an interruption the sink already had, ahead of the queues
        at = now()
        late = frame.is_media and at > frame.deadline
        if late and not (frame.kind is FrameKind.AUDIO and self.config.late_audio == "play"):
            self.output_drop(frame, "late")
            return
        if frame.is_media:
            self.stats.end_to_end.observe(at - frame.capture_time)
        self.stats.frames_out[frame.kind.value] += 1
        self.sink.deliver(frame)

    def output_drop(self, frame: Frame, reason: str) -> None:
        """Count a frame given up at the pipeline's output (or by the transport after it)."""
        self.note_drop("output", frame, reason)
        self.stats.stages.setdefault("output", StageStats("output")).drops[reason] += 1

    def note_drop(self, stage: str, frame: Frame, reason: str) -> None:
        """Hook for drop accounting beyond the per-stage counters (events are rate-limited by the transport)."""

    def fail(self, reason: str) -> None:
        if self.failed is not None:
            return
        self.failed = reason
        log.error("pipeline %s failed: %s", self.config.name, reason)
        self.events.emit("error", message=reason, fatal=True)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop workers and free every stage's resources, even if a stage hangs; later input is ignored."""
        self._stopped = True
        tasks = [r.task for r in self.stage_runners if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for runner in self.stage_runners:
            runner.queue.clear()
            try:
                await asyncio.wait_for(runner.stage.shutdown(), timeout)
            except Exception as exc:  # a stage that fails to stop must not keep others alive
                log.warning("stage %s did not stop cleanly: %s", runner.name, exc)
        self._started = False

    def snapshot(self) -> dict[str, Any]:
        return {"pipeline": self.config.name, "failed": self.failed, **self.stats.snapshot()}


def _stage_params(
    cls: type[Stage], config: StageConfig, name: str, overrides: dict[str, Any], used_flat: set[str]
) -> BaseModel:
    """YAML params, then per-session overrides (``{stage_name: {...}}`` or flat keys), validated."""
    merged = dict(config.params)
    specific = overrides.pop(name, None)
    flat = overrides.get("_flat", {})
    for key, value in flat.items():
        if key in cls.Params.model_fields:
            merged[key] = value
            used_flat.add(key)
    if specific is not None:
        if not isinstance(specific, dict):
            raise ParamsError(f"params for stage {name!r} must be an object")
        merged.update(specific)
    try:
        return cls.Params.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        raise ParamsError(f"stage {name!r}, parameter {field!r}: {first['msg']}") from None


def _levels(cls: type[Stage], config: StageConfig, params: BaseModel, name: str) -> list[BaseModel]:
    """The stage's quality levels: its parameters, then each ``degrade:`` entry applied on top of them."""
    levels = [params]
    base = params.model_dump()
    for index, overrides in enumerate(config.degrade):
        try:
            levels.append(cls.Params.model_validate({**base, **overrides}))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(map(str, first["loc"]))
            where = f"stage {name!r}, degrade level {index + 1}, parameter {field!r}"
            raise ParamsError(f"{where}: {first['msg']}") from None
    return levels


def split_session_params(params: dict[str, Any], stage_names: list[str]) -> dict[str, Any]:
    """Client params: keys naming a stage apply to it; other keys apply to every stage that has them."""
    result: dict[str, Any] = {"_flat": {}}
    for key, value in params.items():
        if key in stage_names:
            result[key] = value
        else:
            result["_flat"][key] = value
    return result
