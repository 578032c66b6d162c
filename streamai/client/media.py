"""What a session sends: aiortc tracks from arrays, PCM iterators, files and a microphone.

Every source here is an aiortc ``MediaStreamTrack`` paced by the clock: audio leaves as
20 ms packets of 48 kHz mono int16, video at its frame rate. A source that runs out
keeps the session alive (audio sends silence, video repeats its last picture) and
sets ``finished``, so a caller knows when its input is done. Any other aiortc track
(``aiortc.contrib.media.MediaPlayer``'s, a relay's) can be sent as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from ..frames import now
from ..media.resample import StreamResampler, resample
from .errors import ClientCode, StreamaiError

SAMPLE_RATE = 48_000
"""The rate every audio source sends at (Opus's native rate)."""
AUDIO_PACKET = 960
"""Samples in one 20 ms audio packet at 48 kHz."""
VIDEO_CLOCK = 90_000

PcmChunk = np.ndarray | av.AudioFrame
"""One chunk of audio from an iterator: int16 or float (-1..1) samples shaped (n,) or (n, channels), or a PyAV frame."""
AudioInput = MediaStreamTrack | str | os.PathLike[str] | np.ndarray | AsyncIterable[PcmChunk] | Iterable[PcmChunk]
"""What ``connect(audio=...)`` takes: a track, a file path, a PCM array or an (async) iterator of PCM chunks."""
VideoInput = MediaStreamTrack | str | os.PathLike[str] | AsyncIterable[np.ndarray] | Iterable[np.ndarray]
"""What ``connect(video=...)`` takes: a track, a file path, or an (async) iterator of RGB (h, w, 3) uint8 pictures."""


def pcm_int16(chunk: PcmChunk) -> tuple[np.ndarray, int | None]:
    """A chunk as mono int16 (n,), and its sample rate when the chunk carries one (a PyAV frame)."""
    rate: int | None = None
    if isinstance(chunk, av.AudioFrame):
        rate = chunk.sample_rate
        samples = audio_frame_samples(chunk)
    else:
        samples = np.asarray(chunk)
    if samples.ndim not in (1, 2):
        raise StreamaiError(f"PCM chunks are (n,) or (n, channels) arrays, got shape {samples.shape}", code="media")
    if samples.dtype.kind == "f":  # float PCM is -1..1
        samples = np.clip(np.nan_to_num(samples), -1.0, 1.0) * 32767.0
    if samples.ndim == 2:
        samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.round(samples).astype(np.int16) if samples.dtype.kind == "f" else samples.astype(np.int16), rate


def audio_frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """A PyAV audio frame's samples shaped (n, channels), in its own sample type (planar or packed)."""
    data = frame.to_ndarray()
    return data.T if frame.format.is_planar else data.reshape(-1, len(frame.layout.channels))


def _audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


class AudioArrayTrack(MediaStreamTrack):
    """An audio clip (any rate, mono or not) sent as paced 20 ms packets; ``loop`` repeats it.

    Packet ``n`` leaves at ``start + n * 20 ms`` (a late packet is sent at once, so a
    loaded machine catches up). After the clip: silence, and ``finished`` is set.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, loop: bool = False) -> None:
        super().__init__()
        mono, _ = pcm_int16(samples)
        self.samples = resample(mono, sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else mono
        self.loop = loop
        self.finished = asyncio.Event()
        self._position = 0
        self._start: float | None = None
        self._packets = 0

    @property
    def duration(self) -> float:
        """The clip's length in seconds."""
        return len(self.samples) / SAMPLE_RATE

    @property
    def started_at(self) -> float | None:
        """When the first packet left (``streamai.frames.now()`` clock), or None before."""
        return self._start

    @property
    def sent_s(self) -> float:
        """Seconds of audio sent so far (silence after the clip included): the media time now."""
        return self._position / SAMPLE_RATE

    def on_packet(self, start: int, sent: float) -> None:
        """Called as the packet holding samples ``start..start+960`` of the clip leaves; for subclasses."""

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms packet, when it is due."""
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        if self._start is None:
            self._start = now()
        due = self._start + self._packets * AUDIO_PACKET / SAMPLE_RATE
        if due > now():
            await asyncio.sleep(due - now())
        total = len(self.samples)
        start = self._position % total if self.loop and total else self._position
        chunk = self.samples[start : start + AUDIO_PACKET]
        if len(chunk) < AUDIO_PACKET:
            if self.loop and total:
                tail = self.samples[: AUDIO_PACKET - len(chunk)]
            else:
                tail = np.zeros(AUDIO_PACKET - len(chunk), np.int16)
                self.finished.set()
            chunk = np.concatenate([chunk, tail]).astype(np.int16)
        self.on_packet(start, now())
        frame = _audio_frame(chunk, self._position)
        self._position += AUDIO_PACKET
        self._packets += 1
        return frame


class PcmIteratorTrack(MediaStreamTrack):
    """Audio from an (async) iterator of PCM chunks of any size and rate, paced as 20 ms packets.

    For live sources (a phone call, a microphone) and generators. When the source is late
    the pacing starts again from now (no burst follows); when it ends, the last packet is
    padded, silence follows and ``finished`` is set.
    """

    kind = "audio"

    def __init__(
        self, chunks: AsyncIterable[PcmChunk] | Iterable[PcmChunk], sample_rate: int = SAMPLE_RATE, *, pace: bool = True
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self._iterator: AsyncIterator[PcmChunk] | None = None
        self.sample_rate = sample_rate
        self.pace = pace
        self.finished = asyncio.Event()
        self._resampler = StreamResampler(SAMPLE_RATE)
        self._closing: asyncio.Future[Any] | None = None
        self._pending = np.zeros(0, np.int16)
        self._start: float | None = None
        self._packets = 0

    async def _next_chunk(self) -> np.ndarray | None:
        if self._iterator is None:
            self._iterator = _aiter(self._chunks)
        try:
            chunk = await anext(self._iterator)
        except StopAsyncIteration:
            return None
        samples, rate = pcm_int16(chunk)
        return self._resampler(samples, rate or self.sample_rate)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms packet: the source's audio, or silence once it has ended."""
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        while len(self._pending) < AUDIO_PACKET and not self.finished.is_set():
            more = await self._next_chunk()
            if more is None:
                tail = self._resampler.flush()
                self._pending = np.concatenate([self._pending, tail])
                self.finished.set()
            else:
                self._pending = np.concatenate([self._pending, more])
        chunk = self._pending[:AUDIO_PACKET]
        self._pending = self._pending[AUDIO_PACKET:]
        if len(chunk) < AUDIO_PACKET:
            chunk = np.concatenate([chunk, np.zeros(AUDIO_PACKET - len(chunk), np.int16)])
        at = now()
        if self._start is None:
            self._start = at
        due = self._start + self._packets * AUDIO_PACKET / SAMPLE_RATE
        if self.pace and due > at:
            await asyncio.sleep(due - at)
        elif at - due > 0.2:  # the source was late: pace from now, never a burst
            self._start = at - self._packets * AUDIO_PACKET / SAMPLE_RATE
        frame = _audio_frame(chunk, self._packets * AUDIO_PACKET)
        self._packets += 1
        return frame

    def stop(self) -> None:
        """Stop the track and close the source iterator when it is an async generator."""
        super().stop()
        closer = getattr(self._iterator, "aclose", None)
        if closer is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to close it on
                self._closing = asyncio.ensure_future(closer())


async def _aiter(chunks: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0)


class PacedVideoTrack(MediaStreamTrack):
    """Video paced at ``fps`` by the clock; subclasses draw ``picture(index)`` (RGB uint8), None when done.

    After the last picture the last one repeats (the session stays alive) and ``finished`` is set.
    """

    kind = "video"

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        if not (math.isfinite(fps) and fps > 0):
            raise StreamaiError(f"frame rate must be positive, got {fps}", code=ClientCode.MEDIA)
        self.fps = fps
        self.finished = asyncio.Event()
        self._index = 0
        self._start: float | None = None
        self._last: np.ndarray | None = None

    def picture(self, index: int) -> np.ndarray | None:
        """The RGB picture of frame ``index``, or None after the last one."""
        raise NotImplementedError

    async def next_picture(self, index: int) -> np.ndarray | None:
        """``picture(index)``, awaited; override for sources that must wait for their pictures."""
        return self.picture(index)

    def on_frame(self, index: int, sent: float) -> None:
        """Called as frame ``index`` leaves; for subclasses."""

    async def recv(self) -> av.VideoFrame:
        """The next frame, when it is due."""
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        if self._start is None:
            self._start = now()
        due = self._start + self._index / self.fps
        if due > now():
            await asyncio.sleep(due - now())
        index = self._index
        self._index += 1
        image = None if self.finished.is_set() else await self.next_picture(index)
        if image is None:
            self.finished.set()
            image = self._last if self._last is not None else np.zeros((240, 320, 3), np.uint8)
        self._last = image
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.on_frame(index, now())
        return frame


class ImageIteratorTrack(PacedVideoTrack):
    """Video from an (async) iterator of RGB (h, w, 3) uint8 pictures, at ``fps``."""

    def __init__(self, pictures: AsyncIterable[np.ndarray] | Iterable[np.ndarray], fps: float = 30.0) -> None:
        super().__init__(fps)
        self._pictures = _aiter(pictures)

    async def next_picture(self, index: int) -> np.ndarray | None:
        """The iterator's next picture, None when it has ended."""
        try:
            return np.asarray(await anext(self._pictures), np.uint8)
        except StopAsyncIteration:
            return None


class Y4MFileTrack(PacedVideoTrack):
    """A y4m file's frames at the file's own rate (read as they are sent); ``loop`` repeats it."""

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = False) -> None:
        from ..media.wav import MediaFileError
        from ..media.y4m import Y4MReader

        try:
            self._reader = Y4MReader(os.fspath(path))
        except MediaFileError as exc:
            raise StreamaiError(str(exc), code=ClientCode.MEDIA) from None
        super().__init__(float(self._reader.fps))
        self.path = str(path)
        self.loop = loop
        self._frames = iter(self._reader)

    def picture(self, index: int) -> np.ndarray | None:
        """The file's next frame; from the start again when looping."""
        image = next(self._frames, None)
        if image is None and self.loop and index > 0:
            self._reader.close()
            from ..media.y4m import Y4MReader

            self._reader = Y4MReader(self.path)
            self._frames = iter(self._reader)
            image = next(self._frames, None)
        if image is None:
            self._reader.close()
        return image

    def stop(self) -> None:
        """Stop the track and close the file."""
        super().stop()
        self._reader.close()


def audio_file(path: str | os.PathLike[str], *, loop: bool = False) -> MediaStreamTrack:
    """A file's audio as a paced track: wav through the project's reader, anything else through PyAV."""
    suffix = Path(path).suffix.lower()
    if suffix == ".wav":
        from ..media.wav import MediaFileError, read_wav

        try:
            samples, rate = read_wav(os.fspath(path))
        except MediaFileError as exc:
            raise StreamaiError(str(exc), code=ClientCode.MEDIA) from None
        return AudioArrayTrack(samples, rate, loop=loop)
    return _player_track(path, "audio", loop)


def video_file(path: str | os.PathLike[str], *, loop: bool = False) -> MediaStreamTrack:
    """A file's video as a paced track: y4m through the project's reader, anything else through PyAV."""
    if Path(path).suffix.lower() == ".y4m":
        return Y4MFileTrack(path, loop=loop)
    return _player_track(path, "video", loop)


def _player_track(path: str | os.PathLike[str], kind: str, loop: bool) -> MediaStreamTrack:
    from aiortc.contrib.media import MediaPlayer

    if not Path(path).is_file():
        raise StreamaiError(f"{path}: no such file", code=ClientCode.MEDIA)
    try:
        player = MediaPlayer(str(path), loop=loop)
    except (av.FFmpegError, OSError) as exc:
        raise StreamaiError(f"{path}: cannot open: {exc}", code=ClientCode.MEDIA) from None
    track = player.audio if kind == "audio" else player.video
    if track is None:
        raise StreamaiError(f"{path}: has no {kind}", code=ClientCode.MEDIA)
    return track


def microphone(
    device: int | str | None = None, *, sample_rate: int = SAMPLE_RATE, channels: int = 1, max_queue_s: float = 1.0
) -> PcmIteratorTrack:
    """The default (or named) input device as a track, through ``sounddevice`` and PortAudio.

    Raises :class:`StreamaiError` (code ``media``) when ``sounddevice`` is not installed
    (``pip install 'streamai[mic]'``), PortAudio is missing (``apt-get install libportaudio2``)
    or the device cannot be opened.
    """
    try:
        import sounddevice  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise StreamaiError("a microphone needs sounddevice: pip install 'streamai[mic]'", code="media") from None
    except OSError as exc:  # sounddevice imports, but cannot load the PortAudio library
        message = f"a microphone needs PortAudio (apt-get install libportaudio2): {exc}"
        raise StreamaiError(message, code="media") from None
    try:
        sounddevice.check_input_settings(device=device, channels=channels, samplerate=sample_rate, dtype="int16")
    except Exception as exc:  # PortAudioError, ValueError: no such device or it refuses the settings
        raise StreamaiError(f"cannot open the microphone {device or '(default)'}: {exc}", code="media") from None
    return PcmIteratorTrack(_microphone_chunks(sounddevice, device, sample_rate, channels, max_queue_s), sample_rate)


async def _microphone_chunks(
    sounddevice: Any, device: int | str | None, sample_rate: int, channels: int, max_queue_s: float
) -> AsyncIterator[np.ndarray]:
    loop = asyncio.get_running_loop()
    blocks = max(1, round(max_queue_s * 50))
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue(blocks)

    def put(block: np.ndarray) -> None:
        if queue.full():  # the consumer is behind: the oldest block goes, latency stays bounded
            queue.get_nowait()
        queue.put_nowait(block)

    def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        loop.call_soon_threadsafe(put, indata.copy())

    stream = sounddevice.InputStream(
        device=device, channels=channels, samplerate=sample_rate, dtype="int16",
        blocksize=sample_rate // 50, callback=callback,
    )  # fmt: skip
    with stream:
        while True:
            yield await queue.get()


def audio_source(value: AudioInput, sample_rate: int = SAMPLE_RATE) -> MediaStreamTrack:
    """The track for ``connect(audio=...)``'s value (see :data:`AudioInput`)."""
    if isinstance(value, MediaStreamTrack):
        return value
    if isinstance(value, str | os.PathLike):
        return audio_file(value)
    if isinstance(value, np.ndarray):
        return AudioArrayTrack(value, sample_rate)
    if isinstance(value, AsyncIterable | Iterable) and not isinstance(value, str):
        return PcmIteratorTrack(value, sample_rate)
    raise StreamaiError(f"cannot send {type(value).__name__} as audio", code=ClientCode.MEDIA)


def video_source(value: VideoInput, fps: float = 30.0) -> MediaStreamTrack:
    """The track for ``connect(video=...)``'s value (see :data:`VideoInput`)."""
    if isinstance(value, MediaStreamTrack):
        return value
    if isinstance(value, str | os.PathLike):
        return video_file(value)
    if isinstance(value, AsyncIterable | Iterable) and not isinstance(value, str):
        return ImageIteratorTrack(value, fps)
    raise StreamaiError(f"cannot send {type(value).__name__} as video", code=ClientCode.MEDIA)
