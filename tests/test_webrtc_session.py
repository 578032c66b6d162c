"""A real aiortc peer against a real node on loopback: media round trip, events, lifecycle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.node import running_node
from streamai.testing.peer import BarcodeVideoTrack, Probe, ProbeReport, marker_audio, run_probe
from streamai.testing.wait import wait_for
from streamai.testing.wait import wait_for as wait_until

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


async def test_python_peer_round_trip_through_transform_pipeline() -> None:
    async with running_node() as (url, app):

        def enough(report: ProbeReport) -> bool:
            return report.video_decoded_barcodes > 30 and report.audio_frames > 50 and bool(report.audio_latency_ms)

        report = await run_probe(url, "transform", seconds=4.0, until=enough)
        summary = report.summary()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "webrtc-probe.json").write_text(json.dumps(summary, indent=2))
        print("probe:", json.dumps(summary))
        # video came back, transformed: the barcode reads, and reads inverted
        assert report.video_frames > 30
        assert report.video_decoded_barcodes > 30
        assert report.video_inverted >= 0.95 * report.video_decoded_barcodes
        # audio came back with the marker bursts' energy in it
        assert report.audio_frames > 50
        assert report.audio_rms > 300
        assert report.audio_latency_ms, "no marker burst came back"
        # events arrived on the data channel
        kinds = {e["type"] for e in report.events}
        assert {"latency", "stats", "pong"} <= kinds
        # glass-to-glass on the peer's clock is reported; the node and this peer share one loaded
        # process here, so it is bounded only against unbounded queueing. What the node promises holds
        # on any machine: nothing it sent was older than the 500 ms budget.
        p50 = summary["video"]["latency_p50_ms"]
        assert p50 is not None and p50 < 15_000
        await wait_until(lambda: not app[SESSIONS].sessions, 5)
        assert not app[SESSIONS].sessions
        node_side = app[SESSIONS].history.with_live([])["transform"].video_latency
        assert node_side.count > 0 and max(node_side.recent) <= 0.5 + 0.05


async def test_session_api_lists_for_the_admin_and_deletes_with_the_session_token() -> None:
    admin = {"Authorization": "Bearer admin-secret"}
    settings = ServerSettings(port=0, ice_loopback=True, admin_token="admin-secret")
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await probe.connect(http)
        assert await wait_for(lambda: probe.report.video_frames > 0, 10)
        async with http.get(f"{url}/v1/sessions", headers=admin) as response:
            sessions = (await response.json())["sessions"]
        assert [s["id"] for s in sessions] == [probe.report.session_id]
        assert sessions[0]["pipeline"] == "transform"
        assert sessions[0]["frames_in"] > 0 and sessions[0]["frames_out"] > 0
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        assert "streamai_sessions 1.0" in text
        assert 'streamai_frames_in_total{kind="video",pipeline="transform"}' in text
        assert "streamai_stage_service_seconds_bucket" in text
        session_url = f"{url}/v1/sessions/{probe.report.session_id}"
        async with http.delete(session_url, headers={"Authorization": "Bearer someone-else"}) as response:
            assert response.status == 403
        async with http.delete(session_url, headers=probe.session_headers()) as response:
            assert response.status == 200
        async with http.delete(session_url, headers=probe.session_headers()) as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "session_ended"
        assert not app[SESSIONS].sessions
        await probe.close(http, delete=False)


async def test_peer_closing_without_delete_frees_session() -> None:
    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await probe.connect(http)
        await asyncio.sleep(0.5)
        assert len(app[SESSIONS].sessions) == 1
        await probe.close(http, delete=False)  # the peer closes; nobody calls DELETE
        assert await wait_until(lambda: not app[SESSIONS].sessions, 5.0)


async def test_peer_vanishing_frees_session_within_media_timeout() -> None:
    settings = ServerSettings(port=0, ice_loopback=True, media_timeout_s=2.0)
    async with running_node(settings) as (url, app), aiohttp.ClientSession() as http:
        video = BarcodeVideoTrack()
        audio = marker_audio()
        probe = Probe(url, "transform", video=video, audio=audio)
        await probe.connect(http)
        await asyncio.sleep(0.5)
        session = next(iter(app[SESSIONS].sessions.values()))
        # the peer goes silent without closing anything (a killed tab, a pulled cable)
        for sender in probe.pc.getSenders():  # type: ignore[union-attr]
            await sender.stop()
        assert await wait_until(lambda: not app[SESSIONS].sessions, 2.0 + 5.0)
        assert session.close_reason is not None and "no media" in session.close_reason
        await probe.close(http, delete=False)


async def test_events_websocket_streams_events_and_takes_control() -> None:
    async with running_node() as (url, _app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await probe.connect(http)
        events = f"{url}/v1/sessions/{probe.report.session_id}/events"
        async with http.ws_connect(events, headers=probe.session_headers()) as ws:
            await ws.send_str(json.dumps({"type": "ping", "t": 1.0}))
            await ws.send_str("{not json")
            await ws.send_str(json.dumps({"type": "prompt", "text": "a bronze statue"}))  # transform takes none
            seen: dict[str, list[dict]] = {}
            async with asyncio.timeout(10):
                while not ({"pong", "latency"} <= set(seen) and len(seen.get("error", [])) >= 2):
                    message = await ws.receive()
                    event = json.loads(message.data)
                    seen.setdefault(event["type"], []).append(event)
        assert seen["pong"][0]["t"] == 1.0
        assert [e["code"] for e in seen["error"][:2]] == ["bad_json", "bad_message"]
        assert "no prompt" in seen["error"][1]["message"]
        assert "prompt" not in seen  # refused before any stage saw it
        await probe.close(http)


async def test_finished_sessions_stay_counted_in_metrics_and_are_let_go() -> None:
    import gc
    import re
    import weakref

    def frames_in(text: str) -> int:
        found = re.search(r'streamai_frames_in_total\{kind="video",pipeline="transform"\} (\d+)(\.0)?', text)
        return int(found.group(1)) if found else 0

    async with running_node() as (url, app), aiohttp.ClientSession() as http:
        probe = Probe(url, "transform", video=BarcodeVideoTrack(), audio=marker_audio())
        await probe.connect(http)
        await asyncio.sleep(1.0)
        session_ref = weakref.ref(app[SESSIONS].sessions[probe.report.session_id])
        async with http.get(f"{url}/metrics") as response:
            during = frames_in(await response.text())
        await probe.close(http)
        await wait_until(lambda: not app[SESSIONS].sessions, 5)
        async with http.get(f"{url}/metrics") as response:
            after = frames_in(await response.text())
        assert during > 0 and after >= during  # a counter never goes back when its session ends
        assert app[SESSIONS].history.recent[-1].id == probe.report.session_id
        for _ in range(20):  # aiortc lets go of its last references within a moment
            gc.collect()
            if session_ref() is None:
                break
            await asyncio.sleep(0.1)
        assert session_ref() is None, "a finished session is still referenced"
