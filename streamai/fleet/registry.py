"""What the router knows about each node: its last heartbeat, when it came, and what the router saw."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..frames import now


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # node ids, pipeline and stage names, model ids
REGION = r"^[a-z0-9][a-z0-9-]{0,31}$"
ShortName = Annotated[str, StringConstraints(pattern=NAME)]
Milliseconds = Annotated[float, Field(ge=0, le=3_600_000)]


class PipelineOffer(Strict):
    """A pipeline a node serves, with its region rule and the node's measured stage latencies."""

    name: ShortName
    data_region: Literal["any", "preferred", "required"] = "any"
    budget_ms: Milliseconds = 500.0
    stages: list[ShortName] = Field(default_factory=list, max_length=64)
    inputs: list[Literal["audio", "video"]] = Field(default_factory=list, max_length=2)
    # measured on this node; absent until used. Finite, non-negative: a negative or NaN figure
    # would rank a node first (or break every ranking)
    stage_p90_ms: dict[ShortName, Milliseconds] = Field(default_factory=dict, max_length=64)
    warm: bool = False  # its models are loaded on the node now (a session would not wait for them)

    def expected_ms(self) -> float:
        """The pipeline's measured service time on this node (0 when it has not run yet)."""
        return sum(self.stage_p90_ms.values())


class NodeReport(Strict):
    """One heartbeat: everything a node tells the router (registration is the first heartbeat).

    Every field is bounded: the router ranks on these numbers and sends clients to the URL.
    """

    node_id: ShortName
    url: str = Field(max_length=256)  # where clients reach the node: scheme://host[:port], nothing more
    region: str = Field(pattern=REGION)
    location: tuple[Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-180, le=180)]] | None = None
    capacity: int = Field(ge=0, le=100_000)  # max sessions
    sessions: int = Field(0, ge=0, le=100_000)
    cpu_free: float | None = Field(None, ge=0, le=1)
    gpu_free: float | None = Field(None, ge=0, le=1)
    pipelines: list[PipelineOffer] = Field(default_factory=list, max_length=256)
    # models loaded now (a cold node pays load time), as "<model id>[:<variant>]"
    warm: list[Annotated[str, StringConstraints(max_length=256)]] = Field(default_factory=list, max_length=256)
    models: list[ShortName] = Field(default_factory=list, max_length=256)  # catalog ids installed on the node
    model_state: Literal["warm", "cold"] = "warm"  # cold: scaled to zero, no model loaded
    idle_s: float | None = Field(None, ge=0, le=10**9)  # seconds since the node's last session ended (0: open)
    remote_stages: bool = False  # the node can run placement: remote/auto stages

    @field_validator("url")
    @classmethod
    def _plain_origin(cls, value: str) -> str:
        return node_origin(value)


def node_origin(url: str) -> str:
    """``url`` as ``scheme://host[:port]`` if it is exactly that (http/https; no user, path, query or
    fragment), else ValueError: the router appends its own paths and never follows a node elsewhere."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        raise ValueError("url must be scheme://host[:port]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be http:// or https:// with a host")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError("url must be scheme://host[:port], with no user, path, query or fragment")
    if not url.isascii() or any(c.isspace() for c in url):
        raise ValueError("url must be plain ASCII")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(eq=False)
class NodeEntry:
    """A node as the router tracks it."""

    report: NodeReport
    last_seen: float = field(default_factory=now)
    registered: float = field(default_factory=time.time)
    heartbeats: int = 1
    routed_since_heartbeat: int = 0  # sessions sent there since its last report (optimistic load)
    unreachable_at: float | None = None  # an offer failed to connect; cleared by a newer heartbeat
    offer_failed_at: dict[str, float] = field(default_factory=dict)  # pipeline -> when the node last failed it

    @property
    def id(self) -> str:
        return self.report.node_id

    @property
    def load(self) -> int:
        return self.report.sessions + self.routed_since_heartbeat

    @property
    def utilisation(self) -> float:
        """Share of session capacity in use (CPU share is reported, not routed on: it is too noisy)."""
        return self.load / self.report.capacity if self.report.capacity else 1.0

    def recently_failed(self, pipeline: str, at: float, cooldown_s: float) -> bool:
        """Whether the node failed an offer of ``pipeline`` within ``cooldown_s`` (it is then tried last)."""
        failed = self.offer_failed_at.get(pipeline)
        return failed is not None and at - failed < cooldown_s

    def offer(self, pipeline: str) -> PipelineOffer | None:
        return next((p for p in self.report.pipelines if p.name == pipeline), None)

    def state(self, at: float, timeout_s: float) -> str:
        """``healthy``, ``unreachable`` (an offer could not connect) or ``missed_heartbeats``."""
        if at - self.last_seen > timeout_s:
            return "missed_heartbeats"
        if self.unreachable_at is not None:
            return "unreachable"
        return "healthy"

    def describe(self, at: float, timeout_s: float) -> dict[str, Any]:
        return {
            **self.report.model_dump(),
            "state": self.state(at, timeout_s),
            "last_seen_s": round(at - self.last_seen, 3),
            "registered": self.registered,
            "heartbeats": self.heartbeats,
            "load": self.load,
            "utilisation": round(self.utilisation, 3),
        }


class OfferIndex:
    """Nodes by pipeline and region, and the ``data_region`` policies declared per pipeline.

    What routing asks the fleet for (``routing.FleetView``): it reads the nodes of the
    regions nearest the client, not the whole fleet. Kept up to date on every report
    and removal (a report may change a node's region or pipelines).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, dict[str, NodeEntry]]] = {}  # pipeline -> region -> node id -> entry
        self._policies: dict[str, Counter[str]] = {}  # pipeline -> data_region policy -> nodes declaring it
        self._indexed: dict[str, list[tuple[str, str, str]]] = {}  # node id -> (pipeline, region, policy)
        self._service: dict[str, dict[str, float]] = {}  # pipeline -> node id -> measured service ms
        self._floor: dict[str, float] = {}  # pipeline -> the least measured service (kept while nodes change)

    def add(self, entry: NodeEntry) -> None:
        self.discard(entry.id)
        keys: list[tuple[str, str, str]] = []
        for offer in entry.report.pipelines:
            if any(k[0] == offer.name for k in keys):
                continue  # the first offer of a name is the one routing reads (NodeEntry.offer)
            region = entry.report.region
            self._nodes.setdefault(offer.name, {}).setdefault(region, {})[entry.id] = entry
            self._policies.setdefault(offer.name, Counter())[offer.data_region] += 1
            if offer.stage_p90_ms:
                service = offer.expected_ms()
                self._service.setdefault(offer.name, {})[entry.id] = service
                self._floor[offer.name] = min(self._floor.get(offer.name, math.inf), service)
            keys.append((offer.name, region, offer.data_region))
        self._indexed[entry.id] = keys

    def discard(self, node_id: str) -> None:
        for pipeline, region, policy in self._indexed.pop(node_id, []):
            by_region = self._nodes[pipeline]
            del by_region[region][node_id]
            if not by_region[region]:
                del by_region[region]
            if not by_region:
                del self._nodes[pipeline]
            policies = self._policies[pipeline]
            policies[policy] -= 1
            if policies[policy] <= 0:
                del policies[policy]
            if not policies:
                del self._policies[pipeline]
            services = self._service.get(pipeline, {})
            service = services.pop(node_id, None)
            if service is not None and service <= self._floor[pipeline]:  # the least one left: find the next
                self._floor[pipeline] = min(services.values(), default=math.inf)

    def data_regions(self, pipeline: str) -> Collection[str]:
        return self._policies.get(pipeline, {}).keys()

    def regions_offering(self, pipeline: str) -> Collection[str]:
        return self._nodes.get(pipeline, {}).keys()

    def service_floor(self, pipeline: str) -> float:
        return self._floor.get(pipeline, math.inf)

    def offering(self, pipeline: str, region: str) -> Collection[NodeEntry]:
        return self._nodes.get(pipeline, {}).get(region, {}).values()


class NodeRegistry:
    """The fleet by node id; a heartbeat from an unknown node registers it (router restarts are harmless).

    It is a ``routing.FleetView``: ``offering(pipeline, region)`` and friends read its ``OfferIndex``.
    """

    def __init__(self, heartbeat_timeout_s: float) -> None:
        self.timeout_s = heartbeat_timeout_s
        self.nodes: dict[str, NodeEntry] = {}
        self.index = OfferIndex()

    def heartbeat(self, report: NodeReport) -> tuple[NodeEntry, bool]:
        """Record a report; returns the entry and whether the node is new."""
        entry = self.nodes.get(report.node_id)
        if entry is None:
            entry = self.nodes[report.node_id] = NodeEntry(report)
            self.index.add(entry)
            return entry, True
        entry.report = report
        self.index.add(entry)
        entry.last_seen = now()
        entry.heartbeats += 1
        entry.routed_since_heartbeat = 0
        entry.unreachable_at = None
        return entry, False

    def remove(self, node_id: str) -> bool:
        self.index.discard(node_id)
        return self.nodes.pop(node_id, None) is not None

    # -- routing.FleetView -----------------------------------------------------------
    def all_nodes(self) -> Collection[NodeEntry]:
        return self.nodes.values()

    def data_regions(self, pipeline: str) -> Collection[str]:
        return self.index.data_regions(pipeline)

    def regions_offering(self, pipeline: str) -> Collection[str]:
        return self.index.regions_offering(pipeline)

    def offering(self, pipeline: str, region: str) -> Collection[NodeEntry]:
        return self.index.offering(pipeline, region)

    def service_floor(self, pipeline: str) -> float:
        return self.index.service_floor(pipeline)

    def healthy(self, at: float | None = None) -> list[NodeEntry]:
        at = now() if at is None else at
        return [n for n in self.nodes.values() if n.state(at, self.timeout_s) == "healthy"]

    def mark_unreachable(self, node_id: str) -> None:
        entry = self.nodes.get(node_id)
        if entry is not None:
            entry.unreachable_at = now()
