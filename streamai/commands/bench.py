"""``streamai bench NAME``: benchmarks, one module each in ``streamai.bench``; all print and write JSON.

A benchmark module defines ``add_arguments(parser)`` and ``async def measure(args) -> dict``
(or a plain ``measure``). The result is printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import streamai.bench


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(streamai.bench.__path__) if not m.name.startswith("_"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark: " + ", ".join(available()))
    names = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in available():
        module = importlib.import_module(f"streamai.bench.{name}")
        sub = names.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        sub.add_argument("--out", default=f"bench-results/{name}.json", help="where to write the JSON result")
        module.add_arguments(sub)
        sub.set_defaults(func=run, module=module)


def run(args: argparse.Namespace) -> int:
    started = time.time()
    result = args.module.measure(args)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    report = {
        "benchmark": args.bench,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        **result,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    summary = report.get("summary")
    if summary:
        print(summary)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
