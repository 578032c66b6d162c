"""WHIP ingest and WHEP playback against a real node: status codes, SDP variants, fan-out, relay policy."""

from __future__ import annotations

import asyncio
import fractions

import aiohttp
import av
import pytest

from streamai.bench.whep import WhepViewer, WhipPublisher, patch_candidates
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.testing.wait import wait_for as wait_until
from streamai.transport.relay import Broadcast, EncodedPacket
from streamai.web.protection import ProtectionSettings

SDP = {"Content-Type": "application/sdp"}


async def test_whip_status_codes() -> None:
    protection = ProtectionSettings(max_sessions_per_client=5)  # this test is about the node's capacity
    settings = ServerSettings(port=0, ice_loopback=True, max_sessions=1, max_viewers=1, protection=protection)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/whip/transform", data="v=0\r\n", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
        async with http.post(f"{url}/whip/no-such-pipeline", data="v=0\r\n", headers=SDP) as r:
            assert r.status == 404
        for bad in (b"hello", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", b"\xff\xfe garbage"):
            async with http.post(f"{url}/whip/transform", data=bad, headers=SDP) as r:
                assert r.status == 400, bad
        async with http.options(f"{url}/whip/transform") as r:
            assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"

        publisher = WhipPublisher(f"{url}/whip/transform?loopback.gain=0.5")
        await publisher.start(http)
        assert publisher.resource.startswith(f"{url}/whip/sessions/")
        session = app[SESSIONS].get(publisher.session_id)
        assert session is not None and session.pipeline == "transform"

        # a second session is over capacity: 503 + Retry-After
        second = WhipPublisher(f"{url}/whip/transform")
        with pytest.raises(Exception) as refused:
            await second.start(http)
        assert getattr(refused.value, "status", None) == 503
        await second.stop()
        async with http.post(f"{url}/whip/transform", data=b"v=0\r\nm=audio 9 x 0\r\n", headers=SDP) as r:
            assert r.status == 503 and int(r.headers["Retry-After"]) >= 1

        # WHEP: unknown session 404, wrong type 415, max_viewers 503, DELETE 200 then 404
        watch = {"Authorization": f"Bearer {publisher.viewer_token}"}
        async with http.post(f"{url}/whep/nope", data=b"v=0\r\n", headers=SDP) as r:
            assert r.status == 401  # no credential
        async with http.post(f"{url}/whep/nope", data=b"v=0\r\n", headers={**SDP, **watch}) as r:
            assert r.status == 403  # a viewer token of another session: nothing about 'nope' leaks
        whep = f"{url}/whep/{publisher.session_id}"
        async with http.post(whep, data=b"v=0\r\n", headers={"Content-Type": "application/json", **watch}) as r:
            assert r.status == 415
        viewer = WhepViewer(whep, decode=False, token=publisher.viewer_token)
        await viewer.start(http)
        extra = WhepViewer(whep, decode=False, token=publisher.viewer_token)
        with pytest.raises(Exception) as too_many:
            await extra.start(http)
        assert getattr(too_many.value, "status", None) == 503
        await extra.stop()
        own = {"Authorization": f"Bearer {publisher.session_token}"}
        async with http.get(f"{url}/v1/sessions/{publisher.session_id}", headers=own) as r:
            assert (await r.json())["viewers"] == 1
        async with http.get(f"{url}/v1/sessions/{publisher.session_id}", headers=watch) as r:
            assert r.status == 403  # the viewer token watches, nothing else
        async with http.delete(viewer.resource, headers=watch) as r:
            assert r.status == 200
        async with http.delete(viewer.resource, headers=watch) as r:
            assert r.status == 404
        await viewer.stop()

        # PATCH: ICE restart refused (422), a stale ETag refused (412)
        frag = "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\na=mid:0\r\n"
        headers = {"Content-Type": "application/trickle-ice-sdpfrag", **own}
        async with http.patch(publisher.resource, data=frag, headers=headers) as r:
            assert r.status == 422
        async with http.patch(publisher.resource, data=frag, headers={**headers, "If-Match": '"other"'}) as r:
            assert r.status == 412

        async with http.delete(publisher.resource, headers=watch) as r:
            assert r.status == 403
        async with http.delete(publisher.resource, headers=own) as r:
            assert r.status == 200
        async with http.delete(publisher.resource, headers=own) as r:
            assert r.status == 404
        assert not app[SESSIONS].sessions
        await publisher.stop()


async def test_whip_requires_the_bearer_token_when_configured() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token="s3cret")
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/whip/transform", data=b"v=0\r\n", headers=SDP) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with http.options(f"{url}/whip/transform") as r:
            assert r.status == 204  # preflight carries no credentials
        publisher = WhipPublisher(f"{url}/whip/transform", token="s3cret")
        await publisher.start(http)
        assert app[SESSIONS].get(publisher.session_id) is not None
        async with http.delete(publisher.resource) as r:
            assert r.status == 401
        async with http.delete(publisher.resource, headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 403  # the API token opens sessions; it does not end them
        await publisher.stop(http)  # with the session token from the answer
        assert not app[SESSIONS].sessions


@pytest.mark.parametrize(("codecs", "trickle"), [(["video/H264"], False), (["video/VP8"], True)])
async def test_whip_ingest_h264_and_trickle_then_whep_fan_out(codecs: list[str], trickle: bool) -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        publisher = WhipPublisher(f"{url}/whip/transform", video_codecs=codecs, trickle=trickle)
        await publisher.start(http)
        session = app[SESSIONS].get(publisher.session_id)
        assert session is not None
        sent_at = publisher.video.sent_at
        viewers = [
            WhepViewer(f"{url}/whep/{session.id}", sent_at=sent_at, token=publisher.viewer_token),
            WhepViewer(f"{url}/whep/{session.id}", sent_at=sent_at, decode=False, token=publisher.viewer_token),
            WhepViewer(
                f"{url}/whep/{session.id}", sent_at=sent_at, video_codecs=["video/H264"], token=publisher.viewer_token
            ),
        ]
        for viewer in viewers:
            await viewer.start(http)
        assert await wait_until(lambda: all(v.received > 30 for v in viewers), 15)
        assert session.summary()["viewers"] == 3
        async with http.get(f"{url}/metrics") as r:
            assert 'streamai_viewers{pipeline="transform"} 3.0' in await r.text()
        # processed output: the barcode reads inverted on the VP8 and the H.264 viewer
        assert viewers[0].inverted > 10 and viewers[2].inverted > 10
        assert viewers[0].audio_frames > 0
        # the pipeline ran once: its video stage saw no more frames than came in
        stats = session.runner.stats
        invert = stats.stages["invert"]
        assert 0 < invert.processed <= stats.frames_in["video"]
        # closing one viewer leaves the others running
        await viewers[1].stop(http)
        assert await wait_until(lambda: session.summary()["viewers"] == 2, 5)
        before = [viewers[0].received, viewers[2].received]
        await asyncio.sleep(1.5)
        assert viewers[0].received > before[0] and viewers[2].received > before[1]
        # ending the session ends its viewers
        await publisher.stop(http)
        assert await wait_until(lambda: not session.viewers, 5)
        for viewer in (viewers[0], viewers[2]):
            await viewer.stop()
        if trickle:
            assert await patch_candidates(http, publisher.resource, "a=mid:0\r\n", publisher.session_token) == 404


async def test_offer_with_candidates_is_answered_for_non_trickle_clients() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        publisher = WhipPublisher(f"{url}/whip/transform")
        await publisher.start(http)
        session = app[SESSIONS].get(publisher.session_id)
        assert session is not None
        assert await wait_until(lambda: sum(session.runner.stats.frames_out.values()) > 20, 10)
        answer = session.pc.localDescription.sdp
        assert "a=candidate:" in answer and "a=group:BUNDLE" in answer and "a=rtcp-mux" in answer
        assert "a=setup:passive" in answer
        await publisher.stop(http)


def _packet(index: int, keyframe: bool) -> EncodedPacket:
    packet = av.Packet(b"x" * 10)
    packet.pts = index * 3000
    packet.time_base = fractions.Fraction(1, 90000)
    return EncodedPacket(packet, keyframe, None)


async def test_relay_slow_viewer_is_bounded_and_never_slows_the_others() -> None:
    broadcast = Broadcast(lambda listener: lambda: None, video_queue=4)
    fast = broadcast.subscribe("video", "vp8")
    slow = broadcast.subscribe("video", "vp8")  # its sender does not read
    broadcast.stop()  # no pacing pump: this test feeds encoded packets by hand
    received = []
    for index in range(11):  # keyframes at 0 and 10
        broadcast._fan_out("video", "vp8", _packet(index, keyframe=index in (0, 10)))
        received.append(await fast.recv())
    assert [p.pts for p in received] == [i * 3000 for i in range(11)] and fast.counters.skipped == 0
    # the slow viewer held at most its queue, then dropped it and waited for the next keyframe
    assert len(slow._queue) == 1
    assert slow.counters.skipped == 10
    assert (await slow.recv()).pts == 10 * 3000
    # audio: the oldest packets go, the newest stay
    audio = broadcast.subscribe("audio", "opus")
    broadcast.stop()
    for index in range(30):
        broadcast._fan_out("audio", "opus", _packet(index, keyframe=True))
    assert len(audio._queue) == broadcast.queue_sizes["audio"] and audio.counters.skipped == 20
    assert (await audio.recv()).pts == 20 * 3000
    for track in (fast, slow, audio):
        track.stop()
    assert not any(broadcast.viewers.values())
