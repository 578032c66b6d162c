"""The session API over HTTP: the offer with failover across router replicas, and DELETE.

``POST /v1/sessions`` goes to each base URL in turn (a node, or several routers): a
connection error, a timeout, a 5xx or a 429 moves on to the next one, and a URL that
answered ``Retry-After`` is not asked again before that time; any other 4xx is the
caller's mistake, which no other router would answer differently, and is raised at
once. A router's answer names the node (``node_url``); a router in redirect mode
answers 307, which is followed. Later requests go to the node directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from .errors import ClientCode, StreamaiError, error_from_response, is_retryable

SESSIONS_PATH = "/v1/sessions"
MAX_REDIRECTS = 3


def base_url(url: str) -> str:
    """A server's base URL without a trailing slash; :class:`StreamaiError` unless it is http(s) with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StreamaiError(f"not an http(s) URL: {url!r}", code="bad_url", fatal=False)
    return url.strip().rstrip("/")


class Endpoints:
    """The base URLs a session may be asked of (one node, or router replicas), in order of preference.

    Remembers when each asked not to be asked again (``Retry-After``) and which error it gave.
    """

    def __init__(self, urls: str | Sequence[str]) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise StreamaiError("no server URL given", code="bad_url", fatal=False)
        self.urls = [base_url(u) for u in listed]
        self._not_before: dict[str, float] = {}
        self._errors: dict[str, StreamaiError] = {}

    def available(self, at: float | None = None) -> list[str]:
        """The URLs that may be asked now, in the configured order."""
        at = time.monotonic() if at is None else at
        return [u for u in self.urls if self._not_before.get(u, 0.0) <= at]

    def refused(self, url: str, error: StreamaiError) -> None:
        """Note that ``url`` failed with ``error`` (and its ``Retry-After``, if any)."""
        self._errors[url] = error
        if error.retry_after:
            self._not_before[url] = time.monotonic() + error.retry_after

    def wait_s(self, at: float | None = None) -> float:
        """Seconds until some URL may be asked again (0 when one may be asked now)."""
        at = time.monotonic() if at is None else at
        return max(0.0, min(self._not_before.get(u, 0.0) for u in self.urls) - at)

    def soonest_error(self) -> StreamaiError | None:
        """The error of the URL that may be asked again soonest (for when none may be asked now)."""
        if not self._errors:
            return None
        url = min(self._errors, key=lambda u: self._not_before.get(u, 0.0))
        return self._errors[url]


@dataclass
class Offered:
    """A session's answer: the JSON, the node's base URL (where its later requests go), the URL that took the offer."""

    answer: dict[str, Any]
    node_url: str
    via: str


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


async def _post_once(
    http: aiohttp.ClientSession, base: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> Offered:
    url = f"{base}{SESSIONS_PATH}"
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with http.post(url, data=body, headers=dict(headers), timeout=_timeout(timeout),
                                 allow_redirects=False) as response:  # fmt: skip
                text = await response.text(errors="replace")
                status, reply_headers, reason = response.status, response.headers, response.reason or ""
        except TimeoutError:
            raise StreamaiError(f"no answer within {timeout:g} s", code=ClientCode.TIMEOUT, url=url) from None
        except (aiohttp.ClientError, OSError) as exc:
            message = f"cannot reach the server ({exc or type(exc).__name__})"
            raise StreamaiError(message, code=ClientCode.NETWORK, url=url) from None
        location = reply_headers.get("Location")
        if status in (307, 308) and location:
            url = urljoin(url, location)  # a router in redirect mode: the same offer goes to the node
            continue
        if status >= 300:
            raise error_from_response(status, text, reply_headers, url, reason)
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str) or not answer["sdp"]:
            raise StreamaiError("the server's answer has no SDP", status=status, code=ClientCode.BAD_RESPONSE, url=url)
        node = answer.get("node_url")
        if not isinstance(node, str) or not node.startswith(("http://", "https://")):
            node = url[: -len(SESSIONS_PATH)] if url.endswith(SESSIONS_PATH) else base
        return Offered(answer, node.rstrip("/"), base)
    raise StreamaiError(f"more than {MAX_REDIRECTS} redirects", code=ClientCode.BAD_RESPONSE, url=url)


async def post_offer(
    http: aiohttp.ClientSession,
    endpoints: Endpoints,
    offer: dict[str, Any],
    headers: Mapping[str, str],
    timeout: float,
) -> Offered:
    """POST the offer to each available URL in turn until one answers; raises the last failure."""
    body = json.dumps(offer).encode()
    sent = {"Content-Type": "application/json", **headers}
    last: StreamaiError | None = None
    for url in endpoints.available():
        try:
            return await _post_once(http, url, body, sent, timeout)
        except StreamaiError as error:
            if not is_retryable(error):
                raise
            endpoints.refused(url, error)
            last = error
    if last is None:  # every URL asked us to wait: say so with the soonest one's own answer
        last = endpoints.soonest_error() or StreamaiError("no server may be asked now", code=ClientCode.NETWORK)
        if last.retry_after is not None:
            last.retry_after = endpoints.wait_s()
    raise last


async def delete_session(
    http: aiohttp.ClientSession, node_url: str, session_id: str, token: str | None, timeout: float = 3.0
) -> int:
    """``DELETE`` a session on its node with its own token; returns the status (0 when unreachable)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.delete(f"{node_url}{SESSIONS_PATH}/{session_id}", headers=headers,
                               timeout=_timeout(timeout)) as response:  # fmt: skip
            return response.status
    except (TimeoutError, aiohttp.ClientError, OSError):
        return 0
