"""Real headless Chromium against a running `streamai serve`: the demo page, the embed page, typed
errors, and (when served) the speech and avatar pipelines. Loopback only (a private network
namespace when possible). Results and screenshots land in test-artifacts/browser/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamai.testing import browser

from .conftest import ARTIFACTS

NUMBER = re.compile(r"^\d+(\.\d+)?$")


def assert_media_flowed(result: dict, min_new_frames: int = 30) -> None:
    first, second = result["rtc"]["first"], result["rtc"]["second"]
    assert second["framesDecoded"] - first["framesDecoded"] >= min_new_frames, result["rtc"]
    assert second["audioPacketsReceived"] > first["audioPacketsReceived"] > 0, result["rtc"]


def test_demo_transform_plays_reports_latency_and_frees_session(drive, server, camera: Path, tone: Path) -> None:
    shot = ARTIFACTS / "browser" / "demo-transform.png"
    result = drive(
        "demo-transform",
        {
            "scenario": "demo",
            "pipeline": "transform",
            "args": browser.chromium_args(camera, tone),
            "screenshot": str(shot),
            "watchMs": 3000,
        },
    )
    assert "transform" in result["pipelines"]
    # one session on the server while connected, and it is ours
    assert [s["id"] for s in result["sessionsWhileConnected"]] == [result["sessionId"]]
    assert result["sessionsWhileConnected"][0]["pipeline"] == "transform"
    # remote video plays: framesDecoded grows, at the camera's size (maintain-resolution), VP8 preferred
    assert_media_flowed(result, min_new_frames=30)
    rtc = result["rtc"]["second"]
    assert (rtc["frameWidth"], rtc["frameHeight"]) == (640, 480), rtc
    assert rtc["sendWidth"] == 640, rtc
    assert rtc["codec"] == "video/VP8", rtc
    assert result["video"]["width"] == 640 and not result["video"]["paused"]
    # events arrive over the data channel
    assert result["counts"].get("latency", 0) > 10, result["counts"]
    assert result["counts"].get("stats", 0) >= 1, result["counts"]
    # the overlay shows numbers, labelled as an estimate
    overlay = result["overlay"]
    assert overlay["visible"]
    assert NUMBER.match(overlay["p50"]) and NUMBER.match(overlay["p95"]) and NUMBER.match(overlay["drops"]), overlay
    assert float(overlay["p95"]) >= float(overlay["p50"]) > 0
    assert "estimated" in overlay["label"].lower()
    metrics = result["metrics"]
    assert metrics["estimate"] is True and metrics["glassToGlass"]["n"] > 0
    assert metrics["missing"] == [], metrics  # every component measured: server, RTT, jitter buffer, encode, decode
    # transform takes no prompt from clients (its allowlist has none), so the page offers no prompt box
    assert result["promptBoxVisible"] is False
    # stopping frees the session on the server
    assert result["stateAfterStop"] == "idle"
    assert result["sessionsAfterStop"] == [], result["sessionsAfterStop"]
    assert not [c for c in result["console"] if c.startswith("pageerror")], result["console"]
    assert result["errorsShown"] == []
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_embed_page_plays_and_errors_are_typed(drive, camera: Path, tone: Path) -> None:
    result = drive(
        "embed-transform",
        {"scenario": "embed", "pipeline": "transform", "args": browser.chromium_args(camera, tone)},
    )
    assert_media_flowed(result, min_new_frames=20)
    unknown = result["errors"]["unknownPipeline"]
    assert unknown["isStreamaiError"] and unknown["status"] == 404, unknown
    assert "no-such-pipeline" in unknown["message"], unknown
    unreachable = result["errors"]["unreachable"]
    assert unreachable["isStreamaiError"] and unreachable["status"] == 0, unreachable
    assert unreachable["code"] in ("network", "timeout"), unreachable
    assert result["sessionsAfterStop"] == []


def test_embed_page_is_under_ten_lines() -> None:
    page = (browser.ROOT / "clients" / "web" / "embed.html").read_text()
    script = page.split('<script type="module">')[1].split("</script>")[0]
    code = [line for line in script.splitlines() if line.strip()]
    assert len(code) < 10, code
    assert "import { connect } from '/js/streamai.js'" in script


def test_speech_translate_shows_captions(drive, served_pipelines: list[str], camera: Path, media_dir: Path) -> None:
    if "speech-translate" not in served_pipelines:
        pytest.skip(f"pipeline speech-translate is not served (served: {', '.join(served_pipelines)})")
    from streamai.testing.speech import SENTENCES

    speech = browser.write_fake_speech(media_dir / "speech.wav", SENTENCES["station"])
    result = drive(
        "demo-speech-translate",
        {
            "scenario": "demo",
            "pipeline": "speech-translate",
            "args": browser.chromium_args(camera, speech),
            "screenshot": str(ARTIFACTS / "browser" / "demo-speech-translate.png"),
            "waitCaptions": 60000,
            "captionWords": ["train", "station", "morning"],
            "watchMs": 1500,
        },
        timeout=200,
    )
    counts = result["counts"]
    assert counts.get("transcript", 0) > 0, f"no transcript events: {counts}"
    assert counts.get("translation", 0) > 0, f"no translation events: {counts}"
    heard = result["captions"]["transcript"].lower()
    assert any(word in heard for word in ("train", "station", "morning")), result["captions"]
    assert result["captions"]["translation"].strip() not in ("", "…", "Translations appear here.")
    assert result["rtc"]["second"]["audioPacketsReceived"] > 0
    assert result["sessionsAfterStop"] == []


def test_avatar_frames_reach_the_page_and_prompts_change_the_face(
    drive, served_pipelines: list[str], media_dir: Path, tone: Path
) -> None:
    """The page samples the received video through a canvas: processed frames arrive (the face box
    differs from the camera's while the background comes back as sent; the node's 320x240 filler is
    excluded by size), and with the tiny model's fixed noise, prompt A, then B, then A again gives
    A's face twice and B's face measurably different."""
    if "face-avatar-tiny" not in served_pipelines:
        pytest.skip(f"pipeline face-avatar-tiny is not served (served: {', '.join(served_pipelines)})")
    face = browser.write_fake_face_camera(media_dir / "face.y4m")  # the face at (160, 80), 320x320
    result = drive(
        "demo-face-avatar-tiny",
        {
            "scenario": "demo",
            "pipeline": "face-avatar-tiny",
            "args": browser.chromium_args(face, tone),
            "screenshot": str(ARTIFACTS / "browser" / "demo-face-avatar-tiny.png"),
            "connectTimeoutMs": 180000,
            "requireOverlay": False,
            "watchMs": 1000,
            "faceCheck": {
                "box": [240, 160, 160, 160],  # inside the face the node restyles
                "outsideBox": [0, 440, 640, 40],  # below it: the camera's own pixels
                "prompts": ["a bronze statue", "a watercolor portrait", "a bronze statue"],
            },
        },
        timeout=400,
    )
    assert result["promptBoxVisible"], "face-avatar-tiny lists the prompt control: the prompt box must show"
    face = result["face"]
    assert face["faceVsInput"] > 8, face  # processed frames, not the camera's, not the filler
    assert face["outsideVsInput"] < 6, face  # and aligned with the input: only the face was changed
    assert [a["prompt"] for a in face["applied"]][-3:] == face["prompts"], face  # each applied by the model
    assert all(a["latencyMs"] and a["latencyMs"] > 0 for a in face["applied"][-3:]), face
    # compared as 16x16-pixel block means: the node's face box may sit a few pixels elsewhere each time
    # (the browser's codec noise reaches the face detector), which moves single pixels, not blocks
    a_vs_b, a_vs_a = face["blockDiffs"][0][1], face["blockDiffs"][0][2]
    assert a_vs_b > 1.5 and a_vs_b > 2 * a_vs_a, face  # the prompt, not codec drift or the box, moved the face
    assert face["blockDiffs"][2][1] > 1.5, face
    assert "Applied" in face["appliedText"] and "bronze" in face["appliedText"], face
    assert result["sessionsAfterStop"] == []
