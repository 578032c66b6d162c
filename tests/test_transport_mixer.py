"""The listener-side mixer: sources summed, never queued behind each other; timing kept; late audio per policy."""

from __future__ import annotations

import numpy as np

from streamai.frames import AudioFrame, now
from streamai.transport.mixer import AUDIO_PACKET, AudioMix, MixedAudioTrack


def frame(value: int, samples: int = 960, rate: int = 48_000, deadline: float = float("inf")) -> AudioFrame:
    out = AudioFrame(samples=np.full((samples, 2), value, np.int16), sample_rate=rate)
    out.deadline = deadline
    return out


def test_sources_are_summed_and_clipped_not_queued() -> None:
    mix = AudioMix()
    mix.source("a").put(frame(1000))
    mix.source("b").put(frame(2000))
    packet, active = mix.take(AUDIO_PACKET)
    assert active == 2 and packet.min() == packet.max() == 3000  # both at once, in the same 20 ms
    mix.source("a").put(frame(30000))
    mix.source("b").put(frame(30000))
    packet, _ = mix.take(AUDIO_PACKET)
    assert packet.max() == 32767  # clipped, never wrapped
    packet, active = mix.take(AUDIO_PACKET)
    assert active == 0 and not packet.any()  # dry: silence


def test_first_samples_report_capture_latency_and_late_frames_follow_the_policy() -> None:
    seen: list[tuple[float, bool]] = []
    mix = AudioMix()
    playing = mix.source("play", on_first=lambda f, latency, late: seen.append((latency, late)))
    dropping = mix.source("drop", drop_late=True, on_first=lambda f, latency, late: seen.append((latency, late)))
    on_time, late_one = frame(100, deadline=now() + 60), frame(100, deadline=now() - 0.01)
    on_time.capture_time = now() - 0.2
    playing.put(on_time)
    playing.put(late_one)
    dropping.put(frame(5, deadline=now() - 0.01))
    mix.take(AUDIO_PACKET)
    mix.take(AUDIO_PACKET)
    assert playing.counters.frames == 2 and playing.counters.late_played == 1
    assert dropping.counters.late_dropped == 1 and dropping.counters.frames == 0
    assert 0.2 <= seen[0][0] < 5 and seen[0][1] is False
    assert sum(1 for _, late in seen if late) == 2


def test_other_rates_are_resampled_and_interruptions_flush() -> None:
    mix = AudioMix()
    source = mix.source("tts")
    source.put(frame(1000, samples=2205, rate=22_050))  # 100 ms at 22.05 kHz
    assert abs(source.buffered_seconds - 0.1) < 0.01
    source.flush()
    assert source.buffered_seconds == 0 and source.counters.flushed > 0


async def test_the_track_paces_packets_by_the_clock() -> None:
    track = MixedAudioTrack()
    track.mix.source("a").put(frame(500, samples=960 * 5))
    started = now()
    frames = [await track.recv() for _ in range(10)]
    elapsed = now() - started
    assert 0.15 <= elapsed < 2.0  # 10 packets of 20 ms, paced (bounded loosely for a loaded machine)
    assert track.sent == 5 and track.silent == 5
    assert [f.pts for f in frames] == [i * AUDIO_PACKET for i in range(10)]
    track.stop()
