"""The lag gauge on a real worker: below 60 s while it keeps up, rising while it is stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from processors.cli.produce_cmd import produce
from processors.generate import HistoryGenerator, arrange, parse_month
from tests.e2e.harness import Stream, free_port, scrape, wait_for_metrics

LAG = 'mrr_processing_lag_seconds{stage="fold"}'


def test_lag_stays_low_while_keeping_up_and_rises_while_stopped(stream: Stream, tmp_path: Path) -> None:
    events = HistoryGenerator(2_000, 12, 61, parse_month("2025-01")).events()
    lines = [line.encode() for line in arrange(events, 61)]
    port = free_port()
    worker = stream.add_worker(port)
    worker.start()
    wait_for_metrics(port)
    asyncio.run(produce(stream.settings, lines[:500]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if scrape(port).get('mrr_events_total{outcome="applied"}', 0) >= 400:
                break
        except OSError:
            pass
        time.sleep(0.5)
    producer = threading.Thread(target=lambda: asyncio.run(produce(stream.settings, lines[500:], rate=400)))
    producer.start()
    keeping_up = []
    for _ in range(6):
        time.sleep(1)
        keeping_up.append(scrape(port)[LAG])
    assert max(keeping_up) < 60, keeping_up
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)  # stuck: it neither processes nor answers
    time.sleep(8)
    os.kill(worker.proc.pid, signal.SIGCONT)
    after = []
    for _ in range(20):  # while it works off the backlog, the gauge tells how long it has been behind
        after.append(scrape(port)[LAG])
        time.sleep(0.2)
    producer.join()
    assert max(after) >= 5, f"lag {after} s after an 8 s stop (while keeping up: {keeping_up})"
