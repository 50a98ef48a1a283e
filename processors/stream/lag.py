"""How far behind the worker is, in seconds, from what it has processed and the partitions' end offsets.

A batch-end timestamp alone cannot show a stuck worker (nothing ends); this clock is read on a timer: while
every assigned partition is processed up to its end offset the worker is caught up (0 s); otherwise the lag
is the age of the last record processed (a backlog's records are as old as the wait), and at least the
time since the worker was last caught up (a stuck worker processes nothing). The end offsets and the clock
are passed in.

A reading right after the loop stood still (a stopped process, a long pause) does not count as caught up:
the end offsets the consumer knows come from its last fetch, from before the pause, so they cannot show
what arrived meanwhile."""

from __future__ import annotations

from collections.abc import Mapping

Partition = tuple[str, int]  # (topic, partition)


READ_SECONDS = 1.0  # how often the worker reads the clock (processors/stream/app.py)
STALL_SECONDS = 3 * READ_SECONDS  # readings further apart: the loop stood still between them


class LagClock:
    def __init__(self, started: float) -> None:
        self.processed: dict[Partition, int] = {}  # the next offset to process
        self.caught_up_at = started
        self.last_timestamp = started  # Kafka timestamp of the newest record processed, in seconds
        self.read_at: float | None = None  # the last reading's `now`

    def processed_to(self, topic: str, partition: int, offset: int, timestamp: float = 0.0) -> None:
        key = (topic, partition)
        self.processed[key] = max(self.processed.get(key, 0), offset + 1)
        self.last_timestamp = max(self.last_timestamp, timestamp)

    def seconds(self, now: float, ends: Mapping[Partition, int | None]) -> float:
        """`ends`: each assigned partition's end offset (None: not known yet)."""
        stalled = self.read_at is not None and now - self.read_at > STALL_SECONDS  # `ends` may be stale
        self.read_at = now
        behind = any(end is not None and end > self.processed.get(tp, 0) for tp, end in ends.items())
        if not behind and stalled:  # (not the last record's age: on a quiet topic it is any age)
            return max(0.0, now - self.caught_up_at)
        if not behind:
            self.caught_up_at = now
            return 0.0
        return max(0.0, now - self.caught_up_at, now - self.last_timestamp)

    def records_behind(self, ends: Mapping[Partition, int | None]) -> int:
        return sum(max(0, end - self.processed.get(tp, 0)) for tp, end in ends.items() if end is not None)
