"""The node side of the fleet: heartbeats to the router.

``streamai.fleet.node`` attaches the agent when the node's settings name a router. The
agent's first heartbeat registers the node (with its own credential, ``node_token``,
which the router derives from the fleet secret and binds to this node's id); every heartbeat
carries the full state (region, location, capacity, load, pipelines with measured
stage latencies, warm models), so a restarted router rebuilds its view within one
interval. On shutdown the node leaves the fleet before its sessions close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from typing import Any

import aiohttp
import psutil
from aiohttp import web

from ..histogram import Histogram
from ..server.state import LIBRARY, MODELS, SCALER, SESSIONS, SETTINGS, describe_pipeline

log = logging.getLogger(__name__)


class NodeAgent:
    """Reports the node to the router every heartbeat interval (the router sets the interval)."""

    def __init__(self, app: web.Application) -> None:
        settings = app[SETTINGS]
        self.app = app
        # one router, or replicas (comma-separated, sharing Redis): heartbeats go to one, the next on failure
        self.routers = [url.strip().rstrip("/") for url in (settings.router_url or "").split(",") if url.strip()]
        self.current = 0
        self.node_id = settings.node_name()
        self.token = settings.node_token
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        self.url = (settings.public_url or f"http://{host}:{settings.port}").rstrip("/")
        self.interval_s = 2.0
        self.registered = False
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def router_url(self) -> str:
        """The router replica heartbeats go to now."""
        return self.routers[self.current]

    def report(self) -> dict[str, Any]:
        """This node's state as the router wants it (see ``streamai.fleet.registry.NodeReport``)."""

        settings, library, manager = self.app[SETTINGS], self.app[LIBRARY], self.app[SESSIONS]
        service: dict[tuple[str, str], Histogram] = {
            (pipeline, stage): histogram
            for pipeline, totals in manager.history.with_live(list(manager.sessions.values())).items()
            for stage, histogram in totals.service.items()
        }
        pipelines = []
        scaler = self.app[SCALER]
        warm = scaler.warm_pipelines()
        for name, config in sorted(library.pipelines.items()):
            described = describe_pipeline(config, library.registry)
            measured = {
                stage: round((service[(name, stage)].quantile(0.9) or 0.0) * 1000, 3)
                for stage in config.stage_names()
                if (name, stage) in service
            }
            pipelines.append(
                {
                    "name": name,
                    "data_region": config.data_region,
                    "budget_ms": config.budget_ms,
                    "stages": described["stages"],
                    "inputs": described["inputs"],
                    "stage_p90_ms": measured,
                    "warm": name in warm,
                }
            )
        return {
            "node_id": self.node_id,
            "url": self.url,
            "region": settings.region or "default",
            "location": settings.location,
            "capacity": settings.max_sessions,
            "sessions": manager.active,
            "cpu_free": round(max(0.0, 1.0 - psutil.cpu_percent(interval=None) / 100), 3),
            "pipelines": pipelines,
            "warm": sorted(self.app[MODELS].loaded()),
            "models": installed_models(),
            "model_state": scaler.state,
            "idle_s": round(scaler.idle_s(), 1),
            "remote_stages": manager.remote is not None,
        }

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def beat(self) -> bool:
        """Send one heartbeat; returns whether the router took it."""
        assert self._http is not None
        url = f"{self.router_url}/v1/nodes/{self.node_id}/heartbeat"
        router = self.router_url
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.interval_s))
        try:
            async with self._http.post(
                url, json=self.report(), headers=self._auth(), timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.json(content_type=None) if response.content_length != 0 else None
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {str(body)[:200]}")
                if not isinstance(body, dict):
                    raise RuntimeError("the router's answer is not a JSON object")
        except (TimeoutError, aiohttp.ClientError, RuntimeError, ValueError) as exc:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("heartbeat to %s failed (%d in a row): %s", router, self.failures, exc)
            self.current = (self.current + 1) % len(self.routers)  # the next replica, next time
            return False
        if body.get("new") or not self.registered:
            log.info("registered with router %s as %s (%s)", self.router_url, self.node_id, self.url)
        self.registered = True
        self.failures = 0
        self.interval_s = bounded_interval(body.get("heartbeat_interval_s"), self.interval_s)
        return True

    async def run(self) -> None:
        """Heartbeat until cancelled; nothing the router answers ends the loop."""
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently stop the node's heartbeats
                log.exception("heartbeat failed unexpectedly")
            await asyncio.sleep(self.interval_s)

    async def start(self, app: web.Application) -> None:
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self.run(), name="fleet-heartbeat")

    async def stop(self, app: web.Application) -> None:
        """Leave the fleet first, so the router stops sending sessions while this node drains."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                url = f"{self.router_url}/v1/nodes/{self.node_id}"
                async with self._http.delete(
                    url, headers=self._auth(), timeout=aiohttp.ClientTimeout(total=2), allow_redirects=False
                ):
                    pass
            await self._http.close()


def attach_agent(app: web.Application) -> None:
    """Heartbeat to the router named in the node's settings: register at start, leave first at shutdown."""
    agent = NodeAgent(app)
    app.on_startup.append(agent.start)
    app.on_shutdown.insert(0, agent.stop)


def bounded_interval(value: object, current: float) -> float:
    """The router's heartbeat interval if it is a sane number (0.2 s to 60 s), else ``current``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return min(60.0, max(0.2, float(value)))
    return current


def installed_models() -> list[str]:
    """Catalog ids whose package is installed on this node."""
    from ..models.catalog import Catalog

    return sorted(entry.id for entry in Catalog().entries.values() if entry.installed())
