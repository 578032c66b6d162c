"""The router's ``fleet.yaml``: regions, the inter-region RTT matrix, client IP prefixes, timings."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..web.clients import RegionPrefixes, parse_networks
from ..web.protection import ProtectionSettings

REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
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
    load_penalty_ms: float = Field(50.0, ge=0)  # expected latency added by a full node (x utilisation squared)
    warm_tie_ms: float = Field(5.0, ge=0)  # expected latencies this close are equal: a warm node goes first
    target_utilisation: float = Field(0.7, gt=0, le=1)  # for the autoscaling signal
    default_region: str | None = None  # client region when nothing else tells
    # where this router stands (lat, lon): under anycast a client enters at its nearest PoP, so this
    # is where the client is, near enough to order the nodes of its own region by distance
    location: tuple[float, float] | None = None
    regions: dict[str, Region] = Field(default_factory=dict)
    rtt_ms: dict[str, dict[str, float]] = Field(default_factory=dict)  # symmetric; one direction is enough
    client_prefixes: dict[str, str] = Field(default_factory=dict)  # "10.1.0.0/16": "eu-west"
    # each node's credential is HMAC(node_secret, node id) (streamai/fleet/membership.py); also
    # STREAMAI_FLEET_SECRET. None: only a loopback router takes loopback nodes (the local demo)
    node_secret: str | None = Field(None, repr=False, min_length=16)
    admin_token: str | None = Field(None, repr=False)  # GET /v1/nodes, /v1/fleet/load; STREAMAI_ADMIN_TOKEN
    node_networks: list[str] = Field(default_factory=list)  # CIDRs node URLs must lie in (IP literals); [] any
    evict_after_s: float = Field(60.0, gt=0)  # a node silent this long is forgotten (it re-registers on return)
    max_nodes: int = Field(10_000, ge=1)  # registrations beyond this are refused
    max_answer_bytes: int = Field(64 * 1024, ge=4096)  # a node's answer to an offer is read up to this
    # shared state for router replicas (streamai/fleet/redis_state.py); None: this router's memory only
    redis_url: str | None = Field(None, repr=False)  # may hold a password
    redis_prefix: str = Field("streamai:fleet:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    sync_interval_s: float = Field(0.25, gt=0, le=10)  # how often a replica refreshes its view from Redis
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)  # the entry point's own limits

    @field_validator("client_prefixes")
    @classmethod
    def _valid_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        parse_networks(value)
        for region in value.values():
            if not REGION_PATTERN.match(region):
                raise ValueError(f"region {region!r} must match {REGION_PATTERN.pattern}")
        return value

    @field_validator("node_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("regions")
    @classmethod
    def _valid_regions(cls, value: dict[str, Region]) -> dict[str, Region]:
        for region in value:
            if not REGION_PATTERN.match(region):
                raise ValueError(f"region {region!r} must match {REGION_PATTERN.pattern}")
        return value

    def known_region(self, region: str | None) -> bool:
        """Whether ``region`` may appear in routing and metrics (any well-formed name when none are configured)."""
        if region is None:
            return False
        return region in self.regions if self.regions else bool(REGION_PATTERN.match(region))

    def on_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost")

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
        return RegionPrefixes(self.client_prefixes).region_of(address) if self.client_prefixes else None

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: object) -> FleetConfig:
        data: dict[str, object] = {}
        if path is not None:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        for field, variable in (("node_secret", "STREAMAI_FLEET_SECRET"), ("admin_token", "STREAMAI_ADMIN_TOKEN")):
            if field not in data and os.environ.get(variable):
                data[field] = os.environ[variable]
        return cls.model_validate(data)


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon) points in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))
