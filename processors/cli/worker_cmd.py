"""`mrr-stream worker`: the Faust worker, with its Prometheus endpoint."""

from __future__ import annotations

import argparse
import asyncio
import gc
from typing import Any

from processors.auth import serve_metrics
from processors.settings import Settings

# The worker allocates millions of short-lived objects (records, facts, movements, futures) beside a large
# long-lived heap (Faust's and aiokafka's structures). At CPython's default threshold (700)
# the cyclic collector ran hundreds of times a second and took about 40% of the fold stage's time
# (bench/stream.py). Collections every 50,000 net allocations keep the pending garbage to a few MB.
GC_THRESHOLDS = (50_000, 20, 10)


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the stream worker (settings from MRR_* environment variables)")
    p.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import faust  # imported here: the other commands should not pay for Faust's start-up

    from processors.sinks.metrics import Metrics
    from processors.stream.app import create_app
    from processors.stream.kafka import ensure_topics
    from processors.stream.logs import RateLimit, install

    settings = Settings()
    input_partitions = asyncio.run(ensure_topics(settings, internal=True))
    metrics = Metrics()
    serve_metrics(settings.metrics_addr, settings.metrics_port, settings.metrics_token)
    app = create_app(settings, metrics, input_partitions)

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            install(RateLimit())  # an unreachable broker must not write thousands of lines a second

    worker = Worker(app, loglevel=args.loglevel, quiet=True, override_logging=True)
    # Faust's terminal spinner sets the root logger to DEBUG to spin on every record: every debug line
    # of aiokafka and Faust was then built and formatted (measured: a tenth of the worker's time).
    worker.spinner = None
    gc.freeze()  # the modules and the app's definitions live as long as the process: never scanned again
    gc.set_threshold(*GC_THRESHOLDS)
    worker.execute_from_commandline()
    return 0
