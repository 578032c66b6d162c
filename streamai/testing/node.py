"""Run an edge node inside the current event loop (tests, benchmarks)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from ..fleet.node import create_fleet_node
from ..server.settings import ServerSettings
from ..stage import StageRegistry


@asynccontextmanager
async def running_node(
    settings: ServerSettings | None = None, registry: StageRegistry | None = None
) -> AsyncIterator[tuple[str, web.Application]]:
    """Serve a node on 127.0.0.1 (a free port unless set); yields its base URL and app."""
    settings = settings or ServerSettings(port=0, ice_loopback=True)
    async with running_app(create_fleet_node(settings, registry), settings.port) as served:
        yield served


@asynccontextmanager
async def running_app(app: web.Application, port: int = 0) -> AsyncIterator[tuple[str, web.Application]]:
    """Serve any aiohttp app (a node, a router) on 127.0.0.1; yields its base URL and the app."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{bound}", app
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a node whose URL must be known before it listens)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
