"""Every documented limit is enforced at its documented default (see RELIABILITY.md).

Max sessions 8, control message 16 KiB, control rate 20/s with a burst of 40, session
duration 3600 s (enforced here with a short setting: an hour is too long for a test),
request body 256 KiB. Real node, real peers and sockets.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import WSMsgType

from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError
from streamai.testing.wait import wait_for
from streamai.web.protection import ProtectionSettings

JSON = {"Content-Type": "application/json"}

DEFAULTS = ServerSettings()


def test_the_documented_defaults() -> None:
    assert DEFAULTS.max_sessions == 8
    assert DEFAULTS.max_control_bytes == 16 * 1024
    assert (DEFAULTS.control_rate_per_s, DEFAULTS.control_burst) == (20, 40)
    assert DEFAULTS.max_session_s == 3600
    assert DEFAULTS.max_body_bytes == 256 * 1024
    assert DEFAULTS.host == "127.0.0.1"
    assert DEFAULTS.token is None and DEFAULTS.cors_origins == []
    assert DEFAULTS.debug_endpoints is False


async def test_max_sessions_default_eight_then_503_and_a_freed_slot_is_reusable() -> None:
    # every peer here comes from 127.0.0.1: lift the per-address cap (also 8) to reach the node's own limit
    settings = ServerSettings(port=0, ice_loopback=True, protection=ProtectionSettings(max_sessions_per_client=100))
    assert settings.max_sessions == DEFAULTS.max_sessions
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probes = [Probe(url, "transform") for _ in range(DEFAULTS.max_sessions)]  # data channel only: cheap
        await asyncio.gather(*(p.connect(http) for p in probes))
        assert len(app[SESSIONS].sessions) == 8
        extra = Probe(url, "transform")
        try:
            await extra.connect(http)
            raise AssertionError("a ninth session was accepted")
        except ProbeError as exc:
            assert exc.status == 503 and exc.body["error"]["code"] == "over_capacity"
        await extra.close(http, delete=False)
        async with http.get(f"{url}/healthz") as response:
            assert (await response.json())["capacity"] == 8
        await probes[0].close(http)
        again = Probe(url, "transform")
        await again.connect(http)  # the freed slot is usable at once
        await asyncio.gather(again.close(http), *(p.close(http) for p in probes[1:]))
        assert not app[SESSIONS].sessions


async def events_socket(http: aiohttp.ClientSession, url: str, probe: Probe) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{url}/v1/sessions/{probe.report.session_id}/events", headers=probe.session_headers())
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "state"
    return ws


async def replies_until_pong(ws: aiohttp.ClientWebSocketResponse, marker: float, timeout: float = 5) -> list[dict]:
    """Events received until the pong that answers a ping carrying ``marker``."""
    got: list[dict] = []
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        message = await ws.receive(timeout=max(0.1, ends - time.monotonic()))
        if message.type != WSMsgType.TEXT:
            raise AssertionError(f"socket ended: {message.type}")
        event = json.loads(message.data)
        if event.get("type") == "pong" and event.get("t") == marker:
            return got
        got.append(event)
    raise AssertionError("no pong")


async def control_replies(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict]:
    """The next ``count`` answers to control messages (pongs and errors), skipping session events."""
    replies: list[dict] = []
    while len(replies) < count:
        event = await ws.receive_json(timeout=5)
        if event["type"] in ("pong", "error"):
            replies.append(event)
    return replies


def params_message(size: int) -> str:
    """A valid params message of exactly ``size`` bytes."""
    empty = json.dumps({"type": "params", "params": {"pad": ""}})
    return json.dumps({"type": "params", "params": {"pad": "x" * (size - len(empty))}})


async def test_control_message_size_default_16_kib_on_websocket_and_data_channel() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, control_rate_per_s=1000, control_burst=1000)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        ws = await events_socket(http, url, probe)
        at_limit, over = params_message(16 * 1024), params_message(16 * 1024 + 1)
        assert (len(at_limit), len(over)) == (16384, 16385)
        await ws.send_str(at_limit)
        await ws.send_json({"type": "ping", "t": 1.0})
        # (its "pad" field fits no stage: refused as bad_params by the pipeline, never as too large)
        assert not [e for e in await replies_until_pong(ws, 1.0) if e["type"] == "error" and e["code"] != "bad_params"]
        await ws.send_str(over)
        await ws.send_json({"type": "ping", "t": 2.0})
        errors = [e for e in await replies_until_pong(ws, 2.0) if e["type"] == "error" and e["code"] != "bad_params"]
        assert [e["code"] for e in errors] == ["too_large"] and errors[0]["fatal"] is False
        # past the body limit (256 KiB) the socket itself refuses the frame (close 1009); the session is untouched
        await ws.send_str("x" * (256 * 1024 + 1))
        message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009
        await ws.close()
        assert probe.report.session_id in app[SESSIONS].sessions
        # the same limit on the data channel
        assert await wait_for(lambda: probe.channel.readyState == "open", 15)
        probe.send(at_limit)
        probe.send(over)
        probe.send({"type": "ping", "t": 3.0})
        for _ in range(100):
            if any(e.get("type") == "pong" and e.get("t") == 3.0 for e in probe.report.events):
                break
            await asyncio.sleep(0.05)
        codes = [e.get("code") for e in probe.report.events if e.get("type") == "error"]
        assert [c for c in codes if c != "bad_params"] == ["too_large"]
        ws = await events_socket(http, url, probe)  # a new socket works after the refusal
        await ws.send_json({"type": "ping", "t": 4.0})
        await replies_until_pong(ws, 4.0)
        await ws.close()
        await probe.close(http)


async def test_control_rate_default_20_per_second_with_a_burst_of_40() -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform")
        await probe.connect(http)
        ws = await events_socket(http, url, probe)
        started = time.monotonic()
        for index in range(100):
            await ws.send_json({"type": "ping", "t": float(index)})
        events = await control_replies(ws, 100)
        elapsed = time.monotonic() - started
        pongs = [e for e in events if e["type"] == "pong"]
        limited = [e for e in events if e.get("code") == "rate_limited"]
        assert len(pongs) + len(limited) == 100
        assert 40 <= len(pongs) <= 40 + 20 * elapsed + 1  # the burst, plus what the rate refilled meanwhile
        assert all(e["fatal"] is False for e in limited)
        await asyncio.sleep(1.0)  # refills at 20/s
        for index in range(15):
            await ws.send_json({"type": "ping", "t": 1000.0 + index})
        answers = await control_replies(ws, 15)
        assert all(e["type"] == "pong" for e in answers)
        await ws.close()
        await probe.close(http)


async def test_max_session_duration_ends_the_session_with_a_reason() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, max_session_s=2)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        started = time.monotonic()
        while probe.report.session_id in app[SESSIONS].sessions and time.monotonic() - started < 10:
            await asyncio.sleep(0.1)
        assert probe.report.session_id not in app[SESSIONS].sessions
        assert 1.5 < time.monotonic() - started < 6

        def closed() -> list[dict]:
            return [e for e in probe.report.events if e.get("type") == "state" and e.get("state") == "closed"]

        assert await wait_for(lambda: bool(closed()), 5)
        assert closed()[0]["reason"] == "maximum session duration reached"
        session_url = f"{url}/v1/sessions/{probe.report.session_id}"
        async with http.get(session_url, headers=probe.session_headers()) as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "session_ended"
        await probe.close(http, delete=False)


async def test_request_body_default_256_kib() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:

        def body(size: int) -> bytes:
            empty = b'{"sdp": "v=0", "pad": ""}'
            return b'{"sdp": "v=0", "pad": "' + b"x" * (size - len(empty)) + b'"}'

        at_limit, over = body(256 * 1024), body(256 * 1024 + 1)
        assert (len(at_limit), len(over)) == (262144, 262145)
        async with http.post(f"{url}/v1/sessions", data=at_limit, headers=JSON) as response:
            answer = await response.json()
            assert (response.status, answer["error"]["code"]) == (400, "bad_sdp")  # read in full, then judged
        async with http.post(f"{url}/v1/sessions", data=over, headers=JSON) as response:
            answer = await response.json()
            assert (response.status, answer["error"]["code"]) == (413, "too_large")
        assert not app[SESSIONS].sessions and app[SESSIONS].pending == 0
