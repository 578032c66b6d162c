"""``scripts/gpu-check`` end to end on CPU at a small size: the SD-Turbo architecture (narrow
widths) built into a fresh cache, loaded through the project's loader, driven through the
avatar stage; fps, p50/p99, prompt-change latency and the Whisper path are printed and written.
On a GPU machine the same script runs at full size in float16 (no GPU was available here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytestmark = [pytest.mark.models, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_end_to_end_on_cpu_at_a_small_size(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "STREAMAI_WHEELS": str(tmp_path / "no-wheels")}
    command = [str(ROOT / "scripts" / "gpu-check"), "--device", "cpu", "--scale", "small", "--size", "64"]
    command += ["--frames", "4", "--prompts", "2", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    diffusion = result["diffusion"]
    assert diffusion["scale"] == "small" and diffusion["size"] == 64 and diffusion["frames"] == 4
    assert diffusion["fps"] > 0 and 0 < diffusion["latency_ms"]["p50"] <= diffusion["latency_ms"]["p99"]
    prompt = diffusion["prompt_change_ms"]
    assert prompt["applied"] == 2 and prompt["p50"] > 0 and prompt["stage_p50"] > 0  # each prompt reached a frame
    assert (Path(diffusion["folder"]) / "taesd" / "config.json").is_file()
    whisper = result["whisper"]
    assert whisper.get("p50_ms", 0) > 0 or whisper.get("skipped"), whisper
    assert result["device_info"]["device"] == "cpu"
    assert "fps, per frame p50/p99" in done.stdout and "prompt change" in done.stdout, done.stdout
