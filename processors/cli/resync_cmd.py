"""`mrr-stream resync`: have the workers rebuild the Redis view from their tables.

It deletes every key of the view (under MRR_REDIS_PREFIX); each running worker sees its partitions'
markers gone within a refresh interval and writes everything of its partitions again. With --wait it
returns once every partition's marker is back."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from processors.settings import Settings
from processors.sinks.redis_view import RedisView


def register(sub: Any) -> None:
    p = sub.add_parser("resync", help="rebuild the Redis view from the workers' tables")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the workers to finish")
    p.set_defaults(run=run)


async def resync(settings: Settings, wait: float) -> tuple[int, bool]:
    view = RedisView(settings.redis_url.get_secret_value(), settings.redis_prefix)
    try:
        deleted = await view.clear()
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline:
            if not await view.missing_markers(range(settings.partitions)):
                return deleted, True
            await asyncio.sleep(0.5)
        return deleted, not wait
    finally:
        await view.close()


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    deleted, done = asyncio.run(resync(settings, args.wait))
    print(f"deleted {deleted:,} keys under {settings.redis_prefix!r}; the workers rebuild the view")
    if args.wait and not done:
        print(f"the view was not complete after {args.wait:g} s (is a worker running for every partition?)")
        return 1
    return 0
