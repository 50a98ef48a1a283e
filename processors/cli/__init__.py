"""The `mrr-stream` command: one sub-command per job, each a thin shell around the core or the stream."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from processors.cli import (
    api_cmd,
    demo_cmd,
    generate_cmd,
    produce_cmd,
    replay_cmd,
    report_cmd,
    resync_cmd,
    scheduled_cmd,
    servers_cmd,
    status_cmd,
    stripe_cmd,
    worker_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrr-stream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (
        demo_cmd,
        replay_cmd,
        report_cmd,
        generate_cmd,
        worker_cmd,
        produce_cmd,
        status_cmd,
        scheduled_cmd,
        api_cmd,
        resync_cmd,
        stripe_cmd,
        servers_cmd,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
