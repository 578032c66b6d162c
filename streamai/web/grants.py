"""Routing grants: what the router decided about a session, signed so that the chosen node can believe it.

The router decides the client's region (from its address, never from a header the
client sets) and the client's address (the node sees only the router's). It hands
both to the node in ``Streamai-Grant``, signed with HMAC-SHA256 under the node's own
credential (``node_token``), bound to that node, to the pipeline, and valid for a
short time. A node verifies with its own credential; nobody else can mint a grant
for it, and a grant for one node is worthless at another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

HEADER = "Streamai-Grant"
VERSION = "v1"
LIFETIME_S = 30.0
MAX_LENGTH = 1024


@dataclass(frozen=True)
class Grant:
    """The router's decision for one session offer."""

    node_id: str
    pipeline: str
    region: str | None
    client: str | None
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode("utf-8"), f"{VERSION}.{payload}".encode("ascii"), hashlib.sha256).digest())


def sign_grant(grant: Grant, node_token: str) -> str:
    """The header value carrying ``grant``, signed with the node's credential."""
    body = {"n": grant.node_id, "p": grant.pipeline, "r": grant.region, "c": grant.client, "e": round(grant.expires)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return f"{VERSION}.{payload}.{_mac(node_token, payload)}"


def new_grant(node_id: str, pipeline: str, region: str | None, client: str | None, node_token: str) -> str:
    """Sign a grant for a session of ``pipeline`` at ``node_id``, valid for ``LIFETIME_S``."""
    return sign_grant(Grant(node_id, pipeline, region, client, time.time() + LIFETIME_S), node_token)


def verify_grant(value: str | None, node_token: str | None, node_id: str, pipeline: str | None = None) -> Grant | None:
    """The grant in ``value`` if it is well-formed, signed for this node, unexpired (and for ``pipeline``)."""
    if not value or node_token is None or len(value) > MAX_LENGTH or not value.isascii():
        return None
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        return None
    _, payload, mac = parts
    if not hmac.compare_digest(mac.encode("ascii"), _mac(node_token, payload).encode("ascii")):
        return None
    try:
        body = json.loads(_unb64(payload))
        grant = Grant(str(body["n"]), str(body["p"]), body.get("r"), body.get("c"), float(body["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if grant.node_id != node_id or grant.expires < time.time():
        return None
    if pipeline is not None and grant.pipeline != pipeline:
        return None
    return grant
