"""Security basics: the bearer token never reaches the logs, CORS answers only configured origins,
the node binds 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import psutil
import pytest
from aiohttp import web

from streamai.server.access_log import RedactingAccessLogger
from streamai.server.app import create_app
from streamai.server.settings import ServerSettings
from streamai.testing.node import free_port as _free_port
from streamai.testing.peer import BarcodeVideoTrack, Probe

TOKEN = "tok-9f8e7d6c5b4a-never-log-me"
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def logged_node(settings: ServerSettings) -> AsyncIterator[str]:
    """A node served the way ``streamai serve`` serves it: with aiohttp's access log on (masked)."""
    runner = web.AppRunner(create_app(settings), access_log_class=RedactingAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_bearer_token_never_appears_in_log_output(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ServerSettings(port=0, ice_loopback=True, token=TOKEN)
    async with logged_node(settings) as url, aiohttp.ClientSession() as http:
        good = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/v1/pipelines", headers={"Authorization": f"Bearer {TOKEN}x"}) as response:
            assert response.status == 401
        async with http.get(f"{url}/v1/pipelines", params={"token": TOKEN}) as response:
            assert response.status == 401  # a token in the URL is never accepted (it would land in logs)
        probe = Probe(url, "transform", video=BarcodeVideoTrack(160, 120, 10), token=TOKEN)
        await probe.connect(http)
        protocols = ("streamai.v1", f"streamai.bearer.{probe.session_token}")  # how a browser sends it
        events = f"{url}/v1/sessions/{probe.report.session_id}/events"
        async with http.ws_connect(events, protocols=protocols) as ws:
            assert ws.protocol == "streamai.v1"  # the answer never echoes the token
            await ws.send_str("not json")
            await ws.send_json({"type": "ping", "t": 1})
            for _ in range(10):
                if (await ws.receive_json(timeout=5)).get("type") == "pong":
                    break
        async with http.post(f"{url}/v1/sessions", data=b"{broken", headers={**good, **JSON}) as response:
            assert response.status == 400
        await asyncio.sleep(0.3)
        await probe.close(http)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "aiohttp.access" in {r.name for r in caplog.records}  # the access log really was on
    assert TOKEN not in text
    assert TOKEN[:-1] not in text  # nor a wrong guess at it
    assert probe.session_token is not None and probe.session_token not in text


def test_settings_repr_hides_the_token() -> None:
    assert TOKEN not in repr(ServerSettings(token=TOKEN))
    assert TOKEN not in str(ServerSettings(token=TOKEN))


async def test_cors_answers_only_configured_origins() -> None:
    allowed = "https://app.example"
    settings = ServerSettings(port=0, ice_loopback=True, cors_origins=[allowed])
    async with logged_node(settings) as url, aiohttp.ClientSession() as http:
        for origin, expected in ((allowed, allowed), ("https://evil.example", None), ("null", None)):
            async with http.get(f"{url}/v1/pipelines", headers={"Origin": origin}) as response:
                assert response.headers.get("Access-Control-Allow-Origin") == expected
            preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
            async with http.options(f"{url}/v1/sessions", headers=preflight) as response:
                assert response.headers.get("Access-Control-Allow-Origin") == expected
                assert (response.status == 204) == (expected is not None)
    async with (
        logged_node(ServerSettings(port=0)) as url,  # default: no origin at all
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/pipelines", headers={"Origin": allowed}) as response,
    ):
        assert "Access-Control-Allow-Origin" not in response.headers


def test_streamai_serve_binds_loopback_by_default_and_keeps_the_token_out_of_its_output() -> None:
    port = _free_port()
    env = {**os.environ, "STREAMAI_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamai", "-vv", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        listening: list[str] = []
        for _ in range(150):
            if process.poll() is not None:
                break
            listening = [
                c.laddr.ip
                for c in psutil.Process(process.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            if listening:
                break
            time.sleep(0.2)
        assert listening == ["127.0.0.1"]

        async def traffic() -> None:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}"
                async with http.get(f"{url}/v1/pipelines", params={"token": TOKEN}) as response:
                    assert response.status == 401
                async with http.get(f"{url}/v1/pipelines", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    assert response.status == 200
                async with http.get(f"{url}/v1/pipelines", headers={"Authorization": "Bearer nope"}) as response:
                    assert response.status == 401

        asyncio.run(traffic())
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    assert b"streamai node on http://127.0.0.1:" in output
    assert TOKEN.encode() not in output
