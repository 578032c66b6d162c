"""Room pipelines without models for the room tests: tones mark who said what, in which direction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamai.rooms.settings import RoomSettings
from streamai.server.settings import ServerSettings

# what each speaker sends, and what each direction's "translation" turns it into (a tone of its own)
EN_VOICE, PT_VOICE = 500.0, 1300.0
EN_TO_PT, PT_TO_EN = 700.0, 1700.0


def tone_room(name: str = "tones", **overrides: Any) -> dict[str, Any]:
    """A room of en and pt whose chains need no model: hear = passthrough, say = a tone per direction."""
    room: dict[str, Any] = {
        "name": name,
        "languages": ["en", "pt"],
        "budget_ms": 2000,
        "late_audio": "play",
        "max_speakers": 2,
        "max_listeners": 12,
        "hear": {"en": {"stages": [{"type": "passthrough"}]}, "pt": {"stages": [{"type": "passthrough"}]}},
        "pairs": {
            "en->pt": {"stages": [{"type": "tone", "params": {"frequency_hz": EN_TO_PT, "level": 0.2}}]},
            "pt->en": {"stages": [{"type": "tone", "params": {"frequency_hz": PT_TO_EN, "level": 0.2}}]},
        },
    }
    room.update(overrides)
    return room


def node_settings(folder: Path, *rooms: dict[str, Any], **room_settings: Any) -> ServerSettings:
    """Loopback node settings whose room pipelines are ``rooms`` (written into ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for room in rooms:
        (folder / f"{room['name']}.yaml").write_text(yaml.safe_dump(room, sort_keys=False))
    return ServerSettings(
        port=0,
        ice_loopback=True,
        admin_token="admin-secret",
        rooms=RoomSettings(pipelines_dir=folder, **room_settings),
    )
