"""The entry point protects itself: per-address rate limits, session caps, body size and slow clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from streamai.server.app import GUARD, SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError
from streamai.transport.ice import rtc_configuration
from streamai.web.protection import ProtectionSettings

JSON = {"Content-Type": "application/json"}


def settings(**protection: object) -> ServerSettings:
    return ServerSettings(port=0, ice_loopback=True, protection=ProtectionSettings(**protection))


async def test_a_burst_from_one_address_is_limited_while_another_address_is_served() -> None:
    node_settings = settings(sessions_per_min=60, sessions_burst=10, requests_per_s=1000, requests_burst=1000)
    async with running_node(node_settings) as (url, app):
        statuses: list[int] = []
        async with aiohttp.ClientSession() as flood:
            body = json.dumps({"pipeline": "transform", "sdp": "v=0 not really"})

            async def one() -> None:
                async with flood.post(f"{url}/v1/sessions", data=body, headers=JSON) as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert int(response.headers["Retry-After"]) >= 1
                        assert (await response.json())["error"]["code"] == "session_rate"

            await asyncio.gather(*(one() for _ in range(200)))
        assert statuses.count(429) >= 180  # burst of 10 (+ refill during the burst) then refused
        assert statuses.count(400) >= 10  # the admitted ones reached the handler: their SDP was bad
        assert 500 not in statuses
        # another client address on the same machine is unaffected
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as http:
            probe = Probe(url, "transform", video=BarcodeVideoTrack())
            await probe.connect(http)
            assert probe.report.session_id in app[SESSIONS].sessions
            await probe.close(http)
        assert app[GUARD].refusals["session_rate"] == statuses.count(429)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            assert 'streamai_refusals_total{reason="session_rate"}' in await response.text()
        assert not app[SESSIONS].sessions


async def test_concurrent_sessions_per_address_are_capped() -> None:
    async with running_node(settings(max_sessions_per_client=2)) as (url, app), aiohttp.ClientSession() as http:
        probes = [Probe(url, "transform", video=BarcodeVideoTrack()) for _ in range(2)]
        for probe in probes:
            await probe.connect(http)
        async with http.post(f"{url}/v1/sessions", json={"pipeline": "transform", "sdp": "v=0"}) as response:
            assert response.status == 429
            assert (await response.json())["error"]["code"] == "client_sessions"
        for probe in probes:
            await probe.close(http)
        assert not app[SESSIONS].sessions


async def test_signaling_request_rate_is_limited() -> None:
    async with running_node(settings(requests_per_s=5, requests_burst=5)) as (url, _app):
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(20):
                async with http.get(f"{url}/v1/pipelines") as response:
                    statuses.append(response.status)
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200  # health is not signaling: never limited
        assert statuses[:5] == [200] * 5
        assert statuses.count(429) >= 12


@pytest.mark.slow
async def test_oversized_body_gets_413_before_it_is_read() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/sessions", data=b"{" + b" " * 2_000_000 + b"}") as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "too_large"
        assert app[GUARD].refusals["too_large"] == 1


@pytest.mark.slow
async def test_a_client_sending_its_body_byte_by_byte_gets_408() -> None:
    async with running_node(settings(body_timeout_s=1.0)) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"pipeline": "transform", "sdp": "v=0"}).encode()
        writer.write(
            b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        for byte in body[:6]:  # trickle: one byte every 0.3 s, far past the 1 s budget
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert b" 408 " in status_line
        assert app[GUARD].refusals["slow_body"] == 1
        assert not app[SESSIONS].sessions and app[SESSIONS].pending == 0


async def test_concurrent_sessions_per_api_token_are_capped() -> None:
    node_settings = ServerSettings(
        port=0, ice_loopback=True, token="api-token", protection=ProtectionSettings(max_sessions_per_token=2)
    )
    async with running_node(node_settings) as (url, app), aiohttp.ClientSession() as http:
        probes = [Probe(url, "transform", video=BarcodeVideoTrack(), token="api-token") for _ in range(2)]
        for probe in probes:
            await probe.connect(http)
        # a third session with the same token, from another address (the per-address cap does not apply)
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as elsewhere:
            third = Probe(url, "transform", video=BarcodeVideoTrack(), token="api-token")
            with pytest.raises(ProbeError) as refused:
                await third.connect(elsewhere)
            await third.close(elsewhere, delete=False)
        assert refused.value.status == 429 and refused.value.body["error"]["code"] == "token_sessions"
        assert app[GUARD].refusals["token_sessions"] == 1
        await probes[0].close(http)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as elsewhere:
            again = Probe(url, "transform", video=BarcodeVideoTrack(), token="api-token")
            await again.connect(elsewhere)  # a slot freed: the token may open one more
            await again.close(elsewhere)
        await probes[1].close(http)
        assert not app[SESSIONS].sessions


async def test_an_offer_whose_ice_never_connects_is_freed_after_the_connect_timeout() -> None:
    assert ServerSettings().connect_timeout_s == 6  # the documented default: an unconnected offer is cheap
    node_settings = ServerSettings(port=0, ice_loopback=True, connect_timeout_s=1.5)
    async with running_node(node_settings) as (url, app), aiohttp.ClientSession() as http:
        pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        started = asyncio.get_running_loop().time()
        async with http.post(f"{url}/v1/sessions", json={"pipeline": "transform", "sdp": pc.localDescription.sdp}) as r:
            assert r.status == 200
            session = app[SESSIONS].get((await r.json())["session_id"])
        await pc.close()  # the answer is never applied: ICE cannot connect
        assert session is not None and session.state == "connecting"
        while app[SESSIONS].sessions and asyncio.get_running_loop().time() - started < 10:
            await asyncio.sleep(0.1)
        elapsed = asyncio.get_running_loop().time() - started
        assert not app[SESSIONS].sessions, "the unconnected session was never freed"
        assert session.close_reason == "ICE did not connect in time"
        assert 1.5 <= elapsed < 1.5 + 3  # the watchdog looks once a second
