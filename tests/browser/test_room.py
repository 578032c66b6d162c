"""Two headless Chromium participants in one conversation room (real browsers, real models, loopback only).

Browser A speaks English (espeak-ng), browser B Portuguese (espeak-ng -v pt-br); both speak at once, on
a loop. Each must hear the other translated into its own language (checked by transcribing what the
page received with the node's own Whisper), never its own voice, and see both speakers' captions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamai.testing import browser

from .conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
ROOM_DRIVER = ROOT / "tests" / "browser" / "room_driver.mjs"

# A says this in English; B hears "Bom dia, o tempo é muito bom hoje" (Piper's voice reading pt-br)
ENGLISH = "good morning, the weather is very nice today"
HEARD_IN_PORTUGUESE = ("bom dia", "tempo", "muito bom")
# B says this in Portuguese; A hears "I would like a coffee, please" (Piper's English voice)
PORTUGUESE = "eu gostaria de um café, por favor"
HEARD_IN_ENGLISH = ("coffee",)


def bursts(pcm16k: np.ndarray, level: int = 655, gap_s: float = 0.6, pad_s: float = 0.2) -> list[np.ndarray]:
    """The audible stretches of a recording (peaks above ``level``, gaps shorter than ``gap_s`` bridged)."""
    frame = 320  # 20 ms
    loud = [i for i in range(0, len(pcm16k), frame) if np.abs(pcm16k[i : i + frame].astype(np.int32)).max() > level]
    spans: list[list[int]] = []
    for start in loud:
        if spans and start - spans[-1][1] <= gap_s * 16_000:
            spans[-1][1] = start + frame
        else:
            spans.append([start, start + frame])
    pad = int(pad_s * 16_000)
    return [pcm16k[max(0, a - pad) : b + pad] for a, b in spans]


def transcribe(pcm16k: np.ndarray, language: str) -> str:
    """What the node's own Whisper hears in a page's recording (16 kHz int16), each audible stretch on its own
    (a 25 s block decoded whole stopped after its first phrase: "tom dia." for three translated clauses)."""
    from streamai.models.speech import load_whisper
    from streamai.speech.whisper import WhisperDecoder

    model = load_whisper("whisper-tiny-en" if language == "en" else "whisper-base", "cpu", 2)
    decoder = WhisperDecoder(model, language)
    words = []
    for burst in bursts(pcm16k):
        for start in range(0, len(burst), 16_000 * 25):  # 30 s is Whisper's window
            words.append(decoder.decode(burst[start : start + 16_000 * 25].astype(np.float32) / 32768, "", None).text)
    return " ".join(words).lower()


def test_two_browsers_hear_each_other_translated_and_see_both_captions(
    server: browser.ServerProcess, media_dir: Path, tmp_path: Path
) -> None:
    status, body = server.get("/v1/room-pipelines")
    names = [p["name"] for p in body.get("pipelines", [])] if status == 200 else []
    if "conversation-en-pt" not in names:
        pytest.skip(f"room pipeline conversation-en-pt is not served (served: {names}, HTTP {status})")
    english = browser.write_fake_speech(media_dir / "room-en.wav", ENGLISH, "en-us", lead_s=0.5, trail_s=2.5)
    portuguese = browser.write_fake_speech(media_dir / "room-pt.wav", PORTUGUESE, "pt-br", lead_s=1.2, trail_s=2.0)
    out = ARTIFACTS / "browser" / "room"
    out.mkdir(parents=True, exist_ok=True)
    scenario = {
        "base": server.base,
        "adminToken": server.admin_token,
        "pipeline": "conversation-en-pt",
        "outDir": str(out),
        "finalsWanted": 2,
        "a": {"language": "en", "name": "Ann", "args": browser.chromium_args(None, english),
              "userDataDir": str(tmp_path / "a")},
        "b": {"language": "pt", "name": "Bia", "args": browser.chromium_args(None, portuguese),
              "userDataDir": str(tmp_path / "b")},
    }  # fmt: skip
    result = browser.run_driver(server.ns, scenario, timeout=420, driver=ROOM_DRIVER)
    (out / "result.json").write_text(__import__("json").dumps(result, indent=1))
    if not result.get("ok"):
        pytest.fail(
            f"room scenario failed: {result.get('error')}\n--- driver stderr ---\n{result.get('stderr', '')}\n"
            f"--- pages ---\n{result.get('console')}\n--- server log ---\n{server.log_tail()}",
            pytrace=False,
        )
    a, b = result["a"], result["b"]

    # both speakers are in the room, through the join link A's page shared (capabilities in the fragment)
    roster = result["roomWhileJoined"]["participants"]
    assert sorted((p["name"], p["language"], p["role"]) for p in roster) == [
        ("Ann", "en", "speaker"),
        ("Bia", "pt", "speaker"),
    ]
    assert "#room=" in a["joinLink"] and "join=" in a["joinLink"] and "?" not in a["joinLink"].split("#")[0]

    # each page got both speakers' captions, with the speaker's name and language, side by side
    for page in (a, b):
        spoken = {(c["name"], c["language"]) for c in page["captions"] if c["type"] == "transcript" and c["final"]}
        assert {("Ann", "en"), ("Bia", "pt")} <= spoken, spoken
        translated = {(c["name"], c["language"]) for c in page["captions"] if c["type"] == "translation" and c["final"]}
        assert {("Ann", "pt"), ("Bia", "en")} <= translated, translated
        assert sorted((c["name"], c["language"]) for c in page["columns"]) == [("Ann", "en"), ("Bia", "pt")]
        assert not page["errors"], page["errors"]
    heard_a = " ".join(c["text"] for c in a["captions"] if c["type"] == "translation" and c["name"] == "Bia").lower()
    assert "coffee" in heard_a, heard_a
    # the waterfall shows a direction once its figures came in
    assert {row["direction"] for row in a["latency"]} & {"en->pt", "pt->en"}, a["latency"]

    # each hears the other, translated into its own language, and never its own voice
    pcm_a = np.fromfile(out / "a.pcm", dtype="<i2")
    pcm_b = np.fromfile(out / "b.pcm", dtype="<i2")
    assert len(pcm_a) > 16_000 * 4 and len(pcm_b) > 16_000 * 4, result["seconds"]
    words_a, words_b = transcribe(pcm_a, "en"), transcribe(pcm_b, "pt")
    (out / "heard.txt").write_text(f"A (en) heard: {words_a}\nB (pt) heard: {words_b}\n")
    assert any(w in words_a for w in HEARD_IN_ENGLISH), words_a
    assert any(w in words_b for w in HEARD_IN_PORTUGUESE), words_b
    assert "weather" not in words_a and "morning" not in words_a, words_a  # A's own words never come back
    assert "café" not in words_b and "favor" not in words_b, words_b  # nor B's

    # leaving frees both participants
    after = result["roomAfterLeaving"]
    assert after is None or after.get("participants") == [] or after.get("error"), after
