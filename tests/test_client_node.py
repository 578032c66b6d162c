"""The Python client against a real node on loopback: media both ways, typed events and typed refusals.

Every session is a real aiortc peer through ``streamai.client.connect``; refusals come
from the node's own checks (unknown pipeline, refused params, per-address cap,
capacity), never from a stand-in server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import streamai.client as client
from streamai.client import StreamaiError
from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.media import decode_barcode
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, marker_audio
from streamai.testing.wait import wait_for
from streamai.web.protection import ProtectionSettings

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def settings(**fields: object) -> ServerSettings:
    return ServerSettings(port=0, ice_loopback=True, pipelines_dir=PIPELINES, **fields)  # type: ignore[arg-type]


async def test_video_and_audio_go_through_and_come_back_with_typed_events() -> None:
    async with running_node(settings()) as (url, app):
        camera = BarcodeVideoTrack(320, 240, fps=15)
        async with client.connect(url, pipeline="transform", video=camera, audio=marker_audio(),
                                  ice_loopback=True) as session:  # fmt: skip
            assert session.session_id in app[SESSIONS].sessions and session.node_url == url
            assert session.session_token and session.viewer_token and session.pipeline == "transform"
            assert session.video is not None and session.audio is not None
            inverted = 0
            async for image in session.video.arrays():
                code = decode_barcode(image)
                inverted += int(code is not None and code.inverted)
                if inverted >= 5:
                    break
            loud = 0
            async for samples in session.audio.arrays():
                assert samples.dtype == np.int16
                loud += int(np.abs(samples.astype(np.int32)).max() > 3000)
                if loud >= 3:  # the marker bursts came back
                    break
            seen: dict[type, int] = {}
            async for event in session.events():
                seen[type(event)] = seen.get(type(event), 0) + 1
                if client.StatsEvent in seen and client.LatencyEvent in seen and client.PongEvent in seen:
                    break
            assert seen[client.StateEvent] >= 1, seen
            rtt = await session.ping()
            assert 0 < rtt < 5000 and session.rtt_ms == rtt
            await session.set_params({"no_such_knob": 1})  # refused by the node: an error event, not an exception
            async for event in session.events():
                if isinstance(event, client.ErrorEvent):
                    assert event.code == "bad_params" and not event.fatal and "no_such_knob" in event.message
                    break
            session_id = session.session_id
        # leaving the block DELETEd the session and ended every iterator
        assert session.state == "closed" and session.error is None
        assert await wait_for(lambda: session_id not in app[SESSIONS].sessions, 5)
        leftover = await asyncio.wait_for(_drain(session), 2)  # an ended session's iterator ends at once
        assert all(isinstance(event, client.Event) for event in leftover)
        assert session.video.ended


async def _drain(session: client.Session) -> list[client.Event]:
    return [event async for event in session.events()]


async def test_refusals_are_typed_errors_with_status_code_and_retry_after() -> None:
    async with running_node(settings()) as (url, _app):
        with pytest.raises(StreamaiError) as unknown:
            await client.connect(url, pipeline="no-such-pipeline", ice_loopback=True)
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_pipeline")
        assert unknown.value.retry_after is None and not unknown.value.retryable
        with pytest.raises(StreamaiError) as bad:
            await client.connect(url, pipeline="transform", params={"invert": {"effect": "sparkle"}}, ice_loopback=True)
        assert bad.value.status == 400 and "invert" in bad.value.message and not bad.value.retryable

    # per-address cap: the second concurrent session from 127.0.0.1 is refused with 429 and Retry-After
    capped = settings(max_sessions=4, protection=ProtectionSettings(max_sessions_per_client=1))
    async with running_node(capped) as (url, _app), client.connect(url, pipeline="transform", ice_loopback=True):
        with pytest.raises(StreamaiError) as limited:
            await client.connect(url, pipeline="transform", ice_loopback=True)
        assert (limited.value.status, limited.value.code) == (429, "client_sessions")
        assert limited.value.retry_after == 5 and limited.value.retryable

    # a full node: 503 over_capacity with the node's Retry-After
    full = settings(max_sessions=1, retry_after_s=7, protection=ProtectionSettings(max_sessions_per_client=2))
    async with running_node(full) as (url, _app), client.connect(url, pipeline="transform", ice_loopback=True) as one:
        with pytest.raises(StreamaiError) as busy:
            await client.connect(url, pipeline="transform", ice_loopback=True)
        assert (busy.value.status, busy.value.code, busy.value.retry_after) == (503, "over_capacity", 7)
        assert busy.value.body["error"]["code"] == "over_capacity"

        # the events WebSocket: a wrong token or an unknown session is refused, typed, and never retried
        with pytest.raises(StreamaiError) as forbidden:
            await client.watch_events(url, one.session_id or "", "not-the-token").open()
        assert forbidden.value.status == 403 and not forbidden.value.retryable
        with pytest.raises(StreamaiError) as anonymous:
            await client.watch_events(url, one.session_id or "", None).open()
        assert anonymous.value.status == 401
    with pytest.raises(StreamaiError) as gone:  # the node is gone: a network error, retryable
        await client.connect(url, pipeline="transform", ice_loopback=True, request_timeout=5)
    assert gone.value.status == 0 and gone.value.code == client.ClientCode.NETWORK and gone.value.retryable


async def test_events_websocket_watcher_sees_the_data_channels_events_and_ends_with_the_session() -> None:
    async with running_node(settings()) as (url, _app):
        session = await client.connect(url, pipeline="transform", video=BarcodeVideoTrack(160, 120, 10),
                                       ice_loopback=True, ping_interval=0)  # fmt: skip
        channel: list[dict] = []
        session.on_event(lambda event: channel.append(event.raw()))
        socket: list[dict] = []
        async with session.watch_events() as watcher:

            async def read() -> None:
                async for event in watcher:
                    socket.append(event.raw())

            reader = asyncio.create_task(read())
            assert await wait_for(lambda: sum(e["type"] == "stats" for e in socket) >= 3, 15), socket
            await watcher.send({"type": "ping", "t": 42.0})  # control messages work on the socket too
            assert await wait_for(lambda: any(e["type"] == "pong" and e["t"] == 42.0 for e in socket), 5)
            await session.close()
            await asyncio.wait_for(reader, 10)  # the node closed the socket with its session: the loop ended
        assert watcher.close_reason == "session ended"

    # every bus event (stats, latency, drop, state) that both saw while both were open is the same, in order
    first = next(i for i, e in enumerate(channel) if e["type"] == "stats" and e in socket)
    both = [e for e in channel[first:] if e["type"] in ("stats", "latency", "drop")]
    mirrored = [e for e in socket if e["type"] in ("stats", "latency", "drop")]
    start = mirrored.index(both[0])
    assert mirrored[start : start + len(both)] == both
    assert len(both) >= 10
    assert [e for e in socket if e["type"] == "state"][-1]["state"] == "closed"
