"""Reading and comparing credentials from requests: one parser, constant-time compares.

A header can carry any bytes (aiohttp decodes them with ``surrogateescape``); a token
is only ever printable ASCII, so anything else is "no token", never an exception.
"""

from __future__ import annotations

import hmac

from aiohttp import web


def clean_token(value: str | None) -> str | None:
    """``value`` when it can be a token (printable ASCII, no spaces, at most 512 chars), else None."""
    if not value or len(value) > 512 or not value.isascii() or not value.isprintable() or " " in value:
        return None
    return value


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when absent or malformed."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return clean_token(value.strip())


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of two tokens; False when either is missing."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("ascii", "replace"), expected.encode("utf-8"))


WEBSOCKET_TOKEN_PREFIX = "streamai.bearer."  # a browser cannot set headers on a WebSocket: it offers this subprotocol
WEBSOCKET_PROTOCOL = "streamai.v1"  # the subprotocol the server answers with (never the one holding the token)


def websocket_token(request: web.Request) -> str | None:
    """The token offered as ``Sec-WebSocket-Protocol: streamai.v1, streamai.bearer.<token>``, or None."""
    for header in request.headers.getall("Sec-WebSocket-Protocol", []):
        for offered in header.split(","):
            offered = offered.strip()
            if offered.startswith(WEBSOCKET_TOKEN_PREFIX):
                return clean_token(offered[len(WEBSOCKET_TOKEN_PREFIX) :])
    return None
