"""An edge node with its fleet parts: the router agent and the Ray Serve stage engine.

``server/`` builds a node that knows nothing of a fleet; this module adds what the
node's settings ask for (``router_url``: heartbeats; ``ray_address``: remote stages)
through ``create_app``'s ``remote`` and ``extensions``. ``streamai serve`` and the
in-process test node use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from ..server.app import create_app
from ..server.settings import ServerSettings
from ..stage import StageRegistry
from .agent import attach_agent


def create_fleet_node(settings: ServerSettings, registry: StageRegistry | None = None) -> web.Application:
    """The node's app, with a router agent and remote stages when its settings name them."""
    extensions: list[Callable[[web.Application], None]] = []
    remote = None
    if settings.ray_address:
        from .remote import RayServeStageFactory

        factory = RayServeStageFactory(address=settings.ray_address, region=settings.region)
        remote = factory

        def ray_lifecycle(app: web.Application) -> None:
            async def connect_ray(app: web.Application) -> None:
                await asyncio.get_running_loop().run_in_executor(None, factory.connect)

            async def leave_ray(app: web.Application) -> None:
                await asyncio.get_running_loop().run_in_executor(None, factory.close)

            app.on_startup.append(connect_ray)
            app.on_cleanup.append(leave_ray)

        extensions.append(ray_lifecycle)
    if settings.router_url:
        extensions.append(attach_agent)
    return create_app(settings, registry, remote=remote, extensions=extensions)
