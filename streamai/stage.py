"""The one interface every processing step implements, and the registry that finds them.

A stage declares the frame kinds it consumes and emits, a pydantic ``Params`` model
for its YAML parameters, ``start()``/``stop()`` to load and free models, and
``process(frame)`` which pushes zero or more frames downstream with ``push``.
Frames of kinds a stage does not consume pass it untouched. Blocking work goes
through ``run_blocking`` onto the stage's own thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from .events import EventBus
from .executor import StageThread
from .frames import ControlFrame, Frame, FrameKind, now

log = logging.getLogger(__name__)

Admission = Literal["frame", "stream"]
T = TypeVar("T")


class NoParams(BaseModel):
    """Parameters of a stage that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StageContext:
    """What a stage may use from its surroundings: never the transport."""

    name: str
    device: str = "cpu"
    model: str | None = None
    events: EventBus = field(default_factory=EventBus)
    resources: Any = None  # shared model loader (streamai.models.SharedModels) when present
    region: str | None = None


class Stage:
    """Base class of every stage; subclasses set the class attributes and override ``process``."""

    type_name: ClassVar[str] = ""
    consumes: ClassVar[frozenset[FrameKind]] = frozenset()
    emits: ClassVar[frozenset[FrameKind]] = frozenset()
    Params: ClassVar[type[BaseModel]] = NoParams
    # "frame": the engine drops a frame that cannot make its deadline before calling
    # process (video, text). "stream": every frame is processed, the stage judges
    # deadlines on what it emits (audio into VAD/ASR must not lose samples).
    admission: ClassVar[Admission] = "frame"
    # Params a pipeline may let clients set (client_params in its YAML): never paths, engines,
    # devices, thread counts or model ids. Empty: clients set nothing on this stage.
    client_settable: ClassVar[frozenset[str]] = frozenset()
    # Params fields a running session may change with the ``params`` control message: the
    # engine validates the merged params with ``Params`` and calls ``apply_params``.
    live_params: ClassVar[frozenset[str]] = frozenset()
    # False: the engine times ``process()`` as the stage's service time. True: the stage
    # finishes frames after ``process()`` returns (a remote call in flight) and reports each
    # frame's real service time with ``report_service_time``.
    reports_service_time: ClassVar[bool] = False

    def __init__(self, params: BaseModel, context: StageContext) -> None:
        self.params = params
        self.context = context
        # the quality levels the engine may switch between (``degrade:`` in YAML), level 0 first;
        # set before ``start()`` so that a stage can warm each one up
        self.ladder_params: list[BaseModel] = []
        self._push: Callable[[Frame], Awaitable[None]] | None = None
        self._drop: Callable[[Frame, str], None] | None = None
        self._downstream: Callable[[], float] | None = None
        self._service: Callable[[float], None] | None = None
        self._histogram: Callable[[str], Any] | None = None
        self._executor: StageThread | None = None

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Load models; called once before the first frame."""

    async def stop(self) -> None:
        """Free models; called once, also after errors."""

    async def shutdown(self) -> None:
        """Engine-side teardown: ``stop()`` then release the stage's thread."""
        try:
            await self.stop()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    # -- processing ----------------------------------------------------------
    async def process(self, frame: Frame) -> None:
        """Handle one consumed frame; call ``await self.push(...)`` for each output."""
        raise NotImplementedError

    async def on_control(self, frame: ControlFrame) -> None:
        """React to a control frame; it is forwarded downstream afterwards regardless."""

    async def apply_params(self, params: BaseModel) -> None:
        """Take new params from a running session (only ``live_params`` fields differ).

        Called in stream order, before ``on_control`` sees the PARAMS frame. Raise
        ``ValueError`` to refuse them (the client gets an ``error`` event; the old
        params stay). The default keeps them as ``self.params``.
        """
        self.params = params

    def on_urgent(self, frame: ControlFrame) -> ControlFrame | None:
        """See an INTERRUPTION or SPEECH_START at once, ahead of the frames queued before it.

        The engine calls this (on the event loop: never block) when the control frame
        enters the pipeline or leaves an earlier stage; the frame itself still arrives
        in order, later, through ``on_control``. Stop output that must stop (barge-in);
        return an INTERRUPTION to have it sent on at once to later stages and the output.
        """
        return None

    def prepare_control(self, frame: ControlFrame) -> None:
        """Called on the event loop the moment a control frame enters the pipeline, before it queues
        behind media: start slow preparation here (e.g. prompt embeddings); must not block.
        ``on_control`` still runs later, in order."""

    def pending_cost_s(self) -> float:
        """Seconds of one-off work (started by ``prepare_control``) the next admitted frame will wait
        for on top of its usual service time; admission counts it."""
        return 0.0

    def set_params(self, params: BaseModel) -> None:
        """Switch to other validated parameters between frames (a quality-ladder step)."""
        self.params = params

    def bind(
        self,
        push: Callable[[Frame], Awaitable[None]],
        drop: Callable[[Frame, str], None] | None = None,
        downstream: Callable[[], float] | None = None,
        service: Callable[[float], None] | None = None,
        histogram: Callable[[str], Any] | None = None,
    ) -> None:
        """Called by the engine: where pushed frames go, where drops are counted, what lies downstream,
        where reported service times go, where the stage's own observations are kept."""
        self._push = push
        self._drop = drop
        self._downstream = downstream
        self._service = service
        self._histogram = histogram

    def observe(self, name: str, seconds: float) -> None:
        """Record a duration the stage measured itself (a histogram in stats and ``/metrics``,
        ``streamai_<name>_seconds``); ``name`` is lower_snake_case."""
        if self._histogram is not None:
            self._histogram(name).observe(seconds)

    def drop(self, frame: Frame, reason: str) -> None:
        """Count a frame this stage gave up on (in the engine's stats, events and metrics)."""
        if self._drop is not None:
            self._drop(frame, reason)

    def report_service_time(self, seconds: float) -> None:
        """For a stage with ``reports_service_time``: one frame's real service time (engine stats, admission)."""
        if self._service is not None:
            self._service(seconds)

    def downstream_estimate(self) -> float:
        """Seconds the stages after this one (and the send) are expected to take."""
        return self._downstream() if self._downstream is not None else 0.0

    def can_make_it(self, frame: Frame) -> bool:
        """For stream stages: would ``frame``, emitted now, reach the output before its deadline?"""
        return now() + self.downstream_estimate() <= frame.deadline

    async def push(self, frame: Frame) -> None:
        """Send a frame to the next stage (or the pipeline's output)."""
        if self._push is None:
            raise RuntimeError(f"stage {self.context.name!r} is not bound to a pipeline")
        await self._push(frame)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this stage's own thread, off the event loop."""
        return await self.submit_blocking(fn, *args)

    def submit_blocking(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` on this stage's own thread now (calls run in order); await the result later."""
        if self._executor is None:
            self._executor = StageThread(f"stage-{self.context.name}")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def emit_event(self, type_: str, **fields: Any) -> None:
        """Publish a JSON event (transcript, translation, ...) to the session's clients."""
        self.context.events.emit(type_, stage=self.context.name, **fields)


S = TypeVar("S", bound=type[Stage])


def stage(type_name: str) -> Callable[[S], S]:
    """Class decorator naming a stage type; discovery finds it by that name."""

    def mark(cls: S) -> S:
        cls.type_name = type_name
        return cls

    return mark


class UnknownStageType(KeyError):
    def __init__(self, type_name: str, known: list[str], broken: dict[str, str] | None = None) -> None:
        super().__init__(type_name)
        self.type_name = type_name
        self.known = known
        self.broken = broken or {}  # stage modules that failed to import: one of them may be this type

    def __str__(self) -> str:
        text = f"unknown stage type {self.type_name!r} (known: {', '.join(self.known)})"
        if self.broken:
            failed = "; ".join(f"{name}: {reason}" for name, reason in sorted(self.broken.items()))
            text += f"; stage modules that failed to import: {failed}"
        return text


class StageRegistry:
    """Finds stage classes: modules of ``streamai.stages`` plus the ``streamai.stages`` entry points.

    Stage modules keep heavy imports (torch, models) inside ``start()`` so that
    discovery stays cheap.
    """

    def __init__(self, packages: tuple[str, ...] = ("streamai.stages",)) -> None:
        self._packages = packages
        self._types: dict[str, type[Stage]] | None = None
        self.import_errors: dict[str, str] = {}

    def _discover(self) -> dict[str, type[Stage]]:
        found: dict[str, type[Stage]] = {}
        for package_name in self._packages:
            package = importlib.import_module(package_name)
            for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
                try:
                    module = importlib.import_module(info.name)
                except Exception as exc:  # a broken plugin must not hide the others
                    self.import_errors[info.name] = f"{type(exc).__name__}: {exc}"
                    log.warning("stage module %s failed to import: %s", info.name, exc)
                    continue
                for value in vars(module).values():
                    if isinstance(value, type) and issubclass(value, Stage) and value.type_name:
                        found.setdefault(value.type_name, value)
        for entry in entry_points(group="streamai.stages"):
            try:
                cls = entry.load()
            except Exception as exc:
                self.import_errors[entry.name] = f"{type(exc).__name__}: {exc}"
                continue
            found.setdefault(cls.type_name or entry.name, cls)
        return found

    @property
    def types(self) -> dict[str, type[Stage]]:
        if self._types is None:
            self._types = self._discover()
        return self._types

    def register(self, cls: type[Stage]) -> None:
        """Add a stage class by hand (tests, embedding applications)."""
        self.types[cls.type_name] = cls

    def get(self, type_name: str) -> type[Stage]:
        try:
            return self.types[type_name]
        except KeyError:
            raise UnknownStageType(type_name, sorted(self.types), self.import_errors) from None
