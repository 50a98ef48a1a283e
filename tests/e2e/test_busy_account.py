"""End to end on the real servers: one account with 20,000 events beside 200 ordinary ones, a kill -9
mid-way, and every value the app writes to its changelogs under 64 KB."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import redis

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, busy_account, parse_month
from processors.replay import replay
from tests.e2e.harness import Stream, dead_letters, free_port, movements_topic_months, read_topic

BOUND = 64 * 1024


def test_a_busy_account_equals_the_replay_and_every_stored_value_stays_small(
    stream: Stream, tmp_path: Path
) -> None:
    events = busy_account("busy-1", 20_000, 11, parse_month("2022-01"))
    events += HistoryGenerator(200, 36, 12, parse_month("2022-01")).events()
    lines = arrange(events, 11, late=0.02, late_days=60, duplicates=0.01, bad=0.001)
    path = tmp_path / "busy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    assert sum(1 for e in events if e["account_id"] == "busy-1") == 20_000

    worker = stream.add_worker(free_port())
    worker.start()
    producer = threading.Thread(
        target=lambda: asyncio.run(produce(stream.settings, read_lines(path), rate=2500, keyed=0.5))
    )
    producer.start()
    time.sleep(random.Random(5).uniform(5, 8))
    worker.kill9()
    worker.start()
    producer.join()
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=420)

    assert movements_topic_months(stream.settings) == outcome.months
    letters = dead_letters(stream.settings)
    assert sorted(v for v, _ in letters.values()) == sorted(r.raw.rstrip(b"\n") for r in outcome.rejects)

    app = stream.settings.app_id
    largest = {}
    for table in ("accounts", "redis-pending"):
        records = asyncio.run(read_topic(stream.settings, f"{app}-{table}-changelog"))
        largest[table] = max((len(r.value or b"") for r in records), default=0)
    print(f"largest changelog values: {largest}")
    assert 0 < largest["accounts"] <= BOUND and largest["redis-pending"] <= BOUND

    client = redis.Redis.from_url(stream.settings.redis_url.get_secret_value())
    prefix = stream.settings.redis_prefix
    chunks = [k for k in client.scan_iter(f"{prefix}moves:busy-1:*", count=1000)]
    assert len(chunks) > 36, "the busy account's movements are kept per chunk, not as one string"
    assert max(int(client.strlen(k)) for k in chunks) <= BOUND
