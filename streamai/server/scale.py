"""Node-level scale to zero: a node with no session for ``unload_models_after_s`` unloads its models.

Models stay loaded between sessions (``SharedModels.keep_released``), so the next
session of a pipeline that ran here lately starts warm. Once the node has had no
session for ``unload_models_after_s`` (0: never), every model no one holds is
unloaded (``SharedModels.unload_idle``): the node is *cold*. Pipelines named in
``--preload`` keep their models: their runners hold them for the node's lifetime.

The node reports its state in every heartbeat (``model_state``, ``idle_s``, and per
pipeline ``warm``) and in ``GET /v1/models``; the router prefers a warm node when the
expected latency is otherwise equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..frames import now
from ..models.shared import SharedModels
from .sessions import SessionManager
from .settings import ServerSettings

log = logging.getLogger(__name__)


class NodeScaler:
    """Watches the node's sessions; unloads its models after the idle time; says what is warm."""

    def __init__(self, settings: ServerSettings, models: SharedModels, manager: SessionManager) -> None:
        self.settings = settings
        self.models = models
        self.manager = manager
        self.after_s = self.settings.unload_models_after_s
        self.idle_since: float | None = now()
        self.unloaded_at = 0.0  # wall clock of the last unload (sessions' ``created`` compare to it)
        self.unloads = 0
        self._seen: tuple[int, int] = (0, 0)  # sessions created/closed at the last check
        self.unloaded: list[str] = []  # model keys of the last unload
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        """``warm`` while any model is loaded, else ``cold``."""
        return "warm" if self.models.loaded() else "cold"

    def idle_s(self, at: float | None = None) -> float:
        """Seconds since the node's last session ended (0 while one is open)."""
        return 0.0 if self.idle_since is None else (now() if at is None else at) - self.idle_since

    def warm_pipelines(self) -> set[str]:
        """Pipelines a new session would find with their models loaded."""
        self._note_sessions()
        warm = {s.pipeline for s in self.manager.sessions.values()} | set(self.settings.preload)
        if self.models.keep_released and self.models.idle_timeout_s == 0:  # released models stay loaded
            warm |= {s.pipeline for s in self.manager.history.recent if s.created >= self.unloaded_at}
        return warm

    def _note_sessions(self) -> None:
        seen = (self.manager.totals["created"], self.manager.totals["closed"])
        if self.manager.active:
            self.idle_since = None
        elif self.idle_since is None or seen != self._seen:
            self.idle_since = now()  # a session came and went since the last check
        self._seen = seen

    def tick(self, at: float | None = None) -> list[str]:
        """One check: unload when the node has been idle long enough; returns the unloaded keys."""
        self._note_sessions()
        if self.after_s <= 0 or self.idle_since is None or self.idle_s(at) < self.after_s:
            return []
        unloaded = self.models.unload_idle()
        if unloaded:
            self.unloaded_at = time.time()
            self.unloads += 1
            self.unloaded = unloaded
            log.info("no session for %.0f s: unloaded %d model(s): %s", self.idle_s(at), len(unloaded), unloaded)
        return unloaded

    def report(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "idle_s": round(self.idle_s(), 1),
            "unload_models_after_s": self.after_s,
            "unloads": self.unloads,
            "last_unloaded": self.unloaded,
        }

    def collect(self) -> Iterator[Metric]:
        """Warm or cold, and how often it unloaded (prometheus_client collector protocol)."""
        yield GaugeMetricFamily("streamai_node_warm", "1 while models are loaded on this node, 0 when scaled to zero.",
                                value=int(self.state == "warm"))  # fmt: skip
        unloads = "Times this node unloaded its models after being idle."
        yield CounterMetricFamily("streamai_node_model_unloads", unloads, value=self.unloads)

    async def run(self) -> None:
        interval = min(1.0, max(0.1, self.after_s / 4)) if self.after_s > 0 else 1.0
        while True:
            await asyncio.sleep(interval)
            self.tick()

    async def start(self, app: web.Application) -> None:
        self._task = asyncio.create_task(self.run(), name="node-scale-to-zero")

    async def stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
