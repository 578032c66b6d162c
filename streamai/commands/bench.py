"""``streamai bench NAME``: benchmarks, one module each in ``streamai.bench``; all print and write JSON.

A benchmark module defines ``add_arguments(parser)`` and ``measure(args) -> dict``
(async or not) whose result holds a ``"summary"`` string. A module is imported only
when its benchmark runs, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

import streamai.bench


def available() -> list[str]:
    """Benchmark names: module names with ``-`` for ``_`` (``fleet_sim`` -> ``fleet-sim``)."""
    modules = pkgutil.iter_modules(streamai.bench.__path__)
    return sorted(m.name.replace("_", "-") for m in modules if not m.name.startswith("_"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark: " + ", ".join(available()), add_help=False, prefix_chars="\0"
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rest: list[str] = args.rest
    names = available()
    if not rest or rest[0] not in names:
        print(f"usage: streamai bench NAME [options]   (NAME: {', '.join(names)})", file=sys.stderr)
        return 0 if rest and rest[0] in ("-h", "--help") else 2
    name = rest[0]
    module = importlib.import_module(f"streamai.bench.{name.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"streamai bench {name}", description=(module.__doc__ or "").strip())
    parser.add_argument("--out", default=f"bench-results/{name}.json", help="where to write the JSON result")
    module.add_arguments(parser)
    options = parser.parse_args(rest[1:])
    started = time.time()
    result = module.measure(options)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    report = {
        "benchmark": name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if report.get("summary"):
        print(report["summary"])
    print(f"wrote {out}", file=sys.stderr)
    return 0
