"""Model loads shared across sessions: one loaded copy per key, reference-counted.

Two sessions of the same pipeline on a node use one copy; the copy is freed when
the last user releases it, after an optional idle grace period, or — with
``keep_released`` (nodes: the next session finds it warm) — only when the node scales
to zero (``unload_idle()``). A ``private`` model (per-session state, never shared) is
always freed at release. Loading runs on a thread (never on the event loop) and logs
a progress line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Slot:
    value: Any = None
    users: int = 0
    loading: asyncio.Future[Any] | None = None
    idle_handle: asyncio.TimerHandle | None = None
    load_seconds: float = 0.0
    closer: Callable[[Any], None] | None = None
    private: bool = False


@dataclass
class SharedModels:
    """Reference-counted loaded models of one node."""

    idle_timeout_s: float = 0.0
    keep_released: bool = False  # unused models stay loaded until unload_idle() (when idle_timeout_s is 0)
    loads: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    unloads: Counter[str] = field(default_factory=Counter)
    _slots: dict[str, _Slot] = field(default_factory=dict)

    async def acquire(
        self, key: str, loader: Callable[[], T], closer: Callable[[T], None] | None = None, private: bool = False
    ) -> T:
        """The model for ``key``, loading it with ``loader()`` on a thread if nobody holds it."""
        slot = self._slots.setdefault(key, _Slot(private=private))
        slot.users += 1
        if slot.idle_handle is not None:
            slot.idle_handle.cancel()
            slot.idle_handle = None
        if slot.loading is not None:
            self.hits[key] += 1
            try:
                return await asyncio.shield(slot.loading)
            except BaseException:
                slot.users -= 1
                raise
        slot.loading = asyncio.get_running_loop().create_future()
        slot.closer = closer
        log.info("loading model %s ...", key)
        started = time.monotonic()
        try:
            value = await asyncio.to_thread(loader)
        except BaseException as exc:
            slot.loading.set_exception(exc)
            slot.loading.exception()  # mark retrieved
            del self._slots[key]
            raise
        slot.load_seconds = time.monotonic() - started
        slot.value = value
        slot.loading.set_result(value)
        self.loads[key] += 1
        log.info("loaded model %s in %.2f s", key, slot.load_seconds)
        return value

    def release(self, key: str) -> None:
        """Drop one user; the last user frees the model (after the idle timeout, if set)."""
        slot = self._slots.get(key)
        if slot is None or slot.users <= 0:
            return
        slot.users -= 1
        if slot.users:
            return
        if slot.private:
            self._unload(key)
        elif self.idle_timeout_s > 0:
            slot.idle_handle = asyncio.get_running_loop().call_later(self.idle_timeout_s, self._unload, key)
        elif not self.keep_released:
            self._unload(key)

    def _unload(self, key: str) -> None:
        slot = self._slots.get(key)
        if slot is None or slot.users:
            return
        del self._slots[key]
        self.unloads[key] += 1
        if slot.closer is not None and slot.value is not None:
            slot.closer(slot.value)
        log.info("unloaded model %s", key)

    def unload_idle(self) -> list[str]:
        """Free every model nobody uses now (scale to zero); returns their keys."""
        idle = [key for key, slot in self._slots.items() if slot.users == 0 and slot.loading is not None]
        for key in idle:
            slot = self._slots[key]
            if slot.idle_handle is not None:
                slot.idle_handle.cancel()
            self._unload(key)
        return idle

    def loaded(self) -> dict[str, dict[str, Any]]:
        return {
            key: {"users": slot.users, "load_s": round(slot.load_seconds, 3)}
            for key, slot in self._slots.items()
            if slot.value is not None
        }


async def acquire_model(
    context: Any,
    key: str,
    loader: Callable[[], T],
    private: bool = False,
    closer: Callable[[T], None] | None = None,
) -> tuple[T, Callable[[], None]]:
    """Load through the node's ``SharedModels`` when the stage has one, else privately.

    Returns the model and a ``release`` function for the stage's ``stop()``. ``private``:
    the model holds one session's state (never shared, freed at release). ``closer``
    frees what the model holds beyond memory (a child process) when it is unloaded.
    """
    shared = getattr(context, "resources", None)
    if isinstance(shared, SharedModels):
        value = await shared.acquire(key, loader, closer=closer, private=private)
        return value, lambda: shared.release(key)
    value = await asyncio.to_thread(loader)
    return value, (lambda: closer(value)) if closer is not None else (lambda: None)
