"""ICE configuration: configured STUN/TURN servers, and loopback-only candidates for tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiortc import RTCConfiguration, RTCIceServer
from pydantic import BaseModel, ConfigDict, Field


class IceServer(BaseModel):
    """One STUN or TURN server as configured (never a default public server).

    TURN credentials handed to clients (WHIP/WHEP ``Link`` headers) are short-lived: with
    ``secret`` (coturn's ``use-auth-secret``, the TURN REST scheme) each client gets a
    username ``<expiry>:streamai`` and its HMAC-SHA1 as password, valid ``ttl_s``. A static
    ``username``/``credential`` is used by the node itself only and never sent to clients.
    """

    model_config = ConfigDict(extra="forbid")
    urls: list[str]
    username: str | None = None
    credential: str | None = Field(None, repr=False)
    secret: str | None = Field(None, repr=False)  # shared with the TURN server: time-limited credentials
    ttl_s: int = Field(600, ge=60, le=86_400)

    def credentials(self, at: float | None = None) -> tuple[str | None, str | None]:
        """(username, password) a peer may use now: time-limited from ``secret``, else the static pair."""
        if self.secret is None:
            return self.username, self.credential
        username = f"{int((time.time() if at is None else at) + self.ttl_s)}:streamai"
        digest = hmac.new(self.secret.encode("utf-8"), username.encode("ascii"), hashlib.sha1).digest()
        return username, base64.b64encode(digest).decode("ascii")

    def for_clients(self) -> tuple[str | None, str | None] | None:
        """What a client may be told: the time-limited pair, (None, None) for no credential, None to withhold."""
        if self.secret is not None:
            return self.credentials()
        if self.username or self.credential:
            return None  # static TURN credentials would be a free relay for anyone who reads one answer
        return None, None


def rtc_configuration(servers: list[IceServer]) -> RTCConfiguration:
    """aiortc's configuration with exactly the configured servers (aiortc's default names a public STUN)."""
    ice = []
    for server in servers:
        username, credential = server.credentials()
        ice.append(RTCIceServer(urls=server.urls, username=username, credential=credential))
    return RTCConfiguration(iceServers=ice)


def offer_loopback_candidates_only() -> None:
    """Make aioice gather only 127.0.0.1 host candidates (it skips loopback otherwise).

    Process-wide; for tests and single-machine demos, enabled by ``--ice-loopback``.
    """
    import aioice.ice

    def loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_addresses


def set_audio_prefetch(receiver: object, packets: int) -> bool:
    """Lower aiortc's audio jitter-buffer prefetch (4 packets, about +60 ms) on one receiver.

    aiortc exposes no setting for it; this reaches its private jitter buffer and
    reports whether it could.
    """
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if buffer is None or not hasattr(buffer, "_prefetch"):
        return False
    buffer._prefetch = packets
    return True
