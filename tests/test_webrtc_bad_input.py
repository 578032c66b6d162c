"""Bad input never takes the node down: clear errors, other sessions keep running."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from streamai.frames import Frame, FrameKind
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.stage import Stage, StageRegistry, stage
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError, marker_audio
from streamai.testing.wait import wait_for
from streamai.web.protection import ProtectionSettings

GOOD_OFFER_PREFIX = "v=0\r\n"


async def post(http: aiohttp.ClientSession, url: str, body: object | bytes) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(f"{url}/v1/sessions", data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"pipeline": "transform", "sdp": "hello"}, 400, "bad_sdp"),
        ({"pipeline": "transform", "sdp": GOOD_OFFER_PREFIX + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}, 400, "bad_sdp"),
        ({"pipeline": "transform", "sdp": 42}, 400, "bad_sdp"),
        ({"pipeline": "transform"}, 400, "bad_sdp"),
        ({"pipeline": "no-such-pipeline", "sdp": "v=0"}, 404, "unknown_pipeline"),
        ({"pipeline": ["transform"], "sdp": "v=0"}, 400, "bad_request"),
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        (b"\xff\xfe\x00garbage", 400, "bad_json"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "bad_json"),  # nesting past the parser's limit
        (b"[" * 200_000 + b"]" * 200_000, 413, "too_large"),
        (b'{"sdp": "' + b"x" * 300_000 + b'"}', 413, "too_large"),
    ],
)
async def test_bad_session_requests_get_clear_errors(body: object, status: int, code: str) -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        got_status, answer, _ = await post(http, url, body)
        assert (got_status, answer["error"]["code"]) == (status, code)
        assert answer["error"]["message"]
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200
        assert not app[SESSIONS].sessions and app[SESSIONS].pending == 0


async def test_bad_session_params_are_refused_with_the_stage_named() -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", params={"invert": {"effect": "sparkle"}}, video=BarcodeVideoTrack())
        with pytest.raises(ProbeError) as raised:
            await probe.connect(http)
        assert raised.value.status == 400
        assert "invert" in raised.value.body["error"]["message"]
        await probe.close(http, delete=False)
        probe = Probe(url, "transform", params={"no_such_knob": 1}, video=BarcodeVideoTrack())
        with pytest.raises(ProbeError) as raised:
            await probe.connect(http)
        assert raised.value.status == 400 and "no_such_knob" in raised.value.body["error"]["message"]
        await probe.close(http, delete=False)


async def test_over_capacity_gets_503_with_retry_after() -> None:
    protection = ProtectionSettings(max_sessions_per_client=5)  # this test is about the node's capacity
    settings = ServerSettings(port=0, ice_loopback=True, max_sessions=1, protection=protection)
    async with running_node(settings) as (url, _app), aiohttp.ClientSession() as http:
        first = Probe(url, "transform", video=BarcodeVideoTrack())
        await first.connect(http)
        second = Probe(url, "transform", video=BarcodeVideoTrack())
        with pytest.raises(ProbeError) as raised:
            await second.connect(http)
        assert raised.value.status == 503
        assert raised.value.body["error"]["code"] == "over_capacity"
        await second.close(http, delete=False)
        await first.close(http)


async def test_the_api_token_guards_session_creation_and_the_catalogue() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token="s3cret")
    async with running_node(settings) as (url, _app), aiohttp.ClientSession() as http:
        for path in ("/v1/pipelines", "/v1/models"):
            async with http.get(f"{url}{path}") as response:
                assert response.status == 401
            async with http.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
            async with http.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"}) as response:
                assert response.status == 200
        async with http.post(f"{url}/v1/sessions", json={"pipeline": "transform", "sdp": "v=0"}) as response:
            assert response.status == 401
        async with http.get(f"{url}/v1/sessions", headers={"Authorization": "Bearer s3cret"}) as response:
            assert response.status == 403  # listing sessions is the admin's, not the API token's
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200


async def test_garbage_on_the_data_channel_is_answered_and_the_session_lives_on() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        bystander = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await bystander.connect(http)
        probe = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await probe.connect(http)
        assert await wait_for(lambda: probe.channel.readyState == "open", 15)
        probe.send(os.urandom(1000))  # 1,000 random bytes
        probe.send("x" * 20_000)  # oversized
        probe.send(json.dumps({"type": "prompt", "text": 7}))  # wrong type
        probe.send(json.dumps({"type": "launch-missiles"}))  # unknown type
        nested: object = 1
        for _ in range(50):
            nested = {"a": nested}
        probe.send(json.dumps({"type": "params", "params": nested}))  # too deep

        def codes() -> list[str]:
            return [e.get("code") for e in probe.report.events if e.get("type") == "error"]

        expected = {"too_large", "bad_message", "too_deep"}
        assert await wait_for(lambda: expected <= set(codes()) and {"bad_encoding", "bad_json"} & set(codes()), 15)
        assert all(e.get("fatal") is False for e in probe.report.events if e.get("type") == "error")
        frames_before = probe.report.video_frames
        assert await wait_for(lambda: probe.report.video_frames > frames_before, 10)  # still served
        assert len(app[SESSIONS].sessions) == 2
        await probe.close(http)
        assert await wait_for(lambda: bystander.report.video_decoded_barcodes > 20, 15)  # the bystander too
        await bystander.close(http)


@stage("test-explode")
class Explode(Stage):
    """Raises on every video frame (a broken model)."""

    consumes = frozenset({FrameKind.VIDEO})
    emits = frozenset({FrameKind.VIDEO})

    async def process(self, frame: Frame) -> None:
        raise RuntimeError("model blew up")


async def test_a_stage_that_always_raises_ends_only_its_own_session(tmp_path: Path) -> None:
    (tmp_path / "explode.yaml").write_text(
        "name: explode\nstages:\n  - {type: test-explode, max_errors: 5}\n", encoding="utf-8"
    )
    (tmp_path / "transform.yaml").write_text(
        "name: transform\nstages:\n  - {type: video-transform, params: {effect: invert}}\n", encoding="utf-8"
    )
    registry = StageRegistry()
    registry.register(Explode)
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=tmp_path)
    async with running_node(settings, registry) as (url, app), aiohttp.ClientSession() as http:
        healthy = Probe(url, "transform", video=BarcodeVideoTrack())
        await healthy.connect(http)
        doomed = Probe(url, "explode", video=BarcodeVideoTrack())
        await doomed.connect(http)
        doomed_id = doomed.report.session_id
        ok = await asyncio.wait_for(_until_gone(app, doomed_id), 8)
        assert ok
        fatal = [e for e in doomed.report.events if e.get("type") == "error" and e.get("fatal")]
        assert fatal and "model blew up" in fatal[0]["message"]
        assert healthy.report.session_id in app[SESSIONS].sessions
        frames = healthy.report.video_frames
        await asyncio.sleep(0.5)
        assert healthy.report.video_frames > frames
        await doomed.close(http, delete=False)
        await healthy.close(http)


async def _until_gone(app, session_id: str) -> bool:  # type: ignore[no-untyped-def]
    while session_id in app[SESSIONS].sessions:
        await asyncio.sleep(0.1)
    return True
