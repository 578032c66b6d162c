"""A node's limits on rooms (the ``rooms:`` section of the node settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class RoomSettings(BaseModel):
    """How many rooms, speakers and listeners a node takes, and where its room pipelines are."""

    model_config = ConfigDict(extra="forbid")

    pipelines_dir: Path = PROJECT_ROOT / "pipelines" / "rooms"
    max_rooms: int = Field(4, ge=0, le=1000)  # 0: no rooms on this node
    # speakers on the node, all rooms together: each runs speech chains (models), like a session
    max_speakers: int = Field(8, ge=0, le=1000)
    max_listeners: int = Field(128, ge=0, le=100_000)  # listeners on the node, all rooms together
    empty_s: float = Field(30, ge=0, le=86_400)  # a room with nobody in it this long ends (also a new one)
    max_room_s: float = Field(4 * 3600, gt=0, le=7 * 86_400)  # no room lives longer, whatever its pipeline says
    max_name_chars: int = Field(40, ge=1, le=200)  # a participant's display name is cut to this
