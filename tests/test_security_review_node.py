"""Regression tests for the security review's node findings (N1-N15).

Each test is named after its finding (../shared/notes/security-review.md) and uses a real
node and real aiortc peers on loopback; each failed on commit 95b23c0.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from streamai.bench.whep import WhepViewer, WhipPublisher
from streamai.fleet.config import FleetConfig
from streamai.frames import ControlKind
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.server.whip import STATE
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeError
from streamai.testing.wait import wait_for
from streamai.transport.ice import IceServer, rtc_configuration
from streamai.web.clients import limit_key
from streamai.web.protection import ProtectionSettings

ROOT = Path(__file__).resolve().parent.parent
API = "api-token-for-review"
JSON = {"Content-Type": "application/json"}


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with http.request(method, url, **kwargs) as response:
        await response.read()
        return response.status


async def test_N1_client_b_with_the_api_token_cannot_touch_client_as_session_and_a_viewer_link_only_watches() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token=API, admin_token="review-admin")
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        a = Probe(url, "transform", video=BarcodeVideoTrack(320, 240, 15), token=API)
        await a.connect(http)
        session = f"{url}/v1/sessions/{a.report.session_id}"
        b_creds = bearer(API)  # client B holds the API token and knows A's session id
        assert await status_of(http, "GET", f"{url}/v1/sessions", headers=b_creds) == 403  # no listing
        assert await status_of(http, "GET", session, headers=b_creds) == 403  # no summary
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # no events, no control
            await http.ws_connect(f"{session}/events", headers=b_creds)
        assert refused.value.status == 403
        sdp = {**b_creds, "Content-Type": "application/sdp"}
        assert await status_of(http, "POST", f"{url}/whep/{a.report.session_id}", data=b"v=0\r\n", headers=sdp) == 403
        assert await status_of(http, "GET", f"{url}/whep/{a.report.session_id}", headers=b_creds) == 403
        assert await status_of(http, "DELETE", session, headers=b_creds) == 403  # cannot end it
        assert a.report.session_id in app[SESSIONS].sessions
        # A's viewer token watches, and only that
        viewer_token = a.answer["viewer_token"]
        viewer = WhepViewer(f"{url}/whep/{a.report.session_id}", decode=False, token=viewer_token)
        await viewer.start(http)
        assert await wait_for(lambda: viewer.received > 5, 15)
        for method, target in (("GET", session), ("DELETE", session), ("GET", f"{url}/whep/{a.report.session_id}")):
            assert await status_of(http, method, target, headers=bearer(viewer_token)) == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{session}/events", headers=bearer(viewer_token))
        await viewer.stop(http)
        # A itself reads and steers its session; the admin lists everything
        assert await status_of(http, "GET", session, headers=a.session_headers()) == 200
        async with http.get(f"{url}/v1/sessions", headers=bearer("review-admin")) as response:
            assert [s["id"] for s in (await response.json())["sessions"]] == [a.report.session_id]
        await a.close(http)
        assert not app[SESSIONS].sessions


async def test_N2_the_events_socket_closes_with_its_session_and_nothing_piles_up_after() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        session = app[SESSIONS].get(probe.report.session_id)
        assert session is not None
        events = f"{url}/v1/sessions/{probe.report.session_id}/events"
        ws = await http.ws_connect(events, headers=probe.session_headers())
        await ws.receive_json(timeout=5)
        assert await status_of(http, "DELETE", f"{url}/v1/sessions/{probe.report.session_id}",
                               headers=probe.session_headers()) == 200  # fmt: skip
        started = time.monotonic()
        while not ws.closed and time.monotonic() - started < 5:
            await ws.receive(timeout=5)
        assert ws.closed and time.monotonic() - started < 5
        # a control message sent to the stopped pipeline is not queued anywhere
        session.handle_control(json.dumps({"type": "interrupt"}), lambda _reply: None)
        session.runner.control(ControlKind.PROMPT, {"text": "late"})
        assert all(len(r.queue) == 0 for r in session.runner.stage_runners)
        await probe.close(http, delete=False)


async def test_N3_one_address_cannot_fill_the_node_and_an_unconnected_offer_holds_its_slot_briefly() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, max_sessions=8, connect_timeout_s=1.5)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        offers = []
        for _ in range(5):
            pc = RTCPeerConnection(rtc_configuration([]))
            pc.addTransceiver("video")
            await pc.setLocalDescription(await pc.createOffer())
            offers.append(pc)
            body = {"pipeline": "transform", "sdp": pc.localDescription.sdp}
            async with http.post(f"{url}/v1/sessions", json=body) as response:
                last = response.status
                code = (await response.json()).get("error", {}).get("code")
        assert last == 429 and code == "client_sessions"  # the 5th: half the node's 8 per address
        assert len(app[SESSIONS].sessions) == 4
        assert await wait_for(lambda: not app[SESSIONS].sessions, 6)  # none did ICE: freed after ~1.5 s
        for pc in offers:
            await pc.close()


async def test_N4_clients_set_only_allowlisted_params_within_bounds_and_errors_reveal_no_paths(tmp_path: Path) -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        messages = []
        for params in (
            {"diffusion": {"tiny_vae": "/etc"}},
            {"diffusion": {"tiny_vae": "/nonexistent-review-dir"}},
            {"diffusion": {"size": None}, "face": {"crop_size": 2048}},
            {"diffusion": {"steps": 50}},
            {"diffusion": {"strength": 1.0}},
            {"diffusion": {"prompt": "x" * 5000}},
            {"diffusion": {"seed": 2**80}},
        ):
            probe = Probe(url, "face-avatar-tiny", params=params, video=BarcodeVideoTrack(160, 120, 5))
            with pytest.raises(ProbeError) as refused:
                await probe.connect(http)
            await probe.close(http, delete=False)
            assert refused.value.status == 400 and refused.value.body["error"]["code"] == "bad_params"
            messages.append(refused.value.body["error"]["message"])
        assert "/etc" not in messages[0] and "nonexist" not in messages[1]
        assert messages[0] == messages[1]  # the same answer whether or not the folder exists
        for params in ({"tts": {"engine": "espeak"}}, {"tts": {"threads": 16}}, {"asr": {"beam_size": 8}}):
            probe = Probe(url, "speech-translate", params=params, video=BarcodeVideoTrack(160, 120, 5))
            with pytest.raises(ProbeError) as refused:
                await probe.connect(http)
            await probe.close(http, delete=False)
            assert refused.value.status == 400


async def test_N5_forwarded_for_is_read_from_the_right_and_ipv6_is_limited_per_64() -> None:
    protection = ProtectionSettings(trusted_proxies=["127.0.0.1/32"], requests_per_s=1, requests_burst=3)
    node_settings = ServerSettings(port=0, ice_loopback=True, protection=protection)
    async with running_node(node_settings) as (url, _app), aiohttp.ClientSession() as http:
        statuses = []
        for spoof in range(8):  # the client rotates the leftmost entry; the proxy appended 203.0.113.7
            headers = {"X-Forwarded-For": f"10.0.0.{spoof}, 203.0.113.7"}
            statuses.append(await status_of(http, "GET", f"{url}/v1/pipelines", headers=headers))
        assert statuses[:3] == [200, 200, 200] and statuses.count(429) >= 4
        other = {"X-Forwarded-For": "198.51.100.9"}  # another real client behind the proxy is served
        assert await status_of(http, "GET", f"{url}/v1/pipelines", headers=other) == 200
        v6 = [f"2001:db8:1:2::{n:x}" for n in range(6)]  # one subscriber's /64
        statuses = [await status_of(http, "GET", f"{url}/v1/pipelines", headers={"X-Forwarded-For": a}) for a in v6]
        assert statuses.count(429) >= 2
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"


async def test_N6_a_session_takes_a_bounded_number_of_event_sockets() -> None:
    node_settings = ServerSettings(port=0, ice_loopback=True, max_event_subscribers=2)
    async with running_node(node_settings) as (url, _app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        events = f"{url}/v1/sessions/{probe.report.session_id}/events"
        sockets = [await http.ws_connect(events, headers=probe.session_headers()) for _ in range(2)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(events, headers=probe.session_headers())
        assert refused.value.status == 429
        await sockets[0].close()
        await asyncio.sleep(0.2)
        sockets[0] = await http.ws_connect(events, headers=probe.session_headers())  # a slot came free
        for ws in sockets:
            await ws.close()
        await probe.close(http)


async def many_sections_offer(kind: str, count: int, candidates: int = 0) -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    for _ in range(count):
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    extra = "".join(f"a=candidate:{n} 1 udp 1 10.0.{n // 250}.{n % 250} 9 typ host\r\n" for n in range(candidates))
    return sdp.replace("a=mid:0\r\n", "a=mid:0\r\n" + extra, 1) if candidates else sdp


async def test_N7_a_whep_offer_with_many_video_sections_is_refused() -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        publisher = WhipPublisher(f"{url}/whip/transform")
        await publisher.start(http)
        offer = await many_sections_offer("video", 40)
        headers = {**bearer(publisher.viewer_token), "Content-Type": "application/sdp"}
        async with http.post(f"{url}/whep/{publisher.session_id}", data=offer.encode(), headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_sdp"
        await publisher.stop(http)


async def test_N8_remote_ice_candidates_are_bounded_per_session() -> None:
    node_settings = ServerSettings(port=0, ice_loopback=True, max_ice_candidates=8)
    async with running_node(node_settings) as (url, app), aiohttp.ClientSession() as http:
        offer = await many_sections_offer("video", 1, candidates=40)
        async with http.post(f"{url}/v1/sessions", json={"pipeline": "transform", "sdp": offer}) as response:
            assert response.status == 400 and "candidates" in (await response.json())["error"]["message"]
        publisher = WhipPublisher(f"{url}/whip/transform", trickle=True)
        await publisher.start(http)
        headers = {**bearer(publisher.session_token), "Content-Type": "application/trickle-ice-sdpfrag"}
        lines = "".join(f"a=candidate:{n} 1 udp 1 10.1.0.{n} 9 typ host\r\n" for n in range(20))
        async with http.patch(publisher.resource, data="a=mid:0\r\n" + lines, headers=headers) as response:
            assert response.status == 400 and (await response.json())["error"]["code"] == "too_many_candidates"
        await publisher.stop(http)
        assert not app[SESSIONS].sessions


async def test_N9_whip_state_is_freed_when_a_session_ends_any_way() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        publisher = WhipPublisher(f"{url}/whip/transform")
        await publisher.start(http)
        state = app[STATE]
        assert publisher.session_id in state.ufrags
        # ended through the JSON API, not the WHIP resource
        async with http.delete(f"{url}/v1/sessions/{publisher.session_id}", headers=bearer(publisher.session_token)):
            pass
        assert publisher.session_id not in state.ufrags and publisher.session_id not in state.candidates
        await publisher.stop()


async def test_N10_malformed_input_is_a_4xx_never_a_500() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token=API)
    async with running_node(settings) as (url, _app), aiohttp.ClientSession() as http:
        two_video = await many_sections_offer("video", 2)
        async with http.post(f"{url}/v1/sessions", json={"pipeline": "transform", "sdp": two_video},
                             headers=bearer(API)) as response:  # fmt: skip
            assert response.status == 400
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /v1/pipelines HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n"
                     b"Connection: close\r\n\r\n")  # fmt: skip
        status = int((await reader.readline()).split()[1])
        writer.close()
        assert status == 401


async def test_N11_the_open_endpoints_reveal_no_paths(tmp_path: Path) -> None:
    (tmp_path / "transform.yaml").write_text((ROOT / "pipelines" / "transform.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\nstages: [{type: no-such-stage}]\n")
    settings = ServerSettings(port=0, ice_loopback=True, pipelines_dir=tmp_path)
    async with running_node(settings) as (url, _app), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/pipelines") as response:
            body = await response.json()
        assert body["invalid"] == ["broken.yaml"] and str(tmp_path) not in json.dumps(body)
        for path in ("/healthz", "/metrics"):
            async with http.get(f"{url}{path}") as response:
                assert response.status == 200 and str(tmp_path) not in await response.text()


def test_N12_tokens_stay_out_of_urls_reprs_and_error_messages(tmp_path: Path) -> None:
    secret = "n12-fleet-secret-0123456789"
    assert secret not in repr(FleetConfig(node_secret=secret, admin_token=secret + "a"))
    assert secret not in repr(ServerSettings(node_token=secret, admin_token=secret))
    assert secret not in repr(IceServer(urls=["turn:x"], credential=secret, secret=secret))
    bad = tmp_path / "node.yaml"
    bad.write_text("token: 1234567890123\nmax_sessions: many\n")  # a token of the wrong type, and an error
    done = subprocess.run([sys.executable, "-m", "streamai", "serve", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "max_sessions" in done.stderr and "1234567890123" not in done.stderr


async def test_N12_the_token_in_a_query_string_is_never_accepted() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token=API)
    async with running_node(settings) as (url, _app), aiohttp.ClientSession() as http:
        assert await status_of(http, "GET", f"{url}/v1/pipelines", params={"token": API}) == 401
        assert await status_of(http, "GET", f"{url}/v1/pipelines", headers=bearer(API)) == 200


async def test_N13_cross_site_posts_rebinding_hosts_and_foreign_websockets_are_refused() -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        body = json.dumps({"pipeline": "transform", "sdp": "v=0"})
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            assert await status_of(http, "POST", f"{url}/v1/sessions", data=body,
                                   headers={"Content-Type": content_type}) == 415  # fmt: skip
        assert await status_of(http, "GET", f"{url}/v1/pipelines", headers={"Host": "evil.example"}) == 421
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10))
        await probe.connect(http)
        events = f"{url}/v1/sessions/{probe.report.session_id}/events"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(events, headers={**probe.session_headers(), "Origin": "https://evil.example"})
        assert refused.value.status == 403
        ws = await http.ws_connect(events, headers={**probe.session_headers(), "Origin": url})  # same origin
        await ws.close()
        await probe.close(http)


async def test_N14_whip_answers_carry_only_time_limited_turn_credentials() -> None:
    servers = [
        IceServer(urls=["turn:static.example:3478"], username="user", credential="long-lived-password"),
        IceServer(urls=["turn:rest.example:3478"], secret="shared-with-coturn", ttl_s=600),
    ]
    node_settings = ServerSettings(port=0, ice_loopback=True, ice_servers=servers)
    async with running_node(node_settings) as (url, _app), aiohttp.ClientSession() as http:
        pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{url}/whip/transform", data=pc.localDescription.sdp.encode(),
                             headers={"Content-Type": "application/sdp"}) as response:  # fmt: skip
            links = response.headers.getall("Link")
            token = response.headers["Streamai-Session-Token"]
            resource = response.headers["Location"]
        await pc.close()
        async with http.delete(f"{url}{resource}", headers=bearer(token)):
            pass
    ice = [link for link in links if 'rel="ice-server"' in link]
    assert not any("long-lived-password" in link or "static.example" in link for link in ice)
    rest = next(link for link in ice if "rest.example" in link)
    expiry = int(rest.split('username="', 1)[1].split(":", 1)[0])
    assert 0 < expiry - time.time() <= 600 + 5


async def test_N15_inbound_video_larger_than_the_limit_is_dropped_and_counted() -> None:
    node_settings = ServerSettings(port=0, ice_loopback=True, max_video_pixels=320 * 240)
    async with running_node(node_settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(640, 480, 10))
        await probe.connect(http)
        session = app[SESSIONS].get(probe.report.session_id)
        assert session is not None
        assert await wait_for(lambda: session.inbound.get("video") and session.inbound["video"].oversized >= 5, 15)
        assert session.runner.stats.frames_in.get("video", 0) == 0  # none reached the pipeline
        assert await wait_for(lambda: any(e.get("code") == "video_too_large" for e in probe.report.events), 5)
        await probe.close(http)
