"""Redis is a derived view: while it is down the worker keeps processing, and when it is back the worker
brings it up to date. A Redis of this test's own (persistent, so the outage loses no data) is stopped
in the middle of the stream and started again."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib
from pydantic import SecretStr

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.devtools.servers import redis_ready
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from tests.e2e.harness import Stream, free_port, scrape, wait_for_metrics


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not redis_ready(f"redis://127.0.0.1:{port}/0"):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    return proc


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")
def test_worker_outlives_a_redis_outage_and_catches_up(stream: Stream, tmp_path: Path) -> None:
    port = free_port()
    stream.settings = stream.settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{port}/0")}
    )
    redis = start_redis(tmp_path, port)
    events = HistoryGenerator(1500, 12, 31, parse_month("2025-01")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 31, late=0.2, duplicates=0.05, bad=0.005)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    metrics_port = free_port()
    stream.add_worker(metrics_port).start()
    wait_for_metrics(metrics_port)
    lines = read_lines(path)
    producer = threading.Thread(target=lambda: asyncio.run(produce(stream.settings, lines, rate=800)))
    try:
        producer.start()
        time.sleep(3)
        redis.terminate()  # SIGTERM: Redis writes its append-only file and exits
        redis.wait(20)
        applied_at_outage = scrape(metrics_port).get('mrr_events_total{outcome="applied"}', 0)
        time.sleep(4)
        during = scrape(metrics_port)
        assert during['mrr_events_total{outcome="applied"}'] > applied_at_outage, (
            "processing stopped with Redis"
        )
        assert during["mrr_redis_pending_accounts"] > 0
        producer.join()
        redis = start_redis(tmp_path, port)
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=120)
        deadline = time.monotonic() + 10
        while scrape(metrics_port)["mrr_redis_pending_accounts"] != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert scrape(metrics_port)["mrr_redis_pending_accounts"] == 0
    finally:
        redis.terminate()
        redis.wait(20)


def test_a_redis_restarted_empty_is_rebuilt_without_restarting_the_worker(
    stream: Stream, tmp_path: Path
) -> None:
    """No persistence: Redis comes back empty mid-stream. The worker notices the view is gone and
    rebuilds it from its tables; then a FLUSHDB while idle, and `mrr-stream resync`, the same."""
    port = free_port()
    stream.settings = stream.settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{port}/0")}
    )
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    redis = start_redis(tmp_path / "first", port)
    events = HistoryGenerator(1500, 12, 33, parse_month("2025-01")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 33, late=0.2, duplicates=0.05, bad=0.005)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    metrics_port = free_port()
    worker = stream.add_worker(metrics_port)
    worker.start()
    lines = read_lines(path)
    producer = threading.Thread(target=lambda: asyncio.run(produce(stream.settings, lines, rate=1500)))
    try:
        producer.start()
        time.sleep(4)
        redis.kill()  # gone, with everything it held
        redis.wait(20)
        time.sleep(2)
        redis = start_redis(tmp_path / "second", port)  # an empty one
        producer.join()
        started = time.monotonic()
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=60)
        print(f"view equal to the replay {time.monotonic() - started:.1f} s after the last produce")
        assert scrape(metrics_port)["mrr_redis_view_rebuilds_total"] >= 1

        client = redis_lib.Redis.from_url(stream.settings.redis_url.get_secret_value())
        client.flushdb()  # while idle
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=30)

        resynced = subprocess.run(
            [sys.executable, "-m", "processors.cli", "resync", "--wait", "30"],
            env=stream.env(free_port()),
            capture_output=True,
            text=True,
        )
        assert resynced.returncode == 0, resynced.stdout + resynced.stderr
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=30)
        assert worker.starts == 1 and worker.proc is not None and worker.proc.poll() is None
        assert scrape(metrics_port)["mrr_redis_view_rebuilds_total"] >= 3
    finally:
        redis.terminate()
        redis.wait(20)
