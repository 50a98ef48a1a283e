"""The on-disk table store: `MRR_TABLE_STORE=rocksdict://` starts, survives a stop and a kill -9, and ends
equal to the replay."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from tests.e2e.harness import Stream, free_port, movements_topic_months


def test_rocksdict_store_survives_a_stop_and_a_kill_9(stream: Stream, tmp_path: Path) -> None:
    events = HistoryGenerator(600, 12, 41, parse_month("2025-01")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 41, late=0.2, late_days=60, duplicates=0.05)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    data = tmp_path / "data"
    worker = stream.add_worker(free_port())
    worker.env.update(MRR_TABLE_STORE="rocksdict://", MRR_DATA_DIR=str(data))
    worker.start()
    lines = read_lines(path)
    producer = threading.Thread(target=lambda: asyncio.run(produce(stream.settings, lines, rate=800)))
    producer.start()
    time.sleep(4)
    worker.stop()  # SIGTERM
    worker.start()
    time.sleep(4)
    worker.kill9()
    worker.start()
    producer.join()
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=180)
    assert movements_topic_months(stream.settings) == outcome.months
    stores = list(data.rglob("*accounts-*.db"))
    assert stores, f"no rocksdict files under {data}: {list(data.rglob('*'))[:10]}"
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log
