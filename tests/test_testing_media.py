"""The test-media generators and readers, including the barcode through a real VP8 round trip."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from streamai.stages.video_transform import apply_effect
from streamai.testing.media import (
    BARCODE_MAX,
    TestPattern,
    audio_chunks,
    barcode_bits,
    decode_barcode,
    detect_bursts,
    draw_barcode,
    marker_track,
    read_barcode,
    tone,
    tone_burst,
)


def vp8_round_trip(images: list[np.ndarray], bitrate: int = 400_000) -> list[np.ndarray]:
    """Encode RGB pictures with libvpx (VP8, real-time settings) and decode them again."""
    height, width = images[0].shape[:2]
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 30)
    encoder.bit_rate = bitrate
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    decoder = av.CodecContext.create("vp8", "r")
    decoded: list[np.ndarray] = []
    packets = []
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    for packet in packets:
        for frame in decoder.decode(packet):
            decoded.append(frame.to_ndarray(format="rgb24"))
    return decoded


def test_barcode_bits_layout() -> None:
    bits = barcode_bits(12345)
    assert len(bits) == 32
    assert bits[:3] == [1, 1, 0]
    assert bits[-1] == 0
    assert barcode_bits(BARCODE_MAX + 1) == barcode_bits(0)


@pytest.mark.parametrize("value", [0, 1, 2, 0x5A5A5, BARCODE_MAX])
def test_barcode_clean_round_trip(value: int) -> None:
    image = draw_barcode(np.full((480, 640, 3), 128, np.uint8), value)
    assert read_barcode(image) == value
    code = decode_barcode(apply_effect(image, "invert"))
    assert code is not None and code.value == value and code.inverted and not code.mirrored
    code = decode_barcode(apply_effect(image, "mirror"))
    assert code is not None and code.value == value and code.mirrored


def test_no_barcode_reads_none() -> None:
    pattern = TestPattern(barcode=False)
    assert read_barcode(pattern.frame(3)) is None
    assert read_barcode(np.zeros((480, 640, 3), np.uint8)) is None
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert read_barcode(noise) is None


def test_damaged_barcode_is_rejected_not_misread() -> None:
    image = draw_barcode(np.zeros((480, 640, 3), np.uint8), 777)
    cell = 640 // 32
    image[:40, 10 * cell : 11 * cell] = 255 - image[:40, 10 * cell : 11 * cell]  # flip one data bit
    assert read_barcode(image) is None


def test_barcode_survives_vp8_and_inversion() -> None:
    pattern = TestPattern(640, 480)
    sent = [pattern.frame(1000 + i) for i in range(30)]
    received = vp8_round_trip(sent)
    assert len(received) == 30
    assert [read_barcode(image) for image in received] == list(range(1000, 1030))
    inverted = vp8_round_trip([apply_effect(image, "invert") for image in sent])
    codes = [decode_barcode(image) for image in inverted]
    assert all(code is not None and code.inverted for code in codes)
    assert [code.value for code in codes if code is not None] == list(range(1000, 1030))


def test_barcode_survives_low_bitrate_vp8_at_reduced_size() -> None:
    pattern = TestPattern(320, 240)
    sent = [pattern.frame(i) for i in range(20)]
    received = vp8_round_trip(sent, bitrate=100_000)
    values = [read_barcode(image) for image in received]
    assert sum(v == i for i, v in enumerate(values)) >= 18
    assert all(v is None or v == i for i, v in enumerate(values))


def test_pattern_moves_and_has_default_size() -> None:
    pattern = TestPattern()
    first, second = pattern.frame(0), pattern.frame(1)
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    assert not np.array_equal(first[60:], second[60:])
    assert len(list(pattern.frames(5))) == 5


def test_audio_generators_shapes() -> None:
    assert tone(440, 1.0).shape == (48000, 1)
    assert tone(440, 0.5, channels=2).shape == (24000, 2)
    burst = tone_burst(seconds=0.1)
    assert burst.dtype == np.int16 and abs(int(burst[0, 0])) < 50
    chunks = list(audio_chunks(tone(440, 0.05)))
    assert [len(c) for c in chunks] == [960, 960, 960]


def test_detect_bursts_finds_onsets_after_gain_and_delay() -> None:
    track, onsets = marker_track(4.0, period=1.0, offset=0.25)
    assert onsets == [0.25, 1.25, 2.25, 3.25]
    delay = 0.137
    received = np.concatenate([np.zeros((round(delay * 48000), 1), np.int16), (track * 0.3).astype(np.int16)])
    rng = np.random.default_rng(0)
    received = (received + rng.normal(0, 300, received.shape)).astype(np.int16)
    found = detect_bursts(received)
    assert len(found) == 4
    for sent, got in zip(onsets, found, strict=True):
        assert abs((got - sent) - delay) < 0.002


def test_detect_bursts_ignores_other_frequencies_and_silence() -> None:
    assert detect_bursts(np.zeros((48000, 1), np.int16)) == []
    assert detect_bursts(tone(3000, 1.0, level=0.5)) == []
