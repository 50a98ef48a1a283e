"""`mrr-stream status`: what the stream holds in Redis, as a table or as the replay's JSON."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from processors.cli import render
from processors.settings import Settings
from processors.sinks.redis_view import read_months


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="print the MRR held in Redis")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--all", action="store_true", help="every month, not only the latest")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    months, rejected = asyncio.run(read_months(settings.redis_url.get_secret_value(), settings.redis_prefix))
    if args.format == "json":
        print(render.to_json(months, rejected))
    elif args.format == "csv":
        print(render.to_csv(months), end="")
    else:
        latest = months if args.all else [m for m in months if m.month == max(x.month for x in months)]
        render.print_table(
            latest,
            f"MRR from Redis — {'all months' if args.all else 'latest month'}, {rejected:,} dead letters",
        )
    return 0
