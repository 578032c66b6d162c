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
import time
import uuid
from collections import Counter
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.rtcdatachannel import RTCDataChannel

from ..config import PipelineConfig
from ..engine import PipelineRunner, split_session_params
from ..errors import ClientError
from ..events import Event, EventBus
from ..frames import ControlKind, Frame, now
from ..stage import StageRegistry
from ..transport.control import ControlParser, ControlRejected, InterruptMessage, ParamsMessage, PingMessage
from ..transport.decode_queue import LatestDecodeQueue, bound_video_decoding
from ..transport.dtls import answer_as_dtls_server
from ..transport.ice import rtc_configuration, set_audio_prefetch
from ..transport.inbound import InboundCounters, consume_track
from ..transport.outbound import ProcessedAudioTrack, ProcessedVideoTrack, TrackSink
from ..transport.sdp import media_sections
from .history import SessionHistory
from .settings import ServerSettings

log = logging.getLogger(__name__)


class SessionError(ClientError):
    """A session request that cannot be served: ``status`` and ``code`` go to the client."""


def check_sdp(sdp: object) -> str:
    """Cheap sanity checks before aiortc parses an offer."""
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
        self.video_out = ProcessedVideoTrack(on_sent=self._on_sent)
        self.audio_out = ProcessedAudioTrack(
            on_sent=self._on_sent,
            drop_late=config.late_audio == "drop",
            on_late=lambda frame: self.runner.output_drop(frame, "late_at_send"),
        )
        self.sink = TrackSink(self.video_out, self.audio_out)
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
        except Exception as exc:  # an offer aiortc parsed but cannot answer (e.g. media lines missing)
            raise SessionError(400, "bad_sdp", f"SDP offer cannot be answered: {exc or type(exc).__name__}") from None
        await pc.setLocalDescription(answer)
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

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"session:{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_track(self, track: Any) -> None:
        counters = self.inbound.setdefault(track.kind, InboundCounters())
        self._spawn(consume_track(track, self._submit, counters), f"inbound-{track.kind}")

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
            self.runner.control(ControlKind.PARAMS, message.params)
        else:
            self.runner.control(ControlKind.PROMPT, {"text": message.text})
            self.events.emit("prompt", text=message.text, status="received")

    def _on_sent(self, kind: str, latency: float, frame: Frame) -> None:
        self.events.emit("latency", kind=kind, ms=round(latency * 1000, 1), seq=frame.seq)

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


class SessionManager:
    """The node's sessions: admission by capacity, lookup, and retirement of stats."""

    def __init__(self, settings: ServerSettings, registry: StageRegistry, resources: Any = None) -> None:
        self.settings = settings
        self.registry = registry
        self.resources = resources
        self.sessions: dict[str, Session] = {}
        self.pending = 0
        self.history = SessionHistory()  # finished sessions, folded into per-pipeline totals
        self.totals: Counter[str] = Counter()
        self.remote: Any = None  # RemoteStageFactory for placement remote/auto stages (streamai.fleet.remote)

    @property
    def active(self) -> int:
        return len(self.sessions) + self.pending

    def open_sessions(self, client: str, token: str | None) -> tuple[int, int]:
        """Sessions open now for this client address, and for this API token."""
        sessions = list(self.sessions.values())
        by_client = sum(1 for s in sessions if s.client == client)
        by_token = sum(1 for s in sessions if token is not None and s.token == token)
        return by_client, by_token

    async def create(
        self,
        config: PipelineConfig,
        offer_sdp: object,
        offer_type: str = "offer",
        params: object = None,
        *,
        client: str | None = None,
        token: str | None = None,
    ) -> tuple[Session, str]:
        """Open a session and answer its offer."""
        if self.active >= self.settings.max_sessions:
            self.totals["rejected_capacity"] += 1
            raise SessionError(
                503, "over_capacity", f"node is at capacity ({self.settings.max_sessions} sessions)",
                retry_after=self.settings.retry_after_s,
            )  # fmt: skip
        sdp = check_sdp(offer_sdp)
        if params is not None and not isinstance(params, dict):
            raise SessionError(400, "bad_params", "'params' must be an object")
        session_params = split_session_params(params or {}, config.stage_names())

        def build_runner(session: Session) -> PipelineRunner:
            return PipelineRunner(
                config,
                self.registry,
                session.sink,
                events=session.events,
                params=session_params,
                resources=self.resources,
                region=self.settings.region,
                remote=self.remote,
                on_fatal=lambda reason: None,  # the watchdog ends the session
            )

        self.pending += 1
        session: Session | None = None
        try:
            session = Session(config, build_runner, self.settings, self._closed)
            session.client, session.token = client, token
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
            if isinstance(exc, PipelineStartError):
                raise SessionError(503, "pipeline_unavailable", str(exc), retry_after=30) from None
            raise
        finally:
            self.pending -= 1
        self.sessions[session.id] = session
        self.totals["created"] += 1
        return session, answer

    def _closed(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.totals["closed"] += 1
            self.history.record(session)

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))
