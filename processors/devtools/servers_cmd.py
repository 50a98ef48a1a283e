"""`mrr-stream servers start|stop|status [NAME...]`: the local Kafka, Redis, Prometheus and Alertmanager
(and the worker and API, by name)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from processors.devtools.servers import NAMES, ServerError, servers

APPS = ("worker", "api")  # this project's own processes, with the settings of the environment


def register(sub: Any) -> None:
    p = sub.add_parser(
        "servers", help="install, start, check and stop local Kafka, Redis, Prometheus and Alertmanager"
    )
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument(
        "names",
        nargs="*",
        choices=(*NAMES, *APPS, []),
        metavar="NAME",
        help=f"any of {', '.join((*NAMES, *APPS))} (default: {', '.join(NAMES)}; stop and status also "
        "the worker and API the demo left running)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    known = servers()
    names = args.names or list(NAMES)
    if args.action != "start" and not args.names:
        names += [name for name in APPS if known[name].pid() is not None]
    if args.action == "stop":
        names = list(reversed(names))
    failed = False
    for name in names:
        server = known[name]
        try:
            if args.action == "start":
                print(server.start(), flush=True)
            elif args.action == "stop":
                print(server.stop(), flush=True)
            else:
                ok, text = server.status()
                print(text, flush=True)
                failed |= not ok
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
    return 1 if failed else 0
