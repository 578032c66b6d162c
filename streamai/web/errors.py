"""Every refusal as one JSON shape, and the middleware that keeps tracebacks off the wire."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import ClientError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)


def json_error(exc: ClientError, **extra: Any) -> web.Response:
    """``exc`` as ``{"error": {"code", "message", ...extra}}`` with its status and ``Retry-After``."""
    body = exc.body()
    body["error"].update(extra)
    response = web.json_response(body, status=exc.status, headers=exc.headers())
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is JSON with a code and a message; nothing unexpected escapes as a traceback."""
    try:
        return await handler(request)
    except ClientError as exc:
        return json_error(exc)
    except web.HTTPRequestEntityTooLarge:
        return json_error(ClientError(413, "too_large", "request body too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(ClientError(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(ClientError(500, "internal", "internal error (logged on the server)"))
