"""The face-avatar chain through WebRTC with the tiny generated model: a face in the camera
comes back restyled, nothing older than the budget is delivered, the slow model drops frames."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from streamai.frames import now
from streamai.server.app import SESSIONS
from streamai.testing.face_camera import FaceCameraTrack
from streamai.testing.node import running_node
from streamai.testing.peer import Probe

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.models, pytest.mark.slow]


async def test_avatar_over_webrtc_with_tiny_generated_model_is_never_late() -> None:
    camera = FaceCameraTrack()
    async with running_node() as (url, app), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(300)) as http:
        probe = Probe(url, "face-avatar-tiny", video=camera)
        await probe.connect(http)  # the first session builds and loads the tiny model
        session = app[SESSIONS].sessions[probe.report.session_id]
        deadline = now() + 60
        while now() < deadline and (probe.report.video_decoded_barcodes < 20 or now() - camera._start < 6):
            await asyncio.sleep(0.25)
        stats = session.runner.stats
        budget = session.config.budget_ms / 1000
        delivered_max = max(stats.end_to_end.recent, default=0.0)
        sent_max = max(session.video_out.counters.latency.recent, default=0.0)
        diffusion_drops = dict(stats.stages["diffusion"].drops)
        processed = stats.stages["diffusion"].processed
        frames_in = stats.frames_in["video"]
        last = probe.report.last_video
        await probe.close(http)

    summary = probe.report.summary()
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "webrtc-avatar.json").write_text(
        json.dumps(
            {"peer": summary, "diffusion_drops": diffusion_drops, "processed": processed, "frames_in": frames_in},
            indent=2,
        )
    )
    if last is not None:
        Image.fromarray(last).save(ROOT / "test-artifacts" / "webrtc-avatar-last-frame.png")
    print("avatar over WebRTC:", json.dumps(summary["video"]), "diffusion drops", diffusion_drops)
    assert processed > 0 and probe.report.video_decoded_barcodes > 0, "no restyled frame came back"
    # nothing older than the budget left the engine, nor the outbound track
    assert delivered_max <= budget
    assert sent_max <= budget + 0.05
    # the model is slower than a 30 fps camera: the diffusion stage drops, it does not queue
    assert sum(diffusion_drops.values()) > 0
    assert processed < frames_in
    # the face region came back changed (restyled), the barcode band outside it unchanged
    assert last is not None
    face_in = camera.canvas[180:360, 230:410].astype(np.float32)
    face_out = last[180:360, 230:410].astype(np.float32)
    assert np.abs(face_in - face_out).mean() > 8
