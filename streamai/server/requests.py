"""Request bodies: a JSON object within the node's size and time limits."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ClientError
from ..web.protection import json_body, read_body
from .state import GUARD, SETTINGS


async def read_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body within the node's size and time limits (415 for another content type)."""
    settings = request.app[SETTINGS]
    body = await read_body(request, settings.max_body_bytes, settings.protection.body_timeout_s, request.app[GUARD])
    value = json_body(request, body)
    if not isinstance(value, dict):
        raise ClientError(400, "bad_json", "request body must be a JSON object")
    return value
