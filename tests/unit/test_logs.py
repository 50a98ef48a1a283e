"""Repeated warnings are held back: one line per distinct message per interval, then a count."""

import logging

from prometheus_client import CollectorRegistry

from processors.stream.logs import RateLimit


def record(
    msg: str, *args: object, name: str = "aiokafka.conn", level: int = logging.ERROR
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_message_is_shown_once_per_interval_with_the_count_held_back() -> None:
    now = [0.0]
    limit = RateLimit(interval=30, clock=lambda: now[0], registry=CollectorRegistry())
    shown = []
    for second in range(0, 100):
        now[0] = float(second)
        for host in ("a", "b"):  # other arguments, same message
            r = record("Unable to connect to %s", host)
            if limit.filter(r):
                shown.append((second, r.getMessage()))
    assert [s for s, _ in shown] == [0, 30, 60, 90]
    assert shown[1][1] == "Unable to connect to a [59 more like this in the last 30 s]"
    assert limit.filter(record("another message"))
    assert limit.filter(record("info passes", level=logging.INFO))
    assert limit.errors.labels("aiokafka")._value.get() == 201
