"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.settings import Settings
from tests.e2e.harness import Stream


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
        partitions=4,
    )
    s = Stream(settings, tmp_path)
    yield s
    s.stop()
