"""Node membership: each node's own credential, bound to its node id, derived from the fleet secret.

The router holds one secret (``node_secret`` / ``STREAMAI_FLEET_SECRET``). A node's
credential is ``HMAC-SHA256(secret, "streamai-node-v1:" + node_id)``, handed to that node
once (``streamai fleet node-token NODE_ID``) and sent as its bearer token on heartbeats
and leaves. The router recomputes it per request, so it keeps no table, every router
replica sharing the secret agrees, and a node's credential is worthless for any other
node id: a node cannot update, impersonate or remove another. The same credential
signs the router's grants to that node (streamai/web/grants.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ..web.auth import same_secret


def node_token(secret: str, node_id: str) -> str:
    """The credential of ``node_id`` in the fleet whose secret is ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), f"streamai-node-v1:{node_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_node_credential(secret: str, node_id: str, presented: str | None) -> bool:
    """Whether ``presented`` is ``node_id``'s credential (constant time)."""
    return same_secret(presented, node_token(secret, node_id))
