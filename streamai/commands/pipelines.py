"""``streamai pipelines``: list the pipelines in a folder and validate each."""

from __future__ import annotations

import argparse
import sys

from ..config import PipelineLibrary
from ..stage import StageRegistry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipelines", help="list and validate the pipelines in a folder")
    parser.add_argument("--dir", default="pipelines", help="folder of pipeline YAML files (default: pipelines)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    library = PipelineLibrary(args.dir, StageRegistry())
    for name, config in sorted(library.pipelines.items()):
        stages = " -> ".join(config.stage_names())
        print(f"ok    {name:<20} {config.budget_ms:>6.0f} ms  {stages}")
    for message in library.errors.values():
        print(f"error {message}", file=sys.stderr)
    if not library.pipelines and not library.errors:
        print(f"no pipelines in {args.dir}", file=sys.stderr)
        return 1
    return 1 if library.errors else 0
