"""Waiting for a condition in tests: poll with a deadline instead of sleeping a fixed time.

A fixed ``sleep`` then ``assert`` passes on a quiet machine and fails on a loaded one;
``wait_for`` returns as soon as the condition holds and only gives up at a bound
chosen to hold on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass; returns its last truth."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


async def wait_until(check: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.2) -> T:
    """Await ``check()`` until it returns something truthy or ``timeout`` passes; returns its last result."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    return await check()
