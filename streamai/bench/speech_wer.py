"""Word error rate of the shipped Whisper models and settings: clean, after a WebRTC round trip, human speech.

Audio sets:
- ``espeak``: 19 sentences made with espeak-ng (the latency clip's five, the four of the
  speech tests, the ten phrases of ``streamai bench endpointing`` read without a pause);
- ``human``: the eight spoken recordings of Debian's ``alsa-utils`` ("Front Center", ...);
- each of them again after a real aiortc pair over loopback (``+webrtc``): the clip is
  sent by one RTCPeerConnection and recorded from the other's track, through aiortc's
  Opus at its own bitrate (96 kb/s) and, with ``--bitrate``, at a lower one such as
  Chromium's 32 kb/s; the sender is paced ``--speed`` times faster than real time (Opus
  and aiortc's receive path do not depend on the pacing; packets sent and decoded are
  counted, and a run that lost any is reported as such).

Each utterance is decoded whole, as the ``asr`` stage's final decode does
(``streamai.speech.whisper.WhisperDecoder``), for each model and setting; WER is jiwer's
over normalized words. Decode time (p50, on this machine at the load recorded) tells
which settings fit the latency goal.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import time
from typing import Any

import av
import numpy as np

from ..media.resample import resample
from ..speech.text import word_error_rate
from ..testing.speech import CLIP_SENTENCES, SENTENCES, silence, speak, voiced_end
from .endpointing import ALSA, HUMAN, SPLIT_PHRASES, read_human
from .speech import pct

RATE = 48_000
PACKET = 960
SETTINGS = {  # name: (catalog id, language, encoder context seconds or None for Whisper's 30 s, beam)
    "tiny.en ctx10 beam1": ("whisper-tiny-en", "en", 10.0, 1),
    "tiny.en ctx8 beam1": ("whisper-tiny-en", "en", 8.0, 1),
    "tiny.en ctx8 beam4": ("whisper-tiny-en", "en", 8.0, 4),
    "tiny.en ctx6 beam1": ("whisper-tiny-en", "en", 6.0, 1),
    "tiny.en ctx30 beam1": ("whisper-tiny-en", "en", None, 1),
    "tiny.en ctx10 beam4": ("whisper-tiny-en", "en", 10.0, 4),
    "base ctx10 beam1": ("whisper-base", "en", 10.0, 1),
    "base ctx30 beam1": ("whisper-base", "en", None, 1),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated names of: " + ", ".join(SETTINGS)
    )
    parser.add_argument("--speed", type=float, default=4.0, help="WebRTC sender pace, x real time")
    parser.add_argument("--bitrate", type=int, action="append", default=[], help="also send Opus at this bitrate")


def utterances() -> list[tuple[str, str, np.ndarray]]:
    """(set, reference, int16 (n, 1) audio at 48 kHz) for every utterance."""
    texts = [*CLIP_SENTENCES, *SENTENCES.values(), *(f"{a} {b}" for a, b in SPLIT_PHRASES)]
    out = [("espeak", text, speak(text)) for text in texts]
    if ALSA.is_dir():
        out += [("human", name.replace("_", " ").lower(), read_human(name)) for name in HUMAN]
    return out


class _ClipTrack:
    """A clip sent in 20 ms packets, ``speed`` x real time (an aiortc MediaStreamTrack)."""

    def __new__(cls, samples: np.ndarray, speed: float) -> Any:
        from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

        class ClipTrack(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.sent = 0
                self.start: float | None = None

            async def recv(self) -> av.AudioFrame:
                if self.start is None:
                    self.start = time.monotonic()
                offset = self.sent * PACKET
                if offset >= len(samples):
                    raise MediaStreamError
                due = self.start + self.sent * PACKET / RATE / speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                chunk = samples[offset : offset + PACKET]
                chunk = np.concatenate([chunk, np.zeros(PACKET - len(chunk), np.int16)])
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, offset, fractions.Fraction(1, RATE)
                self.sent += 1
                return frame

        return ClipTrack()


async def webrtc_round_trip(
    samples: np.ndarray, speed: float, bitrate: int | None = None
) -> tuple[np.ndarray, int, int]:
    """Send mono int16 ``samples`` from one aiortc peer to another; (received mono int16, sent, received packets)."""
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.codecs import opus
    from aiortc.mediastreams import MediaStreamError

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    original = opus.OpusEncoder.__init__
    if bitrate is not None:

        def constrained(self: Any) -> None:
            original(self)
            self.codec.bit_rate = bitrate

        opus.OpusEncoder.__init__ = constrained  # type: ignore[method-assign]
    sender, receiver = (
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
    )
    track = _ClipTrack(samples, speed)
    received: list[np.ndarray] = []
    done = asyncio.Event()

    async def record(remote: Any) -> None:
        try:
            while True:
                frame = await asyncio.wait_for(remote.recv(), 3.0)
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).astype(np.int32)
                received.append(pcm.mean(axis=1).astype(np.int16))
        except (MediaStreamError, TimeoutError):
            pass
        finally:
            done.set()

    receiver.on("track", lambda remote: asyncio.ensure_future(record(remote)))
    try:
        sender.addTrack(track)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(done.wait(), len(samples) / RATE / speed + 30)
    finally:
        opus.OpusEncoder.__init__ = original  # type: ignore[method-assign]
        await sender.close()
        await receiver.close()
    audio = np.concatenate(received) if received else np.zeros(0, np.int16)
    return audio, track.sent, len(received)


def through_webrtc(
    items: list[tuple[str, str, np.ndarray]], speed: float, bitrate: int | None
) -> tuple[list[tuple[str, str, np.ndarray]], dict[str, Any]]:
    """Every utterance sent in one clip (0.6 s apart) and cut out again at the same places."""
    gap = silence(0.6)[:, 0]
    parts, spans, position = [gap], [], len(gap)
    for _, _, audio in items:
        parts += [audio[:, 0], gap]
        spans.append((position, position + len(audio)))
        position += len(audio) + len(gap)
    clip = np.concatenate(parts)
    received, sent, got = asyncio.run(webrtc_round_trip(clip, speed, bitrate))
    out = []
    for (kind, text, _), (start, end) in zip(items, spans, strict=True):
        cut = received[max(0, start - 4800) : end + 4800]  # 100 ms either side: Opus delay, no neighbour
        out.append((f"{kind}+webrtc" + (f"@{bitrate // 1000}k" if bitrate else ""), text, cut.reshape(-1, 1)))
    return out, {"bitrate": bitrate or 96000, "packets_sent": sent, "packets_received": got,
                 "samples_sent": len(clip), "samples_received": len(received)}  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from ..models.speech import load_whisper
    from ..speech.whisper import WhisperDecoder

    base = utterances()
    sets = list(base)
    transport: list[dict[str, Any]] = []
    for bitrate in [None, *args.bitrate]:
        converted, info = through_webrtc(base, args.speed, bitrate)
        sets += converted
        transport.append(info)
    load_before = [round(x, 2) for x in os.getloadavg()]
    table: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
        model_id, language, context, beam = SETTINGS[name]
        if model_id not in models:
            models[model_id] = load_whisper(model_id, "cpu", 2)
        decoder = WhisperDecoder(models[model_id], language, beam)
        decoder.decode(np.zeros(16000, np.float32), "", context)  # the first call allocates
        by_set: dict[str, dict[str, list[float]]] = {}
        examples: dict[str, list[str]] = {}
        for kind, reference, audio in sets:
            pcm = resample(audio[: max(1, int((voiced_end(audio) + 0.3) * RATE))], RATE, 16000)[:, 0]
            result = decoder.decode(pcm.astype(np.float32) / 32768, "", context)
            entry = by_set.setdefault(kind, {"wer": [], "ms": []})
            entry["wer"].append(word_error_rate(reference, result.text))
            entry["ms"].append(result.seconds * 1000)
            if word_error_rate(reference, result.text) > 0:
                examples.setdefault(kind, []).append(f"{reference!r} -> {result.text!r}")
        table[name] = {
            kind: {"wer": round(float(np.mean(v["wer"])), 3), "decode_ms_p50": pct(v["ms"], 50), "n": len(v["wer"])}
            for kind, v in by_set.items()
        }
        table[name]["errors"] = {k: v[:6] for k, v in examples.items()}
    load_after = [round(x, 2) for x in os.getloadavg()]
    kinds = sorted({k for k, _, _ in sets})
    header = "| setting | " + " | ".join(kinds) + " | decode ms p50 (espeak) |"
    lines = [header, "|" + "---|" * (len(kinds) + 2)]
    for name, row in table.items():
        cells = " | ".join(f"{row[k]['wer']:.3f}" for k in kinds)
        lines.append(f"| {name} | {cells} | {row['espeak']['decode_ms_p50']} |")
    lines.append(f"(load {load_before[0]}->{load_after[0]}; webrtc: {transport})")
    return {"table": table, "transport": transport, "loadavg_before": load_before, "loadavg_after": load_after,
            "summary": "\n".join(lines)}  # fmt: skip
