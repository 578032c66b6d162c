"""``streamai probe URL [URL...]``: connect the Python test peer to a node and report latency as JSON.

The peer is a :mod:`streamai.client` session: several URLs (router replicas) are tried
in order, moving on after a connection error, a 5xx or a 429.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="connect a test peer to a node and measure glass-to-glass latency")
    parser.add_argument(
        "urls", nargs="+", metavar="URL",
        help="node or router URL, e.g. http://127.0.0.1:8080; several router replicas are tried in order",
    )  # fmt: skip
    parser.add_argument("--pipeline", help="pipeline name (default: the node's default)")
    parser.add_argument("--input", help="a .y4m (video) or .wav (audio) file to send instead of test media")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--params", help="per-session parameters as JSON")
    parser.add_argument("--token", help="bearer token")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--ice-loopback", action="store_true", help="offer only 127.0.0.1 candidates")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..testing.peer import ProbeError, run_probe

    try:
        params = json.loads(args.params) if args.params else None
    except ValueError:
        print("error: --params is not valid JSON", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run_probe(
                args.urls,
                args.pipeline,
                args.seconds,
                params=params,
                video=not args.no_video,
                audio=not args.no_audio,
                input_file=args.input,
                token=args.token,
                loopback=args.ice_loopback,
            )
        )
    except ProbeError as exc:
        what = "the node refused the session" if exc.status else "no session"
        print(f"error: {what}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.summary(), indent=2))
    return 0
