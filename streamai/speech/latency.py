"""Per-utterance latency of the speech chain: the ``latency`` event and the ``waterfall`` event.

Every figure is measured from the utterance's *speech end*: the capture time of the
last sample in what the node received whose level is above the VAD's energy floor
(``vad`` stamps it on SPEECH_END; the final transcript, its translation and the
speech made from it inherit it).

``latency`` (as before): each speech stage declares what it measures (``expect``) when
it starts and records its figure for an utterance (``record``); when every expected
figure is in, the tracker emits it; an utterance that never completes (a dropped
translation) is emitted with nulls when a later one completes.

``waterfall``: where the time to the first translated packet went, along the path of
the utterance's *last* translated clause (the one its final words are in):

    speech end -> vad (the end, early, tentative or confirmed, whose decode brought the words)
    -> asr (the text frame with the words pushed) -> mt (its translation pushed)
    -> tts (its first audio chunk pushed) -> outbound (the first packet holding that
    chunk taken by the sender: engine delivery, audio queued ahead of it, pacing)
    -> encode (that packet encoded and handed to the transport)

Each stage stamps its step (``path`` / ``step``); the transport reports the first
packet of each first chunk as a ``latency`` event ``{kind: "audio", seq, queued_ms,
encode_ms, handed_at}``; the tracker listens on the bus and then emits ``waterfall``
``{utterance, components: {vad_ms, asr_ms, mt_ms, tts_ms, outbound_ms, encode_ms},
total_ms, transport}``. Without a transport (offline runs) it is emitted after
``OFFLINE_WAIT_S`` with the two transport components null. Components are the
differences of consecutive stamps, so they add up to ``total_ms`` exactly; a missing
stamp (no VAD in the pipeline, words committed before the pause) merges its segment
into the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any

KEYS = ("final_transcript_ms", "translation_ms", "first_audio_ms")
STEPS = ("vad", "asr", "mt", "tts")
COMPONENTS = ("vad_ms", "asr_ms", "mt_ms", "tts_ms", "outbound_ms", "encode_ms")
OFFLINE_WAIT_S = 1.0  # no transport report by then, and none ever seen: an offline run
TRANSPORT_WAIT_S = 30.0  # the first chunk may wait behind earlier audio this long (the track's buffer)


@dataclass
class UtterancePath:
    """The stamps (monotonic seconds) of one utterance's last translated clause."""

    speech_end: float | None = None
    stamps: dict[str, float] = field(default_factory=dict)  # step -> when it pushed its frame
    audio_seq: int | None = None  # the first chunk of the clause's speech
    taken_at: float | None = None  # its first packet left the outbound track
    handed_at: float | None = None  # ... and was handed, encoded, to the transport


def waterfall(path: UtterancePath) -> dict[str, Any] | None:
    """Components in ms (consecutive differences) and their total; ``None`` without a speech end."""
    if path.speech_end is None:
        return None
    points: list[tuple[str, float | None]] = [(f"{step}_ms", path.stamps.get(step)) for step in STEPS]
    points += [("outbound_ms", path.taken_at), ("encode_ms", path.handed_at)]
    components: dict[str, float | None] = {}
    previous = path.speech_end
    for name, at in points:
        if at is None:
            components[name] = None
            continue
        components[name] = round((at - previous) * 1000, 1)
        previous = at
    return {
        "components": components,
        "total_ms": round((previous - path.speech_end) * 1000, 1),
        "transport": path.handed_at is not None,
        "early": path.stamps.get("tts", path.speech_end) < path.speech_end,  # spoken before the speaker stopped
    }


class LatencyTracker:
    """Collects the figures and stamps of one session's event bus."""

    def __init__(self, events: Any) -> None:
        self._bus = weakref.ref(events)  # the registry below is keyed by the bus: never hold it strongly
        self.expected: set[str] = set()
        self.pending: dict[int, dict[str, float]] = {}
        self.paths: dict[int, UtterancePath] = {}
        self.waiting: dict[int, int] = {}  # first-chunk seq -> utterance whose waterfall waits for it
        self.transport_seen = False
        self._timers: dict[int, asyncio.TimerHandle] = {}
        events.on_event(self._on_event)

    def attach_transport(self) -> None:
        """A transport sends this session's audio: a first chunk's waterfall waits for its packet's report
        (``TRANSPORT_WAIT_S``) from the first utterance on, not ``OFFLINE_WAIT_S`` until a report is seen."""
        self.transport_seen = True

    @property
    def events(self) -> Any:
        bus = self._bus()
        if bus is None:
            raise RuntimeError("the session's event bus is gone")
        return bus

    # -- latency figures ----------------------------------------------------------
    def expect(self, key: str) -> None:
        self.expected.add(key)

    def record(self, utterance: int, key: str, ms: float) -> None:
        figures = self.pending.setdefault(utterance, {})
        figures.setdefault(key, round(ms, 1))
        if self.expected <= figures.keys():
            for older in sorted(u for u in self.pending if u < utterance):
                self._emit(older, self.pending.pop(older))
            self._emit(utterance, self.pending.pop(utterance))

    def _emit(self, utterance: int, figures: dict[str, float]) -> None:
        self.events.emit(
            "latency", utterance=utterance, **{k: figures.get(k) for k in KEYS if k in self.expected or k in figures}
        )

    # -- waterfall stamps ------------------------------------------------------------
    def path(self, utterance: int, speech_end: float, vad_at: float | None, asr_at: float) -> None:
        """``asr`` pushed words of ``utterance`` (a pause commit or a final with new words): a new path."""
        stamps = {"asr": asr_at} if vad_at is None else {"vad": vad_at, "asr": asr_at}
        self.paths[utterance] = UtterancePath(speech_end=speech_end, stamps=stamps)
        for old in [u for u in self.paths if u < utterance - 8]:
            del self.paths[old]

    def step(self, utterance: int, step: str, at: float, seq: int | None = None) -> None:
        """A later stage pushed its frame of the utterance's newest words (``tts``: its first chunk, ``seq``)."""
        found = self.paths.get(utterance)
        if found is None:
            return
        found.stamps[step] = at
        if step == "tts":
            found.audio_seq = seq
            found.taken_at = found.handed_at = None

    def finish(self, utterance: int) -> None:
        """The utterance's speech is all queued: emit its waterfall once its first packet is reported."""
        found = self.paths.get(utterance)
        if found is None or found.audio_seq is None or "tts" not in found.stamps:
            return
        if found.handed_at is not None:
            self._emit_waterfall(utterance)
            return
        self.waiting[found.audio_seq] = utterance
        wait = TRANSPORT_WAIT_S if self.transport_seen else OFFLINE_WAIT_S
        with contextlib.suppress(RuntimeError):  # no running loop: emitted when the report comes, if ever
            loop = asyncio.get_running_loop()
            self._timers[utterance] = loop.call_later(wait, self._give_up, found.audio_seq)

    def _give_up(self, seq: int) -> None:
        utterance = self.waiting.pop(seq, None)
        if utterance is not None:
            self._emit_waterfall(utterance)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "latency" or event.get("kind") != "audio" or "handed_at" not in event:
            return
        self.transport_seen = True
        seq = event.get("seq")
        for found in self.paths.values():
            if found.audio_seq == seq and found.handed_at is None:
                found.handed_at = float(event["handed_at"])
                found.taken_at = found.handed_at - float(event.get("encode_ms") or 0.0) / 1000
        utterance = self.waiting.pop(seq, None) if isinstance(seq, int) else None
        if utterance is not None:
            self._emit_waterfall(utterance)

    def _emit_waterfall(self, utterance: int) -> None:
        timer = self._timers.pop(utterance, None)
        if timer is not None:
            timer.cancel()
        found = self.paths.get(utterance)
        figures = waterfall(found) if found is not None else None
        bus = self._bus()
        if figures is not None and bus is not None:  # the session may have ended meanwhile
            bus.emit("waterfall", utterance=utterance, **figures)


_trackers: weakref.WeakKeyDictionary[Any, LatencyTracker] = weakref.WeakKeyDictionary()


def tracker(events: Any) -> LatencyTracker:
    """The tracker of an event bus (one per session)."""
    found = _trackers.get(events)
    if found is None:
        found = _trackers[events] = LatencyTracker(events)
    return found
