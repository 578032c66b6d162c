"""``streamai serve``: run an edge node (session API, demo page) until interrupted."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve pipelines to WebRTC peers (the edge node)")
    parser.add_argument("--config", help="node settings YAML (see streamai/server/settings.py)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8080)")
    parser.add_argument("--pipeline", dest="default_pipeline", help="default pipeline for the demo page")
    parser.add_argument("--pipelines-dir", help="folder of pipeline YAML files (default: pipelines/)")
    parser.add_argument("--max-sessions", type=int)
    parser.add_argument("--token", help="bearer token required on the session API (or STREAMAI_TOKEN)")
    parser.add_argument(
        "--ice-loopback", action="store_true", default=None, help="offer only 127.0.0.1 ICE candidates (tests, demos)"
    )
    parser.add_argument("--audio-prefetch", type=int, help="aiortc audio jitter prefetch in packets (default 4)")
    parser.add_argument(
        "--preload", action="append", help="load this pipeline's models at start and keep them (repeatable)"
    )
    parser.add_argument(
        "--unload-models-after", dest="unload_models_after_s", type=float,
        help="seconds without a session before the node unloads its models (default 300; 0: never)",
    )  # fmt: skip
    parser.add_argument("--router", dest="router_url", help="register with this fleet router (streamai router)")
    parser.add_argument("--region", help="this node's region (fleet routing, per-region models)")
    parser.add_argument("--node-id", help="this node's id in the fleet (default <hostname>-<port>)")
    parser.add_argument("--location", type=_lat_lon, help="this node's location as lat,lon")
    parser.add_argument("--public-url", help="URL clients use to reach this node (default http://host:port)")
    parser.add_argument("--ray-address", help="Ray cluster for remote stages ('auto', 'ray://...', or 'local')")
    parser.set_defaults(func=run)


def _lat_lon(text: str) -> tuple[float, float]:
    lat, _, lon = text.partition(",")
    try:
        return float(lat), float(lon)
    except ValueError:
        raise argparse.ArgumentTypeError("expected lat,lon (e.g. 52.37,4.90)") from None


def run(args: argparse.Namespace) -> int:
    from aiohttp import web
    from pydantic import ValidationError

    from ..fleet.node import create_fleet_node
    from ..server.app import LIBRARY, default_pipeline
    from ..server.settings import ServerSettings

    try:
        settings = ServerSettings.load(
            args.config,
            host=args.host,
            port=args.port,
            default_pipeline=args.default_pipeline,
            pipelines_dir=args.pipelines_dir,
            max_sessions=args.max_sessions,
            token=args.token,
            ice_loopback=args.ice_loopback,
            audio_prefetch=args.audio_prefetch,
            preload=args.preload,
            unload_models_after_s=args.unload_models_after_s,
            router_url=args.router_url,
            region=args.region,
            node_id=args.node_id,
            location=args.location,
            public_url=args.public_url,
            ray_address=args.ray_address,
        )
    except (OSError, ValidationError) as exc:
        # pydantic's message can echo a value (a token of the wrong type): name only where and why
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
            if isinstance(exc, ValidationError) else str(exc)  # fmt: skip
        print(f"error: bad node settings: {detail}", file=sys.stderr)
        return 2
    app = create_fleet_node(settings)
    library = app[LIBRARY]
    if args.default_pipeline and args.default_pipeline not in library.pipelines:
        print(f"error: unknown pipeline {args.default_pipeline!r}; offered: {', '.join(library.pipelines)}")
        return 2
    print(
        f"streamai node on http://{settings.host}:{settings.port}  pipelines: {', '.join(sorted(library.pipelines))}"
        f"  default: {default_pipeline(settings, library)}",
        flush=True,
    )
    from ..server.access_log import RedactingAccessLogger

    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        handle_signals=True,
        access_log_class=RedactingAccessLogger,  # the ?token= form never reaches the log
    )
    return 0
