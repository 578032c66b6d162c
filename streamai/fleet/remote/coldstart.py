"""Waking a scale-to-zero deployment for one session: the cold-start state machine.

States: *idle* (no wake running) -> *waking* (one wake call in flight: Serve starts a
replica, the replica starts the session's stage) -> back to *idle*, either warm (the
call answered; its round trip is a measured cold start) or failed (the next wake waits
``retry_s``). Frames that arrive meanwhile are the caller's business; this class only
counts them by outcome, so the ``remote_warm`` event can say what the cold start cost.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from ...frames import now

log = logging.getLogger(__name__)

COLD_START_TIMEOUT_S = 120.0  # a wake call (replica start + model load) is given up after this long
WAKE_RETRY_S = 1.0  # after a failed wake, the next one waits this long

Wake = Callable[[], Awaitable[dict[str, Any]]]
Emit = Callable[..., None]


class ColdStart:
    """One session's wake-ups of a scale-to-zero deployment.

    ``wake`` is the call that brings a replica up (it answers with the replica's facts,
    ``stage_start_s`` among them); ``emit`` publishes events; ``counts`` is the stand-in's
    one counter of what happened (``cold_starts`` are in ``seconds``, not counted twice).
    """

    def __init__(
        self,
        name: str,
        wake: Wake,
        emit: Emit,
        counts: Counter[str],
        on_warm: Callable[[], None] | None = None,
        start_fields: dict[str, Any] | None = None,
        timeout_s: float = COLD_START_TIMEOUT_S,
        retry_s: float = WAKE_RETRY_S,
    ) -> None:
        self.name = name
        self._wake = wake
        self._emit = emit
        self.counts = counts
        self._on_warm = on_warm
        self.start_fields = dict(start_fields or {})  # added to the remote_cold_start event
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.task: asyncio.Task[None] | None = None
        self.retry_at = -math.inf
        self.seconds: list[float] = []  # measured cold starts: first frame to warm
        self.last: dict[str, Any] = {}  # the replica's answer to the last wake call, plus cold_start_s

    @property
    def waking(self) -> bool:
        return self.task is not None

    def frame_arrived(self, served_at_edge: bool) -> None:
        """A frame came while no replica ran: served by the edge copy, or (the caller drops it) not."""
        self.counts["cold_frames"] += 1
        if served_at_edge:
            self.counts["fallback_edge"] += 1

    def begin(self) -> None:
        """Start a wake call unless one runs or the retry pause after a failed one is not over."""
        if self.task is None and now() >= self.retry_at:
            self.task = asyncio.create_task(self._run(self.counts.copy()), name=f"wake:{self.name}")

    async def wait(self) -> float | None:
        """Begin (if needed) and wait for the wake; the cold start in seconds, or None if it failed."""
        count = len(self.seconds)
        self.begin()
        if self.task is not None:
            await asyncio.shield(self.task)
        return self.seconds[-1] if len(self.seconds) > count else None

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self, before: Counter[str]) -> None:
        sent = now()
        self._emit("remote_cold_start", **self.start_fields)
        try:
            info = await asyncio.wait_for(self._wake(), self.timeout_s)
        except Exception as exc:
            self.retry_at = now() + self.retry_s
            self.counts["cold_start_failed"] += 1
            log.warning("remote stage %s: cold start failed: %r", self.name, exc)
            self._emit("warning", message=f"remote stage cold start failed: {exc!r}")
            return
        finally:
            self.task = None
        took = now() - sent
        self.last = {**info, "cold_start_s": took}
        if self._on_warm is not None:
            self._on_warm()
        self.seconds.append(took)
        stage_start = float(info.get("stage_start_s", 0.0))
        log.info("remote stage %s warm after %.2f s (stage start %.2f s)", self.name, took, stage_start)
        at_edge = self.counts["fallback_edge"] - before["fallback_edge"]
        self._emit(
            "remote_warm",
            cold_start_ms=round(took * 1000, 1),
            stage_start_ms=round(stage_start * 1000, 1),  # in the replica: the stage's start, model load included
            replica=info.get("replica"),
            pid=info.get("pid"),
            dropped=self.counts["cold_frames"] - before["cold_frames"] - at_edge,
            fallback_edge=at_edge,
        )
