"""``streamai probe URL``: connect the Python test peer to a node and report latency as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="connect a test peer to a node and measure glass-to-glass latency")
    parser.add_argument("url", help="node or router URL, e.g. http://127.0.0.1:8080")
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
                args.url,
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
        print(f"error: the node refused the session: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.summary(), indent=2))
    return 0
