"""A conversation room: its participants, their speech chains, and who hears what.

Routing (all on the event loop, nothing waits for a listener):

- a speaker's microphone goes into their :class:`SpeakerChains` (heard once) and, with
  ``originals``, into the mix of every other participant of their language;
- what a speaker's chain says in language T goes into the mix of every speaker of T
  and into T's listener mix (one per language, encoded once and fanned out to its
  listeners with :class:`streamai.transport.relay.Broadcast`);
- a speaker is never a source of their own mix;
- captions (``transcript``, ``translation``, each with the speaker's id, name and
  language) and ``room_latency`` (per utterance and direction) go to every participant.

Languages present (of speakers and listeners) decide what each speaker is translated
into: a say chain starts when the first participant of a language comes and stops
when the last one leaves. A speaker whose chain fails leaves; the room goes on. The
room ends when it has been empty for ``empty_s``, at its maximum age, or when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..client_params import ClientParamsError, client_overrides
from ..engine import ParamsError, PipelineStartError
from ..errors import ClientError
from ..events import Event
from ..frames import AudioFrame, ControlFrame, ControlKind, Frame, now
from ..histogram import Histogram
from ..stage import StageRegistry
from ..transport.control import InterruptMessage, ParamsMessage
from ..transport.mixer import AudioMix, MixedAudioTrack
from ..transport.relay import Broadcast
from .chains import SpeakerChains
from .config import RoomPipelineConfig, pair_name
from .participant import Participant, Role
from .settings import RoomSettings

log = logging.getLogger(__name__)

ENDED_REMEMBERED = 1024


@dataclass
class Heard:
    """Late clauses counted where they were heard (one output: a speaker's track or a language's listeners)."""

    clauses: int = 0
    late_played: int = 0
    late_dropped: int = 0

    def note(self, late: bool, dropped: bool) -> None:
        if dropped:
            self.late_dropped += 1
            return
        self.clauses += 1
        self.late_played += int(late)

    def as_dict(self) -> dict[str, int]:
        return {"clauses": self.clauses, "late_played": self.late_played, "late_dropped": self.late_dropped}


class ListenerOutput:
    """One language's mix for its listeners: paced, encoded once, fanned out to each listener's track."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.mix = AudioMix()
        self.track = MixedAudioTrack(self.mix)
        self.broadcast = Broadcast(lambda listener: lambda: None, audio_source=self.track, video=False)
        self.heard = Heard()
        self.listeners = 0

    def close(self) -> None:
        self.broadcast.stop()
        self.track.stop()


@dataclass
class Speaker:
    """What the room keeps for one speaker besides their participant: chains, their own mix, counters."""

    participant: Participant
    chains: SpeakerChains
    mix: AudioMix
    heard: Heard = field(default_factory=Heard)  # clauses this speaker heard, late or not
    said: Counter[str] = field(default_factory=Counter)  # this speaker's clauses heard late / dropped, by outcome


class Joined(NamedTuple):
    """A participant just admitted and the SDP answer to their offer."""

    participant: Participant
    answer: str


class Room:
    """Participants of several languages; each speaker is heard once and said once per other language present."""

    def __init__(
        self,
        config: RoomPipelineConfig,
        languages: list[str],
        registry: StageRegistry,
        settings: Any,
        *,
        resources: Any = None,
        max_speakers: int | None = None,
        on_closed: Callable[[Room], None] = lambda room: None,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.config = config
        self.languages = list(languages)
        self.registry = registry
        self.settings = settings  # ServerSettings (connection limits, ICE) with .rooms (RoomSettings)
        self.room_settings: RoomSettings = settings.rooms
        self.resources = resources
        self.max_speakers = max_speakers or config.max_speakers
        self.max_listeners = config.max_listeners
        self.max_age_s = min(config.max_age_s, self.room_settings.max_room_s)
        self.created = time.time()
        self.started_at = now()
        self.state = "open"
        self.close_reason: str | None = None
        self.capabilities: dict[str, bytes] = {}  # "room" | "join" | "listen" -> token digest
        self.participants: dict[str, Participant] = {}
        self.speakers: dict[str, Speaker] = {}
        self.listener_outputs: dict[str, ListenerOutput] = {}
        self.pending: Counter[str] = Counter()  # joins being negotiated, by role
        self.ended_participants: OrderedDict[str, bytes] = OrderedDict()
        self.latency: dict[str, Histogram] = {}  # direction -> capture -> first translated audio sent
        self.totals: Counter[str] = Counter()
        self._transcribed: dict[tuple[str, int], float | None] = {}  # (speaker, utterance) -> final_transcript_ms
        self._empty_since: float | None = now()
        self._closing = False
        self._closed = asyncio.Event()
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spawn(self._watchdog(), "watchdog")

    # -- who is here ---------------------------------------------------------------
    def present_languages(self) -> set[str]:
        return {p.language for p in self.participants.values() if not p.closed}

    def count(self, role: Role) -> int:
        return sum(1 for p in self.participants.values() if p.role == role) + self.pending[role]

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"room:{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- joining ---------------------------------------------------------------------
    def check_join(self, role: Role, language: object) -> str:
        """The language a join asks for, or a ``ClientError``: unknown language, a full room, an ended room."""
        if self._closing:
            raise ClientError(404, "room_ended", "this room has ended")
        if not isinstance(language, str) or language not in self.languages:
            shown = repr(language[:16]) if isinstance(language, str) else "missing"
            raise ClientError(
                400, "unsupported_language",
                f"language {shown} is not spoken in this room (its languages: {', '.join(self.languages)})",
            )  # fmt: skip
        if role == "speaker" and self.count("speaker") >= self.max_speakers:
            raise ClientError(409, "room_full", f"this room has its {self.max_speakers} speakers; join as a listener")
        if role == "listener" and self.count("listener") >= self.max_listeners:
            raise ClientError(409, "room_full", f"this room has its {self.max_listeners} listeners")
        return language

    async def join(self, role: Role, language: object, name: str, offer_sdp: str, params: object = None) -> Joined:
        """Admit a participant and answer their offer; ``ClientError`` on bad input."""
        language = self.check_join(role, language)
        overrides = client_overrides(self.config.allowed_client_params(), params, self._stage_names())
        self.pending[role] += 1
        try:
            if role == "speaker":
                participant, answer = await self._admit_speaker(language, name, offer_sdp, overrides)
            else:
                participant, answer = await self._admit_listener(language, name, offer_sdp)
        finally:
            self.pending[role] -= 1
        self.participants[participant.id] = participant
        self._empty_since = None
        self.totals[f"{role}s_joined"] += 1
        if self._closing:  # the room ended while this join was negotiated
            await participant.close("the room has ended")
            raise ClientError(404, "room_ended", "this room has ended")
        # other speakers start translating into a new language once its first participant is connected:
        # loading chains while a browser's ICE and DTLS handshake runs can starve it on a small node
        self._spawn(self._follow_when_connected(participant), "follow")
        self.publish("participant", action="joined", **self._who(participant))
        participant.events.emit("room", **self.roster())
        return Joined(participant, answer)

    def _stage_names(self) -> list[str]:
        return [s.name or f"{s.type}{i}" for c in self.config.chains().values() for i, s in enumerate(c.stages)]

    async def _admit_speaker(
        self, language: str, name: str, offer_sdp: str, params: dict[str, dict[str, Any]]
    ) -> tuple[Participant, str]:
        mix = AudioMix()
        participant = Participant(self.id, "speaker", language, name, self.settings, MixedAudioTrack(mix), self._left)
        chains = SpeakerChains(
            self.config,
            language,
            self.registry,
            lambda target, frame: self._said(participant, target, frame),
            lambda target, event: self._relay(participant, target, event),
            resources=self.resources,
            region=getattr(self.settings, "region", None),
            params=params,
        )
        speaker = Speaker(participant, chains, mix)
        try:
            await chains.start(sorted(self.present_languages() - {language}))
        except BaseException as exc:
            await participant.close("its chains could not start")
            await chains.stop()
            if isinstance(exc, ParamsError):
                raise ClientError(400, "bad_params", str(exc)) from None
            if isinstance(exc, PipelineStartError):  # the cause is logged; the client learns nothing of paths
                log.warning("room %s: %s chains could not start: %s", self.id, language, exc)
                message = f"the {language} chains of room pipeline {self.config.name!r} could not start on this node"
                raise ClientError(
                    503, "pipeline_unavailable", f"{message} (logged on the node)", retry_after=30
                ) from None
            raise
        participant.on_audio = lambda frame: self._heard(speaker, frame)
        participant.on_message = self._message
        participant.health = lambda: chains.failed
        participant.stats = lambda: self._speaker_stats(speaker)
        self.speakers[participant.id] = speaker
        try:
            answer = await participant.negotiate(offer_sdp)
        except BaseException:
            self.speakers.pop(participant.id, None)
            await participant.close("negotiation failed")
            await chains.stop()
            raise
        return participant, answer

    async def _admit_listener(self, language: str, name: str, offer_sdp: str) -> tuple[Participant, str]:
        output = self.listener_outputs.get(language)
        if output is None:
            output = self.listener_outputs[language] = ListenerOutput(language)
        output.listeners += 1
        track = output.broadcast.subscribe("audio", "opus")
        participant = Participant(self.id, "listener", language, name, self.settings, track, self._left)
        participant.on_message = self._message
        participant.stats = lambda: {"heard": output.heard.as_dict(), "listeners": output.listeners}
        try:
            answer = await participant.negotiate(offer_sdp)
        except BaseException:
            await participant.close("negotiation failed")
            self._release_listener_output(language)
            raise
        return participant, answer

    def _release_listener_output(self, language: str) -> None:
        output = self.listener_outputs.get(language)
        if output is None:
            return
        output.listeners -= 1
        if output.listeners <= 0:
            del self.listener_outputs[language]
            output.close()

    def _follow_languages(self) -> None:
        """Start (in the background) say chains into languages that became present; stop those no one hears."""
        present = self.present_languages()
        for speaker in list(self.speakers.values()):
            chains = speaker.chains
            for target in present - {chains.language} - set(chains.says):
                self._spawn(self._add_target(speaker, target), f"target-{target}")
            for target in set(chains.says) - present:
                self._spawn(chains.remove_target(target), f"untarget-{target}")

    async def _follow_when_connected(self, participant: Participant) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(participant.connected.wait(), self.settings.connect_timeout_s)
        if not self._closing:
            self._follow_languages()

    async def _add_target(self, speaker: Speaker, target: str) -> None:
        try:
            await speaker.chains.add_target(target)
        except Exception as exc:  # a say chain that cannot start ends this speaker, not the room
            log.warning("room %s: %s->%s chain could not start: %s", self.id, speaker.chains.language, target, exc)
            await speaker.participant.close(f"the {speaker.chains.language}->{target} chain could not start")

    # -- leaving ------------------------------------------------------------------------
    def _left(self, participant: Participant) -> None:
        """A participant's end (any reason): free what the room held for them."""
        if self.participants.pop(participant.id, None) is None:
            return
        if participant.capability is not None:
            self.ended_participants[participant.id] = participant.capability
            while len(self.ended_participants) > ENDED_REMEMBERED:
                self.ended_participants.popitem(last=False)
        speaker = self.speakers.pop(participant.id, None)
        if speaker is not None:
            self._spawn(speaker.chains.stop(), "stop-chains")
            for mix in self._all_mixes():
                mix.remove(participant.id)
        else:
            self._release_listener_output(participant.language)
        self.totals[f"{participant.role}s_left"] += 1
        if not self.participants:
            self._empty_since = now()
        if not self._closing:
            self._follow_languages()
            self.publish("participant", action="left", reason=participant.close_reason, **self._who(participant))

    # -- media -----------------------------------------------------------------------------
    def _all_mixes(self) -> list[AudioMix]:
        return [s.mix for s in self.speakers.values()] + [o.mix for o in self.listener_outputs.values()]

    def _outputs(self, language: str, exclude: str) -> list[tuple[AudioMix, Heard, Participant | None]]:
        """The mixes of ``language`` (its speakers but ``exclude``, and its listeners), with their counters."""
        found: list[tuple[AudioMix, Heard, Participant | None]] = [
            (s.mix, s.heard, s.participant)
            for pid, s in self.speakers.items()
            if pid != exclude and s.participant.language == language
        ]
        output = self.listener_outputs.get(language)
        if output is not None:
            found.append((output.mix, output.heard, None))
        return found

    def _heard(self, speaker: Speaker, frame: Frame) -> None:
        """A speaker's microphone frame: to their own voice's listeners (``originals``), then into their chain."""
        if self.config.originals and isinstance(frame, AudioFrame):
            for mix, _, _ in self._outputs(speaker.participant.language, exclude=speaker.participant.id):
                mix.source(speaker.participant.id).put(frame)
        speaker.chains.submit(frame)

    def _said(self, participant: Participant, target: str, frame: Frame) -> None:
        """What a speaker's say chain put out in ``target``: into every mix of that language."""
        speaker = self.speakers.get(participant.id)
        if speaker is None:
            return
        direction = pair_name(participant.language, target)
        if isinstance(frame, AudioFrame):
            drop_late = self.config.pair_late_audio(participant.language, target) == "drop"
            for mix, heard, owner in self._outputs(target, exclude=participant.id):
                source = mix.sources.get(participant.id) or mix.source(
                    participant.id,
                    drop_late=drop_late,
                    on_first=self._first_sent(speaker, direction, heard, owner, target),
                )
                source.put(frame)
        elif isinstance(frame, ControlFrame) and frame.control is ControlKind.INTERRUPTION:
            for mix, _, _ in self._outputs(target, exclude=participant.id):
                mix.flush(participant.id)

    def _first_sent(
        self, speaker: Speaker, direction: str, heard: Heard, owner: Participant | None, target: str
    ) -> Callable[[AudioFrame, float, bool], None]:
        """What happens when a clause of ``speaker`` starts to sound on one output (or is dropped there, late).

        Every chunk of a clause carries the clause's capture time: only its first counts.
        """
        clauses: deque[float] = deque(maxlen=64)

        def sent(frame: AudioFrame, latency: float, late: bool) -> None:
            if frame.capture_time in clauses:
                return
            clauses.append(frame.capture_time)
            dropped = late and self.config.pair_late_audio(speaker.chains.language, target) == "drop"
            heard.note(late, dropped)
            if late:
                speaker.said["late_dropped" if dropped else "late_played"] += 1
            if dropped:
                return
            self.latency.setdefault(direction, Histogram()).observe(latency)
            event = {"kind": "audio", "ms": round(latency * 1000, 1), "direction": direction,
                     "speaker": speaker.participant.id, "late": late}  # fmt: skip
            receivers = [owner] if owner is not None else self._listeners(target)
            for receiver in receivers:
                receiver.events.emit("latency", **event)

        return sent

    def _listeners(self, language: str) -> list[Participant]:
        return [p for p in self.participants.values() if p.role == "listener" and p.language == language]

    # -- events --------------------------------------------------------------------------
    def publish(self, type_: str, **fields: Any) -> None:
        """An event to every participant."""
        for participant in list(self.participants.values()):
            participant.events.emit(type_, **fields)

    @staticmethod
    def _who(participant: Participant) -> dict[str, Any]:
        return {"participant": participant.id, "name": participant.name, "language": participant.language,
                "role": participant.role}  # fmt: skip

    def _relay(self, participant: Participant, target: str | None, event: Event) -> None:
        """An event of one of a speaker's chains: captions and latency to everyone, the rest to the speaker."""
        kind = event.get("type")
        speaker = {"speaker": participant.id, "name": participant.name}
        if kind == "transcript":
            fields = {k: event.get(k) for k in ("text", "final", "stable", "utterance")}
            self.publish("transcript", **speaker, language=participant.language, **fields)
        elif kind == "translation":
            fields = {k: event.get(k) for k in ("text", "source", "final", "utterance")}
            self.publish("translation", **speaker, language=target, source_language=participant.language, **fields)
        elif kind == "vad":
            self.publish("speaking", **speaker, state=event.get("state"), utterance=event.get("utterance"))
        elif kind == "latency" and "utterance" in event:
            key = (participant.id, int(event.get("utterance") or 0))
            if target is None:
                self._transcribed[key] = event.get("final_transcript_ms")
                while len(self._transcribed) > 256:
                    self._transcribed.pop(next(iter(self._transcribed)))
                return
            self.publish(
                "room_latency",
                **speaker,
                direction=pair_name(participant.language, target),
                utterance=key[1],
                final_transcript_ms=self._transcribed.get(key),
                translation_ms=event.get("translation_ms"),
                first_audio_ms=event.get("first_audio_ms"),
            )
        elif kind not in ("latency", "stats"):
            participant.events.emit(kind or "event", **{k: v for k, v in event.items() if k not in ("type", "t")})

    def _message(self, participant: Participant, message: Any, reply: Callable[[Event], None]) -> None:
        """A participant's control message: interrupt and params steer only their own chains."""
        speaker = self.speakers.get(participant.id)
        if speaker is None:
            reply({"type": "error", "code": "bad_message", "message": "a listener only sends ping", "fatal": False,
                   "t": time.time()})  # fmt: skip
            return
        if isinstance(message, InterruptMessage):
            speaker.chains.control(ControlKind.INTERRUPTION, {"source": "client"})
            for mix in self._all_mixes():
                mix.flush(participant.id)
        elif isinstance(message, ParamsMessage):
            live = {r.name: frozenset(getattr(r.stage, "live_params", frozenset()))
                    for runner in speaker.chains.runners for r in runner.stage_runners}  # fmt: skip
            try:
                changes = client_overrides(self.config.allowed_client_params(), message.params, list(live), live)
            except ClientParamsError as exc:
                reply({"type": "error", "code": exc.code, "message": exc.message, "fatal": False, "t": time.time()})
                return
            speaker.chains.control(ControlKind.PARAMS, changes)
        else:
            reply({"type": "error", "code": "bad_message", "message": "rooms take no prompt", "fatal": False,
                   "t": time.time()})  # fmt: skip

    # -- summaries -----------------------------------------------------------------------
    def roster(self) -> dict[str, Any]:
        return {
            "room": self.id,
            "pipeline": self.config.name,
            "languages": self.languages,
            "participants": [self._who(p) for p in self.participants.values()],
        }

    def _speaker_stats(self, speaker: Speaker) -> dict[str, Any]:
        track = speaker.participant.output
        return {
            "audio_in": speaker.participant.inbound.frames,
            "packets_sent": getattr(track, "sent", 0),
            "packets_overlapped": getattr(track, "overlapped", 0),
            "heard": speaker.heard.as_dict(),
            "said_late": dict(speaker.said),
            "drops": speaker.chains.stage_stats(),
            "translating_into": sorted(speaker.chains.says),
        }

    def participant_summary(self, participant: Participant) -> dict[str, Any]:
        out = participant.summary()
        speaker = self.speakers.get(participant.id)
        if speaker is not None:
            out.update(self._speaker_stats(speaker))
        else:
            output = self.listener_outputs.get(participant.language)
            if output is not None:
                out["heard"] = output.heard.as_dict()
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.config.name,
            "state": self.state,
            "languages": self.languages,
            "age_s": round(time.time() - self.created, 1),
            "max_age_s": self.max_age_s,
            "max_speakers": self.max_speakers,
            "max_listeners": self.max_listeners,
            "participants": [self.participant_summary(p) for p in self.participants.values()],
            "listeners": {lang: o.listeners for lang, o in self.listener_outputs.items()},
            "encoded": {lang: o.broadcast.summary()["encoded"]["audio"] for lang, o in self.listener_outputs.items()},
            "latency": {direction: h.summary_ms() for direction, h in sorted(self.latency.items())},
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        while not self._closing:
            await asyncio.sleep(min(1.0, max(0.05, self.room_settings.empty_s / 4)))
            at = now()
            if at - self.started_at > self.max_age_s:
                self._spawn(self.close("the room reached its maximum age"), "close")
                return
            if (
                self._empty_since is not None
                and not self.pending.total()
                and at - self._empty_since >= (self.room_settings.empty_s)
            ):
                self._spawn(self.close("the room was empty"), "close")
                return

    async def close(self, reason: str = "closed") -> None:
        """End the room: every participant leaves, every chain stops; safe to call more than once."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.state = "closed"
        self.close_reason = reason
        log.info("room %s (%s) closing: %s", self.id, self.config.name, reason)
        await asyncio.gather(
            *(p.close(f"room ended: {reason}") for p in list(self.participants.values())), return_exceptions=True
        )
        await asyncio.gather(*(s.chains.stop() for s in list(self.speakers.values())), return_exceptions=True)
        self.speakers.clear()
        for output in list(self.listener_outputs.values()):
            output.close()
        self.listener_outputs.clear()
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        for task in pending:
            if task.get_name().endswith(":watchdog"):
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait(pending, timeout=5) if pending else None
        self._closed.set()
        self._on_closed(self)
