"""Fleet state in Redis, so that any number of router replicas answer identically.

Each router keeps an in-memory mirror of the fleet (``view``, a ``NodeRegistry``) that
routing ranks over without a network round trip; Redis holds the truth:

- ``node:<id>``: the node's last report, signed by the router that took it (HMAC under
  the fleet secret: a report written into Redis by anyone without the secret is ignored),
  with a TTL of ``evict_after_s``: a node that stops heartbeating disappears by expiry.
- ``seen`` (sorted set id -> time of the last report): what changed since a mirror's
  last sync, read every ``sync_interval_s`` (one round trip, two when reports changed).
- ``capacity`` / ``routed`` (hashes): a node's capacity and reported sessions, and the
  sessions routed there since its last report. ``reserve`` is one Lua call that counts a
  session only if the node has room, atomically: two routers never overfill a node.
- ``failed`` / ``unreachable`` (hashes): failure cooldowns and unreachable marks, read at sync.
- ``bucket:<key>``: token buckets for the entry limits (a Lua call per check), so an
  attacker cannot multiply per-address limits by spreading over replicas.

While Redis is down the router keeps routing from its last view: heartbeats update the
mirror, reservations and limits are counted locally, ``store_up`` is 0 in /metrics;
when Redis is back the mirror resyncs and the nodes' next heartbeats fill Redis again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from ..frames import now
from .config import FleetConfig
from .registry import NodeEntry, NodeRegistry, NodeReport
from .state import FleetFull, MemoryFleetState

log = logging.getLogger(__name__)
T = TypeVar("T")
SYNC_BATCH = 200  # node records read per round trip: the event loop serves requests between batches

RESERVE = """
local cs = redis.call('HGET', KEYS[1], ARGV[1])
if not cs then return -1 end
local cap, sessions = string.match(cs, '(%d+),(%d+)')
local routed = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(sessions) + routed < tonumber(cap) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return 1
end
return 0
"""

RELEASE = """
local routed = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if routed > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
return routed
"""

MARK_FULL = """
local cs = redis.call('HGET', KEYS[1], ARGV[1])
if not cs then return 0 end
local cap, sessions = string.match(cs, '(%d+),(%d+)')
local full = tonumber(cap) - tonumber(sessions)
local routed = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if routed < full then redis.call('HSET', KEYS[2], ARGV[1], full) end
return full
"""

TAKE = """
local rate, burst, at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if not tokens then tokens, stamp = burst, at end
tokens = math.min(burst, tokens + math.max(0, at - stamp) * rate)
local took = 0
if tokens >= 1 then tokens = tokens - 1; took = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', at)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return took
"""


class RedisFleetState:
    """``FleetState`` on Redis (see the module docstring); ``fallback`` serves while Redis is down."""

    def __init__(self, config: FleetConfig, url: str, prefix: str = "streamai:fleet:") -> None:
        self.config = config
        self.url = url
        self.prefix = prefix
        self.fallback = MemoryFleetState(config)
        self.view: NodeRegistry = self.fallback.view
        self.up = False
        self.syncs = 0
        self.ignored_reports = 0  # records in Redis without a valid router signature
        self.redis: aioredis.Redis = aioredis.from_url(
            url, decode_responses=True, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=5
        )
        self._reserve = self.redis.register_script(RESERVE)
        self._release = self.redis.register_script(RELEASE)
        self._mark_full = self.redis.register_script(MARK_FULL)
        self._take = self.redis.register_script(TAKE)
        self._synced_to = 0.0
        self._known: dict[str, str] = {}  # node id -> the report JSON the view holds (unchanged: not re-validated)
        self._applied: dict[str, float] = {}  # node id -> the heartbeat time of the record the view holds
        self.records_read = 0  # node records fetched from Redis and checked (signature, body) by syncs
        self._task: asyncio.Task[None] | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self._store(self.sync, None, full=True)
        self._task = asyncio.create_task(self._sync_forever(), name="fleet-redis-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.aclose()

    async def _store(self, operation: Callable[..., Awaitable[T]], fallback: T, *args: Any, **kwargs: Any) -> T:
        """Run a Redis operation; on a Redis failure mark the store down and return ``fallback``."""
        try:
            result = await operation(*args, **kwargs)
        except (RedisError, OSError) as exc:
            if self.up:
                log.warning("fleet store %s unreachable (%s): routing from the last view", self.url, exc)
            self.up = False
            return fallback
        if not self.up:
            log.info("fleet store %s reachable", self.url)
            self.up = True
        return result

    # -- signed records ------------------------------------------------------------------
    def _signature(self, body: str) -> str:
        secret = self.config.node_secret
        if secret is None:
            return ""
        return hmac.new(secret.encode("utf-8"), f"fleet-record:{body}".encode(), hashlib.sha256).hexdigest()

    def _record(self, report: NodeReport, seen: float) -> str:
        body = f"{seen!r}|{report.model_dump_json()}"
        return json.dumps({"body": body, "sig": self._signature(body)}, separators=(",", ":"))

    def _read(self, node_id: str, raw: str) -> tuple[NodeReport, float] | None:
        """A record written by a router of this fleet, or None (unsigned, tampered or malformed).

        A report identical to the one the view holds is not validated again (most heartbeats
        only say "still here"): the signature and the time are all that is checked.
        """
        try:
            outer = json.loads(raw)
            body, sig = str(outer["body"]), str(outer["sig"])
            if not hmac.compare_digest(sig, self._signature(body)):
                raise ValueError("bad signature")
            seen_text, _, report_json = body.partition("|")
            seen = float(seen_text)
            entry = self.view.nodes.get(node_id)
            if entry is not None and self._known.get(node_id) == report_json:
                return entry.report, seen
            report = NodeReport.model_validate_json(report_json)
            self._known[node_id] = report_json
            return report, seen
        except (ValueError, KeyError, TypeError, ValidationError):
            self.ignored_reports += 1
            return None

    # -- FleetState ------------------------------------------------------------------------
    async def heartbeat(self, report: NodeReport) -> bool:
        if report.node_id not in self.view.nodes and len(self.view.nodes) >= self.config.max_nodes:
            raise FleetFull(f"the router tracks {self.config.max_nodes} nodes already")
        new = await self.fallback.heartbeat(report)  # the mirror learns at once
        seen = time.time()

        async def write() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                node_id = report.node_id
                ttl = max(1, round(self.config.evict_after_s))
                pipe.set(self.key("node", node_id), self._record(report, seen), ex=ttl, get=True)
                pipe.zadd(self.key("seen"), {node_id: seen})
                pipe.hset(self.key("capacity"), node_id, f"{report.capacity},{min(report.sessions, report.capacity)}")
                pipe.hset(self.key("routed"), node_id, 0)
                pipe.hdel(self.key("unreachable"), node_id)
                previous, *_ = await pipe.execute()
            self._applied[node_id] = seen  # the mirror has this heartbeat: the next sync need not read it back
            return previous is None

        return await self._store(write, new)

    async def remove(self, node_id: str) -> bool:
        removed = await self.fallback.remove(node_id)
        self._applied.pop(node_id, None)

        async def delete() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("node", node_id))
                pipe.zrem(self.key("seen"), node_id)
                pipe.hdel(self.key("capacity"), node_id)
                pipe.hdel(self.key("routed"), node_id)
                pipe.hdel(self.key("unreachable"), node_id)
                deleted, *_ = await pipe.execute()
            return bool(deleted)

        return await self._store(delete, removed) or removed

    async def reserve(self, node: NodeEntry) -> bool:
        async def reserve() -> bool:
            took = await self._reserve(keys=[self.key("capacity"), self.key("routed")], args=[node.id])
            if int(took) == 1:
                node.routed_since_heartbeat += 1  # the mirror sees it at once, Redis is the truth at sync
                return True
            return False

        if not self.up:
            return await self.fallback.reserve(node)
        result = await self._store(reserve, None)
        return await self.fallback.reserve(node) if result is None else result

    async def release(self, node: NodeEntry) -> None:
        await self.fallback.release(node)
        await self._store(self._release, 0, keys=[self.key("routed")], args=[node.id])

    async def mark_full(self, node: NodeEntry) -> None:
        await self.fallback.mark_full(node)
        await self._store(self._mark_full, 0, keys=[self.key("capacity"), self.key("routed")], args=[node.id])

    async def mark_failed(self, node: NodeEntry, pipeline: str) -> None:
        await self.fallback.mark_failed(node, pipeline)
        await self._store(self.redis.hset, 0, self.key("failed"), f"{node.id}|{pipeline}", time.time())

    async def mark_unreachable(self, node: NodeEntry) -> None:
        await self.fallback.mark_unreachable(node)
        await self._store(self.redis.hset, 0, self.key("unreachable"), node.id, time.time())

    async def take(self, key: str, rate: float, burst: int) -> bool:
        if not self.up:
            return await self.fallback.take(key, rate, burst)
        took = await self._store(self._take, None, keys=[self.key("bucket", key)], args=[rate, burst, time.time()])
        return await self.fallback.take(key, rate, burst) if took is None else bool(took)

    # -- the mirror --------------------------------------------------------------------------
    async def sync(self, full: bool = False) -> None:
        """Bring the mirror up to Redis: changed and expired reports, routed counts, cooldowns, marks.

        It adds and updates, and removes what expired in Redis; it never drops a node only because
        Redis does not know it (a restarted, empty Redis): such a node leaves the view by its own
        silence (missed heartbeats, then ``evict_after_s``), and its next heartbeat refills Redis.
        """
        started = time.time()
        since = 0.0 if full or not self._synced_to else self._synced_to - 2.0  # 2 s: routers' clock skew
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.key("seen"), since, "+inf", withscores=True)
            pipe.zrangebyscore(self.key("seen"), "-inf", started - self.config.evict_after_s)
            pipe.hgetall(self.key("routed"))
            pipe.hgetall(self.key("failed"))
            pipe.hgetall(self.key("unreachable"))
            changed, stale, routed, failed, unreachable = await pipe.execute()
        # the window overlaps the last sync's (clock skew): a heartbeat the view already holds is not read again
        nodes = self.view.nodes
        ids = [i for i, score in changed if full or i not in nodes or self._applied.get(i) != score]
        present: set[str] = {i for i, _ in changed} - set(ids)
        for start in range(0, len(ids), SYNC_BATCH):
            batch = ids[start : start + SYNC_BATCH]
            records = await self.redis.mget([self.key("node", i) for i in batch])
            self.records_read += len(batch)
            for node_id, raw in zip(batch, records, strict=True):
                if raw is None:
                    continue  # expired between the two reads: the stale pass below removes it
                read = self._read(node_id, raw)
                if read is None or read[0].node_id != node_id:
                    continue
                report, seen = read
                present.add(node_id)
                self._apply(report, seen)
                self._applied[node_id] = seen
        for node_id in stale:
            if node_id not in present:
                self.view.remove(node_id)
                self._known.pop(node_id, None)
                self._applied.pop(node_id, None)
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.zrem(self.key("seen"), node_id)
        self._apply_counts(routed, failed, unreachable)
        self._synced_to = started
        self.syncs += 1

    def _apply(self, report: NodeReport, seen: float) -> None:
        entry = self.view.nodes.get(report.node_id)
        if entry is None or entry.report != report:
            entry, _ = self.view.heartbeat(report)  # new or changed: (re)indexed for routing
        entry.last_seen = now() - max(0.0, time.time() - seen)  # a report another replica took

    def _apply_counts(self, routed: dict[str, str], failed: dict[str, str], unreachable: dict[str, str]) -> None:
        wall, mono = time.time(), now()
        cooldown = self.config.failure_cooldown_s
        for node_id, entry in self.view.nodes.items():
            with contextlib.suppress(ValueError):
                entry.routed_since_heartbeat = int(routed.get(node_id, 0))
            marked = unreachable.get(node_id)
            entry.unreachable_at = mono - (wall - float(marked)) if marked else None
        for key, at in failed.items():
            node_id, _, pipeline = key.partition("|")
            entry = self.view.nodes.get(node_id)
            with contextlib.suppress(ValueError):
                if entry is not None and wall - float(at) < cooldown:
                    entry.offer_failed_at[pipeline] = mono - (wall - float(at))

    async def _sync_forever(self) -> None:
        interval = self.config.sync_interval_s
        while True:
            await asyncio.sleep(interval)
            was_up = self.up
            await self._store(self.sync, None, full=not was_up)
            if not self.up:
                await asyncio.sleep(min(2.0, interval * 4))  # down: retry gently, route from the last view
            else:
                self.fallback.evict()
