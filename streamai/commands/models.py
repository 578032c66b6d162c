"""``streamai models``: the model catalog, what is installed, and a self-test per model."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model catalog; 'check ID' loads one and self-tests it")
    parser.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    parser.add_argument("model", nargs="?", help="catalog id (for check)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--markdown", action="store_true", help="the README's Models table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.catalog import Catalog, ModelNotAvailable, catalog_row

    catalog = Catalog()
    if args.action == "list":
        if args.markdown:
            from ..models.catalog import catalog_markdown

            print(catalog_markdown(catalog))
            return 0
        rows = [catalog_row(entry) for entry in catalog.entries.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'id':<20} {'task':<10} {'status':<14} {'size':>8}  license")
        for row in rows:
            size = f"{row['size_mb']:g} MB" if row["size_mb"] is not None else "-"
            print(f"{row['id']:<20} {row['task']:<10} {row['status']:<14} {size:>8}  {row['license']}")
        return 0
    if not args.model:
        print("error: 'streamai models check' needs a catalog id", file=sys.stderr)
        return 2
    from ..models.checks import check_model

    try:
        result = check_model(catalog.get(args.model))
    except ModelNotAvailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"ok: {result.model}: import {result.import_s:.2f} s, load {result.load_s:.2f} s, "
            f"first inference {result.first_inference_s:.3f} s; {result.detail}"
        )
    return 0
