"""wav / y4m IO, resampling and file sources."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamai.frames import AudioFrame, FrameKind, VideoFrame
from streamai.media import (
    Y4MReader,
    open_source,
    read_wav,
    read_y4m,
    resample,
    rgb_to_yuv420,
    write_wav,
    write_y4m,
    yuv420_to_rgb,
)
from streamai.media.wav import MediaFileError
from streamai.testing.media import TestPattern, read_barcode, tone


def test_wav_round_trip(tmp_path: Path) -> None:
    stereo = np.stack([np.arange(-500, 500, dtype=np.int16), np.arange(500, -500, -1, dtype=np.int16)], axis=1)
    write_wav(tmp_path / "a.wav", stereo, 44_100)
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 44_100 and samples.dtype == np.int16
    np.testing.assert_array_equal(samples, stereo)


def test_wav_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(MediaFileError, match=r"bad\.wav"):
        read_wav(bad)
    with pytest.raises(MediaFileError, match=r"missing\.wav"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(MediaFileError, match="int16"):
        write_wav(tmp_path / "f.wav", np.zeros(10, np.float32), 48_000)


def test_colour_conversion_is_close_and_limited_range() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgb = rgb.repeat(2, axis=0).repeat(2, axis=1)  # flat 2x2 blocks: chroma subsampling loses nothing
    y, u, v = rgb_to_yuv420(rgb)
    assert y.shape == (16, 16) and u.shape == v.shape == (8, 8)
    assert y.min() >= 16 and y.max() <= 235
    back = yuv420_to_rgb(y, u, v)
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 3
    white, _, _ = rgb_to_yuv420(np.full((2, 2, 3), 255, np.uint8))
    black, _, _ = rgb_to_yuv420(np.zeros((2, 2, 3), np.uint8))
    assert white[0, 0] == 235 and black[0, 0] == 16


def test_y4m_round_trip_odd_size_and_header(tmp_path: Path) -> None:
    frames = [np.full((7, 9, 3), (10 * i, 100, 200), np.uint8) for i in range(3)]
    assert write_y4m(tmp_path / "v.y4m", frames, fps=Fraction(30000, 1001)) == 3
    header = (tmp_path / "v.y4m").read_bytes().split(b"\n", 1)[0]
    assert header == b"YUV4MPEG2 W9 H7 F30000:1001 Ip A1:1 C420jpeg"
    back, fps = read_y4m(tmp_path / "v.y4m")
    assert fps == Fraction(30000, 1001) and len(back) == 3
    for sent, got in zip(frames, back, strict=True):
        assert got.shape == sent.shape
        assert np.abs(got.astype(int) - sent.astype(int)).max() <= 3


def test_y4m_keeps_barcodes(tmp_path: Path) -> None:
    pattern = TestPattern(640, 480)
    write_y4m(tmp_path / "p.y4m", pattern.frames(5))
    with Y4MReader(tmp_path / "p.y4m") as reader:
        assert (reader.width, reader.height, reader.fps) == (640, 480, 30)
        assert [read_barcode(image) for image in reader] == [0, 1, 2, 3, 4]


def test_y4m_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.y4m").write_bytes(b"YUV4MPEG2 W4 H4 C444\nFRAME\n")
    with pytest.raises(MediaFileError, match="4:2:0"):
        Y4MReader(tmp_path / "x.y4m")
    (tmp_path / "y.y4m").write_bytes(b"hello\n")
    with pytest.raises(MediaFileError, match="not a YUV4MPEG2"):
        Y4MReader(tmp_path / "y.y4m")


@pytest.mark.parametrize(("source", "target"), [(48_000, 16_000), (16_000, 48_000), (44_100, 48_000)])
def test_resample_keeps_a_tone(source: int, target: int) -> None:
    seconds, frequency = 0.5, 1000.0
    out = resample(tone(frequency, seconds, rate=source, level=0.5), source, target)
    assert out.shape == (int(np.ceil(seconds * target)), 1)
    middle = out[len(out) // 4 : 3 * len(out) // 4, 0].astype(float)
    t = np.arange(len(out))[len(out) // 4 : 3 * len(out) // 4] / target
    expected = 0.5 * 32767 * np.sin(2 * np.pi * frequency * t)
    assert np.sqrt(np.mean((middle - expected) ** 2)) < 0.01 * 32767  # same phase, no delay, right level


def test_resample_removes_what_the_lower_rate_cannot_hold() -> None:
    out = resample(tone(12_000, 0.5, rate=48_000, level=0.5), 48_000, 16_000)
    assert np.abs(out[200:-200]).max() < 0.01 * 32767


def test_sources_make_timed_frames(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", tone(440, 1.0, rate=16_000), 16_000)
    audio = open_source(tmp_path / "a.wav")
    assert audio.kind is FrameKind.AUDIO and audio.duration == pytest.approx(1.0)
    items = list(audio)
    assert len(items) == 50
    at, frame = items[1]
    assert isinstance(frame, AudioFrame) and frame.sample_rate == 48_000 and frame.samples.shape == (960, 1)
    assert at == pytest.approx(0.04) and frame.pts == 960
    write_y4m(tmp_path / "v.y4m", TestPattern(64, 48).frames(4), fps=25)
    video = open_source(tmp_path / "v.y4m")
    assert video.kind is FrameKind.VIDEO and video.duration == pytest.approx(0.16)
    times = [(at, f.pts) for at, f in video if isinstance(f, VideoFrame)]
    assert times == [(0.0, 0), (0.04, 3600), (0.08, 7200), (0.12, 10800)]
    (tmp_path / "n.txt").write_text("text")
    with pytest.raises(MediaFileError, match="not a wav or y4m"):
        open_source(tmp_path / "n.txt")
