"""WHIP ingest (RFC 9725) and WHEP playback over plain HTTP + SDP.

- ``POST /whip/{pipeline}`` (``application/sdp``): a standard WebRTC sender (OBS,
  GStreamer, a browser) opens a session of that pipeline; query parameters are the
  pipeline's params (``?prompt=...``, or ``?stage.param=...`` for one stage). The
  session is the same :class:`Session` the JSON API makes: it is listed in
  ``/v1/sessions`` and its prompt can be changed on ``/v1/sessions/{id}/events``.
- ``POST /whep/{session_id}`` (``application/sdp``): a receive-only viewer of that
  session's processed output. Viewers share one pipeline run and one encode per
  codec (:mod:`streamai.transport.relay`).
- ``DELETE`` on the ``Location`` ends the resource; ``PATCH`` with
  ``application/trickle-ice-sdpfrag`` adds the client's trickled candidates (aiortc
  gathers its own before answering, so the answer is always complete); an ICE restart
  is refused with 422; ``OPTIONS`` answers CORS preflights and advertises
  ``Accept-Post``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from ..frames import Frame, now
from ..histogram import Histogram
from ..transport.dtls import answer_as_dtls_server
from ..transport.ice import rtc_configuration
from ..transport.relay import Broadcast, ViewerTrack
from ..transport.sdp import candidate_count, ice_ufrag
from ..web.auth import bearer_token
from ..web.protection import CLIENT, read_body
from .residency import check_region
from .sessions import Session, SessionError, check_sdp
from .settings import ServerSettings
from .state import ACCESS, GUARD, LIBRARY, SESSIONS, SETTINGS

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


class WhipState:
    """What WHIP/WHEP keep besides the sessions: offer ufrags (for PATCH) and one broadcast per watched session."""

    def __init__(self) -> None:
        self.ufrags: dict[str, str] = {}  # resource id -> the client's ICE ufrag (freed when it ends)
        self.candidates: dict[str, CandidateBudget] = {}  # resource id -> ICE candidates it may still add
        self.broadcasts: dict[str, Broadcast] = {}
        self.viewers_total = 0
        self.viewers_rejected = 0


STATE = web.AppKey("whip", WhipState)


# -- helpers -------------------------------------------------------------------------
async def read_sdp(request: web.Request, content_type: str = SDP) -> str:
    """The request body as SDP text: 415 for another content type, 400 for bytes that are not text."""

    if request.content_type != content_type:
        raise SessionError(415, "unsupported_media_type", f"Content-Type must be {content_type}")
    settings = request.app[SETTINGS]
    body = await read_body(request, settings.max_body_bytes, settings.protection.body_timeout_s, request.app[GUARD])
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SessionError(400, "bad_sdp", "SDP must be UTF-8 text") from None


def query_params(request: web.Request) -> dict[str, Any]:
    """Query parameters as session params: ``key=v`` is flat, ``stage.key=v`` applies to one stage."""
    params: dict[str, Any] = {}
    for key, value in request.query.items():
        if key == "token":  # the auth middleware's fallback, not a pipeline param
            continue
        stage, dot, name = key.partition(".")
        if dot and stage and name:
            target = params.setdefault(stage, {})
            if not isinstance(target, dict):
                raise SessionError(400, "bad_params", f"parameter {stage!r} given both flat and per stage")
            target[name] = value
        else:
            params[key] = value
    return params


def sdp_response(answer: str, location: str, resource_id: str, settings: ServerSettings) -> web.Response:
    headers = {
        "Location": location,
        "ETag": f'"{resource_id}"',
        "Accept-Patch": SDPFRAG,
    }
    response = web.Response(status=201, text=answer, content_type=SDP, headers=headers)
    for server in settings.ice_servers:  # RFC 9725 section 4.6: ICE servers as Link headers
        shared = server.for_clients()  # time-limited TURN credentials only; static ones are never shown
        if shared is None:
            continue
        username, credential = shared
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if username:
                link += f'; username="{username}"; credential="{credential or ""}"; credential-type="password"'
            response.headers.add("Link", link)
    return response


class CandidateBudget:
    """Remote ICE candidates one session or viewer may still add (the node probes each one)."""

    def __init__(self, limit: int, taken: int = 0) -> None:
        self.limit = limit
        self.taken = taken


async def trickle(
    request: web.Request, pc: RTCPeerConnection, resource_id: str, budget: CandidateBudget
) -> web.Response:
    """Apply a trickle-ICE SDP fragment (RFC 8840) to ``pc``; 422 for an ICE restart, 400 past the budget."""
    if_match = request.headers.get("If-Match")
    if if_match not in (None, "*", f'"{resource_id}"'):
        raise SessionError(412, "precondition_failed", "If-Match does not name this resource")
    fragment = await read_sdp(request, SDPFRAG)
    state = request.app[STATE]
    ufrag = ice_ufrag(fragment)
    counted = candidate_count(fragment)
    if budget.taken + counted > budget.limit:
        raise SessionError(400, "too_many_candidates", f"at most {budget.limit} ICE candidates per session")
    budget.taken += counted
    if if_match == "*" or (ufrag is not None and ufrag != state.ufrags.get(resource_id, ufrag)):
        raise SessionError(422, "ice_restart_unsupported", "ICE restarts are not supported; start a new session")
    mid: str | None = None
    added = 0
    try:
        for raw in fragment.splitlines():
            line = raw.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:"):
                candidate = candidate_from_sdp(line[12:])
                candidate.sdpMid = mid
                candidate.sdpMLineIndex = None if mid is not None else 0
                await pc.addIceCandidate(candidate)
                added += 1
            elif line == "a=end-of-candidates":
                await pc.addIceCandidate(None)
    except (ValueError, IndexError) as exc:
        raise SessionError(400, "bad_sdpfrag", f"malformed trickle-ice-sdpfrag: {exc}") from None
    return web.Response(status=204)


async def options(request: web.Request) -> web.Response:
    """CORS preflight (answered by the CORS middleware when the origin is allowed) and capability discovery."""
    headers = {"Allow": "POST, DELETE, PATCH, OPTIONS", "Accept-Post": SDP, "Accept-Patch": SDPFRAG}
    return web.Response(status=204, headers=headers)


# -- WHIP ----------------------------------------------------------------------------
async def whip_post(request: web.Request) -> web.Response:
    """A WHIP sender opens a session; its session token comes back in ``Streamai-Session-Token``."""
    request.app[ACCESS].require_api(request)
    sdp = await read_sdp(request)
    library = request.app[LIBRARY]
    config = library.get(request.match_info["pipeline"])
    if config is None:
        offered = ", ".join(sorted(library.pipelines))
        raise SessionError(404, "unknown_pipeline", f"unknown pipeline; offered: {offered}")
    check_region(request, config)
    new = await request.app[SESSIONS].create(
        config, sdp, "offer", query_params(request), client=request.get(CLIENT), token=bearer_token(request)
    )
    session = new.session
    state = request.app[STATE]
    ufrag = ice_ufrag(sdp)
    if ufrag:
        state.ufrags[session.id] = ufrag
        session.on_close(lambda: state.ufrags.pop(session.id, None))
    state.candidates[session.id] = CandidateBudget(request.app[SETTINGS].max_ice_candidates, session.candidates)
    session.on_close(lambda: state.candidates.pop(session.id, None))
    response = sdp_response(new.answer, f"/whip/sessions/{session.id}", session.id, request.app[SETTINGS])
    response.headers.add("Link", f'</v1/sessions/{session.id}/events>; rel="urn:streamai:events"')
    response.headers.add("Link", f'</whep/{session.id}>; rel="urn:streamai:whep"')
    response.headers["Streamai-Session-Token"] = new.token
    response.headers["Streamai-Viewer-Token"] = new.viewer_token
    response.headers["Cache-Control"] = "no-store"
    return response


def _session(request: web.Request, key: str = "id", *, viewer: bool = False) -> Session:
    return request.app[ACCESS].session(request, request.app[SESSIONS], request.match_info[key], viewer=viewer)


async def whip_delete(request: web.Request) -> web.Response:
    session = _session(request)
    await session.close("WHIP client deleted the session")
    return web.Response(status=200)


async def whip_patch(request: web.Request) -> web.Response:
    session = _session(request)
    budget = request.app[STATE].candidates.setdefault(
        session.id, CandidateBudget(request.app[SETTINGS].max_ice_candidates, session.candidates)
    )
    return await trickle(request, session.pc, session.id, budget)


# -- WHEP ----------------------------------------------------------------------------
def _codec_of(transceiver: Any, kind: str) -> str:
    """The codec aiortc will send on ``transceiver`` (the first one both sides support)."""
    codecs = getattr(transceiver, "_codecs", None) or []
    if codecs:
        return codecs[0].mimeType.split("/", 1)[1].lower()
    return "vp8" if kind == "video" else "opus"


class Viewer:
    """One WHEP viewer: a send-only peer connection fed by the session's broadcast."""

    def __init__(self, session: Session, broadcast: Broadcast, settings: ServerSettings, on_closed: Any) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.session = session
        self.broadcast = broadcast
        self.settings = settings
        self.created = time.time()
        self.started_at = now()
        self.state = "new"
        self.tracks: list[ViewerTrack] = []
        self.pc = RTCPeerConnection(rtc_configuration(settings.ice_servers))
        self.close_reason: str | None = None
        self._on_closed = on_closed
        self._closing = False
        self._watchdog: asyncio.Task[None] | None = None
        self._closer: asyncio.Future[None] | None = None

    @property
    def latency(self) -> Histogram:
        """Pipeline capture to this viewer's sender, video."""
        merged = Histogram()
        for track in self.tracks:
            if track.kind == "video":
                merged.merge(track.counters.latency)
        return merged

    async def negotiate(self, offer_sdp: str) -> str:
        pc = self.pc
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise SessionError(400, "bad_sdp", f"malformed SDP offer: {exc or type(exc).__name__}") from None
        for transceiver in pc.getTransceivers():
            kind = transceiver.kind
            if kind not in ("audio", "video"):
                continue
            try:
                track = self.broadcast.subscribe(kind, _codec_of(transceiver, kind))
            except ValueError as exc:
                raise SessionError(400, "unsupported_codec", str(exc)) from None
            self.tracks.append(track)
            sender = pc.addTrack(track)
            if kind == "video":  # a PLI/FIR from this viewer asks the shared encoder for a keyframe
                sender._send_keyframe = self.broadcast.request_keyframe  # type: ignore[method-assign]
        if not self.tracks:
            raise SessionError(400, "bad_sdp", "the offer has no audio or video section to receive")
        answer_as_dtls_server(pc)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # an offer aiortc parsed but cannot answer
            raise SessionError(400, "bad_sdp", f"SDP offer cannot be answered: {exc or type(exc).__name__}") from None
        self.state = "connecting"
        self._watchdog = asyncio.create_task(self._watch(), name=f"viewer:{self.id}")
        return pc.localDescription.sdp

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.state = "connected"
        elif state in ("failed", "closed") and not self._closing:
            self._closer = asyncio.ensure_future(self.close(f"peer connection {state}"))

    async def _watch(self) -> None:
        while self.state != "closed":
            await asyncio.sleep(1.0)
            if self.state == "connecting" and now() - self.started_at > self.settings.connect_timeout_s:
                await self.close("ICE did not connect in time")

    async def close(self, reason: str = "closed by the server") -> None:
        """Free this viewer; the broadcast stops when its last viewer leaves. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        self.state = "closed"
        self.close_reason = reason
        log.info("viewer %s of session %s closing: %s", self.id, self.session.id, reason)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        for track in self.tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        self._on_closed(self)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "age_s": round(time.time() - self.created, 1),
            "tracks": {
                t.kind: {"codec": t.codec, "sent": t.counters.sent, "skipped": t.counters.skipped} for t in self.tracks
            },
            "video_latency": self.latency.summary_ms(),
        }


def _broadcast_for(app: web.Application, session: Session) -> Broadcast:
    state = app[STATE]
    broadcast = state.broadcasts.get(session.id)
    if broadcast is None:
        listeners = session.sink.listeners

        def attach(listener: Callable[[Frame], None]) -> Callable[[], None]:
            listeners.append(listener)

            def detach() -> None:
                with contextlib.suppress(ValueError):
                    listeners.remove(listener)
                if state.broadcasts.get(session.id) is broadcast:
                    del state.broadcasts[session.id]

            return detach

        broadcast = state.broadcasts[session.id] = Broadcast(attach)
    return broadcast


async def whep_post(request: web.Request) -> web.Response:

    session = _session(request, "session_id", viewer=True)
    offer = await read_sdp(request)
    sdp = check_sdp(offer, request.app[SETTINGS].max_ice_candidates)
    settings = request.app[SETTINGS]
    state = request.app[STATE]
    if session.state == "closed":
        raise SessionError(404, "unknown_session", "the session has ended")
    if len(session.viewers) >= settings.max_viewers:
        state.viewers_rejected += 1
        raise SessionError(
            503, "too_many_viewers", f"session has {settings.max_viewers} viewers (max_viewers)",
            retry_after=settings.retry_after_s,
        )  # fmt: skip
    broadcast = _broadcast_for(request.app, session)

    def closed(viewer: Viewer) -> None:
        session.viewers.pop(viewer.id, None)
        state.ufrags.pop(viewer.id, None)
        state.candidates.pop(viewer.id, None)

    viewer = Viewer(session, broadcast, settings, closed)
    session.viewers[viewer.id] = viewer  # counted at once, so concurrent offers respect max_viewers
    try:
        answer = await viewer.negotiate(sdp)
    except BaseException:
        await viewer.close("negotiation failed")
        raise
    state.viewers_total += 1
    ufrag = ice_ufrag(sdp)
    if ufrag:
        state.ufrags[viewer.id] = ufrag
    state.candidates[viewer.id] = CandidateBudget(settings.max_ice_candidates, candidate_count(sdp))
    return sdp_response(answer, f"/whep/{session.id}/viewers/{viewer.id}", viewer.id, settings)


def _viewer(request: web.Request) -> Viewer:
    session = _session(request, "session_id", viewer=True)
    viewer = session.viewers.get(request.match_info["viewer_id"])
    if viewer is None:
        raise SessionError(404, "unknown_viewer", "no such viewer")
    return viewer  # type: ignore[no-any-return]


async def whep_get(request: web.Request) -> web.Response:
    """The session's viewers and its broadcast (one encode per codec, however many viewers)."""
    session = _session(request, "session_id")
    broadcast = request.app[STATE].broadcasts.get(session.id)
    return web.json_response(
        {
            "session": session.id,
            "viewers": [v.summary() for v in session.viewers.values()],
            "broadcast": broadcast.summary() if broadcast is not None else None,
        }
    )


async def whep_delete(request: web.Request) -> web.Response:
    await _viewer(request).close("WHEP client deleted the viewer")
    return web.Response(status=200)


async def whep_patch(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    budget = request.app[STATE].candidates.setdefault(
        viewer.id, CandidateBudget(request.app[SETTINGS].max_ice_candidates)
    )
    return await trickle(request, viewer.pc, viewer.id, budget)


def add_routes(app: web.Application) -> None:
    """Register WHIP and WHEP on the node's application."""
    app[STATE] = WhipState()
    router = app.router
    router.add_post("/whip/{pipeline}", whip_post)
    router.add_route("OPTIONS", "/whip/{pipeline}", options)
    router.add_delete("/whip/sessions/{id}", whip_delete)
    router.add_patch("/whip/sessions/{id}", whip_patch)
    router.add_route("OPTIONS", "/whip/sessions/{id}", options)
    router.add_post("/whep/{session_id}", whep_post)
    router.add_get("/whep/{session_id}", whep_get)
    router.add_route("OPTIONS", "/whep/{session_id}", options)
    router.add_delete("/whep/{session_id}/viewers/{viewer_id}", whep_delete)
    router.add_patch("/whep/{session_id}/viewers/{viewer_id}", whep_patch)
    router.add_route("OPTIONS", "/whep/{session_id}/viewers/{viewer_id}", options)
