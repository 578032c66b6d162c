"""Node configuration: YAML or flags -> one typed object (no globals)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..rooms.settings import RoomSettings
from ..transport.ice import IceServer
from ..web.clients import parse_networks
from ..web.protection import ProtectionSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServerSettings(BaseModel):
    """Everything a node needs to serve sessions; every limit has a documented default."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # the demo binds loopback by default
    port: int = Field(8080, ge=0, le=65535)
    pipelines_dir: Path = PROJECT_ROOT / "pipelines"
    default_pipeline: str | None = None  # None: speech-translate if offered, else the first
    static_dir: Path = PROJECT_ROOT / "clients"
    max_sessions: int = Field(8, ge=1)
    max_session_s: float = Field(3600, gt=0)
    # offer answered but ICE never connected: the slot is held this long only (an unconnected offer
    # costs nothing to send, so it must not hold a session for long)
    connect_timeout_s: float = Field(6, gt=0)
    media_timeout_s: float = Field(5, gt=0)  # connected, then no inbound media: the peer vanished
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_control_bytes: int = Field(16 * 1024, ge=256)
    control_rate_per_s: float = Field(20, gt=0)
    control_burst: int = Field(40, ge=1)
    ice_servers: list[IceServer] = Field(default_factory=list)
    ice_loopback: bool = False
    # aiortc's audio jitter buffer waits for 4 packets (+60-80 ms) before releasing one; 1 measured
    # 250 -> 154 ms audio round trip on loopback. Raise it on jittery networks; None keeps aiortc's 4.
    # 0 releases each packet on arrival (transport/ice.py ReleaseOnArrival): 20 ms less (speech end ->
    # first packet at the client, transport share 37 -> 19 ms), and a reordered packet is dropped.
    audio_prefetch: int | None = Field(1, ge=0, le=16)
    # encoded video frames allowed to wait for the decoder; past it the node skips to a fresh
    # keyframe (PLI) instead of letting latency grow. None keeps aiortc's unbounded queue.
    max_decode_backlog: int | None = Field(8, ge=1, le=1000)
    token: str | None = Field(None, repr=False)  # API token: create sessions, read the catalogue; STREAMAI_TOKEN
    admin_token: str | None = Field(None, repr=False)  # list, read and end any session; STREAMAI_ADMIN_TOKEN
    node_token: str | None = Field(None, repr=False)  # this node's fleet credential; STREAMAI_NODE_TOKEN
    max_event_subscribers: int = Field(4, ge=1, le=64)  # events WebSockets per session
    max_ice_candidates: int = Field(32, ge=1, le=1000)  # remote candidates per session (offer + trickle)
    max_video_pixels: int = Field(1920 * 1088, ge=64 * 64)  # larger inbound video frames are dropped and counted
    cors_origins: list[str] = Field(default_factory=list)
    model_idle_timeout_s: float = Field(0, ge=0)
    # scale to zero (server/scale.py): models stay loaded between sessions; after this long with
    # no session the node unloads every model no session holds (preloaded ones stay). 0: never
    unload_models_after_s: float = Field(300, ge=0)
    preload: list[str] = Field(default_factory=list)  # pipelines whose models load at start and stay loaded
    retry_after_s: int = Field(5, ge=1)
    # fleet (streamai/fleet, docs/fleet.md): register with a router, run remote stages on Ray Serve
    router_url: str | None = None  # heartbeat to this router, or to one of replicas "http://a,http://b"
    region: str | None = None  # this node's region (routing; ``region_models``; ``data_region: required``)
    # client IP prefix -> region, for clients that reach this node without the router's signed grant
    client_prefixes: dict[str, str] = Field(default_factory=dict)
    node_id: str | None = None  # default: <hostname>-<port>
    location: tuple[float, float] | None = None  # lat, lon
    public_url: str | None = None  # how clients reach this node (default http://host:port)
    ray_address: str | None = None  # Ray cluster for placement remote/auto stages ("local": start one here)
    max_viewers: int = Field(16, ge=0)  # WHEP viewers per session (server/whip.py)
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)
    debug_endpoints: bool = False  # GET /v1/debug/resources (soak and leak tests)
    rooms: RoomSettings = Field(default_factory=RoomSettings)  # conversation rooms (streamai/rooms)

    def node_name(self) -> str:
        """This node's id in the fleet (``node_id``, else ``<hostname>-<port>``)."""
        return self.node_id or f"{socket.gethostname()}-{self.port}"

    @field_validator("client_prefixes")
    @classmethod
    def _valid_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        parse_networks(value)
        return value

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: object) -> ServerSettings:
        """Settings from an optional YAML file, then non-None overrides, then the STREAMAI_*TOKEN variables."""
        data: dict[str, object] = {}
        if path is not None:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        for field, variable in ENVIRONMENT.items():
            if field not in data and os.environ.get(variable):
                data[field] = os.environ[variable]
        return cls.model_validate(data)


ENVIRONMENT = {"token": "STREAMAI_TOKEN", "admin_token": "STREAMAI_ADMIN_TOKEN", "node_token": "STREAMAI_NODE_TOKEN"}
