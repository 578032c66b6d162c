"""``placed-delay``: a video delay whose service time depends on where it runs; a test tool for placement.

It runs "at the edge" in the process whose pid is ``edge_pid`` (the node's) and "in a
replica" anywhere else (a Ray Serve replica). At the edge it takes ``edge_ms`` for its
first ``edge_slow_after`` frames and ``edge_slow_ms`` after them; in a replica it takes
``remote_ms``. So "the edge is too slow" or "the replica is fast" is true by
construction, whatever the machine. Each frame it emits carries ``meta["ran_at"]``
(``edge`` or ``replica``) and ``meta["pid"]``. Not in ``streamai.stages``: tests
register it by hand.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel, ConfigDict, Field

from ..frames import Frame, FrameKind, VideoFrame, derived
from ..stage import Stage, StageContext, stage


class PlacedDelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edge_pid: int = Field(ge=0)
    edge_ms: float = Field(10.0, ge=0, le=60_000)
    edge_slow_ms: float | None = Field(None, ge=0, le=60_000)  # after edge_slow_after frames at the edge
    edge_slow_after: int = Field(0, ge=0)
    remote_ms: float = Field(10.0, ge=0, le=60_000)


@stage("placed-delay")
class PlacedDelay(Stage):
    """Holds each video frame for a time set per place (edge process or replica) and marks where it ran."""

    consumes = frozenset({FrameKind.VIDEO})
    emits = consumes
    Params = PlacedDelayParams

    def __init__(self, params: BaseModel, context: StageContext) -> None:
        super().__init__(params, context)
        self.served = 0

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, VideoFrame)
        params: PlacedDelayParams = self.params  # type: ignore[assignment]
        at_edge = os.getpid() == params.edge_pid
        if not at_edge:
            ms = params.remote_ms
        elif params.edge_slow_ms is not None and self.served >= params.edge_slow_after:
            ms = params.edge_slow_ms
        else:
            ms = params.edge_ms
        self.served += 1
        await asyncio.sleep(ms / 1000)
        ran_at = "edge" if at_edge else "replica"
        await self.push(derived(frame, meta={**frame.meta, "ran_at": ran_at, "pid": os.getpid()}))
