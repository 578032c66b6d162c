"""Who may do what on a node: the API token, session and viewer capabilities, the admin token.

- The **API token** (``token`` / ``STREAMAI_TOKEN``; none: anyone) allows creating sessions
  and reading the node's catalogue (pipelines, models). Nothing else.
- Creating a session returns its **session token** (256 random bits). Only it, sent as
  ``Authorization: Bearer`` (or, for the browser's events WebSocket, as the subprotocol
  ``streamai.bearer.<token>``), reads or steers that session: its summary, events, control
  messages, WHIP ``PATCH``/``DELETE``, its WHEP viewers list, ending it.
- The **viewer token** of a session allows one thing: watching it over WHEP.
- The **admin token** (``admin_token`` / ``STREAMAI_ADMIN_TOKEN``; none: no admin access)
  lists every session and may read or end any of them.

A caller without the right capability gets 401 (no credential) or 403 (a credential that
does not grant this session) whether or not the session exists: nothing leaks about
other clients' sessions. The node keeps only SHA-256 digests of capabilities.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import ClientError
from ..web.auth import bearer_token, same_secret, websocket_token
from .settings import ServerSettings

if TYPE_CHECKING:
    from .sessions import Session, SessionManager


def new_capability() -> tuple[str, bytes]:
    """A fresh secret (for the client, once) and its digest (for the node)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def grants(token: str | None, capability: bytes | None) -> bool:
    """Whether ``token`` is the secret behind ``capability`` (constant time)."""
    return token is not None and capability is not None and hmac.compare_digest(digest(token), capability)


UNAUTHORIZED = ClientError(401, "unauthorized", "missing or wrong bearer token")


class Access:
    """The node's credential checks; handlers call one of these before touching anything."""

    def __init__(self, settings: ServerSettings) -> None:
        self.api_token = settings.token
        self.admin_token = settings.admin_token

    @staticmethod
    def caller(request: web.Request) -> str | None:
        """The credential the request carries (header, or the events WebSocket's subprotocol)."""
        return bearer_token(request) or websocket_token(request)

    def is_admin(self, request: web.Request) -> bool:
        return same_secret(self.caller(request), self.admin_token)

    def require_api(self, request: web.Request) -> None:
        """Creating sessions and reading the catalogue: the API token when one is set (or admin)."""
        if self.api_token is None:
            return
        caller = self.caller(request)
        if not (same_secret(caller, self.api_token) or same_secret(caller, self.admin_token)):
            raise ClientError(401, "unauthorized", "missing or wrong API token")

    def require_admin(self, request: web.Request) -> None:
        caller = self.caller(request)
        if caller is None:
            raise UNAUTHORIZED
        if self.admin_token is None:
            raise ClientError(403, "forbidden", "admin endpoints are off on this node (no admin_token is set)")
        if not same_secret(caller, self.admin_token):
            raise ClientError(403, "forbidden", "this token is not the node's admin token")

    def session(
        self, request: web.Request, manager: SessionManager, session_id: str, *, viewer: bool = False
    ) -> Session:
        """The session ``session_id`` if the caller holds its capability (its viewer's too when ``viewer``)."""
        caller = self.caller(request)
        if caller is None:
            raise UNAUTHORIZED
        session = manager.get(session_id)
        if same_secret(caller, self.admin_token):
            if session is None:
                raise ClientError(404, "unknown_session", "no such session")
            return session
        if session is not None and (
            grants(caller, session.capability) or (viewer and grants(caller, session.viewer_capability))
        ):
            return session
        if session is None and grants(caller, manager.ended_capability(session_id)):
            raise ClientError(404, "session_ended", "this session has ended")
        raise ClientError(403, "forbidden", "this token does not grant access to that session")
