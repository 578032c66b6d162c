"""aiohttp's access log with the ``?token=`` query value masked.

Browsers cannot set headers on a WebSocket, so the session API also takes the bearer
token as ``?token=``; the stock access log would write it out with the request line.
``streamai serve`` uses this class; so should anything else that serves ``create_app``.
"""

from __future__ import annotations

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

SECRET_PARAMS = ("token", "access_token")


class RedactingAccessLogger(AccessLogger):
    """The default access log line, with secret query parameters replaced by ``***``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        secrets = [name for name in SECRET_PARAMS if name in request.query]
        if secrets:
            try:
                request = request.clone(rel_url=request.rel_url.update_query({name: "***" for name in secrets}))
            except Exception:  # never log the original line if masking failed
                self.logger.info("%s %s (request line withheld)", request.remote, request.method)
                return
        super().log(request, response, time)
