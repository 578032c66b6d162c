"""``passthrough``: hands every frame on unchanged (engine overhead benchmarks, plumbing)."""

from __future__ import annotations

from ..frames import Frame, FrameKind
from ..stage import Stage, stage


@stage("passthrough")
class Passthrough(Stage):
    consumes = frozenset({FrameKind.AUDIO, FrameKind.VIDEO, FrameKind.TEXT})
    emits = consumes

    async def process(self, frame: Frame) -> None:
        await self.push(frame)
