"""Interruptions over WebRTC, measured at the client: a real aiortc peer speaks English to a real
node (speech-translate), and while the Portuguese answer plays it sends ``interrupt`` on the data
channel; the answer must fall silent within a few packets and stay silent. Also ``params`` over the
data channel: a live change is applied, an unknown field is refused with an ``error`` event.

Latency here is from sending ``interrupt`` to the arrival, at the client's track, of the first
packet of the silence that follows: the data channel, the node's reaction, the wait for the next
20 ms packet, Opus, and the client's jitter buffer. aiortc's receiver holds 4 packets before it
plays (80 ms, a constant on top of everything else); a real-time client holds one, as this test's
client is set to (``set_audio_prefetch(receiver, 1)``), so the figure is the node's and the wire's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from streamai.frames import now
from streamai.testing.node import running_node
from streamai.testing.peer import PacedAudioTrack, Probe
from streamai.testing.speech import EspeakMissing, silence, speak
from streamai.transport.ice import set_audio_prefetch

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = [pytest.mark.models, pytest.mark.slow]

TRIALS = 8
LOUD = 1000  # |sample| of speech coming back
QUIET = 100  # |sample| of a silent packet (Opus-decoded digital silence is ~0)
BOUND_P50_MS = 250  # goal 60 ms p95; the median holds this on a loaded 2-core machine running node and peer
WINDOW_PACKETS = 40  # an interrupt is judged on the next 0.8 s of audio that arrives (a loaded peer receives in bursts)
MAX_LOUD_PACKETS = 10  # at most this many packets of the answer after the interrupt (already in flight)


def _chunks_after(probe: Probe, at: float) -> list[tuple[float, int]]:
    """(arrival, peak |sample|) of every received audio packet that arrived after ``at``."""
    return [(t, int(np.abs(c.astype(np.int32)).max())) for t, c in probe._audio_chunks if t > at]


async def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    ends = now() + timeout
    while now() < ends:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_interrupt_silences_the_answer_within_a_few_packets() -> None:
    try:  # one loop: a sentence whose Portuguese answer lasts a few seconds, then room for it to play
        sentence = speak("good morning, where is the train station, I would like a cup of coffee please")
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    clip = np.concatenate([silence(0.4), sentence, silence(3.5)])[:, 0]
    microphone = PacedAudioTrack(clip, loop=True)
    latencies: list[float] = []
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        probe = Probe(url, "speech-translate", audio=microphone)
        await probe.connect(http)
        for transceiver in probe.pc.getTransceivers():  # type: ignore[union-attr]
            if transceiver.kind == "audio":
                assert set_audio_prefetch(transceiver.receiver, 1)
        assert await _wait_for(lambda: probe.channel.readyState == "open", 10)

        # params over the data channel: a refused field is named, a live one is applied
        probe.send({"type": "params", "params": {"no_such_knob": 1}})
        probe.send({"type": "params", "params": {"vad": {"min_speech_ms": 10}}})  # the pipeline allows only silence
        probe.send({"type": "params", "params": {"silence_ms": 320}})
        assert await _wait_for(lambda: any(e.get("type") == "params" for e in probe.report.events), 10)
        errors = [e for e in probe.report.events if e.get("type") == "error"]
        assert len(errors) == 2 and {e["code"] for e in errors} == {"bad_params"}, errors
        assert "no_such_knob" in errors[0]["message"] and "min_speech_ms" in errors[1]["message"]
        assert "vad.silence_ms" in errors[1]["message"]  # the refusal names what may change
        applied = [e for e in probe.report.events if e.get("type") == "params"]
        assert [(e["stage"], e["changed"]) for e in applied] == [("vad", {"silence_ms": 320})]

        measured_until = now()
        for _ in range(TRIALS):

            def answer_playing(since: float = measured_until) -> bool:
                recent = _chunks_after(probe, max(since, now() - 0.3))
                return sum(1 for _, peak in recent if peak > LOUD) >= 5

            assert await _wait_for(answer_playing, 30), "no translated answer came back"
            sent = now()
            probe.send({"type": "interrupt"})
            arrived = await _wait_for(lambda at=sent: len(_chunks_after(probe, at)) >= WINDOW_PACKETS, 15)
            assert arrived, "audio stopped arriving after the interrupt"
            after = _chunks_after(probe, sent)[:WINDOW_PACKETS]
            # the first packet from which everything in the window is quiet
            loud = [i for i, (_, peak) in enumerate(after) if peak > QUIET]
            first_silent = loud[-1] + 1 if loud else 0
            assert first_silent < len(after), f"the answer kept playing after interrupt: {after}"
            assert first_silent <= MAX_LOUD_PACKETS, f"silence came, but too late to be the interrupt's: {after}"
            latencies.append((after[first_silent][0] - sent) * 1000)
            measured_until = after[-1][0]
        events = probe.report.events
        await probe.close(http)

    interruptions = [e for e in events if e.get("type") == "interruption" and e.get("reason") == "client"]
    assert len(interruptions) >= TRIALS
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "webrtc-interrupt.json").write_text(
        json.dumps({"interrupt_to_first_silent_packet_ms": [round(v, 1) for v in latencies], "p50": p50, "p95": p95})
    )
    print(f"interrupt -> first silent packet at the client: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({latencies})")
    assert p50 <= BOUND_P50_MS, latencies
