"""Logs that stay readable while Kafka or Redis is unreachable: at most one line per distinct message per
interval, then a count of what was held back. (Without it a broker outage wrote about 2,500 error lines a
second: the reconnect loops of the Kafka client log every failed attempt.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter

INTERVAL = 30.0  # seconds between two lines of the same message
_KEPT = 10_000  # distinct messages remembered


class RateLimit(logging.Filter):
    def __init__(
        self,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        super().__init__()
        self.interval, self.clock = interval, clock
        self.last: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last shown, held back)
        self.errors = Counter(
            "mrr_log_errors",
            "Warnings and errors logged by the worker and its Kafka/Redis clients, by logger, "
            "including those held back: a rising rate means an unreachable dependency",
            ["logger"],
            registry=registry,
        )
        self.suppressed = Counter(
            "mrr_log_suppressed", "Log lines held back as repeats of a recent one", registry=registry
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.errors.labels(record.name.split(".")[0]).inc()
        # the message template, not its arguments: "connect to %s failed" is one message for any host
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = self.clock()
        shown, held = self.last.get(key, (None, 0))
        if shown is not None and now - shown < self.interval:
            self.last[key] = (shown, held + 1)
            self.suppressed.inc()
            return False
        if len(self.last) >= _KEPT:
            self.last.clear()
        self.last[key] = (now, 0)
        if held and shown is not None:
            record.msg = f"{record.msg} [{held} more like this in the last {now - shown:.0f} s]"
        return True


def install(limit: RateLimit) -> None:
    """On every handler of the root logger, so it sees the records of every library."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
