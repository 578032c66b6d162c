"""The real ``streamai`` console script: validate errors are one line naming file, line, stage and field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STREAMAI = Path(sys.executable).with_name("streamai")


def streamai(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(STREAMAI)] if STREAMAI.exists() else [sys.executable, "-m", "streamai"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


CASES = {
    "bad_yaml": (
        "name: broken\nstages:\n  - type: echo\n    params: {gain: [1, 2}\n",
        ["bad_yaml.yaml:4", "invalid YAML"],
    ),
    "unknown_type": (
        "name: x\nstages:\n  - type: passthrough\n  - name: magic\n    type: no-such-stage\n",
        ["unknown_type.yaml:5", "stage 2 'magic' (no-such-stage)", "field type", "unknown stage type 'no-such-stage'"],
    ),
    "missing_param": (
        "name: x\nstages:\n  - name: slow\n    type: delay\n    params: {blocking: true}\n",
        ["missing_param.yaml:", "stage 1 'slow' (delay)", "missing required parameter 'ms'"],
    ),
    "wrong_type": (
        "name: x\nstages:\n  - type: echo\n    params:\n      gain: loud\n",
        ["wrong_type.yaml:5", "stage 1 (echo)", "field params.gain", "valid number"],
    ),
    "wrong_choice": (
        "name: x\nstages:\n  - name: fx\n    type: video-transform\n    params: {effect: sepia}\n",
        ["wrong_choice.yaml:5", "stage 1 'fx' (video-transform)", "field params.effect", "'invert'"],
    ),
    "unknown_field": (
        "name: x\nstages:\n  - type: echo\n    colour: blue\n",
        ["unknown_field.yaml:4", "stage 1 (echo)", "unknown field 'colour'"],
    ),
    "unknown_param": (
        "name: x\nstages:\n  - type: echo\n    params: {gain: 1, volume: 2}\n",
        ["unknown_param.yaml:4", "stage 1 (echo)", "unknown parameter 'volume'"],
    ),
    "bad_queue": (
        "name: x\nstages:\n  - type: echo\n  - type: passthrough\n    queue: lifo\n",
        ["bad_queue.yaml:5", "stage 2 (passthrough)", "field queue"],
    ),
    "branch_field": (
        "name: x\nbranches:\n  audio:\n    - type: echo\n  video:\n    - type: video-transform\n      device: tpu\n",
        ["branch_field.yaml:7", "branch 'video' stage 1 (video-transform)", "field device"],
    ),
    "missing_name": ("stages:\n  - type: echo\n", ["missing_name.yaml:1", "missing required field 'name'"]),
    "no_stages": ("name: x\n", ["no_stages.yaml", "exactly one of 'stages'"]),
    "not_a_mapping": ("- just\n- a list\n", ["not_a_mapping.yaml", "YAML mapping"]),
    "duplicate_names": (
        "name: x\nstages:\n  - {type: echo, name: a}\n  - {type: passthrough, name: a}\n",
        ["duplicate_names.yaml", "unique", "a"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_reports_one_clear_line(tmp_path: Path, case: str) -> None:
    text, expected = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    line = one_error_line(streamai("validate", str(path)))
    assert line.startswith("error: ")
    for fragment in expected:
        assert fragment in line, (fragment, line)


def test_validate_missing_file(tmp_path: Path) -> None:
    line = one_error_line(streamai("validate", str(tmp_path / "nowhere.yaml")))
    assert "nowhere.yaml" in line and "cannot read" in line


def test_validate_good_files(root: Path) -> None:
    result = streamai("validate", *(str(p) for p in sorted((root / "pipelines").glob("*.yaml"))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(list((root / "pipelines").glob("*.yaml")))


def test_validate_mixed_files_fails_and_names_only_the_bad_one(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - type: nope\n")
    result = streamai("validate", str(root / "pipelines" / "transform.yaml"), str(bad))
    assert result.returncode == 1
    assert "ok: " in result.stdout and "transform.yaml" in result.stdout
    assert one_error_line(result).startswith(f"error: {bad}:3")


def test_pipelines_lists_the_folder(root: Path) -> None:
    result = streamai("pipelines", cwd=root)
    assert result.returncode == 0, result.stderr
    for name in ("passthrough", "transform"):
        assert any(line.startswith("ok") and f" {name} " in line for line in result.stdout.splitlines())


def test_pipelines_reports_a_bad_file_and_fails(tmp_path: Path, root: Path) -> None:
    (tmp_path / "good.yaml").write_text((root / "pipelines" / "transform.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("name: bad\nstages:\n  - type: echo\n    params: {gain: -1}\n")
    result = streamai("pipelines", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert " transform " in result.stdout
    assert "bad.yaml:4" in result.stderr and "gain" in result.stderr


def test_module_entry_point_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamai", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "validate" in result.stdout


def test_run_reports_bad_inputs_in_one_line(tmp_path: Path, root: Path) -> None:
    pipeline = str(root / "pipelines" / "transform.yaml")
    line = one_error_line(streamai("run", pipeline, "--input", str(tmp_path / "none.wav"), "--output", "o.wav"))
    assert "none.wav" in line and "cannot read" in line
    (tmp_path / "x.txt").write_text("hello")
    line = one_error_line(streamai("run", pipeline, "--input", str(tmp_path / "x.txt"), "--output", "o.wav"))
    assert "not a wav or y4m" in line
    line = one_error_line(streamai("run", pipeline, "--input", str(tmp_path / "x.txt"), "--output", "o.mp4"))
    assert "o.mp4" in line and ".wav" in line
    line = one_error_line(streamai("run", pipeline, "--input", "x.wav", "--params", "{bad"))
    assert "--params" in line
