"""A node on its own thread for hypothesis tests (which are synchronous), and an error-log collector."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiortc import RTCPeerConnection

from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.transport.ice import offer_loopback_candidates_only, rtc_configuration


class ErrorLog(logging.Handler):
    """Collects ERROR records of the node and of aiohttp's server (an unhandled exception in a handler).

    aiortc's own background task for a half-parsed offer logs "Task exception was never
    retrieved" through ``asyncio``; that is noise from the library, not a node failure.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("streamai", "aiohttp")):
            self.records.append(record)


class NodeThread:
    """A node on its own event loop thread; tests talk to it over sockets."""

    def __init__(self, node_settings: ServerSettings) -> None:
        self.settings = node_settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.port = 0
        self.app: Any = None
        self.offer = ""
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        async with running_node(self.settings) as (url, app):
            self.app = app
            self.port = int(url.rsplit(":", 1)[1])
            self.offer = await self._real_offer()
            self.ready.set()
            await self.stopping.wait()

    @staticmethod
    async def _real_offer() -> str:
        offer_loopback_candidates_only()
        pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver("video")
        pc.addTransceiver("audio")
        pc.createDataChannel("events")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> NodeThread:
        self.thread.start()
        assert self.ready.wait(30), "node did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stopping is not None
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)
