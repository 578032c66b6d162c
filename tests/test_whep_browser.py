"""Real Chromium: three WHEP viewers of one WHIP-ingested transform session, in a loopback-only namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from streamai.testing import browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "whep"
WINDOW_MS = 4000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_three_chromium_viewers_share_one_pipeline_run() -> None:
    reason = browser.ensure_browser_tools(install=True)
    if reason:
        pytest.skip(f"browser test needs: {reason}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.browser_server(ARTIFACTS) as server:
        publisher = subprocess.Popen(
            server.ns.wrap([sys.executable, str(ROOT / "tests/whep/publish.py"), server.base, "--seconds", "60"]),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            line = publisher.stdout.readline() if publisher.stdout else ""
            assert line.startswith("SESSION "), f"publisher said {line!r}\n{server.log_tail()}"
            session, session_token, viewer_token = line.split()[1:4]
            with tempfile.TemporaryDirectory(prefix="streamai-whep-chromium-") as profile:
                scenario = {
                    "base": server.base,
                    "session": session,
                    "sessionToken": session_token,
                    "viewerToken": viewer_token,
                    "viewers": 3,
                    "windowMs": WINDOW_MS,
                    "chromium": browser.chromium_path(),
                    "jsDir": str(browser.JS_DIR),
                    "userDataDir": profile,
                    "args": browser.chromium_args(None, None),
                }
                config = Path(profile) / "scenario.json"
                config.write_text(json.dumps(scenario))
                out = subprocess.run(
                    server.ns.wrap(["node", str(ROOT / "tests/whep/viewers.mjs"), str(config)]),
                    capture_output=True,
                    text=True,
                    timeout=150,
                    cwd=ROOT,
                )
        finally:
            publisher.terminate()
            publisher.wait(10)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"driver printed no result:\n{out.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    (ARTIFACTS / "three-viewers.json").write_text(json.dumps(result, indent=1))
    assert result["ok"], f"{result.get('error')}\n{out.stderr[-3000:]}\n" + "\n".join(result["console"][-20:])

    everyone, paused, closed = (result["windows"][k] for k in ("all", "paused", "closed"))
    # every viewer decodes frames, and keeps decoding while the window runs
    assert result["server_viewers_all"] == 3
    for viewer in everyone:
        assert viewer["fps"] > 5, everyone
        assert viewer["audioPackets"] > 0
    # the pipeline ran once: the invert stage saw each ingested frame once, not once per viewer
    stats = result["session"]["stats"]
    video_in = stats["frames_in"]["video"]
    invert = next(s for s in stats["stages"] if s["name"] == "invert")
    assert 0 < invert["processed"] <= video_in, (invert, video_in)
    assert result["session"]["viewers"] == 2
    # one encode for all viewers: about one encoded frame per frame interval, not three
    encoded = result["whep"]["broadcast"]["encoded"]["video"]
    assert encoded < 45 * result["elapsed_s"], (encoded, result["elapsed_s"])
    # a paused viewer does not slow the others: their frame rate holds and their delay does not grow
    for before, after in zip(everyone[:2], paused[:2], strict=True):
        assert after["fps"] > 0.5 * before["fps"], (everyone, paused)
        if before["jitterMs"] is not None and after["jitterMs"] is not None:
            assert after["jitterMs"] < 2 * before["jitterMs"] + 100, (everyone, paused)
    # closing one viewer leaves the others running
    assert result["server_viewers_after_close"] == 2
    for before, after in zip(everyone[:2], closed, strict=True):
        assert after["framesDecoded"] > before["framesDecoded"]
        assert after["fps"] > 5, closed
