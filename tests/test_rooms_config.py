"""Room pipelines in YAML: the shipped one validates; every mistake is one line naming file, place and field."""

from __future__ import annotations

import pytest
import yaml
from rooms_support import tone_room

from streamai.config import PipelineError
from streamai.rooms.config import load_room_pipeline, parse_room_pipeline
from streamai.stage import StageRegistry


def parse(room: dict, registry: StageRegistry) -> object:
    return parse_room_pipeline(yaml.safe_dump(room, sort_keys=False), "room.yaml", registry)


def error_of(room: dict, registry: StageRegistry) -> str:
    with pytest.raises(PipelineError) as caught:
        parse(room, registry)
    return str(caught.value)


def test_the_shipped_conversation_room_validates_and_fills_languages(root, registry) -> None:
    config = load_room_pipeline(root / "pipelines" / "rooms" / "conversation-en-pt.yaml", registry)
    assert config.languages == ["en", "pt"] and sorted(config.pairs) == ["en->pt", "pt->en"]
    hear_pt = config.hear_pipeline("pt", registry)
    assert hear_pt.stages[1].model == "whisper-base" and hear_pt.stages[1].params["language"] == "pt"
    assert "language" not in hear_pt.stages[0].params  # vad has no language param: nothing is added
    say = config.pair_pipeline("en", "pt", registry)
    assert say.stages[0].params["source"] == "en" and say.stages[0].params["target"] == "pt"
    assert say.stages[1].params["language"] == "pt" and say.stages[1].params["barge_in"] is False
    assert config.pair_budget_s("pt", "en") == config.budget_ms / 1000


def test_an_undeclared_pair_is_an_error_naming_it(registry) -> None:
    room = tone_room(languages=["en", "pt", "es"])
    room["hear"]["es"] = {"stages": [{"type": "passthrough"}]}
    message = error_of(room, registry)
    assert "unsupported pair en->es, pt->es, es->en, es->pt" in message and "declared: en->pt, pt->en" in message
    assert message.startswith("room.yaml:")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["pairs"].update({"en->fr": r["pairs"]["en->pt"]}), "pair en->fr is not a pair of en, pt"),
        (lambda r: r["hear"].pop("pt"), "no 'hear' chain for language pt"),
        (lambda r: r.update(languages=["en", "en"]), "languages repeated: en"),
        (lambda r: r.update(languages=["english", "pt"]), "'english' is not a language code"),
        (lambda r: r["pairs"]["en->pt"]["stages"][0].update(type="nope"), "pair 'en->pt' stage 1 (nope), field type"),
        (
            lambda r: r["pairs"]["pt->en"]["stages"][0]["params"].update(frequency_hz=-1),
            "pair 'pt->en' stage 1 (tone), field params.frequency_hz",
        ),
        (lambda r: r["hear"]["en"].update(budget_ms=0), "field hear.en.budget_ms"),
        (lambda r: r.update(client_params={"tone0": ["frequency_hz"], "vad": ["silence_ms"]}), "no stage named 'vad'"),
    ],
)
def test_mistakes_name_the_place(registry, change, expected) -> None:
    room = tone_room()
    change(room)
    assert expected in error_of(room, registry)


def test_language_params_and_models_must_fit_the_chain(registry) -> None:
    room = tone_room()
    room["pairs"]["en->pt"]["stages"] = [{"type": "translate", "params": {"target": "en"}}]
    message = error_of(room, registry)
    assert "pair 'en->pt' stage 1 (translate), field params.target: is 'en', but this chain's target is 'pt'" in message
    room = tone_room()
    room["hear"]["pt"]["stages"] = [{"type": "asr", "model": "whisper-tiny-en"}]
    assert "model 'whisper-tiny-en' hears only en, not 'pt'" in error_of(room, registry)
    room = tone_room()
    room["pairs"]["pt->en"]["stages"] = [{"type": "translate", "model": "mt-en-pt"}]
    assert "model 'mt-en-pt' translates en-pt, not pt->en" in error_of(room, registry)
    room = tone_room(client_params={"tts": ["language"]})
    room["pairs"]["en->pt"]["stages"] = [{"name": "tts", "type": "tts"}]
    assert "'language' is set by the room" in error_of(room, registry)


def test_alias_bombs_and_non_mappings_are_refused(registry) -> None:
    with pytest.raises(PipelineError, match="a room pipeline must be a YAML mapping"):
        parse_room_pipeline("- 1\n", "room.yaml", registry)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5)
    )
    with pytest.raises(PipelineError, match="alias bomb"):
        parse_room_pipeline(bomb, "room.yaml", registry)


def test_streamai_validate_and_pipelines_know_room_pipelines(tmp_path, root) -> None:
    import subprocess
    import sys

    def streamai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamai", *args], capture_output=True, text=True, timeout=60,
                              cwd=root, check=False)  # fmt: skip

    good = streamai("validate", "pipelines/rooms/conversation-en-pt.yaml")
    assert good.returncode == 0 and "room pipeline 'conversation-en-pt', pairs en->pt, pt->en" in good.stdout
    bad = tmp_path / "room.yaml"
    room = tone_room()
    del room["pairs"]["pt->en"]
    bad.write_text(yaml.safe_dump(room, sort_keys=False))
    refused = streamai("validate", str(bad))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "unsupported pair pt->en" in lines[0], refused.stderr
    listed = streamai("pipelines")
    assert listed.returncode == 0 and any("conversation-en-pt" in line and "room" in line
                                          for line in listed.stdout.splitlines())  # fmt: skip
