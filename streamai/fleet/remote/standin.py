"""``RemoteStage``: the stand-in a session's pipeline holds for a ``remote``/``auto`` stage.

Per frame: ``Placement`` says edge copy or Serve; while a scale-to-zero deployment has
no replica, ``ColdStart`` wakes it and the frame is served at the edge or dropped
``cold_start``; otherwise the frame goes to the replica. Frame stages keep up to
``MAX_IN_FLIGHT`` calls in flight (a frame beyond is dropped ``remote_busy`` rather
than queued); stream stages (audio into ASR) send every frame, one at a time, in order.

Deadlines travel with the frame relative to the send moment. A call is abandoned at
the last moment its result could still reach the output in time (``remote_timeout``;
``remote_error`` when the replica died under it); results that come back after a newer
frame are dropped ``remote_stale``. The stand-in reports each served frame's real
service time to the engine (the remote round trip, or the edge time), so the engine's
admission here and in the stages before it counts the remote time. Failed calls are
drops, not service times; edge probes of ``auto`` measure the edge only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from ...config import RemoteConfig, StageConfig
from ...frames import ControlFrame, Frame, now
from ...stage import Stage, StageContext
from .coldstart import ColdStart
from .placement import Placement, Where
from .serve import ReplicaWatch
from .wire import RemoteCall, RemoteResult, shift

if TYPE_CHECKING:
    from .serve import RayServeStageFactory

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # calls in flight per frame stage and session
STREAM_MIN_TIMEOUT_S = 1.0  # a stream stage's call is never abandoned sooner


class RemoteStage(Stage):
    """The local stand-in of a remote (or ``auto``) stage; see the module docstring for the rules."""

    wrapped: ClassVar[type[Stage]] = Stage
    reports_service_time: ClassVar[bool] = True

    def __init__(
        self, params: BaseModel, context: StageContext, *, factory: RayServeStageFactory, config: StageConfig
    ) -> None:
        super().__init__(params, context)
        self.factory = factory
        self.config = config
        remote = config.remote or RemoteConfig()
        self.fallback = remote.fallback
        self.placement = Placement(config.placement, remote.fallback, prior_s=(config.expected_ms or 0.0) / 1000)
        self.scale_to_zero = remote.autoscaling.min_replicas == 0
        self.watch: ReplicaWatch | None = None  # scale to zero: the deployment's replica count
        self.key = uuid.uuid4().hex  # this session's stage in the replicas
        self.params_dict = params.model_dump()
        self.handle: Any = None
        self.local: Stage | None = None  # the edge copy: auto, fallback edge
        self._local_lock = asyncio.Lock()
        # one counter for this stand-in's events: remote_ok, edge, fallback_edge, cold_frames,
        # cold_start_failed, call_timeout, call_error (drops are the engine's, counted once there)
        self.counts: Counter[str] = Counter()
        self.cold_start = ColdStart(
            context.name,
            self._wake_call,
            self.emit_event,
            self.counts,
            on_warm=self._warmed,
            start_fields={"fallback": self.fallback},
        )
        self.replicas: Counter[str] = Counter()  # results per replica id
        self.replica_pids: set[int] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_pushed = float("-inf")
        self._stream = self.admission == "stream"

    @property
    def edge_capable(self) -> bool:
        return self.placement.edge_capable

    @property
    def cold_starts(self) -> list[float]:
        """Measured cold starts of this session, seconds from the first frame to warm."""
        return self.cold_start.seconds

    @property
    def last_wake(self) -> dict[str, Any]:
        return self.cold_start.last

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self.factory.attach(self)
        if self.placement.auto:
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
                local.bind(self.push, self.drop, self.downstream_estimate)
                await local.start()
                self.local = local
            return self.local

    async def stop(self) -> None:
        if self.watch is not None:
            self.factory.unwatch(self.watch, self)
        self.cold_start.cancel()
        for task in list(self._in_flight):
            task.cancel()
        if self.handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._await(self.handle.close.remote(self.key)), 2.0)
        if self.local is not None:
            await self.local.shutdown()
        self.factory.detach(self)

    # -- frames ----------------------------------------------------------------------
    async def process(self, frame: Frame) -> None:
        where = self.placement.choose(now(), frame.deadline, self.downstream_estimate(), self.handle is not None)
        if where is not Where.REMOTE:
            await self._run_edge(frame, report=where is Where.EDGE)
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
        # the engine admitted the frame against the measured round trip: send it, keep taking frames
        task = asyncio.create_task(self._call(frame), name=f"remote:{self.context.name}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _run_edge(self, frame: Frame, report: bool = True) -> None:
        local = await self._start_local()
        started = now()
        await local.process(frame)
        elapsed = now() - started
        self.placement.edge_served(elapsed)
        self.counts["edge"] += 1
        if report:
            self.report_service_time(elapsed)

    async def _call(self, frame: Frame) -> None:
        sent = now()
        remaining = frame.deadline - sent - self.downstream_estimate()
        timeout = max(remaining, STREAM_MIN_TIMEOUT_S) if self._stream else remaining
        timeout = min(timeout, self.factory.call_timeout_s)
        if timeout <= 0:
            self.drop(frame, "remote_would_miss")
            return
        call = RemoteCall(self.key, self.params_dict, shift(frame, -sent), self.downstream_estimate())
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
        self.report_service_time(now() - sent)  # the real round trip: what the engine admits frames against
        self.counts["remote_ok"] += 1
        self._note_replica(result)
        for event in result.events:
            fields = {k: v for k, v in event.items() if k not in ("type", "t")}
            self.context.events.emit(event.get("type", "event"), **fields)
        for reason in result.drops:
            self.drop(frame, reason)
        for out in result.frames:
            out = shift(out, sent)
            if not self._stream and out.capture_time < self._last_pushed:
                self.drop(out, "remote_stale")  # a later frame already came back first
                continue
            self._last_pushed = max(self._last_pushed, out.capture_time)
            await self.push(out)

    async def _failed(self, frame: Frame, reason: str, exc: BaseException | None) -> None:
        if reason == "remote_timeout" and self.cold:
            await self._while_cold(frame)  # the call waited for a replica that is not there (scaled to zero)
            return
        at = now()
        self.placement.remote_failed(at)
        event = reason.replace("remote_", "call_")
        self.counts[event] += 1
        if self.counts[event] in (1, 10) or self.counts[event] % 100 == 0:
            log.warning("remote stage %s: %s (%d so far): %s", self.context.name, reason, self.counts[event], exc)
        if self.placement.can_fall_back(at, frame.deadline, self.downstream_estimate()):
            await self._run_edge(frame)  # fallback: edge
            return
        self.drop(frame, reason)

    # -- scale to zero -----------------------------------------------------------------
    @property
    def cold(self) -> bool:
        """A scale-to-zero deployment with no replica running, or this stand-in is waking it."""
        return self.watch is not None and (self.cold_start.waking or self.watch.cold)

    async def _while_cold(self, frame: Frame) -> None:
        """A frame while no replica runs: start waking it; serve the frame at the edge or drop it."""
        if self.handle is not None:
            self.cold_start.begin()
        at_edge = self.placement.can_fall_back(now(), frame.deadline, self.downstream_estimate())
        self.cold_start.frame_arrived(served_at_edge=at_edge)
        if at_edge:
            await self._run_edge(frame)
            return
        self.drop(frame, "cold_start")

    async def _wake_call(self) -> dict[str, Any]:
        """One call that makes Serve start a replica and the replica start this session's stage."""
        return await self._await(self.handle.wake.remote(self.key, self.params_dict))

    def _warmed(self) -> None:
        if self.watch is not None:
            self.watch.warmed()

    async def warm_up(self) -> float | None:
        """Cold-start the deployment now if no replica runs, and wait; returns the cold start in seconds."""
        if not self.cold or self.handle is None:
            return None
        return await self.cold_start.wait()

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
            await self.push(shift(out, now()))

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    async def _await(response: Any) -> Any:
        return await response

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "replicas": dict(self.replicas),
            "pids": sorted(self.replica_pids),
            "edge_ms": round(self.placement.edge_time.estimate * 1000, 3),
            "cold_starts_ms": [round(s * 1000, 1) for s in self.cold_start.seconds],
            "replicas_running": self.watch.running if self.watch is not None else None,
        }


_STANDINS: dict[type[Stage], type[RemoteStage]] = {}


def standin_class(cls: type[Stage]) -> type[RemoteStage]:
    """A stand-in class with the wrapped class's kinds, params and admission."""
    if cls not in _STANDINS:
        attrs = {
            "type_name": cls.type_name,
            "consumes": cls.consumes,
            "emits": cls.emits,
            "Params": cls.Params,
            "admission": cls.admission,
            "live_params": cls.live_params,  # accepted here, forwarded to the replica's on_control
            "client_settable": cls.client_settable,
            "wrapped": cls,
            "__doc__": f"Ray Serve stand-in for {cls.__name__}.",
        }
        _STANDINS[cls] = type(f"Remote{cls.__name__}", (RemoteStage,), attrs)
    return _STANDINS[cls]


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
