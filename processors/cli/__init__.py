"""The `mrr-stream` command: one sub-command per job, each a thin shell around the core or the stream."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from processors.cli import (
    api_cmd,
    generate_cmd,
    produce_cmd,
    replay_cmd,
    report_cmd,
    resync_cmd,
    scheduled_cmd,
    status_cmd,
    stripe_cmd,
    worker_cmd,
)


def _version() -> str:
    try:
        return metadata.version("mrr-stream")
    except metadata.PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"


class _DevelopmentOnly:
    """`demo` and `servers` where the development tooling is not installed: one clear line, not argparse's
    list of choices without them."""

    @staticmethod
    def register(sub: Any) -> None:
        for name in ("demo", "servers"):
            # no option characters: whatever follows (--help included) is taken, and answered alike
            p = sub.add_parser(name, help="(development install only)", add_help=False, prefix_chars="\0")
            p.add_argument("rest", nargs="*")
            p.set_defaults(run=_DevelopmentOnly.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        print(
            f"mrr-stream: {args.command!r} comes with the development install only (make install in a "
            "checkout); this install runs the stream against your own Kafka, Redis and Prometheus",
            file=sys.stderr,
        )
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrr-stream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mrr-stream {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: list[Any] = [
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
    ]
    try:
        from processors.devtools import demo_cmd, servers_cmd

        commands = [demo_cmd, *commands, servers_cmd]
    except ImportError:  # an install from the wheel (the image): no local servers, no demo
        commands.append(_DevelopmentOnly)
    for module in commands:
        module.register(sub)
    return parser


def _mistake(exc: BaseException) -> tuple[str, int] | None:
    """An ordinary mistake's one line and exit status (2: what was asked cannot be done as asked; 1: a
    server it needs is not there), or None: a bug, whose traceback is worth having."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from pydantic import ValidationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError

    if isinstance(exc, ValidationError):  # the settings object, from MRR_* variables
        first = exc.errors()[0]
        name = "MRR_" + "_".join(str(part) for part in first["loc"]).upper()
        return f"setting {name}: {first['msg']} (got {first.get('input')!r})", 2
    if isinstance(exc, (RedisConnectionError, RedisError)):
        return f"Redis is not reachable: {exc}", 1
    if isinstance(exc, (KafkaConnectionError, KafkaError)):
        return f"Kafka is not reachable: {exc}", 1
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", 2
    if isinstance(exc, ConnectionError):
        return f"a server is not reachable: {exc}", 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # (the reader went away, as `| head` does: nothing more to say)
        sys.stderr.close()
        return 0
    except Exception as exc:
        found = _mistake(exc)
        if found is None:
            raise
        line, code = found
        print(f"mrr-stream {args.command}: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
