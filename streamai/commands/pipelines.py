"""``streamai pipelines``: list and validate the pipelines in a folder and the room pipelines in its ``rooms/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import PipelineLibrary
from ..rooms.config import RoomPipelineLibrary
from ..stage import StageRegistry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipelines", help="list and validate the pipelines in a folder")
    parser.add_argument("--dir", default="pipelines", help="folder of pipeline YAML files (default: pipelines)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = StageRegistry()
    library = PipelineLibrary(args.dir, registry)
    rooms = RoomPipelineLibrary(Path(args.dir) / "rooms", registry)
    for name, config in sorted(library.pipelines.items()):
        stages = " -> ".join(config.stage_names())
        print(f"ok    {name:<20} {config.budget_ms:>6.0f} ms  {stages}")
    for name, room in sorted(rooms.pipelines.items()):
        print(f"ok    {name:<20} {room.budget_ms:>6.0f} ms  room: {', '.join(room.pairs)}")
    for message in [*library.errors.values(), *rooms.errors.values()]:
        print(f"error {message}", file=sys.stderr)
    if not library.pipelines and not library.errors:
        print(f"no pipelines in {args.dir}", file=sys.stderr)
        return 1
    return 1 if library.errors or rooms.errors else 0
