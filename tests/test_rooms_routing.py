"""Who hears what in a room, with real aiortc peers and chains without models (tones mark each path).

en speaker sends 500 Hz, pt speaker 1300 Hz; en->pt "translates" into 700 Hz, pt->en into 1700 Hz.
"""

from __future__ import annotations

import aiohttp
from rooms_support import EN_TO_PT, EN_VOICE, PT_TO_EN, PT_VOICE, node_settings, tone_room

from streamai.frames import now
from streamai.server.rooms import ROOMS
from streamai.testing.node import running_node
from streamai.testing.room import RoomPeer, band_power, create_room, tone_track
from streamai.testing.wait import wait_for


async def test_each_speaker_hears_the_other_translated_never_themself_and_listeners_hear_both(tmp_path) -> None:
    settings = node_settings(tmp_path / "rooms", tone_room())
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="tones")
        room = app[ROOMS].get(created["room_id"])
        join = created["join_token"]
        en = RoomPeer(url, created["room_id"], join, "en", name="Ann", audio=tone_track(EN_VOICE))
        pt = RoomPeer(url, created["room_id"], join, "pt", name="Bia", audio=tone_track(PT_VOICE))
        listener = RoomPeer(url, created["room_id"], created["listen_token"], "pt", role="listener")
        for peer in (en, pt, listener):
            await peer.join(http)
        # both say chains run once both languages are present (started in the background)
        assert await wait_for(lambda: all(s.chains.says for s in room.speakers.values()), 20)
        since = now() + 1.0  # after the chains started and the mixes filled
        assert await wait_for(lambda: all(len(p.received(since)) >= 48_000 * 2 for p in (en, pt, listener)), 20)
        heard = {name: peer.received(since) for name, peer in (("en", en), ("pt", pt), ("listener", listener))}
        summary = room.summary()
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
        for peer in (en, pt, listener):
            await peer.leave(http)

    power = {name: {hz: band_power(audio, hz) for hz in (EN_VOICE, PT_VOICE, EN_TO_PT, PT_TO_EN)}
             for name, audio in heard.items()}  # fmt: skip
    # the en speaker hears the pt speaker in English (pt->en), never their own voice, nothing else
    assert power["en"][PT_TO_EN] > 0.5, power["en"]
    assert max(power["en"][EN_VOICE], power["en"][PT_VOICE], power["en"][EN_TO_PT]) < 0.01, power["en"]
    # the pt speaker hears the en speaker in Portuguese (en->pt), never their own voice
    assert power["pt"][EN_TO_PT] > 0.5, power["pt"]
    assert max(power["pt"][PT_VOICE], power["pt"][EN_VOICE], power["pt"][PT_TO_EN]) < 0.01, power["pt"]
    # a pt listener hears both at once: the en speaker translated and the pt speaker's own voice (originals)
    assert power["listener"][EN_TO_PT] > 0.2 and power["listener"][PT_VOICE] > 0.2, power["listener"]
    assert max(power["listener"][EN_VOICE], power["listener"][PT_TO_EN]) < 0.01, power["listener"]
    assert 'streamai_room_participants{role="speaker"} 2.0' in metrics
    assert 'streamai_room_first_audio_seconds_count{direction="en->pt"}' in metrics
    # translated frames keep the speaker's capture time: node-side capture -> sent, per direction
    for direction in ("en->pt", "pt->en"):
        latency = summary["latency"][direction]
        assert latency["count"] > 50 and 0 < latency["p50_ms"] < 1000, summary["latency"]


async def test_two_speakers_at_once_are_mixed_for_a_listener_and_listeners_share_one_encode(tmp_path) -> None:
    settings = node_settings(tmp_path / "rooms", tone_room(originals=False))
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="tones")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        pt = RoomPeer(url, created["room_id"], created["join_token"], "pt", audio=tone_track(PT_VOICE))
        listeners = [
            RoomPeer(url, created["room_id"], created["listen_token"], language, role="listener")
            for language in ("en", "pt", "pt", "pt")
        ]
        for peer in (en, pt, *listeners):
            await peer.join(http)
        assert await wait_for(lambda: all(s.chains.says for s in room.speakers.values()), 20)
        since = now() + 1.0
        assert await wait_for(lambda: all(len(p.received(since)) >= 48_000 for p in listeners), 20)
        outputs = dict(room.listener_outputs)
        pt_output = outputs["pt"]
        received = [len(p.chunks) for p in listeners[1:]]
        encoded = pt_output.broadcast.encoded["audio"]
        for peer in (en, pt, *listeners):
            await peer.leave(http)
        assert await wait_for(lambda: not room.listener_outputs, 5)

    # originals off: a pt listener hears only the en speaker, translated
    pt_heard = listeners[1].received(since)
    assert band_power(pt_heard, EN_TO_PT) > 0.5 and band_power(pt_heard, PT_VOICE) < 0.01
    # one listener output per language present, and the pt one encoded once for its three listeners
    assert sorted(outputs) == ["en", "pt"]
    assert encoded <= 1.3 * max(received), (encoded, received)
    # the en listener hears the pt speaker translated, at the same time as pt listeners hear the en one
    en_heard = listeners[0].received(since)
    assert band_power(en_heard, PT_TO_EN) > 0.5 and band_power(en_heard, EN_TO_PT) < 0.01


async def test_translated_frames_keep_the_speakers_capture_time_through_both_chains(tmp_path) -> None:
    # 18 ms held in the hear chain and 18 ms in the pair chain: measured from the speaker's capture, no
    # frame can leave sooner than 36 ms after it (a capture time taken anew between chains would allow 18)
    held = tone_room("held")
    hold = {"type": "delay", "admission": "stream", "params": {"ms": 18, "blocking": False}}
    held["hear"]["en"] = {"stages": [hold]}
    held["pairs"]["en->pt"]["stages"].insert(0, hold)
    settings = node_settings(tmp_path / "rooms", held)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="held")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        listener = RoomPeer(url, created["room_id"], created["listen_token"], "pt", role="listener")
        await listener.join(http)
        await en.join(http)
        assert await wait_for(lambda: room.latency.get("en->pt") and room.latency["en->pt"].count > 100, 20)
        samples = list(room.latency["en->pt"].recent)
        sent = listener.of_type("latency", direction="en->pt")  # the listener's own view comes as events too
        for peer in (en, listener):
            await peer.leave(http)
    assert min(samples) >= 0.036, sorted(samples)[:5]
    assert not sent or all(e["ms"] >= 36 for e in sent)
