"""Request bodies: a JSON object within the node's size and time limits."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import ClientError
from ..web.protection import read_body
from .state import GUARD, SETTINGS


async def read_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body within the node's size and time limits (415 for another content type)."""
    settings = request.app[SETTINGS]
    body = await read_body(request, settings.max_body_bytes, settings.protection.body_timeout_s, request.app[GUARD])
    if request.content_type != "application/json":
        raise ClientError(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, "bad_json", "request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ClientError(400, "bad_json", "request body must be a JSON object")
    return value
