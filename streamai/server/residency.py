"""Data residency on the node: which region a client is in, and who may say so.

A pipeline with ``data_region: required`` serves only clients of the node's own region.
The client's region is never taken from the client: it comes from the router's signed
grant (streamai/web/grants.py), or from this node's own IP-prefix table. The grant also
names the client's address behind the router, so per-address limits see the client,
not the router.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..config import PipelineConfig
from ..web.clients import parse_address
from ..web.grants import HEADER as GRANT_HEADER
from ..web.grants import Grant, verify_grant
from ..web.protection import CLIENT, EntryGuard
from .sessions import SessionError
from .settings import ServerSettings
from .state import PREFIXES, SETTINGS


def request_grant(request: web.Request, settings: ServerSettings, pipeline: str | None = None) -> Grant | None:
    """The router's grant for this request: in the ``Streamai-Grant`` header (proxied by the router), or
    in the query after the router's redirect, then only for the very client it names (it came directly)."""
    node_id = settings.node_name()
    grant = verify_grant(request.headers.get(GRANT_HEADER), settings.node_token, node_id, pipeline)
    if grant is not None:
        return grant
    grant = verify_grant(request.query.get("grant"), settings.node_token, node_id, pipeline)
    if grant is not None and grant.client is not None and grant.client == str(parse_address(request.remote)):
        return grant
    return None


def client_resolver(settings: ServerSettings, guard: EntryGuard) -> Any:
    """Who is asking: the router's signed grant names the client behind it; otherwise the guard decides."""

    def client_of(request: web.Request) -> str:
        grant = request_grant(request, settings)
        if grant is not None and grant.client:
            return grant.client
        return guard.client_of(request)

    return client_of


def check_region(request: web.Request, config: PipelineConfig) -> None:
    """A ``data_region: required`` pipeline serves only clients of this node's region, as the router
    (signed grant) or this node's own prefix table decided; never as the client claims."""
    settings = request.app[SETTINGS]
    if config.data_region != "required" or settings.region is None:
        return
    grant = request_grant(request, settings, config.name)
    region = grant.region if grant is not None else request.app[PREFIXES].region_of(request.get(CLIENT))
    if region != settings.region:
        raise SessionError(
            403, "region_not_allowed",
            f"pipeline {config.name!r} keeps data in region {settings.region!r}; this client's region is "
            f"{'unknown' if region is None else repr(region)} (the router or this node decides it, never the client)",
        )  # fmt: skip
