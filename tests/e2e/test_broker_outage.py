"""A broker outage of 20 s on a Kafka of this test's own: the worker waits, logs a few lines rather than
thousands, and ends equal to the replay when the broker is back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from processors.settings import Settings
from tests.e2e.harness import Stream, free_port, scrape, wait_for_metrics


def servers(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "processors.cli", "servers", *args, "kafka"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broker_outage_writes_a_few_lines_and_loses_nothing(stream: Stream, tmp_path: Path) -> None:
    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "MRR_LOCAL_DIR": str(tmp_path / "local"),
        "MRR_CACHE_DIR": str(Settings().cache_dir),
        "MRR_LOCAL_KAFKA_PORT": str(port),
        "MRR_LOCAL_KAFKA_CONTROLLER_PORT": str(controller),
    }
    servers(env, "start")
    try:
        stream.settings = stream.settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        events = HistoryGenerator(300, 12, 71, parse_month("2025-01")).events()
        path = tmp_path / "h.jsonl"
        path.write_text("\n".join(arrange(events, 71, late=0.2, duplicates=0.05)) + "\n")
        lines = read_lines(path)
        outcome = replay(((str(i), line) for i, line in enumerate(lines)), at=clock.now())
        metrics_port = free_port()
        worker = stream.add_worker(metrics_port)
        worker.start()
        wait_for_metrics(metrics_port)
        half = len(lines) // 2
        asyncio.run(produce(stream.settings, lines[:half]))
        deadline = time.monotonic() + 120  # the outage starts once the first half is processed
        while time.monotonic() < deadline:
            sample = scrape(metrics_port)
            if sample.get('mrr_events_total{outcome="applied"}', 0) > 0 and sample["mrr_records_behind"] == 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the worker did not work off the first half\n{worker.tail()}")
        before = worker.log.read_text(errors="replace").count("\n")
        servers(env, "stop")
        time.sleep(20)
        during = worker.log.read_text(errors="replace").count("\n") - before
        servers(env, "start")
        asyncio.run(produce(stream.settings, lines[half:]))
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=180)
        print(f"log lines during a 20 s broker outage: {during}")
        assert during <= 80, worker.tail(80)  # measured: 58 (one traceback of a consumer restart)
        assert worker.starts == 1 and worker.proc is not None and worker.proc.poll() is None
    finally:
        servers(env, "stop")
