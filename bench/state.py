"""Per-event fold time of one busy account as its history grows, and the size of what it stores.

    python bench/state.py [--events 20000] [--seed 7] [--window 200] [--no-late]

Goal (issue: bounded per-account state): folding one more event into an account with 20,000 events of
history costs within 2x of folding one into an account with 1,000, and no stored value grows with the
account's age.

One account (`busy_account`: a seat change every 1 to 3 hours over several years, now and then an add-on,
a churn and a win-back) is fed in effective order, in-process, through the real fold stage
(processors/stream/fold.py): the state code and its codec, the in-memory table and producer
(processors/stream/memory.py) and the real Redis view on the local Redis. Each event is one record on the
input topic, keyed by the account, in the account's partition, and is one `FoldStage.batch` call, so its
time covers a whole batch: routing and parsing, the state read, the fold, the table writes, the sends and
the Redis transaction. The per-event time is averaged over a window of events centred on 1,000 and on
`--events` events of history.

A second, clearly labelled variant feeds the same account with 2% of its events late by up to 60 days
(`arrange(..., late=0.02, late_days=60)`), which makes the stage refold the chunks after each late event.

Figures go to a table on stdout; the last line is one JSON object. Every Redis key is written under a
prefix of this run's own and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from processors.generate import arrange, busy_account, parse_month
from processors.settings import Settings
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import RedisView
from processors.stream.fold import FoldStage, Topics
from processors.stream.intake import Record, partition_for
from processors.stream.memory import MemoryProducer, MemoryTable
from processors.stream.state import SEP

ACCOUNT = "busy"
PARTITIONS = 4
EARLY = 1_000  # events of history of the first window
RATIO_GOAL = 2.0
VALUE_LIMIT = 64 * 1024  # no stored value may be larger
TOPICS = Topics(
    input="bench-state-in",
    by_account="bench-state-by-account",
    movements="bench-state-out",
    dlq="bench-state-dlq",
)
KINDS = {b"c": "chunk", b"i": "index", b"o": "outbox"}


def kind_of(key: bytes) -> str:
    """root, chunk, index or outbox (processors/stream/state.py's key layout)."""
    parts = key.split(SEP)
    return "root" if len(parts) == 1 else KINDS.get(parts[1], "other")


@dataclass
class Window:
    """Per-event times (ms) of the events [start, stop), 0-based: event i has i events of history."""

    start: int
    stop: int
    ms: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.ms)

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p99(self) -> float:
        return (
            statistics.quantiles(self.ms, n=100, method="inclusive")[98] if len(self.ms) > 1 else self.ms[0]
        )


@dataclass
class Run:
    label: str
    events: int
    ms: list[float] = field(default_factory=list)  # per event, in feeding order
    written_bytes: list[int] = field(default_factory=list)  # table bytes written, per event
    largest_written: int = 0
    largest_written_key: bytes = b""
    largest_written_at: int = 0  # the event whose batch wrote it
    largest_by_kind: dict[str, int] = field(default_factory=dict)
    largest_stored: int = 0
    largest_stored_key: bytes = b""
    keys: int = 0
    keys_by_kind: dict[str, int] = field(default_factory=dict)
    changelog_records: int = 0
    sent: int = 0
    redis_keys: int = 0  # every key under the prefix
    redis_bytes: int = 0
    redis_account_keys: int = 0  # the account's own: account, contrib, moves, chunks
    redis_account_bytes: int = 0
    redis_largest: int = 0  # the largest of the account's own keys
    redis_largest_key: str = ""

    def window(self, around: int, width: int) -> Window:
        start = max(0, min(around - width // 2, len(self.ms) - width))
        stop = min(len(self.ms), start + width)
        return Window(start, stop, self.ms[start:stop])


def records(lines: Sequence[bytes]) -> list[Record]:
    partition = partition_for(ACCOUNT, PARTITIONS)
    key = ACCOUNT.encode()
    return [
        Record(TOPICS.input, partition, offset, key, line, timestamp=time.time())
        for offset, line in enumerate(lines)
    ]


async def redis_usage(view: RedisView, run: Run) -> None:
    """MEMORY USAGE of every key under the run's prefix, and of the account's own keys among them (the
    others are the global ones: totals, buckets, version, the list of the latest 500 records)."""
    keys = [k async for k in view.client.scan_iter(match=f"{view.prefix}*", count=1000)]
    run.redis_keys = len(keys)
    for key in keys:
        used = int(await view.client.memory_usage(key, samples=0) or 0)
        run.redis_bytes += used
        if key[len(view.prefix) :].split(":")[1:2] != [ACCOUNT]:
            continue
        run.redis_account_keys += 1
        run.redis_account_bytes += used
        if used > run.redis_largest:
            run.redis_largest, run.redis_largest_key = used, key[len(view.prefix) :]


async def clean(view: RedisView) -> int:
    deleted = 0
    batch: list[str] = []
    async for key in view.client.scan_iter(match=f"{view.prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await view.client.delete(*batch))
            batch = []
    if batch:
        deleted += int(await view.client.delete(*batch))
    return deleted


async def feed(run: Run, lines: Sequence[bytes], settings: Settings, prefix: str, progress: Progress) -> None:
    table, pending, producer = MemoryTable(), MemoryTable(), MemoryProducer()
    view = RedisView(settings.redis_url.get_secret_value(), prefix)
    stage = FoldStage(
        table=table,
        pending=pending,
        producer=producer,
        view=view,
        metrics=Metrics(CollectorRegistry()),
        topics=TOPICS,
        partitions=PARTITIONS,
        input_copartitioned=True,
    )
    task = progress.add_task(run.label, total=len(lines))
    try:
        await clean(view)  # a prefix of this pid's own: empty unless a pid was reused after a crash
        seen = 0  # changelog records already looked at
        for n, record in enumerate(records(lines)):
            start = time.perf_counter()
            await stage.batch([record])
            run.ms.append((time.perf_counter() - start) * 1000)
            written = 0
            for _, key, value in table.changelog[seen:]:
                if value is None:
                    continue
                size = len(value)
                written += size
                kind = kind_of(key)
                run.largest_by_kind[kind] = max(run.largest_by_kind.get(kind, 0), size)
                if size > run.largest_written:
                    run.largest_written, run.largest_written_key, run.largest_written_at = size, key, n
            seen = len(table.changelog)
            run.written_bytes.append(written)
            progress.advance(task)
        if pending.data:
            raise RuntimeError(f"{len(pending.data)} accounts wait for Redis: was it down during the run?")
        if producer.on(TOPICS.dlq):
            raise RuntimeError(f"{len(producer.on(TOPICS.dlq))} dead letters: the history should have none")
        if producer.on(TOPICS.by_account):
            raise RuntimeError("records were forwarded: they should have been folded where they were")
        run.changelog_records = len(table.changelog)
        run.sent = len(producer.on(TOPICS.movements))
        run.keys = len(table.data)
        run.keys_by_kind = dict(Counter(kind_of(k) for k in table.data))
        run.largest_stored_key, largest = max(table.data.items(), key=lambda kv: len(kv[1]))
        run.largest_stored = len(largest)
        await redis_usage(view, run)
    finally:
        try:
            await clean(view)
        finally:
            await view.close()


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def show_key(key: bytes) -> str:
    return key.decode("utf-8", "replace").replace("\x00", "\\0")


def report(runs: Sequence[Run], width: int, events: int) -> Table:
    table = Table(title=f"bench/state.py — one busy account, {runs[0].events:,} events, one per batch")
    table.add_column("measure", justify="left")
    for run in runs:
        table.add_column(run.label, justify="right")
    table.add_column("goal", justify="right")

    def row(name: str, values: Sequence[str], goal: str = "") -> None:
        table.add_row(name, *values, goal)

    early = [r.window(EARLY, width) for r in runs]
    late = [r.window(events, width) for r in runs]
    row("window at 1,000 (events)", [f"{w.start:,}–{w.stop - 1:,}" for w in early])
    row("  mean ms/event", [f"{w.mean:.3f}" for w in early])
    row("  p50 / p99 ms", [f"{w.p50:.3f} / {w.p99:.3f}" for w in early])
    row(f"window at {events:,} (events)", [f"{w.start:,}–{w.stop - 1:,}" for w in late])
    row("  mean ms/event", [f"{w.mean:.3f}" for w in late])
    row("  p50 / p99 ms", [f"{w.p50:.3f} / {w.p99:.3f}" for w in late])
    ratios = [b.mean / a.mean for a, b in zip(early, late, strict=True)]
    row(
        f"ratio {events:,} / 1,000",
        [f"{x:.2f} ({'met' if x <= RATIO_GOAL else 'NOT met'})" for x in ratios],
        f"<= {RATIO_GOAL:g}",
    )
    for at in sorted({5_000, 10_000, 15_000} & set(range(EARLY + 1, events))):
        row(f"  mean ms/event at {at:,}", [f"{r.window(at, width).mean:.3f}" for r in runs])
    row(
        "table bytes written/event at 1,000",
        [kib(statistics.fmean(r.written_bytes[w.start : w.stop])) for r, w in zip(runs, early, strict=True)],
    )
    row(
        f"table bytes written/event at {events:,}",
        [kib(statistics.fmean(r.written_bytes[w.start : w.stop])) for r, w in zip(runs, late, strict=True)],
    )
    row("whole run, mean ms/event", [f"{statistics.fmean(r.ms):.3f}" for r in runs])
    row(
        "largest value written",
        [
            f"{kib(r.largest_written)} ({kind_of(r.largest_written_key)}, event {r.largest_written_at:,})"
            for r in runs
        ],
        f"<= {kib(VALUE_LIMIT)}",
    )
    for kind in ("root", "chunk", "index", "outbox"):
        row(f"  largest {kind} written", [kib(r.largest_by_kind.get(kind, 0)) for r in runs])
    row(
        "largest value stored at the end",
        [f"{kib(r.largest_stored)} ({kind_of(r.largest_stored_key)})" for r in runs],
    )
    row("table keys at the end", [f"{r.keys:,}" for r in runs])
    row(
        "  root / chunk / index / outbox",
        [
            " / ".join(f"{r.keys_by_kind.get(k, 0):,}" for k in ("root", "chunk", "index", "outbox"))
            for r in runs
        ],
    )
    row("changelog records", [f"{r.changelog_records:,}" for r in runs])
    row("movement records sent", [f"{r.sent:,}" for r in runs])
    row("Redis keys / MEMORY USAGE, all", [f"{r.redis_keys:,} / {kib(r.redis_bytes)}" for r in runs])
    row(
        "  the account's own",
        [f"{r.redis_account_keys:,} / {kib(r.redis_account_bytes)}" for r in runs],
    )
    row(
        "  the account's largest key",
        [f"{kib(r.redis_largest)} ({r.redis_largest_key})" for r in runs],
    )
    return table


def summary(run: Run, width: int, events: int) -> dict[str, Any]:
    early, late = run.window(EARLY, width), run.window(events, width)
    ratio = late.mean / early.mean
    return {
        "events": len(run.ms),
        "per_event_ms_at_1000": round(early.mean, 4),
        "per_event_ms_at_20000": round(late.mean, 4),
        "history_of_late_window": [late.start, late.stop - 1],
        "p99_ms_at_1000": round(early.p99, 4),
        "p99_ms_at_20000": round(late.p99, 4),
        "ratio": round(ratio, 3),
        "goal_met": ratio <= RATIO_GOAL,
        "largest_value_bytes": run.largest_written,
        "largest_value_kind": kind_of(run.largest_written_key),
        "largest_stored_value_bytes": run.largest_stored,
        "keys": run.keys,
        "keys_by_kind": run.keys_by_kind,
        "redis_keys": run.redis_keys,
        "redis_memory_bytes": run.redis_bytes,
        "redis_account_keys": run.redis_account_keys,
        "redis_account_memory_bytes": run.redis_account_bytes,
        "redis_largest_account_key_bytes": run.redis_largest,
    }


async def bench(args: argparse.Namespace, console: Console) -> list[Run]:
    margin = args.window // 2  # so that the window around `--events` events of history is centred on it
    total = args.events + margin
    with console.status("generating the busy account"):
        history = busy_account(ACCOUNT, total, args.seed, parse_month("2022-01"))
    first, last = history[0]["effective_at"], history[-1]["effective_at"]
    console.print(f"{len(history):,} events of {ACCOUNT!r}, {first[:10]} to {last[:10]}")
    settings = Settings()
    pid = os.getpid()
    variants: list[tuple[str, list[bytes], str]] = [
        (
            "in order",
            [json.dumps(e, separators=(",", ":")).encode() for e in history],
            f"bench-state-{pid}:",
        )
    ]
    if not args.no_late:
        arrived = [line.encode() for line in arrange(history, args.seed, late=0.02, late_days=60)]
        variants.append(("2% late ≤ 60 days", arrived, f"bench-state-{pid}-late:"))
    runs: list[Run] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for label, lines, prefix in variants:
            run = Run(label, len(lines))
            await feed(run, lines, settings, prefix, progress)
            runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="history of the second window")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, default=200, help="events per measured window")
    parser.add_argument("--no-late", action="store_true", help="skip the variant with late events")
    args = parser.parse_args()
    if args.events < EARLY + args.window:
        parser.error(f"--events must be at least {EARLY + args.window}")
    console = Console(stderr=True)
    runs = asyncio.run(bench(args, console))
    Console(width=140).print(report(runs, args.window, args.events))
    out = summary(runs[0], args.window, args.events)
    if len(runs) > 1:
        late = summary(runs[1], args.window, args.events)
        out["late_variant"] = {
            k: late[k]
            for k in (
                "per_event_ms_at_1000",
                "per_event_ms_at_20000",
                "ratio",
                "goal_met",
                "largest_value_bytes",
                "largest_stored_value_bytes",
                "keys",
                "redis_memory_bytes",
                "redis_account_memory_bytes",
            )
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
