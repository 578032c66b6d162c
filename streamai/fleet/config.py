"""The router's ``fleet.yaml``: regions, the inter-region RTT matrix, client IP prefixes, timings."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..web.protection import ProtectionSettings

DEFAULT_RTT_MS = 150.0  # two regions with no configured RTT and no locations
KM_PER_MS_RTT = 100.0  # light in fibre covers ~200 km/ms one way; a round trip halves it


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Region(Strict):
    """A region: where it is (for RTT estimates when the matrix has no entry)."""

    location: tuple[float, float] | None = None  # lat, lon


class FleetConfig(Strict):
    """Everything the router needs; every field has a documented default."""

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    heartbeat_interval_s: float = Field(2.0, gt=0)  # told to every node on registration
    missed_heartbeats: float = Field(1.5, ge=1)  # a node silent this many intervals is never picked
    mode: Literal["proxy", "redirect"] = "proxy"  # proxy the offer, or answer 307 to the chosen node
    max_attempts: int = Field(3, ge=1)  # nodes tried for one offer in proxy mode
    offer_timeout_s: float = Field(20.0, gt=0)  # one node's time to answer an offer
    failure_cooldown_s: float = Field(30.0, ge=0)  # a node that failed an offer is tried last this long
    load_penalty_ms: float = Field(50.0, ge=0)  # expected latency added by a full node (scaled by utilisation)
    warm_tie_ms: float = Field(5.0, ge=0)  # expected latencies this close are equal: a warm node goes first
    target_utilisation: float = Field(0.7, gt=0, le=1)  # for the autoscaling signal
    default_region: str | None = None  # client region when nothing else tells
    regions: dict[str, Region] = Field(default_factory=dict)
    rtt_ms: dict[str, dict[str, float]] = Field(default_factory=dict)  # symmetric; one direction is enough
    client_prefixes: dict[str, str] = Field(default_factory=dict)  # "10.1.0.0/16": "eu-west"
    node_token: str | None = None  # nodes must send it to register (also STREAMAI_NODE_TOKEN)
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)  # the entry point's own limits

    @field_validator("client_prefixes")
    @classmethod
    def _valid_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value:
            ipaddress.ip_network(prefix, strict=False)
        return value

    @property
    def heartbeat_timeout_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats

    def rtt(self, a: str | None, b: str | None) -> float:
        """Expected round trip between two regions: the matrix, else their distance, else a default."""
        if a is None or b is None:
            return DEFAULT_RTT_MS
        if a == b:
            return self.rtt_ms.get(a, {}).get(b, 0.0)
        for x, y in ((a, b), (b, a)):
            if y in self.rtt_ms.get(x, {}):
                return self.rtt_ms[x][y]
        la, lb = self.regions.get(a), self.regions.get(b)
        if la and lb and la.location and lb.location:
            return 5.0 + great_circle_km(la.location, lb.location) / KM_PER_MS_RTT
        return DEFAULT_RTT_MS

    def region_of_ip(self, address: str | None) -> str | None:
        """The region of a client address by the longest matching configured prefix."""
        if not address or not self.client_prefixes:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        best: tuple[int, str] | None = None
        for prefix, region in self.client_prefixes.items():
            network = ipaddress.ip_network(prefix, strict=False)
            if ip.version == network.version and ip in network and (best is None or network.prefixlen > best[0]):
                best = (network.prefixlen, region)
        return best[1] if best else None

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: object) -> FleetConfig:
        data: dict[str, object] = {}
        if path is not None:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon) points in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))
