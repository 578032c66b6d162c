"""Interop: GStreamer's webrtcbin (Debian's packages, not our code) streams into the transform pipeline over WHIP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from streamai.server.app import SESSIONS
from streamai.testing.node import running_node

ROOT = Path(__file__).resolve().parent.parent
SENDER = ROOT / "tests" / "whep" / "gst_whip_send.py"
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = [
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-nice",
    "gir1.2-gst-plugins-bad-1.0",
    "python3-gi",
]


def _gstreamer_ready() -> bool:
    check = "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import GstWebRTC"
    if not (shutil.which("gst-inspect-1.0") and os.path.exists(SYSTEM_PYTHON)):
        return False
    if subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True).returncode != 0:
        return False
    for element in ("webrtcbin", "vp8enc", "opusenc", "nicesrc"):
        if subprocess.run(["gst-inspect-1.0", element], capture_output=True).returncode != 0:
            return False
    return True


def _install() -> str | None:
    """Install Debian's GStreamer WebRTC packages when we can (root); the reason when we cannot."""
    if _gstreamer_ready():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "GStreamer webrtcbin + python3-gi not installed (scripts/setup --browser installs them as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env, timeout=600)
    return None if _gstreamer_ready() else "apt-get could not install GStreamer's webrtcbin packages"


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = _install()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_gstreamer_webrtcbin_streams_into_transform_over_whip(gstreamer: None, codec: str) -> None:
    if codec == "h264" and subprocess.run(["gst-inspect-1.0", "openh264enc"], capture_output=True).returncode:
        pytest.skip("no openh264enc in this GStreamer")
    async with running_node() as (url, app):
        sender = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, str(SENDER), f"{url}/whip/transform", "--seconds", "4", "--loopback", "--codec", codec,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        seen: dict[str, int] = {}
        communicate = asyncio.ensure_future(sender.communicate())
        while not communicate.done():  # watch the session while GStreamer streams
            for session in list(app[SESSIONS].sessions.values()):
                summary = session.summary()
                seen = {
                    "frames_in_video": summary["frames_in_by_kind"].get("video", 0),
                    "frames_in_audio": summary["frames_in_by_kind"].get("audio", 0),
                    "frames_out_video": summary["frames_out_by_kind"].get("video", 0),
                    "frames_out_audio": summary["frames_out_by_kind"].get("audio", 0),
                }
            await asyncio.sleep(0.2)
        out, err = communicate.result()
        lines = out.decode().strip().splitlines()
        assert lines, f"sender printed nothing; stderr:\n{err.decode()[-2000:]}"
        result = json.loads(lines[-1])
        assert "error" not in result, (result, err.decode()[-2000:])
        assert result["post_status"] == 201 and result["offer_candidates"] > 0
        assert "connected" in result["states"]
        # frames from GStreamer went through the pipeline and came out processed
        assert seen["frames_in_video"] > 30 and seen["frames_in_audio"] > 30, seen
        assert seen["frames_out_video"] > 30 and seen["frames_out_audio"] > 30, seen
        # the sender's DELETE freed the session
        assert result["delete_status"] == 200
        assert not app[SESSIONS].sessions
