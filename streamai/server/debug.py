"""``GET /v1/debug/resources``: what the node process holds right now (soak and leak tests).

Off unless ``debug_endpoints: true`` in the node settings; behind the bearer token
like the rest of ``/v1/``. Counting live objects walks the heap (tens of ms), so
this is a diagnostic, not something to scrape every second.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection

from .sessions import Session, SessionManager
from .state import ACCESS, SESSIONS, SETTINGS


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def resources(manager: SessionManager) -> dict[str, Any]:
    """Counts of the things a leak would grow: fds, threads, tasks, peer connections, sessions."""
    peer_connections = 0
    peer_connections_open = 0
    session_objects = 0
    gc.collect()  # count what is still referenced, not garbage waiting for the next collection
    for item in gc.get_objects():
        if isinstance(item, RTCPeerConnection):
            peer_connections += 1
            peer_connections_open += item.connectionState != "closed"
        elif isinstance(item, Session):
            session_objects += 1
    thread_names: dict[str, int] = {}
    for thread in threading.enumerate():
        family = thread.name.split("_")[0].rstrip("-0123456789 ()") or "thread"
        thread_names[family] = thread_names.get(family, 0) + 1
    tasks = asyncio.all_tasks()
    task_names: dict[str, int] = {}
    for task in tasks:
        # "session:<id>:watchdog" -> "session:watchdog": a family name that does not grow with ids
        parts = task.get_name().split(":")
        family = f"{parts[0]}:{parts[-1]}" if len(parts) > 2 else parts[0]
        family = "Task" if family.startswith("Task-") else family
        task_names[family] = task_names.get(family, 0) + 1
    return {
        "pid": os.getpid(),
        "rss_bytes": _rss_bytes(),
        "open_fds": _open_fds(),
        "threads": threading.active_count(),
        "threads_by_name": dict(sorted(thread_names.items())),
        "asyncio_tasks": len(tasks),
        "asyncio_tasks_by_name": dict(sorted(task_names.items())),
        "peer_connections": peer_connections,
        "peer_connections_open": peer_connections_open,
        "session_objects": session_objects,
        "sessions": len(manager.sessions),
        "sessions_pending": manager.pending,
        "sessions_finished": manager.totals["closed"],
        "gc_objects": len(gc.get_objects()),
    }


async def debug_resources(request: web.Request) -> web.Response:
    """The node's live resources (off unless ``debug_endpoints``; the admin token when one is set)."""
    if request.app[SETTINGS].admin_token is not None:
        request.app[ACCESS].require_admin(request)
    return web.json_response(resources(request.app[SESSIONS]))
