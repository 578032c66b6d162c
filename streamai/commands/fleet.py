"""``streamai fleet``: operator tools for a fleet (a node's credential from the fleet secret)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="fleet operator tools (node credentials)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    token = actions.add_parser(
        "node-token", help="print a node's credential (give it to that node as STREAMAI_NODE_TOKEN)"
    )
    token.add_argument("node_id", help="the node's id (its --node-id)")
    token.add_argument("--config", help="the router's fleet YAML holding node_secret (else STREAMAI_FLEET_SECRET)")
    token.set_defaults(func=run_node_token)


def run_node_token(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..fleet.config import FleetConfig
    from ..fleet.membership import node_token

    try:
        config = FleetConfig.load(args.config)
    except (OSError, ValidationError, ValueError) as exc:
        print(f"error: bad fleet config: {type(exc).__name__}", file=sys.stderr)
        return 2
    if config.node_secret is None:
        print("error: no node_secret in the config and no STREAMAI_FLEET_SECRET", file=sys.stderr)
        return 2
    if not _valid_id(args.node_id):
        print(f"error: {args.node_id!r} is not a node id (letters, digits, '_', '.', '-'; 64 at most)", file=sys.stderr)
        return 2
    print(node_token(config.node_secret, args.node_id))
    return 0


def _valid_id(node_id: str) -> bool:
    import re

    from ..fleet.registry import NAME

    return re.match(NAME, node_id) is not None
