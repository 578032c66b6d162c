"""Sessions: one RTCPeerConnection and one pipeline run each, isolated from each other.

A session ends on peer close, ICE failure, connect timeout, media timeout (the peer
vanished), max duration, a pipeline failure, or DELETE; every end frees the
pipeline's stages and the peer connection. One session's trouble never reaches
another session or the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.rtcdatachannel import RTCDataChannel

from ..client_params import ClientParamsError, client_overrides, prompt_bounds
from ..config import PipelineConfig
from ..engine import PipelineRunner
from ..errors import ClientError
from ..events import Event, EventBus
from ..frames import ControlKind, Frame, now
from ..histogram import Histogram
from ..speech.latency import tracker
from ..stage import StageRegistry
from ..transport.control import ControlParser, ControlRejected, InterruptMessage, ParamsMessage, PingMessage
from ..transport.decode_queue import LatestDecodeQueue, bound_video_decoding
from ..transport.dtls import answer_as_dtls_server
from ..transport.ice import rtc_configuration, set_audio_prefetch
from ..transport.inbound import InboundCounters, consume_track
from ..transport.outbound import ProcessedAudioTrack, ProcessedVideoTrack, SendTiming, TrackSink, sent_fields
from ..transport.sdp import candidate_count, media_sections
from ..web.clients import limit_key
from .access import new_capability
from .history import SessionHistory
from .settings import ServerSettings

log = logging.getLogger(__name__)


class SessionError(ClientError):
    """A session request that cannot be served: ``status`` and ``code`` go to the client."""


def check_sdp(sdp: object, max_candidates: int = 32) -> str:
    """Cheap sanity checks before aiortc parses an offer: shape, one section per kind, candidate count."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SessionError(400, "bad_sdp", "'sdp' must be a non-empty string")
    if not sdp.lstrip().startswith("v=0"):
        raise SessionError(400, "bad_sdp", "malformed SDP: it must start with 'v=0'")
    sections = media_sections(sdp)
    if not sections:
        raise SessionError(400, "bad_sdp", "malformed SDP: no media section ('m=' line)")
    repeated = sorted(kind for kind, count in sections.items() if count > 1)
    if repeated:
        message = f"at most one audio, one video and one data section per offer (repeated: {', '.join(repeated)})"
        raise SessionError(400, "bad_sdp", message)
    if candidate_count(sdp) > max_candidates:
        raise SessionError(400, "bad_sdp", f"at most {max_candidates} ICE candidates per session")
    return sdp


class Session:
    """One peer, one pipeline run, one event stream."""

    def __init__(
        self,
        config: PipelineConfig,
        runner_factory: Any,
        settings: ServerSettings,
        on_closed: Any,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.client: str | None = None  # the address that opened it (entry-point caps)
        self.token: str | None = None
        self.pipeline = config.name
        self.config = config
        self.settings = settings
        self.created = time.time()
        self.started_at = now()
        self.state = "new"
        self.close_reason: str | None = None
        self.events = EventBus()
        self.video_out = ProcessedVideoTrack(
            on_sent=self._on_sent, on_late=lambda frame: self.runner.output_drop(frame, "late_at_send")
        )
        self.audio_out = ProcessedAudioTrack(
            on_sent=self._on_sent,
            drop_late=config.late_audio == "drop",
            on_late=lambda frame: self.runner.output_drop(frame, "late_at_send"),
        )
        self.sink = TrackSink(self.video_out, self.audio_out)
        tracker(self.events).attach_transport()  # speech waterfalls wait for the sent packet's report
        self.runner: PipelineRunner = runner_factory(self)
        self.inbound: dict[str, InboundCounters] = {}
        self.decode_queues: list[LatestDecodeQueue] = []  # bounded inbound video decoding (drop counters)
        self.control = ControlParser(settings.max_control_bytes, settings.control_rate_per_s, settings.control_burst)
        self.pc = RTCPeerConnection(rtc_configuration(settings.ice_servers))
        self.channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._closing = False
        self._closer: asyncio.Future[None] | None = None
        self._on_closed = on_closed
        self._connected_at: float | None = None
        self._reported_drops: Counter[tuple[str, str]] = Counter()
        self.viewers: dict[str, Any] = {}  # WHEP viewers of the processed output (server/whip.py)
        self.capability: bytes | None = None  # digest of the session token (server/access.py)
        self.viewer_capability: bytes | None = None  # digest of the viewer token: WHEP only
        self.candidates = 0  # remote ICE candidates taken (offer + trickle), bounded
        self.subscribers: set[Any] = set()  # open events WebSockets, closed with the session
        self.live_params: dict[str, frozenset[str]] = {}  # stage -> params it can change while running
        self._close_callbacks: list[Callable[[], None]] = []
        self.waterfall: defaultdict[str, Histogram] = defaultdict(Histogram)  # speech: component -> seconds
        self.events.on_event(self._on_event)

    # -- negotiation -----------------------------------------------------------
    async def negotiate(self, offer_sdp: str, offer_type: str = "offer") -> str:
        """Start the pipeline, answer the offer; raises ``SessionError`` on bad input."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type=offer_type))
        except Exception as exc:
            raise SessionError(400, "bad_sdp", f"malformed SDP offer: {exc or type(exc).__name__}") from None
        try:
            self._add_tracks()
        except (InvalidAccessError, InvalidStateError) as exc:  # an offer check_sdp let through
            raise SessionError(400, "bad_sdp", f"SDP offer cannot be answered: {exc}") from None
        await self.runner.start()
        answer_as_dtls_server(pc)  # RSA-certificate senders (GStreamer) cannot be DTLS servers to aiortc
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # an offer aiortc parsed but cannot answer (media lines missing, repeated mids)
            raise SessionError(400, "bad_sdp", f"SDP offer cannot be answered: {exc or type(exc).__name__}") from None
        self.state = "connecting"
        self._spawn(self._watchdog(), "watchdog")
        self._spawn(self._forward_events(), "events")
        return pc.localDescription.sdp

    def _add_tracks(self) -> None:
        """One processed track back for each received audio/video section, with the receive-side bounds."""
        pc = self.pc
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                pc.addTrack(self.video_out)
                if self.settings.max_decode_backlog is not None:
                    bounded = bound_video_decoding(transceiver.receiver, self.settings.max_decode_backlog)
                    if bounded is not None:
                        self.decode_queues.append(bounded)
            elif transceiver.kind == "audio":
                pc.addTrack(self.audio_out)
                if self.settings.audio_prefetch is not None:
                    set_audio_prefetch(transceiver.receiver, self.settings.audio_prefetch)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the session ends (state kept elsewhere for it is freed there)."""
        self._close_callbacks.append(callback)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"session:{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_track(self, track: Any) -> None:
        counters = self.inbound.setdefault(track.kind, InboundCounters())
        self._spawn(
            consume_track(track, self._submit, counters, self.settings.max_video_pixels, self._on_oversized),
            f"inbound-{track.kind}",
        )

    def _on_oversized(self, width: int, height: int) -> None:
        counters = self.inbound.get("video")
        if counters is not None and counters.oversized in (1, 100, 10_000):
            limit = self.settings.max_video_pixels
            message = f"video frames of {width}x{height} exceed this node's {limit} pixels; they are dropped"
            self.events.emit("warning", code="video_too_large", message=message, dropped=counters.oversized)

    def _submit(self, frame: Frame) -> None:
        self.runner.submit(frame)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = now()
            self.state = "connected"
            self.events.emit("state", state="connected", session=self.id)
        elif state in ("failed", "closed"):
            self._spawn_close(f"peer connection {state}")

    def _spawn_close(self, reason: str) -> None:
        if not self._closing:
            self._closer = asyncio.ensure_future(self.close(reason))

    # -- events and control ------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "events" or self.channel is not None:
            return
        self.channel = channel
        channel.on("message", lambda message: self.handle_control(message, self._send_to_channel))
        self._send_to_channel({"type": "state", "state": self.state, "session": self.id, "t": time.time()})

    def _send_to_channel(self, event: Event) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            with contextlib.suppress(Exception):
                channel.send(json.dumps(event, default=str))

    async def _forward_events(self) -> None:
        subscription = self.events.subscribe()
        try:
            while True:
                self._send_to_channel(await subscription.get())
        finally:
            subscription.close()

    def handle_control(self, raw: str | bytes, reply: Any) -> None:
        """Apply one client message; errors go back to that client as an ``error`` event."""
        if self._closing:
            reply({"type": "error", "code": "session_ended", "message": "the session has ended", "fatal": True,
                   "t": time.time()})  # fmt: skip
            return
        try:
            message = self.control.parse(raw)
        except ControlRejected as exc:
            reply({"type": "error", "code": exc.code, "message": str(exc), "fatal": False, "t": time.time()})
            return
        if isinstance(message, PingMessage):
            reply({"type": "pong", "t": message.t, "server_t": time.time()})
        elif isinstance(message, InterruptMessage):
            self.runner.control(ControlKind.INTERRUPTION, {"source": "client"})
            self.audio_out.flush()
        elif isinstance(message, ParamsMessage):
            allowed = self.config.allowed_client_params()
            try:
                changes = client_overrides(allowed, message.params, self.config.stage_names(), self.live_params)
            except ClientParamsError as exc:
                reply({"type": "error", "code": exc.code, "message": exc.message, "fatal": False, "t": time.time()})
                return
            self.runner.control(ControlKind.PARAMS, changes)
        else:
            bounds = prompt_bounds(self.config.allowed_client_params())
            if bounds is None:
                message_ = "this pipeline takes no prompt from clients"
                reply({"type": "error", "code": "bad_message", "message": message_, "fatal": False, "t": time.time()})
                return
            if bounds.max_length is not None and len(message.text) > bounds.max_length:
                message_ = f"prompt longer than {bounds.max_length} characters"
                reply({"type": "error", "code": "bad_message", "message": message_, "fatal": False, "t": time.time()})
                return
            self.runner.control(ControlKind.PROMPT, {"text": message.text})
            self.events.emit("prompt", text=message.text, status="received")

    def _on_event(self, event: Event) -> None:
        """Per-utterance ``waterfall`` events (speech pipelines) feed this session's histograms."""
        if event.get("type") != "waterfall":
            return
        components = dict(event.get("components") or {})
        components["total_ms"] = event.get("total_ms")
        for name, ms in components.items():
            if isinstance(ms, int | float) and math.isfinite(ms):
                self.waterfall[name.removesuffix("_ms")].observe(max(0.0, ms) / 1000)

    def _on_sent(self, kind: str, latency: float, frame: Frame, timing: SendTiming | None = None) -> None:
        self.events.emit("latency", **sent_fields(kind, latency, frame, timing))

    # -- lifecycle ---------------------------------------------------------------
    async def _watchdog(self) -> None:
        """Once a second: stats and drop events; end the session when its peer is gone."""
        settings = self.settings
        while not self._closed.is_set():
            await asyncio.sleep(1.0)
            at = now()
            self._emit_stats()
            if self.runner.failed is not None:
                await self.close(f"pipeline failed: {self.runner.failed}")
            elif self._connected_at is None and at - self.started_at > settings.connect_timeout_s:
                await self.close("ICE did not connect in time")
            elif at - self.started_at > settings.max_session_s:
                await self.close("maximum session duration reached")
            elif self._connected_at is not None and self.inbound:
                last = max(c.last_at for c in self.inbound.values()) or self._connected_at
                if at - last > settings.media_timeout_s:
                    await self.close("no media from the peer (it went away)")

    def _emit_stats(self) -> None:
        stats = self.runner.stats
        for stage, drops in stats.drops().items():
            for reason, count in drops.items():
                delta = count - self._reported_drops[(stage, reason)]
                if delta > 0:
                    self._reported_drops[(stage, reason)] = count
                    self.events.emit("drop", stage=stage, reason=reason, count=delta, total=count)
        self.events.emit(
            "stats",
            frames_in=dict(stats.frames_in),
            frames_out=dict(stats.frames_out),
            drops=stats.total_drops(),
            video_latency=self.video_out.counters.latency.summary_ms(),
            inbound_skipped=sum(c.skipped for c in self.inbound.values()),
            decode_dropped=sum(q.dropped for q in self.decode_queues),
        )

    async def close(self, reason: str = "closed by the server") -> None:
        """End the session and free everything it held; safe to call more than once."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        self.state = "closed"
        log.info("session %s (%s) closing: %s", self.id, self.pipeline, reason)
        self.events.emit("state", state="closed", reason=reason)
        self._send_to_channel({"type": "state", "state": "closed", "reason": reason, "t": time.time()})
        for socket in list(self.subscribers):  # the events WebSockets end with their session
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code=1000, message=b"session ended"), 2)
        self.subscribers.clear()
        await asyncio.gather(*(v.close("session ended") for v in list(self.viewers.values())), return_exceptions=True)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.stop(), 5)
        self.video_out.stop()
        self.audio_out.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        self._closed.set()
        for callback in self._close_callbacks:
            with contextlib.suppress(Exception):
                callback()
        self._close_callbacks.clear()
        self._on_closed(self)

    def summary(self) -> dict[str, Any]:
        stats = self.runner.stats
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "state": self.state,
            "age_s": round(time.time() - self.created, 1),
            "frames_in": sum(stats.frames_in.values()),
            "frames_out": sum(stats.frames_out.values()),
            "frames_in_by_kind": dict(stats.frames_in),
            "frames_out_by_kind": dict(stats.frames_out),
            "drops": stats.total_drops(),
            "drops_by_stage": stats.drops(),
            "video_sent": self.video_out.counters.sent,
            "inbound_skipped": sum(c.skipped for c in self.inbound.values()),
            "decode_dropped": sum(q.dropped for q in self.decode_queues),
            "decode_resyncs": sum(q.resyncs for q in self.decode_queues),
            "viewers": len(self.viewers),
            "video_latency": self.video_out.counters.latency.summary_ms(),
            "audio_latency": self.audio_out.counters.latency.summary_ms(),
        }


class NewSession(NamedTuple):
    """A session just opened: the answer and its capabilities (given to the client once)."""

    session: Session
    answer: str
    token: str
    viewer_token: str


ENDED_REMEMBERED = 4096


def live_params_of(stage: Any) -> frozenset[str]:
    """The params ``stage`` can change while it runs (``Stage.live_params``; none when it declares none)."""
    return frozenset(getattr(stage, "live_params", frozenset()))


class SessionManager:
    """The node's sessions: admission by capacity, lookup, and retirement of stats."""

    def __init__(self, settings: ServerSettings, registry: StageRegistry, resources: Any = None) -> None:
        self.settings = settings
        self.registry = registry
        self.resources = resources
        self.sessions: dict[str, Session] = {}
        self.pending = 0
        self.pending_by_client: Counter[str] = Counter()  # offers being negotiated, by client limit key
        self.ended: OrderedDict[str, bytes] = OrderedDict()  # recently ended session -> capability digest
        self.history = SessionHistory()  # finished sessions, folded into per-pipeline totals
        self.totals: Counter[str] = Counter()
        self.remote: Any = None  # RemoteStageFactory for placement remote/auto stages (streamai.fleet.remote)

    @property
    def active(self) -> int:
        return len(self.sessions) + self.pending

    def open_sessions(self, client_key: str, token: str | None) -> tuple[int, int]:
        """Sessions open or being negotiated now for this client (its limit key), and for this API token."""
        sessions = list(self.sessions.values())
        by_client = sum(1 for s in sessions if s.client is not None and limit_key(s.client) == client_key)
        by_token = sum(1 for s in sessions if token is not None and s.token == token)
        return by_client + self.pending_by_client[client_key], by_token

    async def create(
        self,
        config: PipelineConfig,
        offer_sdp: object,
        offer_type: str = "offer",
        params: object = None,
        *,
        client: str | None = None,
        token: str | None = None,
    ) -> NewSession:
        """Open a session and answer its offer; the new session's tokens are returned once, here."""
        if self.active >= self.settings.max_sessions:
            self.totals["rejected_capacity"] += 1
            raise SessionError(
                503, "over_capacity", f"node is at capacity ({self.settings.max_sessions} sessions)",
                retry_after=self.settings.retry_after_s,
            )  # fmt: skip
        sdp = check_sdp(offer_sdp, self.settings.max_ice_candidates)
        overrides = client_overrides(config.allowed_client_params(), params, config.stage_names())

        def build_runner(session: Session) -> PipelineRunner:
            return PipelineRunner(
                config,
                self.registry,
                session.sink,
                events=session.events,
                params=dict(overrides),
                resources=self.resources,
                region=self.settings.region,
                remote=self.remote,
                on_fatal=lambda reason: None,  # the watchdog ends the session
            )

        key = limit_key(client) if client is not None else None
        self.pending += 1
        if key is not None:
            self.pending_by_client[key] += 1
        session: Session | None = None
        try:
            session = Session(config, build_runner, self.settings, self._closed)
            session.client, session.token = client, token
            session.live_params = {r.name: live_params_of(r.stage) for r in session.runner.stage_runners}
            session.candidates = candidate_count(sdp)
            answer = await session.negotiate(sdp, offer_type)
        except SessionError:
            if session is not None:
                await session.close("negotiation failed")
            raise
        except Exception as exc:
            from ..engine import ParamsError, PipelineStartError

            if session is not None:
                await session.close("negotiation failed")
            if isinstance(exc, ParamsError):
                raise SessionError(400, "bad_params", str(exc)) from None
            if isinstance(exc, PipelineStartError):  # the cause is logged; the client learns nothing of paths
                log.warning("pipeline %s could not start: %s", config.name, exc)
                message = f"pipeline {config.name!r} could not start on this node (logged on the node)"
                raise SessionError(503, "pipeline_unavailable", message, retry_after=30) from None
            raise
        finally:
            self.pending -= 1
            if key is not None:
                self.pending_by_client[key] -= 1
                if self.pending_by_client[key] <= 0:
                    del self.pending_by_client[key]
        session_token, session.capability = new_capability()
        viewer_token, session.viewer_capability = new_capability()
        self.sessions[session.id] = session
        self.totals["created"] += 1
        return NewSession(session, answer, session_token, viewer_token)

    def _closed(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.totals["closed"] += 1
            self.history.record(session)
            if session.capability is not None:  # its owner gets "ended", not "forbidden", for a while
                self.ended[session.id] = session.capability
                while len(self.ended) > ENDED_REMEMBERED:
                    self.ended.popitem(last=False)

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def ended_capability(self, session_id: str) -> bytes | None:
        """The capability digest of a recently ended session (so its owner hears it ended)."""
        return self.ended.get(session_id)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))
