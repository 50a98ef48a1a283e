"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import ReplayOutcome, replay
from processors.settings import Settings
from tests.e2e.harness import Stream, api_process, free_port


@pytest.fixture
def stream(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, unique: str, tmp_path: Path
) -> Iterator[Stream]:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        app_id=unique,
        input_topic=f"{unique}-in",
        movements_topic=f"{unique}-movements",
        dlq_topic=f"{unique}-dlq",
        stripe_events_topic=f"{unique}-stripe",
        partitions=4,
    )
    s = Stream(settings, tmp_path)
    yield s
    s.stop()


@pytest.fixture
def filled(stream: Stream, tmp_path: Path) -> Iterator[tuple[str, ReplayOutcome, Stream]]:
    events = HistoryGenerator(400, 14, 9, parse_month("2024-11")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 9, shuffle=True, duplicates=0.05, bad=0.01)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    stream.add_worker(free_port()).start()
    asyncio.run(produce(stream.settings, read_lines(path)))
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=120)
    with api_process(stream) as base:
        yield base, outcome, stream
