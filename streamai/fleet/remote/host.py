"""The replica side: ``StageHost``, the body of a Serve deployment, runs one stage class for many sessions."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ...events import EventBus
from ...frames import ControlFrame, Frame, now
from ...stage import Stage, StageContext
from .wire import RemoteCall, RemoteResult, shift

HOSTED_IDLE_S = 120.0  # a replica forgets a session's stage after this long without frames


class HostedStage:
    """One session's instance of the stage inside a replica, with what it produced since the last call."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.outbox: list[Frame] = []
        self.events: list[dict[str, Any]] = []
        self.drops: list[str] = []
        self.downstream_s = 0.0  # told by the node with each call
        self.last_used = time.monotonic()
        stage.bind(self.collect, self.drop, self.downstream)

    async def collect(self, frame: Frame) -> None:
        self.outbox.append(frame)

    def drop(self, frame: Frame, reason: str) -> None:
        self.drops.append(reason)  # counted on the node, against the call's frame

    def downstream(self) -> float:
        return self.downstream_s

    def result(self, replica: str, pid: int, calls: int, received: float) -> RemoteResult:
        """Everything produced since the last call, times made relative to ``received``; empties the boxes."""
        frames = [shift(f, -received) for f in self.outbox]
        result = RemoteResult(frames, self.events, self.drops, replica, pid, now() - received, calls)
        self.outbox, self.events, self.drops = [], [], []
        return result


class StageHost:
    """The body of a Serve deployment: runs one stage class for many sessions (one instance each)."""

    def __init__(self, stage_cls: type[Stage], name: str, device: str, model: str | None, region: str | None) -> None:
        from ...models.shared import SharedModels

        self.stage_cls = stage_cls
        self.name = name
        self.device = device
        self.model = model
        self.region = region
        self.models = SharedModels()  # sessions on this replica share loaded weights
        self.sessions: dict[str, HostedStage] = {}
        self.calls = 0
        self.pid = os.getpid()
        self.replica = replica_id()
        self.started = time.monotonic()
        self._creating = asyncio.Lock()  # one stage instance per session, even for concurrent first calls

    async def _hosted(self, session: str, params: dict[str, Any]) -> HostedStage:
        hosted = self.sessions.get(session)
        if hosted is not None:
            return hosted
        async with self._creating:
            hosted = self.sessions.get(session)
            if hosted is None:
                hosted = await self._create(session, params)
        return hosted

    async def _create(self, session: str, params: dict[str, Any]) -> HostedStage:
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
        hosted = HostedStage(self.stage_cls(self.stage_cls.Params.model_validate(params), context))
        events.on_event(hosted.events.append)
        await hosted.stage.start()
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
        await hosted.stage.process(shift(call.frame, received))
        return hosted.result(self.replica, self.pid, self.calls, received)

    async def control(self, call: RemoteCall) -> RemoteResult:
        received = now()
        hosted = await self._hosted(call.session, call.params)
        assert isinstance(call.frame, ControlFrame)
        await hosted.stage.on_control(call.frame)
        return hosted.result(self.replica, self.pid, self.calls, received)

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


def replica_id() -> str:
    """This Serve replica's id (``local-<pid>`` outside Serve: benchmarks calling the host in-process)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return f"local-{os.getpid()}"
