"""Rooms over HTTP: capabilities, bad input, a participant's failure, late clauses, the room's end.

Chains need no model (rooms_support.tone_room); peers are real aiortc peers on 127.0.0.1.
"""

from __future__ import annotations

import aiohttp
import pytest
from rooms_support import EN_TO_PT, EN_VOICE, PT_VOICE, node_settings, tone_room

from streamai.server.rooms import ROOMS
from streamai.testing.node import running_node
from streamai.testing.room import RoomPeer, RoomRequestError, band_power, bearer, create_room, tone_track
from streamai.testing.wait import wait_for

ADMIN = bearer("admin-secret")


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> tuple[int, dict]:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.json(content_type=None)


async def test_bad_input_gets_clear_4xx_and_capabilities_stay_in_their_room(tmp_path) -> None:
    settings = node_settings(tmp_path / "rooms", tone_room(), tone_room("tones-drop", late_audio="drop"))
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        # creation: unknown pipeline, unsupported language (naming the pairs), bad JSON shapes
        status, body = await status_of(http, "POST", f"{url}/v1/rooms", json={"pipeline": "nope"})
        assert status == 404 and body["error"]["code"] == "unknown_pipeline" and "tones" in body["error"]["message"]
        status, body = await status_of(http, "POST", f"{url}/v1/rooms", json={"pipeline": "tones",
                                                                               "languages": ["en", "fr"]})  # fmt: skip
        assert status == 400 and body["error"]["code"] == "unsupported_language", body
        assert "en->fr" in body["error"]["message"] and "fr->en" in body["error"]["message"], body
        status, body = await status_of(http, "POST", f"{url}/v1/rooms", json={"languages": "en"})
        assert status == 400 and body["error"]["code"] == "bad_request"
        status, body = await status_of(
            http, "POST", f"{url}/v1/rooms", data="{}", headers={"Content-Type": "text/plain"}
        )
        assert status == 415
        status, body = await status_of(http, "POST", f"{url}/v1/rooms", json={"max_speakers": 99})
        assert status == 400 and "max_speakers" in body["error"]["message"]

        first = await create_room(http, url, pipeline="tones", max_speakers=1)
        other = await create_room(http, url, pipeline="tones")
        assert first["room_id"] != other["room_id"] and len({first[k] for k in first if k.endswith("_token")}) == 3
        rooms = f"{url}/v1/rooms"

        # unknown room: 401 without a credential, 403 with one that does not grant it, 404 for the admin
        status, body = await status_of(http, "GET", f"{rooms}/nosuchroom")
        assert status == 401
        status, body = await status_of(http, "GET", f"{rooms}/nosuchroom", headers=bearer(first["join_token"]))
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, body = await status_of(http, "GET", f"{rooms}/nosuchroom", headers=ADMIN)
        assert status == 404 and body["error"]["code"] == "unknown_room"
        peer = RoomPeer(url, "nosuchroom", first["join_token"], "en", audio=tone_track(EN_VOICE))
        with pytest.raises(RoomRequestError) as refused:
            await peer.join(http)
        assert refused.value.status == 403

        # joining: a language the room does not speak, a listen token as a speaker, a full room, video, bad SDP
        bad = RoomPeer(url, first["room_id"], first["join_token"], "fr", audio=tone_track(EN_VOICE))
        with pytest.raises(RoomRequestError) as refused:
            await bad.join(http)
        assert refused.value.status == 400 and refused.value.body["error"]["code"] == "unsupported_language"
        assert "en, pt" in refused.value.body["error"]["message"]
        sneaky = RoomPeer(url, first["room_id"], first["listen_token"], "en", audio=tone_track(EN_VOICE))
        with pytest.raises(RoomRequestError) as refused:
            await sneaky.join(http)
        assert refused.value.status == 403
        ann = RoomPeer(
            url, first["room_id"], first["join_token"], "en", name="Ann\x00 \u202e<b>", audio=tone_track(EN_VOICE)
        )
        await ann.join(http)
        assert ann.answer["name"] == "Ann <b>"  # control and format characters never reach other clients
        second = RoomPeer(url, first["room_id"], first["join_token"], "pt", audio=tone_track(PT_VOICE))
        with pytest.raises(RoomRequestError) as refused:
            await second.join(http)
        assert refused.value.status == 409 and refused.value.body["error"]["code"] == "room_full"
        join_url = f"{rooms}/{first['room_id']}/participants"
        offer = await RoomPeer(url, first["room_id"], "x", "pt", role="listener").offer()
        video = offer + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"
        for sdp, code in (("hello", "bad_sdp"), (video, "bad_sdp")):
            status, body = await status_of(http, "POST", join_url, headers=bearer(first["join_token"]),
                                           json={"sdp": sdp, "language": "pt", "role": "listener"})  # fmt: skip
            assert status == 400 and body["error"]["code"] == code, body
        status, body = await status_of(http, "POST", join_url, headers=bearer(first["join_token"]),
                                       json={"sdp": offer, "language": "pt", "role": "judge"})  # fmt: skip
        assert status == 400 and "role" in body["error"]["message"]

        # a participant's session token steers that participant only, in that room only
        own = ann.own_headers()
        status, body = await status_of(http, "GET", f"{join_url}/{ann.participant_id}", headers=own)
        assert status == 200 and body["language"] == "en" and body["role"] == "speaker"
        status, body = await status_of(http, "GET", f"{rooms}/{other['room_id']}", headers=own)
        assert status == 403, body
        status, body = await status_of(http, "POST", f"{rooms}/{other['room_id']}/participants", headers=own,
                                       json={"sdp": offer, "language": "pt", "role": "listener"})  # fmt: skip
        assert status == 403, body
        status, body = await status_of(http, "DELETE", f"{rooms}/{first['room_id']}", headers=own)
        assert status == 403  # a participant cannot end the room; its owner can
        audience = RoomPeer(url, first["room_id"], first["listen_token"], "pt", role="listener")
        await audience.join(http)
        for method in ("GET", "DELETE"):  # nor read or remove another participant of its own room
            status, body = await status_of(http, method, f"{join_url}/{audience.participant_id}", headers=own)
            assert status == 403, body
        status, body = await status_of(http, "GET", f"{join_url}/{ann.participant_id}", headers=audience.own_headers())
        assert status == 403
        assert await audience.leave(http) == 200
        status, body = await status_of(http, "GET", f"{url}/v1/sessions/{ann.participant_id}", headers=own)
        assert status == 403  # nor is a room capability a session capability
        status, body = await status_of(http, "GET", rooms, headers=own)
        assert status == 403  # listing rooms is the admin's
        status, body = await status_of(http, "GET", rooms, headers=ADMIN)
        assert status == 200 and len(body["rooms"]) == 2

        # leaving, then the room's end: its own tokens hear "ended", others still "forbidden"
        assert await ann.leave(http) == 200
        status, body = await status_of(http, "GET", f"{join_url}/{ann.participant_id}", headers=own)
        assert status == 404 and body["error"]["code"] == "participant_ended"
        status, body = await status_of(
            http, "DELETE", f"{rooms}/{first['room_id']}", headers=bearer(first["room_token"])
        )
        assert status == 200
        status, body = await status_of(http, "GET", f"{rooms}/{first['room_id']}", headers=bearer(first["join_token"]))
        assert status == 404 and body["error"]["code"] == "room_ended"
        status, body = await status_of(http, "GET", f"{rooms}/{first['room_id']}", headers=bearer(other["join_token"]))
        assert status == 403
        assert app[ROOMS].get(first["room_id"]) is None


async def test_a_failing_stage_ends_its_speaker_never_the_room(tmp_path) -> None:
    broken = tone_room("broken")
    broken["hear"]["pt"] = {"stages": [{"type": "fault", "max_errors": 3, "params": {"always_raise": True}}]}
    settings = node_settings(tmp_path / "rooms", broken)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="broken")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        listener = RoomPeer(url, created["room_id"], created["listen_token"], "pt", role="listener")
        pt = RoomPeer(url, created["room_id"], created["join_token"], "pt", audio=tone_track(PT_VOICE))
        for peer in (en, listener, pt):
            await peer.join(http)
        assert await wait_for(lambda: pt.participant_id not in room.participants, 15)
        fatal = [e for e in pt.events if e.get("type") == "error" and e.get("fatal")]
        assert fatal and "raised 3 times" in fatal[0]["message"], pt.events[-5:]
        assert pt.of_type("state", state="closed")
        # the room goes on: its other participants stay and the en speaker is still heard, translated
        assert room.state == "open" and set(room.participants) == {en.participant_id, listener.participant_id}

        def left() -> list[dict]:  # the event reaches en over its own channel, after the room let pt go
            return [e for e in en.events if e.get("type") == "participant" and e.get("action") == "left"]

        assert await wait_for(lambda: left(), 10), en.events[-5:]
        assert left()[0]["participant"] == pt.participant_id and "pipeline failed" in left()[0]["reason"]
        mark = len(listener.chunks)
        assert await wait_for(lambda: len(listener.chunks) > mark + 50, 10)
        assert band_power(listener.received()[-48_000:], EN_TO_PT) > 0.5
        for peer in (en, listener):
            await peer.leave(http)


@pytest.mark.parametrize("policy", ["play", "drop"])
async def test_late_clauses_are_played_or_dropped_per_the_pipeline_and_counted_per_participant(
    tmp_path, policy
) -> None:
    # late by construction: en->pt holds every frame 5 ms, its budget is 1 ms
    late = tone_room("late", late_audio=policy)
    late["pairs"]["en->pt"] = {
        "budget_ms": 1,
        "stages": [
            {"type": "delay", "admission": "stream", "params": {"ms": 5, "blocking": False}},
            {"type": "tone", "params": {"frequency_hz": EN_TO_PT}},
        ],
    }
    settings = node_settings(tmp_path / "rooms", late)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="late")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        pt = RoomPeer(url, created["room_id"], created["join_token"], "pt", audio=tone_track(PT_VOICE))
        await en.join(http)
        await pt.join(http)
        speaker_en, speaker_pt = room.speakers[en.participant_id], room.speakers[pt.participant_id]
        if policy == "play":
            assert await wait_for(lambda: speaker_pt.heard.late_played > 50, 20)
            assert speaker_en.said["late_played"] >= speaker_pt.heard.late_played
            assert await wait_for(lambda: band_power(pt.received()[-48_000:], EN_TO_PT) > 0.5, 10)
        else:
            dropped = lambda: speaker_en.chains.stage_stats().get("say.pt", {}).get("output", {}).get("late", 0)  # noqa: E731
            assert await wait_for(lambda: dropped() > 50, 20)
            assert speaker_pt.heard.clauses == 0 and band_power(pt.received(), EN_TO_PT) < 0.01
        summary = room.participant_summary(room.participants[pt.participant_id])
        assert summary["heard"]["late_played"] == speaker_pt.heard.late_played
        for peer in (en, pt):
            await peer.leave(http)


async def test_a_room_ends_when_empty_or_at_its_maximum_age(tmp_path) -> None:
    settings = node_settings(tmp_path / "rooms", tone_room(), tone_room("short", max_age_s=2), empty_s=0.5)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        manager = app[ROOMS]
        created = await create_room(http, url, pipeline="tones")
        listener = RoomPeer(url, created["room_id"], created["listen_token"], "pt", role="listener")
        await listener.join(http)
        room = manager.get(created["room_id"])
        assert await wait_for(lambda: listener.of_type("room"), 5)
        assert room is not None and room.state == "open"
        await listener.leave(http)
        assert await wait_for(lambda: manager.get(created["room_id"]) is None, 5)  # empty: it ends
        assert room.close_reason == "the room was empty"

        short = await create_room(http, url, pipeline="short")
        peer = RoomPeer(url, short["room_id"], short["join_token"], "en", audio=tone_track(EN_VOICE))
        await peer.join(http)
        assert await wait_for(lambda: manager.get(short["room_id"]) is None, 6)
        assert await wait_for(lambda: peer.of_type("state", state="closed"), 3)
        assert "maximum age" in peer.of_type("state", state="closed")[0]["reason"]
        assert manager.count("speaker") == 0 and manager.count("listener") == 0
        await peer.close()


@pytest.mark.models
async def test_a_speaker_steers_only_their_own_chains(tmp_path) -> None:
    # Silero VAD (a 2 MB model from its package) in front of each language: its silence_ms is live
    steered = tone_room("steered", client_params={"vad": {"silence_ms": {"min": 150, "max": 1500}}})
    for language in ("en", "pt"):
        steered["hear"][language] = {"stages": [{"name": "vad", "type": "vad", "model": "silero-vad"}]}
    settings = node_settings(tmp_path / "rooms", steered)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="steered")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        pt = RoomPeer(url, created["room_id"], created["join_token"], "pt", audio=tone_track(PT_VOICE),
                      params={"vad": {"silence_ms": 400}})  # fmt: skip
        listener = RoomPeer(url, created["room_id"], created["listen_token"], "en", role="listener")
        for peer in (en, pt, listener):
            await peer.join(http)

        def silence_ms(peer: RoomPeer) -> float:
            return room.speakers[peer.participant_id].chains.hear.stage_runners[0].stage.p.silence_ms

        assert silence_ms(pt) == 400 and silence_ms(en) == 300  # params at joining apply to the joiner only
        assert await wait_for(lambda: en.channel.readyState == "open" and listener.channel.readyState == "open", 5)
        en.send({"type": "params", "params": {"vad": {"silence_ms": 700}}})
        assert await wait_for(lambda: en.of_type("params"), 5)
        assert silence_ms(en) == 700 and silence_ms(pt) == 400
        assert not pt.of_type("params")  # nothing of it reaches the others
        en.send({"type": "params", "params": {"vad": {"threshold": 0.9}}})  # not in the room's allowlist
        listener.send({"type": "params", "params": {"vad": {"silence_ms": 200}}})
        assert await wait_for(lambda: en.of_type("error") and listener.of_type("error"), 5)
        assert en.of_type("error")[0]["code"] == "bad_params" and silence_ms(en) == 700
        assert silence_ms(pt) == 400
        for peer in (en, pt, listener):
            await peer.leave(http)


async def test_leaving_or_dropping_frees_the_participants_chains(tmp_path) -> None:
    settings = node_settings(tmp_path / "rooms", tone_room())
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        created = await create_room(http, url, pipeline="tones")
        room = app[ROOMS].get(created["room_id"])
        en = RoomPeer(url, created["room_id"], created["join_token"], "en", audio=tone_track(EN_VOICE))
        pt = RoomPeer(url, created["room_id"], created["join_token"], "pt", audio=tone_track(PT_VOICE))
        await en.join(http)
        await pt.join(http)
        assert await wait_for(lambda: all(s.chains.says for s in room.speakers.values()), 10)
        pt_chains, en_chains = room.speakers[pt.participant_id].chains, room.speakers[en.participant_id].chains
        pt_runners = pt_chains.runners
        await pt.close()  # drops off without a DELETE: its peer connection closes
        assert await wait_for(lambda: pt.participant_id not in room.participants, 15)
        # its own chains stop, and nobody translates into Portuguese any more
        assert await wait_for(lambda: all(r.task.done() for runner in pt_runners for r in runner.stage_runners), 5)
        assert await wait_for(lambda: not en_chains.says, 5)
        assert all(pt.participant_id not in s.mix.sources for s in room.speakers.values())
        await en.leave(http)
