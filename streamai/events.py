"""A per-session bus of JSON events (transcripts, translations, drops, latency).

Subscribers get their own bounded queue; a slow subscriber loses its oldest
events (counted) and never slows the pipeline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class Subscription:
    """One subscriber's bounded view of the bus."""

    def __init__(self, bus: EventBus, limit: int) -> None:
        self._bus = bus
        self._items: deque[Event] = deque(maxlen=limit)
        self._ready = asyncio.Event()
        self.lost = 0

    def offer(self, event: Event) -> None:
        if len(self._items) == self._items.maxlen:
            self.lost += 1
        self._items.append(event)
        self._ready.set()

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def drain(self) -> list[Event]:
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    """Fan-out of events to callbacks and queue subscribers; keeps a short history."""

    def __init__(self, history: int = 256) -> None:
        self._subscriptions: list[Subscription] = []
        self._callbacks: list[Callable[[Event], None]] = []
        self.history: deque[Event] = deque(maxlen=history)

    def emit(self, type_: str, **fields: Any) -> Event:
        event: Event = {"type": type_, "t": time.time(), **fields}
        self.history.append(event)
        for subscription in self._subscriptions:
            subscription.offer(event)
        for callback in list(self._callbacks):
            callback(event)
        return event

    def subscribe(self, limit: int = 1024) -> Subscription:
        subscription = Subscription(self, limit)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` for every event; returns a function that removes it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None
