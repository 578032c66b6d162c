"""The model catalog: listed with size and license, referenced by id or path, loaded once per node."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamai.config import PipelineError, load_pipeline, parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner, PipelineStartError
from streamai.models import SharedModels
from streamai.models.catalog import Catalog, catalog_markdown
from streamai.stage import StageRegistry

ROOT = Path(__file__).resolve().parent.parent


def test_streamai_models_lists_every_entry_with_size_and_license() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamai", "models"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    catalog = Catalog()
    assert len(catalog.entries) >= 10
    for entry in catalog.entries.values():
        line = next(line for line in done.stdout.splitlines() if line.split()[0] == entry.id)
        assert entry.license.split()[0] in line
        if entry.size_mb is not None:
            assert f"{entry.size_mb:g} MB" in line
        status = line[len(entry.id) :].split()[1:3]  # after the id and the task: one or two words
        expected = "your folder" if entry.package is None else "installed" if entry.installed() else "not installed"
        assert " ".join(status[: len(expected.split())]) == expected, (line, expected)


def test_readme_models_section_matches_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert catalog_markdown(Catalog()) in readme, "regenerate the README's Models table from the catalog"


def test_unknown_model_id_fails_validation_naming_id_and_catalog(registry: StageRegistry) -> None:
    text = "name: x\nstages:\n  - {type: asr, model: whisper-gigantic}\n"
    with pytest.raises(PipelineError) as raised:
        parse_pipeline(text, "x.yaml", registry)
    message = str(raised.value)
    assert "x.yaml:3" in message and "whisper-gigantic" in message and "catalog" in message
    assert "field model" in message


def test_local_path_that_is_not_a_model_folder_fails_clearly(registry: StageRegistry, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    text = f"name: x\nstages:\n  - {{type: asr, model: {empty}}}\n"
    runner = PipelineRunner(parse_pipeline(text, "x.yaml", registry), registry, CollectingSink())
    with pytest.raises(PipelineStartError) as raised:
        asyncio.run(runner.start())
    assert str(empty) in str(raised.value)


@pytest.mark.models
async def test_two_sessions_of_the_speech_pipeline_load_each_shared_model_once(registry: StageRegistry) -> None:
    config = load_pipeline(ROOT / "pipelines" / "speech-translate.yaml", registry)
    shared = SharedModels()
    runners = [PipelineRunner(config, registry, CollectingSink(), resources=shared) for _ in range(2)]
    await asyncio.gather(*(r.start() for r in runners))
    try:
        shareable = [key for key in shared.loads if not key.startswith("silero-vad:")]
        assert any(k.startswith("whisper") or "whisper" in k for k in shareable), shared.loads
        assert len(shareable) >= 3  # asr, mt, tts
        # loaded once for both sessions; the second session only took references (the ASR stage holds its
        # Whisper twice: the decoder and the node-wide decode gate, one load)
        users = {key: info["users"] for key, info in shared.loaded().items() if key in shareable}
        for key in shareable:
            assert shared.loads[key] == 1, key
            assert shared.hits[key] == users[key] - 1 and users[key] % 2 == 0, (key, users[key])
    finally:
        await asyncio.gather(*(r.stop() for r in runners))
    assert shared.loaded() == {}  # the last session freed every model


@pytest.mark.models
def test_models_check_loads_a_model_and_runs_it(tmp_path: Path) -> None:
    """``streamai models check ID`` loads the installed package's weights and runs one inference."""

    def check(model: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "streamai", "models", "check", model, "--json"],
            capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    whisper = check("whisper-tiny-en")
    assert whisper["model"] == "whisper-tiny-en" and whisper["load_s"] > 0
    assert "good morning" in whisper["detail"].lower(), whisper  # said 'good morning', heard it back
    translate = check("mt-en-pt")
    assert "bom dia" in translate["detail"].lower() or "estação" in translate["detail"].lower(), translate


def test_models_check_explains_what_is_missing() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamai", "models", "check", *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        )  # fmt: skip

    folder_only = run("sd-turbo")
    assert folder_only.returncode == 1 and "sd-turbo" in folder_only.stderr and "folder" in folder_only.stderr
    unknown = run("whisper-gigantic")
    assert unknown.returncode != 0 and "whisper-gigantic" in unknown.stderr
    missing_id = run()
    assert missing_id.returncode == 2 and "catalog id" in missing_id.stderr
