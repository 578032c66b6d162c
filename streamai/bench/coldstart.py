"""Cold start per catalog model: package import + load + first inference, each in a fresh process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from ..models.catalog import Catalog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated catalog ids (default: every installed one)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh-process runs per model")


def _one(model: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "streamai", "models", "check", model, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"model": model, "error": done.stderr.strip().splitlines()[-1:] or ["failed"], "wall_s": wall}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 3)  # includes Python start and the streamai CLI import
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    catalog = Catalog()
    if args.models:
        ids = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        ids = [e.id for e in catalog.entries.values() if e.installed()]
    runs = [_one(model) for model in ids for _ in range(args.repeat)]
    lines = []
    for run in runs:
        if "error" in run:
            lines.append(f"{run['model']:<20} error: {run['error'][0]}")
        else:
            lines.append(
                f"{run['model']:<20} cold start {run['cold_start_s']:.2f} s (import {run['import_s']:.2f}, "
                f"load {run['load_s']:.2f}, first inference {run['first_inference_s']:.3f}); "
                f"process wall {run['process_wall_s']:.2f} s"
            )
    return {"summary": "cold start per model, fresh process each:\n  " + "\n  ".join(lines), "runs": runs}
