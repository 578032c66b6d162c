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


def test_avatar_prompt_is_echoed(drive, served_pipelines: list[str], media_dir: Path, tone: Path) -> None:
    if "face-avatar-tiny" not in served_pipelines:
        pytest.skip(f"pipeline face-avatar-tiny is not served (served: {', '.join(served_pipelines)})")
    face = browser.write_fake_face_camera(media_dir / "face.y4m")
    result = drive(
        "demo-face-avatar-tiny",
        {
            "scenario": "demo",
            "pipeline": "face-avatar-tiny",
            "args": browser.chromium_args(face, tone),
            "screenshot": str(ARTIFACTS / "browser" / "demo-face-avatar-tiny.png"),
            "prompt": "a watercolor portrait",
            "connectTimeoutMs": 180000,
            "requireOverlay": False,  # the tiny model may drop every frame on 2 cores: no latency samples
            "watchMs": 3000,
        },
        timeout=300,
    )
    assert result["promptBoxVisible"], "face-avatar-tiny lists the prompt control: the prompt box must show"
    assert result["promptVia"] == "prompt box"
    assert result["promptEchoed"], result
    assert "watercolor" in result["promptEchoText"]
    assert_media_flowed(result, min_new_frames=10)
    assert result["sessionsAfterStop"] == []
