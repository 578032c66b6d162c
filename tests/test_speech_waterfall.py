"""The latency waterfall: its arithmetic, the tracker that assembles it from stage stamps and the
transport's report, the outbound track's send timing, and the waterfall histograms in /metrics.
Deterministic: stamps are given, not measured."""

from __future__ import annotations

import asyncio
import gc

import numpy as np

from streamai.events import EventBus
from streamai.frames import AudioFrame, now
from streamai.speech import latency
from streamai.speech.latency import LatencyTracker, UtterancePath, tracker, waterfall
from streamai.testing.wait import wait_for
from streamai.transport.outbound import ProcessedAudioTrack, SendTiming, sent_fields


def test_components_are_consecutive_differences_that_add_up_to_the_total() -> None:
    path = UtterancePath(speech_end=10.0, stamps={"vad": 10.080, "asr": 10.190, "mt": 10.197, "tts": 10.240})
    path.taken_at, path.handed_at = 10.252, 10.253
    figures = waterfall(path)
    assert figures is not None
    assert figures["components"] == {
        "vad_ms": 80.0, "asr_ms": 110.0, "mt_ms": 7.0, "tts_ms": 43.0, "outbound_ms": 12.0, "encode_ms": 1.0,
    }  # fmt: skip
    assert figures["total_ms"] == 253.0
    assert abs(sum(figures["components"].values()) - figures["total_ms"]) < 0.5
    assert figures["transport"] is True and figures["early"] is False


def test_a_missing_stamp_merges_its_segment_into_the_next_and_offline_has_no_transport() -> None:
    path = UtterancePath(speech_end=5.0, stamps={"asr": 5.2, "mt": 5.21, "tts": 5.25})  # no VAD in the pipeline
    figures = waterfall(path)
    assert figures is not None
    components = figures["components"]
    assert components["vad_ms"] is None and components["asr_ms"] == 200.0
    assert components["outbound_ms"] is None and components["encode_ms"] is None
    assert figures["total_ms"] == 250.0 and figures["transport"] is False
    assert waterfall(UtterancePath()) is None  # no speech end: nothing to measure from


def _audio_report(seq: int, handed_at: float, encode_ms: float) -> dict[str, object]:
    return {"kind": "audio", "ms": 1.0, "seq": seq, "queued_ms": 3.0, "encode_ms": encode_ms, "handed_at": handed_at}


async def test_tracker_emits_the_waterfall_when_the_transport_reports_the_first_packet() -> None:
    bus = EventBus()
    seen: list[dict[str, object]] = []
    bus.on_event(seen.append)
    track = LatencyTracker(bus)
    track.path(3, speech_end=100.0, vad_at=100.09, asr_at=100.2)
    track.step(3, "mt", 100.21)
    track.step(3, "tts", 100.26, seq=77)
    track.finish(3)
    assert not [e for e in seen if e["type"] == "waterfall"]  # waits for the packet
    bus.emit("latency", **_audio_report(76, 100.3, 1.0))  # another frame's packet
    assert not [e for e in seen if e["type"] == "waterfall"]
    bus.emit("latency", **_audio_report(77, 100.275, 2.0))
    (event,) = [e for e in seen if e["type"] == "waterfall"]
    assert event["utterance"] == 3 and event["transport"] is True
    assert event["components"] == {
        "vad_ms": 90.0, "asr_ms": 110.0, "mt_ms": 10.0, "tts_ms": 50.0, "outbound_ms": 13.0, "encode_ms": 2.0,
    }  # fmt: skip
    assert event["total_ms"] == 275.0


async def test_the_last_clause_path_wins_and_a_new_path_clears_the_old_steps() -> None:
    bus = EventBus()
    seen: list[dict[str, object]] = []
    bus.on_event(seen.append)
    track = LatencyTracker(bus)
    track.path(1, speech_end=1.0, vad_at=1.1, asr_at=1.2)  # words committed at a pause ...
    track.step(1, "mt", 1.21)
    track.step(1, "tts", 1.3, seq=5)
    track.path(1, speech_end=2.0, vad_at=2.3, asr_at=2.4)  # ... then speech went on: the final's words
    track.step(1, "mt", 2.41)
    track.step(1, "tts", 2.45, seq=9)
    track.finish(1)
    bus.emit("latency", **_audio_report(9, 2.46, 0.5))
    (event,) = [e for e in seen if e["type"] == "waterfall"]
    assert event["total_ms"] == 460.0 and event["components"]["vad_ms"] == 300.0


async def test_offline_the_waterfall_comes_without_transport_components(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(latency, "OFFLINE_WAIT_S", 0.05)
    bus = EventBus()
    seen: list[dict[str, object]] = []
    bus.on_event(seen.append)
    track = LatencyTracker(bus)
    track.path(1, speech_end=now(), vad_at=None, asr_at=now())
    track.step(1, "tts", now(), seq=1)
    track.finish(1)
    await wait_for(lambda: [e for e in seen if e["type"] == "waterfall"], timeout=5)
    (event,) = [e for e in seen if e["type"] == "waterfall"]
    assert event["transport"] is False and event["components"]["encode_ms"] is None


async def test_with_a_transport_attached_the_first_waterfall_waits_for_its_packet_not_the_offline_wait(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    # a loaded node hands its first packet over later than the offline wait: the waterfall must still
    # carry the transport's components (before, the first utterance's came with them null)
    monkeypatch.setattr(latency, "OFFLINE_WAIT_S", 0.05)
    bus = EventBus()
    seen: list[dict[str, object]] = []
    bus.on_event(seen.append)
    track = LatencyTracker(bus)
    track.attach_transport()
    track.path(1, speech_end=1.0, vad_at=1.1, asr_at=1.2)
    track.step(1, "mt", 1.21)
    track.step(1, "tts", 1.3, seq=4)
    track.finish(1)
    await asyncio.sleep(0.2)  # four times the offline wait
    assert not [e for e in seen if e["type"] == "waterfall"]
    bus.emit("latency", **_audio_report(4, 1.5, 1.0))
    (event,) = [e for e in seen if e["type"] == "waterfall"]
    assert event["transport"] is True and event["components"]["encode_ms"] == 1.0


def test_a_sessions_tracker_does_not_keep_its_bus_alive() -> None:
    gc.collect()  # buses earlier tests let go are not counted
    bus = EventBus()
    tracker(bus).path(1, 1.0, None, 1.1)
    count = len(latency._trackers)
    assert bus in latency._trackers
    del bus
    gc.collect()
    assert len(latency._trackers) == count - 1


async def test_outbound_audio_reports_queue_pacing_and_encode_once_the_packet_is_handed_over() -> None:
    reports: list[tuple[str, float, AudioFrame, SendTiming | None]] = []
    track = ProcessedAudioTrack(on_sent=lambda *args: reports.append(args))
    first = AudioFrame(samples=np.full((960, 1), 8000, np.int16), sample_rate=48000, deadline=now() + 5)
    rest = AudioFrame(samples=np.full((960, 1), 8000, np.int16), sample_rate=48000)  # deadline inf: no report
    track.put(first)
    track.put(rest)
    await track.recv()  # the packet with the first chunk is taken ...
    assert reports == []  # ... but not handed over until the sender asks for the next one
    await track.recv()
    (kind, latency_s, frame, timing), = reports  # fmt: skip
    assert kind == "audio" and frame is first and timing is not None
    assert timing.put_at <= timing.taken_at <= timing.handed_at
    assert latency_s == timing.handed_at - first.capture_time
    fields = sent_fields(kind, latency_s, frame, timing)
    assert fields["seq"] == first.seq and fields["handed_at"] == timing.handed_at
    assert fields["queued_ms"] >= 0 and fields["encode_ms"] >= 0
    track.stop()


async def test_session_metrics_render_the_waterfall_family() -> None:
    from prometheus_client import generate_latest

    from streamai.server.metrics import session_metrics
    from streamai.server.sessions import SessionManager
    from streamai.server.settings import ServerSettings
    from streamai.stage import StageRegistry
    from streamai.web.metrics import FunctionCollector, registry_of

    manager = SessionManager(ServerSettings(), StageRegistry())
    totals = manager.history.totals["speech-translate"]
    for ms in (80.0, 120.0):
        totals.waterfall["vad"].observe(ms / 1000)
    text = generate_latest(registry_of(FunctionCollector(lambda: session_metrics(manager)))).decode()
    assert 'streamai_speech_waterfall_seconds_count{component="vad",pipeline="speech-translate"} 2.0' in text
    assert 'streamai_speech_waterfall_seconds_bucket{component="vad",le="0.1",pipeline="speech-translate"} 1.0' in text
    await asyncio.sleep(0)
