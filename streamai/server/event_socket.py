"""The events WebSocket a session or a room participant serves: events out, control messages in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from ..events import EventBus
from ..web.auth import WEBSOCKET_PROTOCOL
from .settings import ServerSettings


class EventSource(Protocol):
    """What a socket serves: an event bus, a control handler and the set of open sockets."""

    events: EventBus
    subscribers: set[Any]

    def handle_control(self, raw: str | bytes, reply: Any) -> None: ...


async def serve_event_socket(
    request: web.Request,
    source: EventSource,
    settings: ServerSettings,
    *,
    greeting: dict[str, Any],
    closed: Callable[[], bool],
    farewell: bytes,
) -> web.WebSocketResponse:
    """Serve ``source``'s events on a WebSocket until the client leaves or ``closed()`` turns true.

    Frames up to the body limit are read and then refused by the control parser (16 KiB)
    with an error event; only a larger frame closes the socket (1009). The first event is
    ``greeting`` (type ``state``), stamped with the node's time.
    """
    ws = web.WebSocketResponse(
        heartbeat=20,
        max_msg_size=max(settings.max_control_bytes * 4, settings.max_body_bytes),
        protocols=[WEBSOCKET_PROTOCOL],
    )
    source.subscribers.add(ws)
    try:
        await ws.prepare(request)
        subscription = source.events.subscribe()

        async def send(event: dict[str, Any]) -> None:
            if not ws.closed:
                await ws.send_str(json.dumps(event, default=str))

        async def pump() -> None:
            while True:
                await send(await subscription.get())

        replies: list[dict[str, Any]] = []
        await send({"type": "state", **greeting, "t": time.time()})
        pump_task = asyncio.create_task(pump())
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    source.handle_control(message.data, replies.append)
                    while replies:
                        await send(replies.pop(0))
                    if closed():
                        break
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            pump_task.cancel()
            subscription.close()
    finally:
        source.subscribers.discard(ws)
    if not ws.closed:
        await ws.close(code=1000, message=farewell)
    return ws
