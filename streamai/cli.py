"""The ``streamai`` command: each subcommand lives in ``streamai.commands.<name>``.

A command module defines ``register(subparsers)`` which adds its parser and sets
``func`` (returning an exit code). Heavy imports stay inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules under streamai.commands, in the order ``streamai --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "pipelines",
    "validate",
    "run",
    "serve",
    "router",
    "fleet",
    "probe",
    "bench",
    "models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamai", description="Real-time media AI at the edge.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module_name = f"streamai.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command whose module is not part of this checkout
        module.register(subparsers)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
