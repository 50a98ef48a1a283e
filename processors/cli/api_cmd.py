"""`mrr-stream api`: the read API and the live revenue page."""

from __future__ import annotations

import argparse
from typing import Any

from processors.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the read API and the live revenue page from Redis")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from processors.api.app import create_api

    settings = Settings()
    print(f"mrr-stream API and revenue page on http://{settings.api_addr}:{settings.api_port}/", flush=True)
    web.run_app(create_api(settings), host=settings.api_addr, port=settings.api_port, print=None)
    return 0
