"""``streamai router``: the fleet's single entry point (node registry, session routing)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("router", help="route sessions to the nearest healthy edge node (the fleet entry)")
    parser.add_argument("--config", help="fleet YAML (regions, RTT matrix, client prefixes; see examples/fleet.yaml)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8090)")
    parser.add_argument("--mode", choices=["proxy", "redirect"], help="proxy the offer (default) or answer 307")
    parser.add_argument(
        "--redis", dest="redis_url", help="fleet state in Redis (redis://host:port/db): router replicas share it"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web
    from pydantic import ValidationError

    from ..fleet.config import FleetConfig
    from ..fleet.router import create_router_app

    try:
        config = FleetConfig.load(args.config, host=args.host, port=args.port, mode=args.mode, redis_url=args.redis_url)
    except (OSError, ValidationError, ValueError) as exc:
        # pydantic's message can echo a value (a secret of the wrong type): name only where and why
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
            if isinstance(exc, ValidationError) else str(exc)  # fmt: skip
        print(f"error: bad fleet config: {detail}", file=sys.stderr)
        return 2
    try:
        app = create_router_app(config)
    except ValueError as exc:  # a public address without node authentication
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"streamai router on http://{config.host}:{config.port}  mode: {config.mode}"
        f"  heartbeat: {config.heartbeat_interval_s}s (timeout {config.heartbeat_timeout_s:.1f}s)"
        f"  state: {'redis' if config.redis_url else 'memory'}",
        flush=True,
    )
    web.run_app(app, host=config.host, port=config.port, print=None, handle_signals=True)
    return 0
