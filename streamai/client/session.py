"""One WebRTC session with a streamai node: negotiate, send, receive, steer, end.

A session ends cleanly when the caller closes it or the node ends it (a ``state:
closed`` event, with its reason in ``close_reason``). It fails, with
:class:`StreamaiError` in ``error`` and raised from every iterator and from
``wait_closed()``, on a fatal ``error`` event, on ICE/DTLS failure, when the events
channel closes under it, or when the node sends nothing for ``server_timeout``
seconds (a node that vanished); never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypedDict, Unpack

import aiohttp
import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ..frames import now
from ..transport.decode_queue import LatestDecodeQueue, bound_video_decoding
from .errors import Backoff, ClientCode, StreamaiError
from .events import (
    BadEvent,
    ErrorEvent,
    Event,
    PongEvent,
    StateEvent,
    decode_event,
    encode_message,
    event_from_dict,
)
from .media import SAMPLE_RATE, AudioInput, VideoInput, audio_source, video_source
from .received import ReceivedTrack
from .signaling import Endpoints, Offered, delete_session, post_offer
from .watch import DEFAULT_BACKOFF, EventWatcher

log = logging.getLogger(__name__)

IceServerLike = str | Mapping[str, Any] | RTCIceServer
"""A STUN/TURN server: a URL (``stun:host:3478``), ``{"urls", "username", "credential"}``, or aiortc's own."""
EventListener = Callable[[Event], None]

ENDED_STATES = ("closed", "ended", "stopped")


class SessionOptions(TypedDict, total=False):
    """:class:`Session`'s further keyword options, as :func:`connect` and ``reconnect`` take them."""

    receive_audio: bool | None
    receive_video: bool | None
    sample_rate: int
    fps: float
    headers: Mapping[str, str] | None
    ice_servers: Sequence[IceServerLike]
    ice_loopback: bool
    http: aiohttp.ClientSession | None
    request_timeout: float
    connect_timeout: float
    server_timeout: float
    ping_interval: float
    event_buffer: int
    endpoints: Endpoints | None


def ice_configuration(servers: Sequence[IceServerLike]) -> RTCConfiguration:
    """aiortc's configuration with exactly these servers (none by default: no public STUN is ever added)."""
    out: list[RTCIceServer] = []
    for server in servers:
        if isinstance(server, RTCIceServer):
            out.append(server)
        elif isinstance(server, str):
            out.append(RTCIceServer(urls=server))
        else:
            out.append(RTCIceServer(urls=server["urls"], username=server.get("username"),
                                    credential=server.get("credential")))  # fmt: skip
    return RTCConfiguration(iceServers=out)


class Session:
    """A session with a node (or through routers); use :func:`streamai.client.connect` to open one.

    After ``start()``: ``session_id``, ``pipeline``, ``node_url`` (the node that holds the
    session, also through a router), ``answer`` (the JSON answer), ``session_token`` (used
    inside for DELETE and the events WebSocket), ``viewer_token`` (lets others watch over
    WHEP), ``audio`` / ``video`` (the received tracks, or None), ``sent_audio`` /
    ``sent_video`` (the tracks being sent).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        pipeline: str | None = None,
        params: Mapping[str, Any] | None = None,
        token: str | None = None,
        audio: AudioInput | None = None,
        video: VideoInput | None = None,
        receive_audio: bool | None = None,
        receive_video: bool | None = None,
        sample_rate: int = SAMPLE_RATE,
        fps: float = 30.0,
        headers: Mapping[str, str] | None = None,
        ice_servers: Sequence[IceServerLike] = (),
        ice_loopback: bool = False,
        http: aiohttp.ClientSession | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 15.0,
        server_timeout: float = 8.0,
        ping_interval: float = 1.0,
        event_buffer: int = 4096,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints(url)
        self.pipeline = pipeline
        self.params = dict(params) if params is not None else None
        self.token = token
        self.headers = dict(headers or {})
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.server_timeout = server_timeout
        self.ping_interval = ping_interval
        self.ice_servers = list(ice_servers)
        self.ice_loopback = ice_loopback
        self._audio_input = audio
        self._video_input = video
        self._sample_rate = sample_rate
        self._fps = fps
        self._receive = {"audio": receive_audio, "video": receive_video}
        self._http = http
        self._own_http = False

        self.state = "new"
        self.error: StreamaiError | None = None
        self.close_reason: str | None = None
        self.answer: dict[str, Any] = {}
        self.session_id: str | None = None
        self.node_url: str | None = None
        self.session_token: str | None = None
        self.viewer_token: str | None = None
        self.connect_ms: float | None = None
        self.rtt_ms: float | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.audio: ReceivedTrack[av.AudioFrame] | None = None
        self.video: ReceivedTrack[av.VideoFrame] | None = None
        self.sent_audio: MediaStreamTrack | None = None
        self.sent_video: MediaStreamTrack | None = None
        self.decode_queue: LatestDecodeQueue | None = None
        self.events_lost = 0

        self._events: deque[Event] = deque()
        self._event_buffer = max(1, event_buffer)
        self._event_ready = asyncio.Event()
        self._reading_events = False
        self._listeners: list[EventListener] = []
        self._track_listeners: list[Callable[[ReceivedTrack[Any]], None]] = []
        self._pings: dict[float, tuple[float, asyncio.Future[float]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_message_at = 0.0
        self._changed = asyncio.Event()  # any state, channel or peer change: waiters look again
        self._closed = asyncio.Event()
        self._server_ended = False
        self._deleted = False

    # -- opening -----------------------------------------------------------------
    async def start(self) -> Session:
        """Negotiate: POST the offer (with failover), connect ICE/DTLS and open the events channel.

        Returns once media and events can flow; raises :class:`StreamaiError` (the server's
        refusal with status, code and Retry-After; network; timeout; ICE failure).
        """
        if self.state != "new":
            raise StreamaiError(f"start() on a {self.state} session", code="bad_state", fatal=False)
        self.state = "connecting"
        started = now()
        try:
            await self._negotiate()
            await self._wait_connected()
        except BaseException as exc:
            error = self.error or _as_error(exc)
            await self._shutdown(error, delete=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise error from None
        self.connect_ms = (now() - started) * 1000
        self.state = "connected"
        self._changed.set()
        self._last_message_at = now()
        self._spawn(self._watchdog(), "watchdog")
        return self

    async def _negotiate(self) -> None:
        if self.ice_loopback:
            from ..transport.ice import offer_loopback_candidates_only

            offer_loopback_candidates_only()
        if self._audio_input is not None:
            self.sent_audio = audio_source(self._audio_input, self._sample_rate)
        if self._video_input is not None:
            self.sent_video = video_source(self._video_input, self._fps)
        if self._http is None:
            self._http = aiohttp.ClientSession()
            self._own_http = True
        self.pc = pc = RTCPeerConnection(ice_configuration(self.ice_servers))
        self.channel = channel = pc.createDataChannel("events")
        channel.on("message", self._on_message)
        channel.on("open", self._changed.set)
        channel.on("close", self._on_channel_close)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_peer_state)
        for kind, track in (("audio", self.sent_audio), ("video", self.sent_video)):
            receive = self._receive[kind]
            if track is not None:
                pc.addTransceiver(track, direction="sendonly" if receive is False else "sendrecv")
            elif receive:
                pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer", "pipeline": self.pipeline}
        if self.params is not None:
            offer["params"] = self.params
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        offered = await post_offer(self._http, self.endpoints, offer, headers, self.request_timeout)
        self._take_answer(offered)
        self._check_alive()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offered.answer["sdp"], type="answer"))
        for transceiver in pc.getTransceivers():  # view like a real-time player: never a decode backlog
            if transceiver.kind == "video" and transceiver.receiver is not None:
                self.decode_queue = bound_video_decoding(transceiver.receiver)

    def _take_answer(self, offered: Offered) -> None:
        answer = offered.answer
        self.answer = answer
        self.node_url = offered.node_url
        self.session_id = str(answer.get("session_id") or "") or None
        self.pipeline = answer.get("pipeline") or self.pipeline
        token, viewer = answer.get("session_token"), answer.get("viewer_token")
        self.session_token = token if isinstance(token, str) else None
        self.viewer_token = viewer if isinstance(viewer, str) else None

    async def _wait_connected(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            self._check_alive()
            pc = self.pc
            if pc is not None and pc.connectionState == "connected" and self.channel.readyState == "open":
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamaiError(
                    f"could not connect within {self.connect_timeout:g} s of the answer", code=ClientCode.TIMEOUT
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))

    def _check_alive(self) -> None:
        if self.error is not None:
            raise self.error
        if self.state in ("closing", "closed"):
            raise StreamaiError(
                f"the session ended while connecting: {self.close_reason or 'closed'}", code=ClientCode.ABORTED
            )

    # -- receiving ---------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        received: ReceivedTrack[Any]
        if track.kind == "audio" and self.audio is None:
            received = self.audio = ReceivedTrack(track, lambda: self.error)
        elif track.kind == "video" and self.video is None:
            received = self.video = ReceivedTrack(track, lambda: self.error)
        else:
            return
        for listener in list(self._track_listeners):
            listener(received)

    def on_track(self, listener: Callable[[ReceivedTrack[Any]], None]) -> None:
        """Call ``listener(received)`` for each track the node sends back, as it arrives (before ``start()`` ends)."""
        self._track_listeners.append(listener)

    def _on_message(self, message: str | bytes) -> None:
        self._last_message_at = now()
        try:
            raw = decode_event(message)
        except BadEvent as exc:
            log.debug("ignored a server message: %s", exc)
            return
        self._deliver(event_from_dict(raw))

    def _deliver(self, event: Event) -> None:
        if isinstance(event, PongEvent):
            self._on_pong(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed; it is removed")
                self._listeners.remove(listener)
        if len(self._events) >= self._event_buffer:
            self._events.popleft()
            self.events_lost += 1
        self._events.append(event)
        self._event_ready.set()
        if isinstance(event, ErrorEvent) and event.fatal:
            self._fail(event.to_error())
        elif isinstance(event, StateEvent) and event.state in ENDED_STATES and self.state != "new":
            self._server_ended = True
            self.close_reason = event.reason or event.state
            self._spawn(self._shutdown(None, delete=False), "ended")

    def on_event(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event as it arrives (from the start); returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def events(self) -> AsyncIterator[Event]:
        """The session's events, typed, from its start, until it ends; raises its error if it failed.

        One reader at a time (events are consumed); ``on_event`` serves any number of listeners.
        """
        if self._reading_events:
            raise StreamaiError("events() is already being read", code="bad_state", fatal=False)
        self._reading_events = True
        try:
            while True:
                while self._events:
                    yield self._events.popleft()
                if self._closed.is_set():
                    break
                self._event_ready.clear()
                closed = asyncio.ensure_future(self._closed.wait())
                ready = asyncio.ensure_future(self._event_ready.wait())
                try:
                    await asyncio.wait({closed, ready}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                    ready.cancel()
        finally:
            self._reading_events = False
        if self.error is not None:
            raise self.error

    def watch_events(self, reconnect: Backoff | None = DEFAULT_BACKOFF) -> EventWatcher:
        """This session's events WebSocket (with its token), for a second reader that wants no media."""
        if self.session_id is None or self.node_url is None:
            raise StreamaiError("the session has no id yet: start() it first", code="bad_state", fatal=False)
        return EventWatcher(self.node_url, self.session_id, self.session_token, reconnect=reconnect)

    # -- steering ----------------------------------------------------------------
    def send_nowait(self, message: Mapping[str, Any]) -> None:
        """Send a control message on the events channel now; :class:`StreamaiError` when it cannot."""
        text = encode_message(dict(message))
        channel = self.channel
        if channel is None or channel.readyState != "open" or self.state != "connected":
            raise StreamaiError(f"cannot send: the session is {self.state}", code=ClientCode.NOT_CONNECTED, fatal=False)
        channel.send(text)

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send a control message (``{"type": "prompt" | "params" | "interrupt" | "ping", ...}``)."""
        self.send_nowait(message)

    async def send_prompt(self, text: str) -> None:
        """Set the pipeline's prompt (pipelines whose stages allow a client prompt)."""
        await self.send({"type": "prompt", "text": str(text)})

    async def set_params(self, params: Mapping[str, Any]) -> None:
        """Change live stage parameters; the node answers with a ``params`` or an ``error`` event."""
        await self.send({"type": "params", "params": dict(params)})

    async def interrupt(self) -> None:
        """Stop the speech being synthesized or played (speech pipelines)."""
        await self.send({"type": "interrupt"})

    async def ping(self) -> float:
        """Round trip of the events channel in ms (raises :class:`StreamaiError` after ``server_timeout``)."""
        t = time.time()
        while t in self._pings:
            t += 1e-6
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[t] = (now(), future)
        try:
            self.send_nowait({"type": "ping", "t": t})
            return await asyncio.wait_for(future, self.server_timeout)
        except TimeoutError:
            raise StreamaiError("no pong", code=ClientCode.TIMEOUT, fatal=False) from None
        finally:
            self._pings.pop(t, None)

    def _on_pong(self, event: PongEvent) -> None:
        entry = self._pings.get(event.t) if event.t is not None else None
        if entry is None:
            return
        sent, future = entry
        self.rtt_ms = (now() - sent) * 1000
        if not future.done():
            future.set_result(self.rtt_ms)

    # -- liveness and failure ----------------------------------------------------
    async def _watchdog(self) -> None:
        interval = self.ping_interval if self.ping_interval > 0 else 0.5
        while self.state == "connected":
            if self.ping_interval > 0:
                self._spawn(self._quiet_ping(), "ping")
            if now() - self._last_message_at > self.server_timeout:
                message = f"no message from the node for {self.server_timeout:g} s"
                self._fail(StreamaiError(message, code=ClientCode.SERVER_GONE))
                return
            await asyncio.sleep(interval)

    async def _quiet_ping(self) -> None:
        with contextlib.suppress(StreamaiError):
            await self.ping()

    def _on_channel_close(self) -> None:
        self._changed.set()
        if self.state in ("connecting", "connected") and not self._server_ended:
            self._fail(StreamaiError("the node closed the events channel", code=ClientCode.SERVER_GONE))

    def _on_peer_state(self) -> None:
        self._changed.set()
        pc = self.pc
        if pc is None or self.state not in ("connecting", "connected") or self._server_ended:
            return
        if pc.connectionState == "failed":
            self._fail(StreamaiError("the connection failed (ICE/DTLS)", code=ClientCode.ICE_FAILED))
        elif pc.connectionState == "closed":
            self._fail(StreamaiError("the peer connection closed", code=ClientCode.SERVER_GONE))

    def _fail(self, error: StreamaiError) -> None:
        """Failure path: record the error, then tear down (DELETE best effort). Idempotent."""
        if self.state in ("closing", "closed") or self.error is not None:
            return
        self.error = error
        self._changed.set()
        if self.state == "connected":
            self._spawn(self._shutdown(error, delete=True), "fail")

    # -- closing -----------------------------------------------------------------
    async def close(self, *, delete: bool = True) -> None:
        """End the session: DELETE it on the node, close the peer connection, stop what it made.

        ``delete=False`` only hangs up (the node frees the session when its media stops).
        """
        await self._shutdown(None, delete=delete)

    async def wait_closed(self) -> None:
        """Return when the session has ended; raises its :class:`StreamaiError` if it failed."""
        await self._closed.wait()
        if self.error is not None:
            raise self.error

    @property
    def closed(self) -> bool:
        """Whether the session has ended (cleanly or not)."""
        return self._closed.is_set()

    async def _shutdown(self, error: StreamaiError | None, *, delete: bool) -> None:
        if self.state in ("closing", "closed"):
            await self._closed.wait()
            return
        if error is not None and self.error is None:
            self.error = error
        self.state = "closing"
        self._changed.set()
        try:
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            for _, future in self._pings.values():
                if not future.done():
                    future.cancel()
            if delete and self.session_id and self._http is not None and not self._server_ended and not self._deleted:
                self._deleted = True
                await delete_session(self._http, self.node_url or self.endpoints.urls[0], self.session_id,
                                     self.session_token)  # fmt: skip
            if self.channel is not None:
                with contextlib.suppress(Exception):
                    self.channel.close()
            if self.pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.pc.close(), 5)
            for received in (self.audio, self.video):
                if received is not None:
                    await received.stop()
            for track in (self.sent_audio, self.sent_video):
                if track is not None and track is not self._audio_input and track is not self._video_input:
                    track.stop()  # made here from a file or iterator: ours to stop
            if self._own_http and self._http is not None:
                await self._http.close()
        finally:
            self.state = "closed"
            self._closed.set()
            self._event_ready.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"streamai-session-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def __aenter__(self) -> Session:
        if self.state == "new":
            await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


def _as_error(exc: BaseException) -> StreamaiError:
    if isinstance(exc, StreamaiError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return StreamaiError("cancelled while connecting", code=ClientCode.ABORTED)
    return StreamaiError(f"{type(exc).__name__}: {exc}", code=ClientCode.NETWORK)


class Connecting:
    """What :func:`connect` returns: await it for a started :class:`Session`, or use it with ``async with``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __await__(self) -> Generator[Any, None, Session]:
        return self.session.start().__await__()

    async def __aenter__(self) -> Session:
        return await self.session.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.session.close()


def connect(
    url: str | Sequence[str],
    *,
    pipeline: str | None = None,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    audio: AudioInput | None = None,
    video: VideoInput | None = None,
    **options: Unpack[SessionOptions],
) -> Connecting:
    """Open a session: ``async with connect(url, pipeline=...) as session:`` (or ``session = await connect(...)``).

    ``url`` is a node's base URL or a list of router replicas (tried in order, see
    :class:`Endpoints`). ``audio``/``video`` is what to send (a track, a file path, PCM
    or pictures; see :data:`AudioInput`, :data:`VideoInput`); processed media comes back
    on ``session.audio`` / ``session.video``. ``token`` is the API token (creating
    sessions); the session's own token from the answer is used inside. Further keyword
    options (:class:`SessionOptions`): ``receive_audio``/``receive_video`` (default: the kinds
    sent; True without sending = receive only), ``sample_rate`` of PCM input, ``fps`` of
    picture input, ``headers`` for the offer (e.g. ``X-Client-Region``), ``ice_servers``
    (none by default), ``ice_loopback`` (offer only 127.0.0.1: tests, one machine), ``http``
    (an aiohttp session to reuse), ``request_timeout`` (30 s: a node may load models first),
    ``connect_timeout`` (15 s from the answer), ``server_timeout`` (8 s of silence = gone),
    ``ping_interval`` (1 s; 0: no pings), ``event_buffer`` (4096 events kept for ``events()``),
    ``endpoints`` (an :class:`Endpoints` to share Retry-After memory between sessions).
    """
    return Connecting(Session(url, pipeline=pipeline, params=params, token=token, audio=audio, video=video, **options))
