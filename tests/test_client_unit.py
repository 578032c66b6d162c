"""The Python client's pure parts: error mapping, retry rules, typed events, router URLs, media sources."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from streamai.client import (
    Backoff,
    ClientCode,
    DropEvent,
    ErrorEvent,
    LatencyEvent,
    StateEvent,
    StatsEvent,
    StreamaiError,
    TranscriptEvent,
    TranslationEvent,
    UnknownEvent,
    error_from_response,
    is_retryable,
    parse_event,
    parse_retry_after,
)
from streamai.client.events import MAX_MESSAGE_BYTES, BadEvent, encode_message
from streamai.client.media import (
    AUDIO_PACKET,
    SAMPLE_RATE,
    AudioArrayTrack,
    ImageIteratorTrack,
    PcmIteratorTrack,
    Y4MFileTrack,
    audio_source,
    microphone,
)
from streamai.client.signaling import Endpoints, base_url
from streamai.media.y4m import write_y4m


# -- errors ------------------------------------------------------------------------
def test_server_error_shape_becomes_typed_error_with_status_code_and_retry_after() -> None:
    body = json.dumps({"error": {"code": "over_capacity", "message": "node is at capacity (8 sessions)"}})
    error = error_from_response(503, body, {"Retry-After": "3", "Content-Type": "application/json"}, "http://n/x")
    assert (error.status, error.code, error.retry_after) == (503, "over_capacity", 3.0)
    assert error.message == "node is at capacity (8 sessions)"
    assert error.retryable and error.body == json.loads(body) and error.url == "http://n/x"
    assert "over_capacity" in str(error) and "503" in str(error)


def test_bodies_without_the_shape_still_map_by_status() -> None:
    html = error_from_response(502, "<html><body>Bad Gateway</body></html>", {}, reason="Bad Gateway")
    assert (html.code, html.message) == ("bad_gateway", "HTTP 502 Bad Gateway")
    plain = error_from_response(429, "slow down", {"retry-after": "7"})
    assert (plain.code, plain.message, plain.retry_after) == ("rate_limited", "slow down", 7.0)
    empty = error_from_response(418, "", None)
    assert (empty.code, empty.retry_after) == ("error", None)
    assert error_from_response(507, "", None).code == "server_error"


def test_retry_after_takes_seconds_or_an_http_date_and_is_bounded() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("1e9") == 3600.0  # an hour at most
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None
    at = time.time()
    assert parse_retry_after(email.utils.formatdate(at + 30, usegmt=True), now=at) in (30.0, 31.0)


def test_which_failures_are_worth_retrying() -> None:
    for status in (408, 429, 500, 502, 503, 504):
        assert is_retryable(StreamaiError("x", status=status)), status
    for status in (400, 401, 403, 404, 413, 415):
        assert not is_retryable(StreamaiError("x", status=status)), status
    for code in (ClientCode.NETWORK, ClientCode.TIMEOUT, ClientCode.ICE_FAILED, ClientCode.SERVER_GONE):
        assert is_retryable(StreamaiError("x", code=code))
    assert not is_retryable(StreamaiError("x", code=ClientCode.BAD_RESPONSE))
    assert not is_retryable(ValueError("not ours"))


def test_backoff_grows_to_its_cap_with_bounded_jitter_and_never_undercuts_retry_after() -> None:
    backoff = Backoff(base_s=0.5, max_s=15, factor=2, jitter=0.2)
    rng = random.Random(7)
    for attempt, nominal in enumerate([0.5, 1, 2, 4, 8, 15, 15]):
        delay = backoff.delay(attempt, rng=rng)
        assert 0.8 * nominal <= delay <= min(15, 1.2 * nominal), (attempt, delay)
    assert backoff.delay(0, StreamaiError("busy", status=429, retry_after=9), rng=rng) == 9
    assert backoff.delay(6, StreamaiError("busy", status=429, retry_after=1), rng=rng) >= 12


# -- events --------------------------------------------------------------------------
def test_server_events_become_their_typed_models() -> None:
    transcript = parse_event(json.dumps({"type": "transcript", "text": "where is the station", "final": True,
                                         "utterance": 2, "language": "en", "stage": "asr", "t": 1.5}))  # fmt: skip
    assert isinstance(transcript, TranscriptEvent)
    assert (transcript.text, transcript.final, transcript.utterance, transcript.t) == ("where is the station", True, 2,
                                                                                        1.5)  # fmt: skip
    translation = parse_event(b'{"type":"translation","text":"onde fica","source":"where is","utterance":2,'
                              b'"language":"pt","source_language":"en","final":true}')  # fmt: skip
    assert isinstance(translation, TranslationEvent) and translation.language == "pt"
    per_frame = parse_event('{"type":"latency","kind":"video","ms":41.5,"seq":9}')
    per_utterance = parse_event('{"type":"latency","utterance":2,"final_transcript_ms":380,"first_audio_ms":420}')
    assert isinstance(per_frame, LatencyEvent) and not per_frame.per_utterance and per_frame.ms == 41.5
    assert isinstance(per_utterance, LatencyEvent) and per_utterance.per_utterance
    assert per_utterance.first_audio_ms == 420
    drop = parse_event('{"type":"drop","stage":"invert","reason":"would_miss","count":3,"total":10}')
    assert isinstance(drop, DropEvent) and (drop.stage, drop.reason, drop.count) == ("invert", "would_miss", 3)
    stats = parse_event('{"type":"stats","frames_in":{"video":30},"frames_out":{"video":29},"drops":1}')
    assert isinstance(stats, StatsEvent) and stats.frames_in == {"video": 30}
    fatal = parse_event('{"type":"error","message":"pipeline failed","fatal":true}')
    assert isinstance(fatal, ErrorEvent) and fatal.fatal
    error = fatal.to_error()
    assert (error.code, error.status, error.message) == (ClientCode.SERVER_ERROR, 0, "pipeline failed")
    state = parse_event('{"type":"state","state":"closed","reason":"deleted by the client"}')
    assert isinstance(state, StateEvent) and state.reason == "deleted by the client"


def test_new_or_malformed_events_fall_back_to_unknown_with_every_field_kept() -> None:
    future = parse_event('{"type":"emotion","label":"joy","score":0.9,"t":3}')
    assert isinstance(future, UnknownEvent) and future.type == "emotion"
    assert future.raw() == {"type": "emotion", "label": "joy", "score": 0.9, "t": 3}
    wrong = parse_event('{"type":"transcript","text":"hi","utterance":{"no":"int"}}')
    assert isinstance(wrong, UnknownEvent) and wrong.raw()["utterance"] == {"no": "int"}
    odd_time = parse_event('{"type":"drop","reason":"late","t":"yesterday"}')
    assert odd_time.type == "drop" and odd_time.t is None
    # raw() is what the server sent: no keys the model only defaults
    assert parse_event('{"type":"latency","kind":"audio","ms":12}').raw() == {"type": "latency", "kind": "audio",
                                                                              "ms": 12.0}  # fmt: skip
    extra = parse_event('{"type":"transcript","text":"x","confidence":0.5}')
    assert isinstance(extra, TranscriptEvent) and extra.model_extra == {"confidence": 0.5}
    for bad in (b"\xff\xfe", "not json", "[1, 2]", '{"no": "type"}', '{"type": ""}'):
        with pytest.raises(BadEvent):
            parse_event(bad)


def test_control_messages_are_checked_before_they_leave() -> None:
    assert json.loads(encode_message({"type": "prompt", "text": "a cat"})) == {"type": "prompt", "text": "a cat"}
    with pytest.raises(StreamaiError) as wrong:
        encode_message({"type": "prompt", "text": 7})
    assert wrong.value.code == "bad_message" and not wrong.value.fatal
    with pytest.raises(StreamaiError) as large:
        encode_message({"type": "prompt", "text": "é" * MAX_MESSAGE_BYTES})
    assert large.value.code == ClientCode.MESSAGE_TOO_LARGE
    with pytest.raises(StreamaiError):
        encode_message({"type": "params", "params": {"x": float("nan")}})


# -- router URLs -------------------------------------------------------------------
def test_endpoints_keep_order_and_skip_a_url_until_its_retry_after() -> None:
    endpoints = Endpoints(["http://a:1/", "http://b:2", "https://c/prefix/"])
    assert endpoints.urls == ["http://a:1", "http://b:2", "https://c/prefix"]
    assert endpoints.available() == endpoints.urls and endpoints.wait_s() == 0
    busy = StreamaiError("busy", status=503, retry_after=30)
    endpoints.refused("http://a:1", busy)
    endpoints.refused("http://b:2", StreamaiError("down", code=ClientCode.NETWORK))  # no Retry-After: asked again
    assert endpoints.available() == ["http://b:2", "https://c/prefix"]
    at = time.monotonic()
    assert endpoints.available(at + 31) == endpoints.urls
    endpoints.refused("http://b:2", StreamaiError("busy", status=429, retry_after=5))
    endpoints.refused("https://c/prefix", StreamaiError("busy", status=429, retry_after=10))
    assert endpoints.available() == [] and 4 < endpoints.wait_s() <= 5
    assert endpoints.soonest_error() is not None and endpoints.soonest_error().status == 429  # type: ignore[union-attr]
    for bad in ("ftp://x", "localhost:8080", ""):
        with pytest.raises(StreamaiError):
            base_url(bad)
    with pytest.raises(StreamaiError):
        Endpoints([])


# -- media sources -----------------------------------------------------------------
async def _collect(track: object, packets: int) -> list[np.ndarray]:
    out = []
    for _ in range(packets):
        frame = await track.recv()  # type: ignore[attr-defined]
        assert frame.sample_rate == SAMPLE_RATE and frame.samples == AUDIO_PACKET
        out.append(frame.to_ndarray().reshape(-1))
    return out


async def test_an_audio_array_is_resampled_paced_and_followed_by_silence() -> None:
    rate = 16_000
    clip = (np.sin(np.arange(rate // 5) / 5) * 8000).astype(np.int16)  # 200 ms at 16 kHz
    track = AudioArrayTrack(clip, rate)
    assert abs(track.duration - 0.2) < 1e-6
    started = time.monotonic()
    packets = await _collect(track, 15)  # 300 ms of packets: 10 of clip, 5 of silence
    elapsed = time.monotonic() - started
    assert elapsed >= 14 * 0.02 * 0.9, "packets left faster than real time"
    assert track.finished.is_set()
    assert np.abs(np.concatenate(packets[:9])).max() > 4000
    assert not np.concatenate(packets[11:]).any()


async def test_pcm_iterators_of_any_chunking_and_type_come_out_as_the_same_samples() -> None:
    rng = np.random.default_rng(3)
    source = (rng.standard_normal(SAMPLE_RATE // 2) * 3000).astype(np.int16)
    chunks = np.split(source, [100, 1234, 5000, 17000])  # odd sizes

    async def generate():  # type: ignore[no-untyped-def]
        for chunk in chunks:
            yield chunk.astype(np.float32) / 32767.0  # float -1..1 comes back as int16
            await asyncio.sleep(0)

    track = PcmIteratorTrack(generate(), pace=False)
    packets = await _collect(track, 26)
    received = np.concatenate(packets)
    assert np.abs(received[: len(source)].astype(np.int32) - source).max() <= 1
    assert track.finished.is_set() and not received[len(source) :].any()
    stereo = audio_source([np.stack([source[:960], source[:960]], axis=1)])
    assert isinstance(stereo, PcmIteratorTrack)
    assert np.array_equal((await stereo.recv()).to_ndarray().reshape(-1), source[:960])


async def test_video_from_a_y4m_file_and_from_an_iterator(tmp_path: Path) -> None:
    pictures = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    path = tmp_path / "clip.y4m"
    write_y4m(path, pictures, fps=50)
    track = Y4MFileTrack(path)
    assert track.fps == 50
    frames = [await track.recv() for _ in range(5)]
    means = [round(float(f.to_ndarray(format="rgb24").mean())) for f in frames]
    assert means[:3] == [0, 40, 80] or abs(means[2] - 80) <= 2, means
    assert track.finished.is_set() and abs(means[4] - means[2]) <= 2  # the last picture repeats
    track.stop()
    iterated = ImageIteratorTrack(iter(pictures), fps=100)
    assert [(await iterated.recv()).width for _ in range(4)] == [64, 64, 64, 64]
    assert iterated.finished.is_set()


def test_a_file_that_cannot_be_read_is_a_media_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    for path in (tmp_path / "bad.wav", tmp_path / "missing.mp3", tmp_path / "missing.y4m"):
        with pytest.raises(StreamaiError) as raised:
            audio_source(str(path)) if path.suffix != ".y4m" else Y4MFileTrack(path)
        assert raised.value.code == ClientCode.MEDIA, raised.value


def test_a_microphone_without_portaudio_or_a_device_is_a_clear_media_error() -> None:
    try:
        track = microphone()
    except StreamaiError as error:
        assert error.code == ClientCode.MEDIA
        assert any(word in error.message for word in ("sounddevice", "PortAudio", "microphone")), error.message
    else:
        track.stop()
        pytest.skip("this machine has a working microphone")
