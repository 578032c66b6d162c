"""ICE configuration: configured STUN/TURN servers, and loopback-only candidates for tests."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCIceServer
from pydantic import BaseModel, ConfigDict


class IceServer(BaseModel):
    """One STUN or TURN server as configured (never a default public server)."""

    model_config = ConfigDict(extra="forbid")
    urls: list[str]
    username: str | None = None
    credential: str | None = None


def rtc_configuration(servers: list[IceServer]) -> RTCConfiguration:
    """aiortc's configuration with exactly the configured servers (aiortc's default names a public STUN)."""
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]
    )


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
