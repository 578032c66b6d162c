"""Translate a WAV file through a running streamai node; write the translated speech and captions.

    streamai serve &                                  # or any node / routers offering speech-translate
    espeak-ng -w hello.wav "good morning, where is the train station"
    python examples/translate_wav.py http://127.0.0.1:8080 hello.wav --output translated.wav --captions out.vtt

The file is sent at real-time pace as a microphone would send it; what comes back is
recorded on the same timeline, so ``translated.wav`` lines up with the input. Captions
(``.vtt`` or ``.srt``) hold one cue an utterance: what was heard and its translation,
timed by where the speech is in the input. Several URLs (router replicas) are tried in
order. Exit status 1 when the session could not be had or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np

import streamai.client as client
from streamai.client.media import SAMPLE_RATE, AudioArrayTrack
from streamai.media.wav import write_wav
from streamai.speech.captions import captions_from_events, check_caption_path, write_captions

SILENT = 300  # peak below this: nothing is being said


async def translate(args: argparse.Namespace) -> int:
    timed: list[tuple[float, dict[str, Any]]] = []  # (seconds into the input, event)
    received: list[np.ndarray] = []
    last_activity = time.monotonic()

    async with client.connect(args.urls, pipeline=args.pipeline, audio=args.input, token=args.token,
                              ice_loopback=args.ice_loopback) as session:  # fmt: skip
        source = session.sent_audio
        assert isinstance(source, AudioArrayTrack) and session.audio is not None

        def media_time() -> float:
            return source.sent_s  # how far into the input the sender is: where an event belongs

        async def record() -> None:
            nonlocal last_activity
            async for samples in session.audio.arrays():  # type: ignore[union-attr]
                received.append(samples.mean(axis=1).astype(np.int16) if samples.shape[1] > 1 else samples[:, 0])
                if np.abs(samples.astype(np.int32)).max() > SILENT:
                    last_activity = time.monotonic()

        async def listen() -> None:
            nonlocal last_activity
            async for event in session.events():
                if isinstance(event, client.TranscriptEvent | client.TranslationEvent | client.VadEvent):
                    timed.append((media_time(), event.raw()))
                    last_activity = time.monotonic()
                if isinstance(event, client.TranscriptEvent) and event.final:
                    print(f"heard {media_time():6.2f} s: {event.text}", flush=True)
                elif isinstance(event, client.TranslationEvent) and event.text:
                    print(f"said  {media_time():6.2f} s ({event.language}): {event.text}", flush=True)
                elif isinstance(event, client.ErrorEvent):
                    print(f"error: {event.message}", file=sys.stderr, flush=True)

        tasks = [asyncio.create_task(record()), asyncio.create_task(listen())]
        await source.finished.wait()  # the whole file has been sent
        deadline = time.monotonic() + args.max_wait
        while time.monotonic() - last_activity < args.tail and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the last answers are still coming
        for task in tasks:
            task.cancel()
    if session.error is not None:
        print(f"error: {session.error}", file=sys.stderr)
        return 1
    if args.output:
        audio = np.concatenate(received) if received else np.zeros(0, np.int16)
        write_wav(args.output, audio, SAMPLE_RATE)
        print(f"wrote {args.output} ({len(audio) / SAMPLE_RATE:.1f} s)", file=sys.stderr)
    captions = captions_from_events(timed)
    for path in args.captions:
        write_captions(path, captions)
        print(f"wrote {path} ({len(captions)} captions)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", metavar="URL", help="node URL, or several router URLs tried in order")
    parser.add_argument("input", help="16-bit PCM wav to translate (any rate; resampled)")
    parser.add_argument("--output", help="write the translated speech here (.wav, 48 kHz mono)")
    parser.add_argument("--captions", action="append", default=[], metavar="VTT_OR_SRT", help="may be repeated")
    parser.add_argument("--pipeline", default="speech-translate")
    parser.add_argument("--token", help="API token, when the node asks for one")
    parser.add_argument("--tail", type=float, default=3.0, help="stop this long after the last answer (s)")
    parser.add_argument("--max-wait", type=float, default=60.0, help="wait at most this long after the input (s)")
    parser.add_argument("--ice-loopback", action="store_true", help="offer only 127.0.0.1 candidates (one machine)")
    args = parser.parse_args(argv)
    try:
        for path in args.captions:
            check_caption_path(path)
        return asyncio.run(translate(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except client.StreamaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
