"""One speaker's speech chains: heard once in their language, said once per other language.

``hear`` (a :class:`PipelineRunner` of the room pipeline's ``hear[language]`` chain)
takes the speaker's audio; every frame it puts out (transcripts, and whatever a chain
without models passes on) goes to one ``say`` runner per target language present in
the room (``pairs[language->target]``), each with its own copy of the frame and a
deadline from that pair's budget. What a say runner puts out (synthesized speech,
interruptions) goes to ``on_output(target, frame)``. Frames keep the capture time of
the speaker's audio they come from, all the way to the listener's track.

Each runner has its own event bus (``hear_events``, ``say_events[target]``); the room
reads them and re-publishes captions and latency with the speaker's name. A runner
that fails (a stage raising ``max_errors`` times in a row) sets ``failed``; the room
then ends this speaker, never the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from ..engine import PipelineRunner
from ..events import EventBus
from ..frames import ControlFrame, ControlKind, Frame, derived
from ..stage import StageRegistry
from .config import RoomPipelineConfig

log = logging.getLogger(__name__)

OutputListener = Callable[[str, Frame], None]
EventsListener = Callable[[str | None, dict[str, Any]], None]


class _HearSink:
    """The end of the hear chain: each frame, copied, to every say runner."""

    def __init__(self, chains: SpeakerChains) -> None:
        self.chains = chains

    def deliver(self, frame: Frame) -> None:
        if isinstance(frame, ControlFrame):
            return  # speech start/end of the speaker are theirs; a pair's chain starts from text (or media)
        self.chains.forward(frame)


class _SaySink:
    def __init__(self, target: str, listener: OutputListener) -> None:
        self.target = target
        self.listener = listener

    def deliver(self, frame: Frame) -> None:
        self.listener(self.target, frame)


class SpeakerChains:
    """The runners of one speaker; built from the room pipeline, started and stopped as targets come and go."""

    def __init__(
        self,
        config: RoomPipelineConfig,
        language: str,
        registry: StageRegistry,
        on_output: OutputListener,
        on_event: EventsListener,
        *,
        resources: Any = None,
        region: str | None = None,
        params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.language = language
        self.registry = registry
        self.resources = resources
        self.region = region
        self.params = dict(params or {})
        self.on_output = on_output
        self.on_event = on_event
        self.hear_events = EventBus()
        self.hear_events.on_event(lambda event: on_event(None, event))
        hear_config = config.hear_pipeline(language, registry)
        self.hear = PipelineRunner(
            hear_config,
            registry,
            _HearSink(self),
            events=self.hear_events,
            params=self._params_for(hear_config.stage_names()),
            resources=resources,
            region=region,
            on_fatal=lambda reason: None,  # the participant's watchdog reads `failed`
        )
        self.says: dict[str, PipelineRunner] = {}
        self.say_events: dict[str, EventBus] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    def _params_for(self, stage_names: list[str]) -> dict[str, Any]:
        return {name: dict(values) for name, values in self.params.items() if name in stage_names}

    @property
    def failed(self) -> str | None:
        """Why a chain of this speaker failed, or None."""
        for runner in (self.hear, *self.says.values()):
            if runner.failed is not None:
                return runner.failed
        return None

    @property
    def runners(self) -> list[PipelineRunner]:
        return [self.hear, *self.says.values()]

    async def start(self, targets: list[str]) -> None:
        """Start hearing (model loading), then a say chain for each of ``targets``."""
        await self.hear.start()
        for target in targets:
            await self.add_target(target)

    async def add_target(self, target: str) -> None:
        """Translate into ``target`` from now on (a participant of that language came)."""
        if self._stopped or target == self.language or target in self.says:
            return
        if target in self._starting:
            await asyncio.shield(self._starting[target])
            return
        task = asyncio.ensure_future(self._start_say(target))
        self._starting[target] = task
        try:
            await asyncio.shield(task)
        finally:
            self._starting.pop(target, None)

    async def _start_say(self, target: str) -> None:
        pair_config = self.config.pair_pipeline(self.language, target, self.registry)
        events = EventBus()
        events.on_event(lambda event: self.on_event(target, event))
        runner = PipelineRunner(
            pair_config,
            self.registry,
            _SaySink(target, self.on_output),
            events=events,
            params=self._params_for(pair_config.stage_names()),
            resources=self.resources,
            region=self.region,
            on_fatal=lambda reason: None,
        )
        await runner.start()
        if self._stopped:
            await runner.stop()
            return
        self.says[target] = runner
        self.say_events[target] = events

    async def remove_target(self, target: str) -> None:
        """Nobody of ``target`` is left: stop translating into it (frees its stages)."""
        runner = self.says.pop(target, None)
        self.say_events.pop(target, None)
        if runner is not None:
            await runner.stop()

    def submit(self, frame: Frame) -> None:
        """The speaker's audio (or a control frame) into the hear chain."""
        self.hear.submit(frame)

    def forward(self, frame: Frame) -> None:
        """A frame the hear chain made, to every say chain: a copy each, deadline from the pair's budget."""
        for target, runner in list(self.says.items()):
            copy = derived(frame)
            if math.isfinite(frame.deadline) or frame.is_media:
                copy.deadline = frame.capture_time + self.config.pair_budget_s(self.language, target)
            runner.submit(copy)

    def control(self, kind: ControlKind, data: dict[str, Any] | None = None) -> None:
        """A control frame to every runner of this speaker; PARAMS (``{stage: {field: value}}``) to the
        runners holding those stages only."""
        for runner in self.runners:
            if kind is ControlKind.PARAMS:
                names = set(runner.config.stage_names())
                part = {stage: fields for stage, fields in (data or {}).items() if stage in names}
                if part:
                    runner.control(kind, part)
            else:
                runner.control(kind, data)

    async def stop(self) -> None:
        """Stop every runner and free its stages (also those still starting)."""
        self._stopped = True
        for task in list(self._starting.values()):
            task.cancel()
        runners = self.runners
        self.says.clear()
        for runner in runners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.stop(), 5)

    def stage_stats(self) -> dict[str, Any]:
        """Drops by stage and reason of every runner (stage names prefixed by the chain)."""
        out: dict[str, Any] = {}
        for name, runner in (("hear", self.hear), *((f"say.{t}", r) for t, r in self.says.items())):
            drops = runner.stats.drops()
            if drops:
                out[name] = drops
        return out
