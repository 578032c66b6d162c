"""Every failure of the client as one typed error, with the JS client's codes and retry rules.

A refused request carries the server's ``{"error": {"code", "message"}}``, the HTTP
status and ``Retry-After``; failures with no HTTP response (network, timeout, ICE,
a vanished server) have status 0 and one of :class:`ClientCode`'s codes.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    413: "too_large",
    429: "rate_limited",
    500: "server_error",
    502: "bad_gateway",
    503: "over_capacity",
    504: "timeout",
}
"""Codes by HTTP status, used when the server's body names none (as in the JS client)."""

MAX_RETRY_AFTER_S = 3600.0  # a Retry-After beyond an hour is read as an hour


class ClientCode:
    """Codes the client raises itself (status 0: no HTTP response involved); the JS client's ``CLIENT_CODES``."""

    NETWORK = "network"
    """The server could not be reached."""
    TIMEOUT = "timeout"
    """Signaling, ICE or the events channel did not finish in time."""
    ICE_FAILED = "ice_failed"
    """ICE/DTLS failed or stayed disconnected."""
    SERVER_GONE = "server_gone"
    """The events channel closed, or the server sent nothing for ``server_timeout`` seconds."""
    SERVER_ERROR = "server_error"
    """A fatal ``error`` event from the server."""
    BAD_RESPONSE = "bad_response"
    """A 2xx answer that is not a valid session answer."""
    MESSAGE_TOO_LARGE = "message_too_large"
    """A control message over the server's 16 KiB limit."""
    NOT_CONNECTED = "not_connected"
    """A message sent while no events channel is open."""
    MEDIA = "media"
    """A media source could not be opened (file, microphone)."""
    ABORTED = "aborted"
    """Closed by the caller while connecting."""


RETRYABLE_CODES = frozenset(
    {ClientCode.NETWORK, ClientCode.TIMEOUT, ClientCode.ICE_FAILED, ClientCode.SERVER_GONE, ClientCode.SERVER_ERROR}
)


class StreamaiError(Exception):
    """A failed request or session.

    ``status`` is the HTTP status (0 when no response was involved), ``code`` the
    server's machine code (e.g. ``unknown_pipeline``, ``over_capacity``) or a
    :class:`ClientCode`, ``message`` the text for people, ``retry_after`` the seconds
    from ``Retry-After`` (None when absent), ``body`` the server's parsed body, ``url``
    what was asked, ``fatal`` whether it ended a session.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
        url: str | None = None,
        fatal: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or STATUS_CODES.get(status) or ("server_error" if status >= 500 else "error")
        self.retry_after = retry_after
        self.body = body
        self.url = url
        self.fatal = fatal

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed (429, 408, 5xx, network, timeout, ICE, gone server)."""
        return is_retryable(self)

    def as_dict(self) -> dict[str, Any]:
        """The error as JSON-ready fields (the JS error's ``toJSON``)."""
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "url": self.url,
        }

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        status = f"HTTP {self.status} " if self.status else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"StreamaiError(status={self.status}, code={self.code!r}, message={self.message!r})"


def is_retryable(error: BaseException) -> bool:
    """Whether a new attempt might succeed; client mistakes (400, 401, 403, 404, 413) never do."""
    if not isinstance(error, StreamaiError):
        return False
    if error.status in (408, 429) or error.status >= 500:
        return True
    if error.status >= 400:
        return False
    return error.code in RETRYABLE_CODES


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (delay seconds or an HTTP date) as seconds, bounded to an hour; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = math.ceil(when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def error_from_response(
    status: int, text: str, headers: Mapping[str, str] | None = None, url: str | None = None, reason: str = ""
) -> StreamaiError:
    """A non-2xx response as a :class:`StreamaiError`.

    The server's body is ``{"error": {"code", "message", ...}}``; anything else (a proxy's
    HTML, an empty body) still maps by status, as in the JS client.
    """
    code: str | None = None
    message: str | None = None
    body: Any = text or None
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            trimmed = text.strip()
            if trimmed and len(trimmed) <= 300 and not trimmed.startswith("<"):
                message = trimmed
        else:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                if isinstance(error.get("code"), str) and error["code"]:
                    code = error["code"]
                if isinstance(error.get("message"), str) and error["message"]:
                    message = error["message"]
            elif isinstance(error, str) and error:
                message = error
            elif isinstance(body, dict) and isinstance(body.get("message"), str):
                message = body["message"]
    if not message:
        message = f"HTTP {status}{f' {reason}' if reason else ''}"
    retry_after = None
    if headers is not None:
        retry_after = parse_retry_after(next((v for k, v in headers.items() if k.lower() == "retry-after"), None))
    return StreamaiError(message, status=status, code=code, retry_after=retry_after, body=body, url=url)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, never shorter than the server's ``Retry-After``.

    ``retries`` is how many further attempts follow the first (the JS client's default 5).
    """

    retries: int = 5
    base_s: float = 0.5
    max_s: float = 15.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, error: StreamaiError | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        draw = (rng or random).random()
        delay = min(self.max_s, self.base_s * self.factor ** max(0, attempt))
        delay *= 1 - self.jitter + 2 * self.jitter * draw
        delay = min(self.max_s, max(0.0, delay))
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay
