"""Rooms over HTTP: create a room, join it as a speaker or a listener, leave, watch its events.

- ``GET /v1/room-pipelines`` (API token): the room pipelines offered.
- ``POST /v1/rooms`` ``{pipeline?, languages?, max_speakers?}`` (API token): a new room.
- ``GET /v1/rooms`` (admin): every room.
- ``GET`` / ``DELETE /v1/rooms/{id}``: read (any of its tokens, a participant of it) / end (room token).
- ``POST /v1/rooms/{id}/participants`` ``{sdp, type, language, name?, role?, params?}``: join as a
  ``speaker`` (join or room token) or a ``listener`` (join, listen or room token).
- ``GET`` / ``DELETE /v1/rooms/{id}/participants/{pid}``: read / leave (that participant's session
  token, or the room token); ``.../events``: its events WebSocket (its session token).

Creating a room answers three capabilities, shown once: ``room_token`` (the owner's: read
and end the room, join it), ``join_token`` (join as a speaker or a listener) and
``listen_token`` (listen only). Joining answers the participant's own ``session_token``:
it reads and steers that participant only (leave, events, its control messages). The
node keeps only digests. Without the right capability: 401 (none) or 403 (one that does
not grant this room), whether or not the room exists; a room's own token after it ended: 404.
The admin token reads and ends any room.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import ClientError
from ..rooms.manager import RoomManager
from ..rooms.participant import Participant
from ..rooms.room import Room
from ..web.metrics import FunctionCollector, add_histogram, histogram_family
from .access import UNAUTHORIZED, Access, grants, new_capability
from .event_socket import serve_event_socket
from .requests import read_json
from .sessions import check_sdp
from .state import ACCESS, LIBRARY, METRICS, MODELS, SETTINGS

ROOMS = web.AppKey("rooms", RoomManager)
log = logging.getLogger(__name__)

CREATOR_KINDS = ("room", "join", "listen")


def display_name(value: object, limit: int, fallback: str) -> str:
    """A participant's name as others see it: printable, trimmed, at most ``limit`` characters."""
    if not isinstance(value, str):
        return fallback
    kept = "".join(c for c in value if unicodedata.category(c)[0] not in ("C", "Z") or c == " ")
    return " ".join(kept.split())[:limit] or fallback


# -- access ----------------------------------------------------------------------------------
def room_for(request: web.Request, kinds: tuple[str, ...], participant_id: str | None = None) -> tuple[Room, str]:
    """The room of the path if the caller holds one of ``kinds`` of its capabilities; ``(room, kind)``.

    ``kinds`` name room capabilities (``room``, ``join``, ``listen``) and ``participant``
    (the session token of the participant ``participant_id``, or of any participant of
    the room when None). The admin token is always enough.
    """
    access: Access = request.app[ACCESS]
    caller = access.caller(request)
    if caller is None:
        raise UNAUTHORIZED
    manager = request.app[ROOMS]
    room_id = request.match_info["id"]
    room = manager.get(room_id)
    if access.is_admin(request):
        if room is None:
            raise ClientError(404, "unknown_room", "no such room")
        return room, "admin"
    if room is not None:
        for kind in kinds:
            if kind in CREATOR_KINDS and grants(caller, room.capabilities.get(kind)):
                return room, kind
        if "participant" in kinds:
            candidates = (
                [room.participants.get(participant_id)] if participant_id is not None else room.participants.values()
            )
            if any(p is not None and grants(caller, p.capability) for p in candidates):
                return room, "participant"
            ended = room.ended_participants.get(participant_id or "")
            if ended is not None and grants(caller, ended):
                raise ClientError(404, "participant_ended", "this participant has left the room")
    elif any(grants(caller, digest) for digest in manager.ended_capabilities(room_id)):
        raise ClientError(404, "room_ended", "this room has ended")
    raise ClientError(403, "forbidden", "this token does not grant access to that room")


def participant_for(request: web.Request, kinds: tuple[str, ...] = ("participant", "room")) -> Participant:
    participant_id = request.match_info["pid"]
    room, _ = room_for(request, kinds, participant_id)
    participant = room.participants.get(participant_id)
    if participant is None:
        raise ClientError(404, "unknown_participant", "no such participant in this room")
    return participant


# -- handlers ----------------------------------------------------------------------------------
def describe(config: Any) -> dict[str, Any]:
    return {
        "name": config.name,
        "description": config.description,
        "languages": config.languages,
        "pairs": sorted(config.pairs),
        "budget_ms": config.budget_ms,
        "late_audio": config.late_audio,
        "max_speakers": config.max_speakers,
        "max_listeners": config.max_listeners,
        "max_age_s": config.max_age_s,
    }


async def list_room_pipelines(request: web.Request) -> web.Response:
    request.app[ACCESS].require_api(request)
    library = request.app[ROOMS].library
    return web.json_response(
        {
            "pipelines": [describe(c) for _, c in sorted(library.pipelines.items())],
            "invalid": sorted(library.errors),  # file names only: the reasons are in the node's log
        }
    )


async def create_room(request: web.Request) -> web.Response:
    request.app[ACCESS].require_api(request)
    body = await read_json(request)
    room = request.app[ROOMS].create(body.get("pipeline"), body.get("languages"), body.get("max_speakers"))
    tokens = {}
    for kind in CREATOR_KINDS:
        tokens[f"{kind}_token"], room.capabilities[kind] = new_capability()
    answer = {
        "room_id": room.id,
        "pipeline": room.config.name,
        "languages": room.languages,
        "max_speakers": room.max_speakers,
        "max_listeners": room.max_listeners,
        "max_age_s": room.max_age_s,
        "participants_url": f"/v1/rooms/{room.id}/participants",
        **tokens,  # room_token: read and end it; join_token: speak or listen; listen_token: listen. Shown once.
    }
    return web.json_response(
        answer, status=201, headers={"Location": f"/v1/rooms/{room.id}", "Cache-Control": "no-store"}
    )


async def list_rooms(request: web.Request) -> web.Response:
    request.app[ACCESS].require_admin(request)
    return web.json_response({"rooms": [room.summary() for room in request.app[ROOMS].rooms.values()]})


async def get_room(request: web.Request) -> web.Response:
    room, _ = room_for(request, ("room", "join", "listen", "participant"))
    return web.json_response(room.summary())


async def delete_room(request: web.Request) -> web.Response:
    room, _ = room_for(request, ("room",))
    await room.close("closed by its owner")
    return web.json_response({"ok": True, "id": room.id})


async def join_room(request: web.Request) -> web.Response:
    body = await read_json(request)
    role = body.get("role", "speaker")
    if role not in ("speaker", "listener"):
        raise ClientError(400, "bad_request", "'role' must be 'speaker' or 'listener'")
    room, _ = room_for(request, ("room", "join") if role == "speaker" else ("room", "join", "listen"))
    if body.get("type", "offer") != "offer":
        raise ClientError(400, "bad_sdp", "'type' must be 'offer'")
    settings = request.app[SETTINGS]
    sdp = check_sdp(body.get("sdp"), settings.max_ice_candidates)
    name = display_name(body.get("name"), settings.rooms.max_name_chars, role)
    joined = await request.app[ROOMS].join(room, role, body.get("language"), name, sdp, body.get("params"))
    participant = joined.participant
    token, participant.capability = new_capability()
    return web.json_response(
        {
            "room_id": room.id,
            "participant_id": participant.id,
            "role": participant.role,
            "language": participant.language,
            "name": participant.name,
            "languages": room.languages,
            "sdp": joined.answer,
            "type": "answer",
            "events_url": f"/v1/rooms/{room.id}/participants/{participant.id}/events",
            "session_token": token,  # this participant's own capability; shown once
        },
        headers={"Cache-Control": "no-store"},
    )


async def get_participant(request: web.Request) -> web.Response:
    participant = participant_for(request)
    room = request.app[ROOMS].get(participant.room_id)
    return web.json_response(room.participant_summary(participant) if room else participant.summary())


async def leave_room(request: web.Request) -> web.Response:
    participant = participant_for(request)
    await participant.close("left the room")
    return web.json_response({"ok": True, "id": participant.id})


async def participant_events(request: web.Request) -> web.StreamResponse:
    """A participant's events as a WebSocket (the browser's way: the token as a subprotocol)."""
    participant = participant_for(request, ("participant",))
    settings = request.app[SETTINGS]
    if len(participant.subscribers) >= settings.max_event_subscribers:
        raise ClientError(429, "too_many_subscribers", f"at most {settings.max_event_subscribers} event sockets "
                          "per participant", retry_after=settings.retry_after_s)  # fmt: skip
    if participant.closed:
        raise ClientError(404, "participant_ended", "this participant has left the room")
    return await serve_event_socket(
        request,
        participant,
        settings,
        greeting={"state": participant.state, "participant": participant.id},
        closed=lambda: participant.closed,
        farewell=b"left the room",
    )


# -- metrics -----------------------------------------------------------------------------------
def room_metrics(manager: RoomManager) -> list[Metric]:
    rooms = GaugeMetricFamily("streamai_rooms", "Rooms open on this node.", value=len(manager.rooms))
    outcomes = CounterMetricFamily("streamai_rooms", "Rooms by outcome since start.", labels=["outcome"])
    for outcome, count in sorted(manager.totals.items()):
        outcomes.add_metric([outcome], count)
    people = GaugeMetricFamily("streamai_room_participants", "Room participants now, by role.", labels=["role"])
    for role in ("speaker", "listener"):
        people.add_metric([role], manager.count(role))
    latency = histogram_family(
        "streamai_room_first_audio_seconds",
        "Speaker's capture to a clause's first translated audio sent, by direction.",
        ["direction"],
    )
    merged: dict[str, Any] = {}
    for direction, histogram in manager.latency.items():
        merged.setdefault(direction, type(histogram)()).merge(histogram)
    for room in manager.rooms.values():
        for direction, histogram in room.latency.items():
            merged.setdefault(direction, type(histogram)()).merge(histogram)
    for direction, histogram in sorted(merged.items()):
        add_histogram(latency, [direction], histogram)
    return [rooms, outcomes, people, latency]


def add_routes(app: web.Application) -> None:
    """Rooms on the node: the manager, its routes, its metrics, closing every room on shutdown."""
    manager = app[ROOMS] = RoomManager(app[SETTINGS], app[LIBRARY].registry, app[MODELS])
    for problem in manager.library.errors.values():
        log.warning("room pipeline not offered: %s", problem)
    router = app.router
    router.add_get("/v1/room-pipelines", list_room_pipelines)
    router.add_post("/v1/rooms", create_room)
    router.add_get("/v1/rooms", list_rooms)
    router.add_get("/v1/rooms/{id}", get_room)
    router.add_delete("/v1/rooms/{id}", delete_room)
    router.add_post("/v1/rooms/{id}/participants", join_room)
    router.add_get("/v1/rooms/{id}/participants/{pid}", get_participant)
    router.add_delete("/v1/rooms/{id}/participants/{pid}", leave_room)
    router.add_get("/v1/rooms/{id}/participants/{pid}/events", participant_events)
    app[METRICS].register(FunctionCollector(lambda: room_metrics(manager)))  # type: ignore[arg-type]

    async def close_rooms(app: web.Application) -> None:
        await app[ROOMS].close_all()

    app.on_shutdown.append(close_rooms)
