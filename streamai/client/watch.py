"""A session's events without media: its events WebSocket, through the ``websockets`` library.

For a captions display, a monitoring job or anything else that watches a session
another program opened: ``async with watch_events(node_url, session_id, session_token)
as watcher: async for event in watcher: ...``. The session token goes in the
``Authorization`` header. When the socket drops (not when the session ends: the node
then closes it with code 1000), it is opened again after a backoff that honours
``Retry-After``, and a :class:`ReconnectingEvent` says so; events sent while it was
down are not replayed. A refusal (401/403/404/429...) raises :class:`StreamaiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .errors import Backoff, ClientCode, StreamaiError, error_from_response
from .events import BadEvent, Event, ReconnectingEvent, decode_event, encode_message, event_from_dict
from .signaling import base_url

PROTOCOL = "streamai.v1"
NORMAL_CLOSE = 1000
DEFAULT_BACKOFF = Backoff()


def events_url(node_url: str, session_id: str) -> str:
    """The ws(s):// URL of a session's events WebSocket on its node."""
    base = base_url(node_url)
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/sessions/{session_id}/events"


class EventWatcher:
    """A session's events over its WebSocket, typed; also sends control messages on it.

    ``async for event in watcher`` (or ``watcher.events()``) ends when the session ends
    and raises :class:`StreamaiError` when the socket cannot be had back within
    ``reconnect``'s retries (None: no reconnecting).
    """

    def __init__(
        self,
        node_url: str,
        session_id: str,
        session_token: str | None,
        *,
        reconnect: Backoff | None = DEFAULT_BACKOFF,
        open_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = events_url(node_url, session_id)
        self.session_id = session_id
        self.reconnect = reconnect if reconnect is not None else Backoff(retries=0)
        self.open_timeout = open_timeout
        self._headers = dict(headers or {})
        if session_token:
            self._headers["Authorization"] = f"Bearer {session_token}"
        self._ws: ClientConnection | None = None
        self._closing = False
        self.reconnects = 0
        self.close_reason: str | None = None

    async def open(self) -> EventWatcher:
        """Open the socket (once); raises :class:`StreamaiError` when the node refuses it."""
        if self._ws is None:
            self._ws = await self._open()
        return self

    async def _open(self) -> ClientConnection:
        try:
            return await ws_connect(
                self.url, additional_headers=self._headers, subprotocols=[PROTOCOL],  # type: ignore[list-item]
                open_timeout=self.open_timeout, proxy=None, max_size=2**20,
            )  # fmt: skip
        except InvalidStatus as exc:
            response = exc.response
            text = bytes(response.body or b"").decode("utf-8", "replace")
            headers = {k: v for k, v in response.headers.raw_items()}
            raise error_from_response(response.status_code, text, headers, self.url, response.reason_phrase) from None
        except TimeoutError:
            raise StreamaiError(f"no WebSocket within {self.open_timeout:g} s", code=ClientCode.TIMEOUT,
                                url=self.url) from None  # fmt: skip
        except InvalidURI as exc:
            raise StreamaiError(str(exc), code="bad_url", url=self.url, fatal=False) from None
        except (OSError, InvalidHandshake) as exc:
            raise StreamaiError(f"cannot reach the node ({exc})", code=ClientCode.NETWORK, url=self.url) from None

    async def events(self) -> AsyncIterator[Event]:
        """The session's events until it ends (reconnecting as configured)."""
        attempt = 0
        while True:
            if self._ws is None:
                try:
                    self._ws = await self._open()
                except StreamaiError as refused:
                    if not refused.retryable or attempt >= self.reconnect.retries or self._closing:
                        raise
                    attempt += 1
                    delay = self.reconnect.delay(attempt - 1, refused)
                    yield ReconnectingEvent(type="reconnecting", attempt=attempt, delay_s=delay, code=refused.code,
                                            message=refused.message)  # fmt: skip
                    await asyncio.sleep(delay)
                    continue
                if attempt:
                    self.reconnects += 1
                attempt = 0
            ws = self._ws
            try:
                async for message in ws:
                    try:
                        yield event_from_dict(decode_event(message))
                    except BadEvent:
                        continue
            except ConnectionClosed:
                pass
            self._ws = None
            if self._closing:
                return
            if ws.close_code == NORMAL_CLOSE:
                self.close_reason = ws.close_reason or "session ended"
                return
            error = StreamaiError(
                f"the events WebSocket dropped (code {ws.close_code})", code=ClientCode.SERVER_GONE, url=self.url
            )
            if attempt >= self.reconnect.retries:
                raise error
            attempt += 1
            delay = self.reconnect.delay(attempt - 1, error)
            yield ReconnectingEvent(type="reconnecting", attempt=attempt, delay_s=delay, code=error.code,
                                    message=error.message)  # fmt: skip
            await asyncio.sleep(delay)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send a control message on the socket (the same ones the data channel takes)."""
        text = encode_message(dict(message))
        if self._ws is None:
            raise StreamaiError("the events WebSocket is not open", code=ClientCode.NOT_CONNECTED, fatal=False)
        try:
            await self._ws.send(text)
        except ConnectionClosed:
            raise StreamaiError("the events WebSocket closed", code=ClientCode.NOT_CONNECTED, fatal=False) from None

    async def send_prompt(self, text: str) -> None:
        """Set the pipeline's prompt."""
        await self.send({"type": "prompt", "text": str(text)})

    async def set_params(self, params: Mapping[str, Any]) -> None:
        """Change live stage parameters."""
        await self.send({"type": "params", "params": dict(params)})

    async def interrupt(self) -> None:
        """Stop the speech being synthesized or played."""
        await self.send({"type": "interrupt"})

    async def close(self) -> None:
        """Close the socket (the session goes on)."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None

    async def __aenter__(self) -> EventWatcher:
        return await self.open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


def watch_events(
    node_url: str,
    session_id: str,
    session_token: str | None,
    *,
    reconnect: Backoff | None = DEFAULT_BACKOFF,
    open_timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> EventWatcher:
    """A session's events over its events WebSocket: ``async with watch_events(...) as watcher:``.

    ``node_url`` is the node holding the session (``session.node_url``, or the answer's
    ``node_url`` through a router); ``session_token`` the answer's ``session_token``;
    ``reconnect`` a :class:`Backoff` for a dropped socket (default: 5 retries from 0.5 s; None: none).
    """
    return EventWatcher(node_url, session_id, session_token, reconnect=reconnect, open_timeout=open_timeout,
                        headers=headers)  # fmt: skip
