"""ICE configuration: configured STUN/TURN servers, and loopback-only candidates for tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt
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


class ReleaseOnArrival(JitterBuffer):
    """An audio jitter buffer that hands each packet to the decoder as it arrives.

    aiortc's buffer releases a frame only when the next packet shows the frame is
    complete, so even at prefetch 0 every audio packet waits one packet time (20 ms)
    for its successor. An Opus packet is a whole frame: nothing needs waiting for. A
    packet older than one already released (reordered) is dropped, as aiortc drops
    packets that come too late; the decoder conceals the gap.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._origin is not None and uint16_gt(self._origin, packet.sequence_number):
            return False, None  # older than what was already released
        self._origin = uint16_add(packet.sequence_number, 1)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def set_audio_prefetch(receiver: object, packets: int) -> bool:
    """Lower aiortc's audio jitter-buffer prefetch (4 packets, about +60 ms) on one receiver.

    ``packets`` 0 releases each packet on arrival (``ReleaseOnArrival``). aiortc exposes
    no setting for it; this reaches its private jitter buffer and reports whether it could.
    """
    attribute = "_RTCRtpReceiver__jitter_buffer"
    buffer = getattr(receiver, attribute, None)
    if buffer is None or not hasattr(buffer, "_prefetch"):
        return False
    if packets == 0:
        setattr(receiver, attribute, ReleaseOnArrival(capacity=buffer.capacity))
        return True
    buffer._prefetch = packets
    return True
