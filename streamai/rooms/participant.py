"""One person in a room: the peer connection of a speaker or a listener, its events and its control messages.

A **speaker** sends audio (its microphone) and receives its own mix: everything said
to its language, never its own voice. A **listener** sends nothing and receives its
language's mix, shared with every other listener of that language (one encode). Both
get the room's captions on the ``events`` data channel (or a WebSocket) and may send
``ping``; what other control messages mean is the room's (``on_message``).

A participant ends on DELETE, peer close, ICE failure, connect timeout, a speaker's
media timeout (their peer vanished), a failed speech chain (``health()``), or with its
room; its end frees everything it held and never touches another participant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from ..errors import ClientError
from ..events import Event, EventBus, Subscription
from ..frames import Frame, now
from ..transport.control import ControlParser, ControlRejected, PingMessage
from ..transport.dtls import answer_as_dtls_server
from ..transport.ice import rtc_configuration, set_audio_prefetch
from ..transport.inbound import InboundCounters, consume_track
from ..transport.sdp import media_sections

if TYPE_CHECKING:
    from ..server.settings import ServerSettings

log = logging.getLogger(__name__)

Role = Literal["speaker", "listener"]
MessageHandler = Callable[["Participant", Any, Callable[[Event], None]], None]


class Participant:
    """A speaker or a listener of one room, with its own peer connection and event stream."""

    def __init__(
        self,
        room_id: str,
        role: Role,
        language: str,
        name: str,
        settings: ServerSettings,
        output: MediaStreamTrack,
        on_closed: Callable[[Participant], None],
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.room_id = room_id
        self.role: Role = role
        self.language = language
        self.name = name
        self.settings = settings
        self.output = output  # a MixedAudioTrack (speaker) or a ViewerTrack of its language's broadcast
        self.created = time.time()
        self.started_at = now()
        self.state = "new"
        self.close_reason: str | None = None
        self.capability: bytes | None = None  # digest of the participant's session token
        self.client: str | None = None
        self.events = EventBus()
        self.control = ControlParser(settings.max_control_bytes, settings.control_rate_per_s, settings.control_burst)
        self.pc = RTCPeerConnection(rtc_configuration(settings.ice_servers))
        self.channel: RTCDataChannel | None = None
        self.subscribers: set[Any] = set()  # open events WebSockets, closed with the participant
        self.inbound = InboundCounters()
        self.on_audio: Callable[[Frame], None] | None = None  # a speaker's microphone frames (set by the room)
        self.on_message: MessageHandler | None = None  # control messages other than ping (set by the room)
        self.health: Callable[[], str | None] = lambda: None  # why this participant must end, or None
        self.stats: Callable[[], dict[str, Any]] = dict  # the body of its 1/s ``stats`` event
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._closing = False
        self._closer: asyncio.Future[None] | None = None
        self._connected_at: float | None = None
        self._channel_open = asyncio.Event()
        self.connected = asyncio.Event()  # ICE and DTLS are up
        self._on_closed = on_closed

    # -- negotiation -----------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        """Answer the offer (one audio section, no video); raises ``ClientError`` on bad input."""
        sections = media_sections(offer_sdp)
        if sections.get("audio", 0) > 1:
            raise ClientError(400, "bad_sdp", "one audio section per participant")
        if sections.get("video"):
            raise ClientError(400, "bad_sdp", "rooms carry audio only: offer no video section")
        if not sections.get("audio"):
            raise ClientError(400, "bad_sdp", "the offer has no audio section (a room participant receives audio)")
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise ClientError(400, "bad_sdp", f"malformed SDP offer: {exc or type(exc).__name__}") from None
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                pc.addTrack(self.output)
                if self.role == "speaker" and self.settings.audio_prefetch is not None:
                    set_audio_prefetch(transceiver.receiver, self.settings.audio_prefetch)
        answer_as_dtls_server(pc)
        try:
            answer = await pc.createAnswer()
        except Exception as exc:
            raise ClientError(400, "bad_sdp", f"SDP offer cannot be answered: {exc or type(exc).__name__}") from None
        await pc.setLocalDescription(answer)
        self.state = "connecting"
        self._spawn(self._watchdog(), "watchdog")
        # subscribed now, so events emitted before the task first runs (the roster) are kept
        self._spawn(self._forward_events(self.events.subscribe()), "events")
        return pc.localDescription.sdp

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"participant:{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        self._spawn(consume_track(track, self._submit, self.inbound), "inbound-audio")

    def _submit(self, frame: Frame) -> None:
        if self.role == "speaker" and self.on_audio is not None and not self._closing:
            self.on_audio(frame)  # a listener's audio (it should send none) is read and dropped

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = now()
            self.state = "connected"
            self.connected.set()
            self.events.emit("state", state="connected", participant=self.id, room=self.room_id)
        elif state in ("failed", "closed") and not self._closing:
            self._closer = asyncio.ensure_future(self.close(f"peer connection {state}"))

    # -- events and control ------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "events" or self.channel is not None:
            return
        self.channel = channel
        channel.on("message", lambda message: self.handle_control(message, self._send_to_channel))
        self._send_to_channel({"type": "state", "state": self.state, "participant": self.id, "t": time.time()})
        self._channel_open.set()  # events held since the answer (the roster, captions) go out now

    def _send_to_channel(self, event: Event) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            with contextlib.suppress(Exception):
                channel.send(json.dumps(event, default=str))

    async def _forward_events(self, subscription: Subscription) -> None:
        """Events to the data channel once it is open (bounded: a client without it loses the oldest)."""
        try:
            await self._channel_open.wait()
            while True:
                self._send_to_channel(await subscription.get())
        finally:
            subscription.close()

    def handle_control(self, raw: str | bytes, reply: Callable[[Event], None]) -> None:
        """One client message; errors go back to that client as an ``error`` event."""
        if self._closing:
            reply({"type": "error", "code": "session_ended", "message": "you have left the room", "fatal": True,
                   "t": time.time()})  # fmt: skip
            return
        try:
            message = self.control.parse(raw)
        except ControlRejected as exc:
            reply({"type": "error", "code": exc.code, "message": str(exc), "fatal": False, "t": time.time()})
            return
        if isinstance(message, PingMessage):
            reply({"type": "pong", "t": message.t, "server_t": time.time()})
        elif self.on_message is not None:
            self.on_message(self, message, reply)

    # -- lifecycle ---------------------------------------------------------------
    async def _watchdog(self) -> None:
        settings = self.settings
        while not self._closed.is_set():
            await asyncio.sleep(1.0)
            at = now()
            with contextlib.suppress(Exception):
                self.events.emit("stats", **self.stats())
            failure = self.health()
            if failure is not None:
                self.events.emit("error", code="pipeline_failed", message=failure, fatal=True)
                await self.close(f"pipeline failed: {failure}")
            elif self._connected_at is None and at - self.started_at > settings.connect_timeout_s:
                await self.close("ICE did not connect in time")
            elif self._media_stopped(at):
                await self.close("no media from the peer (it went away)")

    def _media_stopped(self, at: float) -> bool:
        """A speaker that sent audio and then nothing for ``media_timeout_s`` (listeners send nothing)."""
        if self.role != "speaker" or self._connected_at is None or not self.inbound.frames:
            return False
        return at - (self.inbound.last_at or self._connected_at) > self.settings.media_timeout_s

    async def close(self, reason: str = "closed by the server") -> None:
        """Leave the room and free everything held; safe to call more than once."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        self.state = "closed"
        log.info("room %s participant %s (%s, %s) leaving: %s", self.room_id, self.id, self.role, self.language,
                 reason)  # fmt: skip
        self.events.emit("state", state="closed", reason=reason)
        self._send_to_channel({"type": "state", "state": "closed", "reason": reason, "t": time.time()})
        for socket in list(self.subscribers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code=1000, message=b"left the room"), 2)
        self.subscribers.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.output.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        self._closed.set()
        self._on_closed(self)

    @property
    def closed(self) -> bool:
        return self._closing

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "language": self.language,
            "state": self.state,
            "age_s": round(time.time() - self.created, 1),
            "audio_in": self.inbound.frames,
        }
