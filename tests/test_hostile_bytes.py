"""Bytes a browser would never send, sent over raw sockets to a real node and a real router:
NUL and lone surrogates in paths, non-UTF-8 header bytes in credentials, escaped surrogates
in JSON, repeated media sections. Every answer is a clear 4xx JSON error, never a 500."""

from __future__ import annotations

import asyncio
import json

from aiortc import RTCPeerConnection

from streamai.fleet.config import FleetConfig
from streamai.fleet.router import create_router_app
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_app, running_node
from streamai.transport.ice import rtc_configuration


async def raw_request(base: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, no blank line) and ``body`` as they are; status and body back."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = b"\r\nHost: " + f"{host}:{port}".encode() + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    writer.write(head + headers % len(body) + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def json_error(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["message"], error
    return str(error["code"])


async def test_paths_with_nul_or_surrogates_reach_no_file_and_get_404() -> None:
    async with running_node() as (base, _app):
        for path in (b"/js/%00", b"/js/lib/%00.js", b"/js/lib/x%00/../../streamai.js", b"/js/%ED%A0%80", b"/web/%00"):
            status, _ = await raw_request(base, b"GET " + path + b" HTTP/1.1")
            assert status == 404, path
        status, body = await raw_request(base, b"GET /js/streamai.js HTTP/1.1")
        assert status == 200 and b"export" in body  # the published client itself still loads


async def test_non_utf8_bearer_bytes_are_a_wrong_token_on_node_and_router() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, token="right-token")
    async with running_node(settings) as (base, _app):
        for token in (b"\xff", b"\xed\xa0\x80", b"right-token\xff"):  # (a NUL byte: aiohttp's parser refuses it)
            status, body = await raw_request(base, b"GET /v1/pipelines HTTP/1.1\r\nAuthorization: Bearer " + token)
            assert status == 401 and json_error(body) == "unauthorized", token
        status, _ = await raw_request(base, b"GET /v1/pipelines HTTP/1.1\r\nAuthorization: Bearer right-token")
        assert status == 200
    async with running_app(create_router_app(FleetConfig(node_secret="node-secret-0123456789"))) as (router, _app):
        for token in (b"\xff", b"node-secret-0123456789\xff"):
            head = b"POST /v1/nodes/n1/heartbeat HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            status, body = await raw_request(router, head + token, b"{}")
            assert status == 401 and json_error(body) == "unauthorized", token


async def test_escaped_lone_surrogates_in_json_get_a_json_4xx() -> None:
    async with running_node() as (base, app):
        for body in (
            b'{"pipeline": "tr\\ud800", "sdp": "v=0"}',
            b'{"pipeline": "transform", "sdp": "v=0\\r\\nm=audio \\udcff"}',
            b'{"pipeline": "transform", "sdp": "v=0", "params": {"\\ud800": 1}}',
        ):
            head = b"POST /v1/sessions HTTP/1.1\r\nContent-Type: application/json"
            status, answer = await raw_request(base, head, body)
            assert 400 <= status < 500, (body, answer)
            json_error(answer)
        assert not app[SESSIONS].sessions


async def two_video_sections_offer() -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video")
    pc.addTransceiver("video")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_an_offer_with_two_video_sections_is_a_400_not_a_500() -> None:
    offer = await two_video_sections_offer()
    async with running_node() as (base, app):
        body = json.dumps({"pipeline": "transform", "sdp": offer}).encode()
        status, answer = await raw_request(base, b"POST /v1/sessions HTTP/1.1\r\nContent-Type: application/json", body)
        assert status == 400 and json_error(answer) == "bad_sdp", answer
        assert b"video" in answer
        status, answer = await raw_request(
            base, b"POST /whip/transform HTTP/1.1\r\nContent-Type: application/sdp", offer.encode()
        )
        assert status == 400 and json_error(answer) == "bad_sdp", answer
        assert not app[SESSIONS].sessions and app[SESSIONS].pending == 0


async def test_an_offer_whose_sections_repeat_a_mid_is_a_400_not_a_500() -> None:
    """Found by the SDP mutation fuzz: aiortc parses it, then refuses its own answer (ValueError)."""
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.replace("a=mid:1", "a=mid:0")
    await pc.close()
    async with running_node() as (base, app):
        body = json.dumps({"pipeline": "transform", "sdp": offer}).encode()
        head = b"POST /v1/sessions HTTP/1.1\r\nContent-Type: application/json"
        status, answer = await raw_request(base, head, body)
        assert status == 400 and json_error(answer) == "bad_sdp", answer
        assert not app[SESSIONS].sessions and app[SESSIONS].pending == 0
