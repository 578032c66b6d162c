"""Where the router keeps what it knows of the fleet, behind one interface.

``MemoryFleetState`` is the embedded default for one router; a shared store (Redis,
``streamai.fleet.redis_state``) lets router replicas answer identically. Routing code
ranks over ``view`` (a ``NodeRegistry``, in memory in both cases) and changes the fleet
only through the async calls here, so it never knows which store is behind it:

- ``heartbeat`` / ``remove``: a node's report (it expires when heartbeats stop);
- ``reserve`` / ``release``: a session routed to a node, counted atomically against its
  capacity (two routers never overfill a node), until the node's next report;
- ``mark_full``, ``mark_failed``, ``mark_unreachable``: what an offer taught the router;
- ``take``: a token bucket for per-address entry limits (shared across replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Protocol

from ..frames import now
from ..ratelimit import TokenBucket
from .config import FleetConfig
from .registry import NodeEntry, NodeRegistry, NodeReport

log = logging.getLogger(__name__)


class FleetFull(RuntimeError):
    """The router tracks ``max_nodes`` already; a new node is refused."""


class FleetState(Protocol):
    """The fleet as the router's handlers change it (see the module docstring)."""

    view: NodeRegistry

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def heartbeat(self, report: NodeReport) -> bool:
        """Record a report; whether the node is new. Raises ``FleetFull`` for a node past ``max_nodes``."""
        ...

    async def remove(self, node_id: str) -> bool: ...

    async def reserve(self, node: NodeEntry) -> bool:
        """Count one session routed to ``node`` if it has room now; False when it is full."""
        ...

    async def release(self, node: NodeEntry) -> None:
        """Undo a ``reserve`` (the node did not take the session)."""
        ...

    async def mark_full(self, node: NodeEntry) -> None:
        """The node said it is full: route nothing more there until its next report."""
        ...

    async def mark_failed(self, node: NodeEntry, pipeline: str) -> None:
        """The node failed an offer of ``pipeline``: try it last for ``failure_cooldown_s``."""
        ...

    async def mark_unreachable(self, node: NodeEntry) -> None:
        """An offer could not connect: skip the node until its next report."""
        ...

    async def take(self, key: str, rate: float, burst: int) -> bool:
        """One token from the bucket ``key`` (``rate`` per second, ``burst`` saved up)."""
        ...


class MemoryFleetState:
    """The fleet in this process: one router, or tests. Evicts nodes silent for ``evict_after_s``."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.view = NodeRegistry(config.heartbeat_timeout_s)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._evictor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._evictor = asyncio.create_task(self._evict_forever(), name="fleet-evict")

    async def close(self) -> None:
        if self._evictor is not None:
            self._evictor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._evictor

    async def heartbeat(self, report: NodeReport) -> bool:
        if report.node_id not in self.view.nodes and len(self.view.nodes) >= self.config.max_nodes:
            raise FleetFull(f"the router tracks {self.config.max_nodes} nodes already")
        _, new = self.view.heartbeat(report)
        return new

    async def remove(self, node_id: str) -> bool:
        return self.view.remove(node_id)

    async def reserve(self, node: NodeEntry) -> bool:
        if node.load >= node.report.capacity:
            return False
        node.routed_since_heartbeat += 1
        return True

    async def release(self, node: NodeEntry) -> None:
        node.routed_since_heartbeat = max(0, node.routed_since_heartbeat - 1)

    async def mark_full(self, node: NodeEntry) -> None:
        node.routed_since_heartbeat = max(node.routed_since_heartbeat, node.report.capacity - node.report.sessions)

    async def mark_failed(self, node: NodeEntry, pipeline: str) -> None:
        node.offer_failed_at[pipeline] = now()

    async def mark_unreachable(self, node: NodeEntry) -> None:
        self.view.mark_unreachable(node.id)

    async def take(self, key: str, rate: float, burst: int) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst)
            while len(self._buckets) > self.config.protection.tracked_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()

    def evict(self, at: float | None = None) -> list[str]:
        """Forget nodes whose last report is older than ``evict_after_s``; their ids."""
        at = now() if at is None else at
        gone = [n.id for n in self.view.nodes.values() if at - n.last_seen > self.config.evict_after_s]
        for node_id in gone:
            self.view.remove(node_id)
            log.info("node %s evicted: no heartbeat for %.0f s", node_id, self.config.evict_after_s)
        return gone

    async def _evict_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.evict_after_s / 4))
            self.evict()
