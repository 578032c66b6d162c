"""The node side of the fleet: heartbeats to the router, and the remote-stage engine when configured.

``attach_fleet(app)`` is called by ``create_app`` when the settings name a router or
a Ray cluster. The agent's first heartbeat registers the node; every heartbeat
carries the full state (region, location, capacity, load, pipelines with measured
stage latencies, warm models), so a restarted router rebuilds its view within one
interval. On shutdown the node leaves the fleet before its sessions close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
        self.router_url = (settings.router_url or "").rstrip("/")
        self.node_id = settings.node_id or f"{socket.gethostname()}-{settings.port}"
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        self.url = (settings.public_url or f"http://{host}:{settings.port}").rstrip("/")
        self.interval_s = 2.0
        self.registered = False
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

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
        import os

        token = os.environ.get("STREAMAI_NODE_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def beat(self) -> bool:
        """Send one heartbeat; returns whether the router took it."""
        assert self._http is not None
        url = f"{self.router_url}/v1/nodes/{self.node_id}/heartbeat"
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.interval_s))
        try:
            async with self._http.post(url, json=self.report(), headers=self._auth(), timeout=timeout) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {body}")
        except (TimeoutError, aiohttp.ClientError, RuntimeError, ValueError) as exc:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("heartbeat to %s failed (%d in a row): %s", self.router_url, self.failures, exc)
            return False
        if body.get("new") or not self.registered:
            log.info("registered with router %s as %s (%s)", self.router_url, self.node_id, self.url)
        self.registered = True
        self.failures = 0
        self.interval_s = float(body.get("heartbeat_interval_s", self.interval_s))
        return True

    async def run(self) -> None:
        while True:
            await self.beat()
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
                async with self._http.delete(url, headers=self._auth(), timeout=aiohttp.ClientTimeout(total=2)):
                    pass
            await self._http.close()


def attach_fleet(app: web.Application) -> None:
    """Wire the fleet parts the node's settings ask for: the router agent, the Ray Serve stage engine."""

    settings = app[SETTINGS]
    if settings.ray_address:
        from .remote import RayServeStageFactory

        factory = RayServeStageFactory(address=settings.ray_address, region=settings.region)
        app[SESSIONS].remote = factory

        async def connect_ray(app: web.Application) -> None:
            await asyncio.get_running_loop().run_in_executor(None, factory.connect)

        async def leave_ray(app: web.Application) -> None:
            await asyncio.get_running_loop().run_in_executor(None, factory.close)

        app.on_startup.append(connect_ray)
        app.on_cleanup.append(leave_ray)
    if settings.router_url:
        agent = NodeAgent(app)
        app.on_startup.append(agent.start)
        app.on_shutdown.insert(0, agent.stop)


def installed_models() -> list[str]:
    """Catalog ids whose package is installed on this node."""
    from ..models.catalog import Catalog

    return sorted(entry.id for entry in Catalog().entries.values() if entry.installed())
