"""``streamai validate FILE``: one line that says a pipeline (or room pipeline) is good, or what is wrong and where."""

from __future__ import annotations

import argparse
import sys

from ..config import PipelineError, load_pipeline
from ..rooms.config import is_room_pipeline, load_room_pipeline
from ..stage import StageRegistry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="validate pipeline YAML files")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = StageRegistry()
    status = 0
    for path in args.files:
        if is_room_pipeline(path):
            try:
                room = load_room_pipeline(path, registry)
            except PipelineError as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 1
                continue
            pairs = ", ".join(room.pairs)
            print(f"ok: {path}: room pipeline {room.name!r}, pairs {pairs}, budget {room.budget_ms:g} ms")
            continue
        try:
            config = load_pipeline(path, registry)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        stages = len(config.stage_names())
        print(f"ok: {path}: pipeline {config.name!r}, {stages} stages, budget {config.budget_ms:g} ms")
    return status
