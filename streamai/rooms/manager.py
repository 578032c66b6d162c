"""The node's rooms: creation against the room pipelines offered, node-wide caps, lookup, retirement."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, OrderedDict
from typing import Any

from ..errors import ClientError
from ..histogram import Histogram
from ..stage import StageRegistry
from .config import RoomPipelineLibrary, pair_name
from .participant import Role
from .room import ENDED_REMEMBERED, Joined, Room


class RoomManager:
    """Rooms of one node; every room pipeline comes from ``settings.rooms.pipelines_dir``."""

    def __init__(self, settings: Any, registry: StageRegistry, resources: Any = None) -> None:
        self.settings = settings  # ServerSettings
        self.room_settings = settings.rooms
        self.registry = registry
        self.resources = resources
        self.library = RoomPipelineLibrary(self.room_settings.pipelines_dir, registry)
        self.rooms: dict[str, Room] = {}
        self.ended: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()  # recently ended room -> its capabilities
        self.totals: Counter[str] = Counter()
        self.latency: dict[str, Histogram] = {}  # direction -> ended rooms' capture -> first translated audio

    def count(self, role: Role) -> int:
        return sum(room.count(role) for room in self.rooms.values())

    def create(self, pipeline: object, languages: object = None, max_speakers: object = None) -> Room:
        """A new, empty room; ``ClientError`` for an unknown pipeline, unsupported languages, a full node."""
        if not isinstance(pipeline, str) or not pipeline:
            pipeline = next(iter(sorted(self.library.pipelines)), "")
            if not pipeline:
                raise ClientError(404, "unknown_pipeline", "this node offers no room pipelines")
        config = self.library.get(pipeline)
        if config is None:
            offered = ", ".join(sorted(self.library.pipelines)) or "none"
            raise ClientError(404, "unknown_pipeline", f"unknown room pipeline {pipeline[:64]!r}; offered: {offered}")
        chosen = self._languages(config.name, config.languages, languages)
        limit = config.max_speakers
        if max_speakers is not None and (
            not isinstance(max_speakers, int) or isinstance(max_speakers, bool) or not 1 <= max_speakers <= limit
        ):
            raise ClientError(400, "bad_request", f"'max_speakers' must be an integer from 1 to {limit}")
        if len(self.rooms) >= self.room_settings.max_rooms:
            self.totals["rejected_capacity"] += 1
            raise ClientError(503, "over_capacity", f"this node holds {self.room_settings.max_rooms} rooms at most",
                              retry_after=self.settings.retry_after_s)  # fmt: skip
        room = Room(
            config,
            chosen,
            self.registry,
            self.settings,
            resources=self.resources,
            max_speakers=max_speakers,  # type: ignore[arg-type]
            on_closed=self._closed,
        )
        self.rooms[room.id] = room
        self.totals["created"] += 1
        return room

    @staticmethod
    def _languages(name: str, offered: list[str], asked: object) -> list[str]:
        if asked is None:
            return list(offered)
        if not isinstance(asked, list) or not all(isinstance(code, str) for code in asked) or len(asked) > 16:
            raise ClientError(400, "bad_request", "'languages' must be a list of language codes like ['en', 'pt']")
        chosen = list(dict.fromkeys(asked))
        if len(chosen) < 2:
            raise ClientError(400, "unsupported_language", "a room needs at least two languages")
        unsupported = [code for code in chosen if code not in offered]
        if unsupported:
            pairs = [pair_name(s, t) for s, t in itertools.permutations(chosen, 2) if {s, t} & set(unsupported)]
            shown = ", ".join(code[:16] for code in unsupported)
            raise ClientError(
                400, "unsupported_language",
                f"room pipeline {name!r} has no chain for {', '.join(p[:40] for p in pairs)} "
                f"(language {shown} is not offered; it offers {', '.join(offered)})",
            )  # fmt: skip
        return chosen

    async def join(
        self, room: Room, role: Role, language: object, name: str, offer_sdp: str, params: object = None
    ) -> Joined:
        """Admit a participant into ``room`` within the node's caps on speakers and listeners."""
        room.check_join(role, language)
        limit = self.room_settings.max_speakers if role == "speaker" else self.room_settings.max_listeners
        if self.count(role) >= limit:
            self.totals[f"rejected_{role}s"] += 1
            raise ClientError(503, "over_capacity", f"this node takes {limit} {role}s at most, all rooms together",
                              retry_after=self.settings.retry_after_s)  # fmt: skip
        return await room.join(role, language, name, offer_sdp, params)

    def _closed(self, room: Room) -> None:
        if self.rooms.pop(room.id, None) is None:
            return
        self.totals["closed"] += 1
        for direction, histogram in room.latency.items():
            self.latency.setdefault(direction, Histogram()).merge(histogram)
        self.ended[room.id] = tuple(room.capabilities.values())
        while len(self.ended) > ENDED_REMEMBERED:
            self.ended.popitem(last=False)

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    def ended_capabilities(self, room_id: str) -> tuple[bytes, ...]:
        """The capability digests of a recently ended room (so its owners hear it ended)."""
        return self.ended.get(room_id, ())

    async def close_all(self) -> None:
        await asyncio.gather(*(room.close("server shutting down") for room in list(self.rooms.values())))
