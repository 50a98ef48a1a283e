"""Restart time of a worker on a history, with memory:// and with rocksdict://, measured in one run.

    python bench/restart.py [--events 200000] [--stores memory,rocksdict]

For each table store, on topics, a consumer group and a Redis prefix of its own:
1. `--events` events (a generated history: late events, duplicates), keyed by account as `mrr-stream
   produce` sends them, go to a fresh 4-partition input topic;
2. one worker (`mrr-stream worker --loglevel info`, the store's MRR_TABLE_STORE, MRR_DATA_DIR in a
   temporary folder) processes all of them (its /metrics' `mrr_events_total`, every outcome), its
   consumer group commits them, and it is stopped (SIGTERM; SIGKILL after 20 s);
3. the `accounts` changelog is read back: records, bytes (keys + values), tombstones, live keys;
4. the worker is started again and, right after the process starts, one new event (a subscribe of a new
   account) is produced: the restart is timed from the process' start to Faust's `Worker ready` log line
   (its table recovered, its partitions assigned) and to the new account's hash in Redis
   (`{prefix}account:{id}`: the first new event processed end to end).

memory:// rebuilds the tables from their changelogs at every start; rocksdict:// keeps them on disk and
reads only the changelogs' newer records. Figures go to a table; the last line is one JSON object
(`events`, `memory_ready_s`, `rocksdict_ready_s`, `memory_first_event_s`, `rocksdict_first_event_s`,
`changelog_records`, `changelog_bytes`, ...). Every Redis key of the run and every temporary folder is
deleted at the end; the topics (`bench-restart-*`) are left to Kafka.
Needs the local servers (`mrr-stream servers start`), or MRR_KAFKA_BOOTSTRAP / MRR_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from common import clean_redis, free_port, progress_bar
from rich.console import Console
from rich.table import Table

from processors.cli.produce_cmd import produce
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.settings import Settings
from processors.stream.kafka import client_options

PARTITIONS = 4
STORES = {"memory": "memory://", "rocksdict": "rocksdict://"}
TIMEOUT = 3600.0  # for any one wait
READY = "Worker ready"
# Faust's log lines start with "[2025-01-31 12:34:56,789]", local time
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def processed(port: int) -> float | None:
    """Every outcome of the worker's mrr_events_total; None while /metrics does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith("mrr_events_total{")
    )


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.time() just before the process was started
    log_from: int = 0  # where this start's lines begin in the log

    def start(self) -> None:
        self.log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processors.cli", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> tuple[str, float]:
        """SIGTERM, then SIGKILL after 20 s: which it took, and how long."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return (f"had exited ({proc.returncode})" if proc else "not started"), 0.0
        began = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
            how = "SIGTERM"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            how = "SIGKILL (SIGTERM not obeyed in 20 s)"
        return how, time.perf_counter() - began

    def lines(self) -> list[str]:
        """This start's log lines."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as f:
            f.seek(self.log_from)
            return f.read().decode(errors="replace").splitlines()

    def logged(self, text: str) -> float | None:
        """Seconds from the process' start to the first line of this start containing `text` (by the
        line's own time stamp), or None if not logged (yet)."""
        for line in self.lines():
            if text in line:
                stamp = STAMP.match(line)
                if stamp is None:
                    return time.time() - self.started_at
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                return at - self.started_at
        return None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = "\n".join(self.lines()[-30:])
            raise SystemExit(f"the worker exited ({self.proc.returncode}); {self.log}:\n{tail}")


def wait_for(what: str, until: Callable[[], bool], worker: Worker, every: float = 0.05) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not until():
        worker.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not in {TIMEOUT:.0f} s; see {worker.log}")
        time.sleep(every)


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for t in described for p in t["partitions"]]


async def committed_behind(settings: Settings) -> int:
    """How many input records the app's consumer group has not committed yet."""
    partitions = await partitions_of(settings, settings.input_topic)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=partitions)
    finally:
        await admin.close()
    return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())


@dataclass
class Changelog:
    records: int = 0
    bytes: int = 0  # keys + values
    tombstones: int = 0
    live_keys: int = 0
    largest_value: int = 0


async def read_changelog(settings: Settings, topic: str) -> Changelog:
    """Every record of a changelog topic, up to its end offsets now."""
    partitions = await partitions_of(settings, topic)
    out = Changelog()
    if not partitions:
        return out
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        live: dict[bytes, bool] = {}
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for r in records:
                    out.records += 1
                    key = r.key or b""
                    out.bytes += len(key) + len(r.value or b"")
                    if r.value is None:
                        out.tombstones += 1
                    else:
                        out.largest_value = max(out.largest_value, len(r.value))
                    live[key] = r.value is not None
        out.live_keys = sum(live.values())
        return out
    finally:
        await consumer.stop()


async def produce_probe(settings: Settings, account: str) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=0)
    await producer.start()
    try:
        event = {
            "event_id": f"{account}-0",
            "type": "subscribe",
            "account_id": account,
            "subscription_id": "s",
            "effective_at": datetime.now(UTC).isoformat(),
            "currency": "USD",
            "interval": "month",
            "items": [{"plan_id": "p", "unit_amount": "10.00"}],
        }
        await producer.send_and_wait(settings.input_topic, json.dumps(event).encode(), key=account.encode())
    finally:
        await producer.stop()


async def redis_has(url: str, key: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


@dataclass
class Result:
    store: str
    first_ready_s: float | None = None
    drain_s: float = 0.0  # from the first start to every event processed
    stop_by: str = ""
    stop_s: float = 0.0
    changelog: Changelog = field(default_factory=Changelog)
    pending_changelog: Changelog = field(default_factory=Changelog)
    data_dir_bytes: int = 0
    ready_s: float | None = None
    ready_cpu_s: float | None = None  # the restarted worker's CPU seconds when its "Worker ready" was seen
    recovery_s: float | None = None  # Faust's "Restoring state from changelog topics" to "Done reading"
    first_event_s: float = 0.0
    restart_stop_by: str = ""
    log_errors: list[str] = field(default_factory=list)
    recovery_lines: list[str] = field(default_factory=list)


def run_store(store: str, lines: list[bytes], tmp: Path, run: str, console: Console) -> Result:
    result = Result(store)
    app_id = f"{run}-{store}"
    data_dir = tmp / f"{store}-data"
    settings = Settings(
        app_id=app_id,
        input_topic=f"{app_id}-in",
        movements_topic=f"{app_id}-movements",
        dlq_topic=f"{app_id}-dlq",
        redis_prefix=f"{app_id}:",
        partitions=PARTITIONS,
        metrics_port=free_port(),
        metrics_addr="127.0.0.1",
        table_store=STORES[store],
        data_dir=data_dir,
    )
    env = {
        **os.environ,
        "MRR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MRR_REDIS_URL": settings.redis_url.get_secret_value(),
        "MRR_REDIS_PREFIX": settings.redis_prefix,
        "MRR_APP_ID": settings.app_id,
        "MRR_INPUT_TOPIC": settings.input_topic,
        "MRR_MOVEMENTS_TOPIC": settings.movements_topic,
        "MRR_DLQ_TOPIC": settings.dlq_topic,
        "MRR_PARTITIONS": str(PARTITIONS),
        "MRR_METRICS_PORT": str(settings.metrics_port),
        "MRR_METRICS_ADDR": "127.0.0.1",
        "MRR_TABLE_STORE": settings.table_store,
        "MRR_DATA_DIR": str(data_dir),
    }
    worker = Worker(env, tmp / f"{store}-worker.log")
    restarted = False
    try:
        with progress_bar() as bar:
            asyncio.run(produce(settings, lines, progress=bar))

        # the first start: the whole history
        worker.start()
        with progress_bar() as bar:
            task = bar.add_task(f"{store}: worker processing the history", total=len(lines))

            def drained() -> bool:
                n = processed(settings.metrics_port) or 0.0
                bar.update(task, completed=min(n, len(lines)))
                return n >= len(lines)

            wait_for(f"{store}: the history processed", drained, worker, every=0.2)
        result.drain_s = time.time() - worker.started_at
        result.first_ready_s = worker.logged(READY)
        with console.status(f"{store}: waiting for the consumer group to commit every input record"):
            wait_for(
                f"{store}: offsets committed",
                lambda: asyncio.run(committed_behind(settings)) == 0,
                worker,
                every=0.5,
            )
        result.stop_by, result.stop_s = worker.stop()
        result.log_errors += [line for line in worker.lines() if "ERROR" in line]
        restarted = True
        with console.status(f"{store}: reading the changelogs back"):
            result.changelog = asyncio.run(read_changelog(settings, f"{app_id}-accounts-changelog"))
            result.pending_changelog = asyncio.run(
                read_changelog(settings, f"{app_id}-redis-pending-changelog")
            )
        result.data_dir_bytes = disk_usage(data_dir)

        # the restart, timed (the worker's restart sets `restarted` above: its lines are read below)
        probe = f"{app_id}-probe"
        probe_key = f"{settings.redis_prefix}account:{probe}"
        with console.status(f"{store}: restarting the worker"):
            worker.start()
            asyncio.run(produce_probe(settings, probe))

            def probe_seen() -> bool:
                if result.ready_cpu_s is None and worker.logged(READY) is not None:
                    result.ready_cpu_s = worker.cpu_seconds()
                return asyncio.run(redis_has(settings.redis_url.get_secret_value(), probe_key))

            wait_for(f"{store}: the new event in Redis after the restart", probe_seen, worker, every=0.02)
            result.first_event_s = time.time() - worker.started_at
            result.ready_s = worker.logged(READY)
            restoring, done = worker.logged("Restoring state from changelog"), worker.logged("Done reading")
            if restoring is not None and done is not None:
                result.recovery_s = done - restoring
        result.recovery_lines = [
            line
            for line in worker.lines()
            if any(
                w in line
                for w in ("Restoring state", "Done reading", "Recovery complete", "Restore complete", READY)
            )
        ]
    finally:
        how, _ = worker.stop()
        if restarted:
            result.restart_stop_by = how
            result.log_errors += [line for line in worker.lines() if "ERROR" in line]
        try:
            asyncio.run(clean_redis(settings.redis_url.get_secret_value(), settings.redis_prefix))
        except Exception as e:  # the figures are still worth printing
            console.print(f"could not delete the Redis keys {settings.redis_prefix}*: {e!r}")
    return result


def fmt(x: float | None, places: int = 1) -> str:
    return "—" if x is None else f"{x:,.{places}f}"


def report(results: list[Result], events: int) -> Table:
    table = Table(title=f"bench/restart.py — a worker restarted on {events:,} events, 4 partitions")
    table.add_column("measure", justify="left")
    for r in results:
        table.add_column(STORES[r.store], justify="right")

    def row(measure: str, values: list[str]) -> None:
        table.add_row(measure, *values)

    row("first start: process start -> Worker ready (s)", [fmt(r.first_ready_s) for r in results])
    row("first start: process start -> history processed (s)", [fmt(r.drain_s) for r in results])
    row("  stopped by (after)", [f"{r.stop_by} ({r.stop_s:.1f} s)" for r in results])
    row("accounts changelog records", [f"{r.changelog.records:,}" for r in results])
    row("accounts changelog bytes (keys + values)", [f"{r.changelog.bytes:,}" for r in results])
    row(
        "  tombstones / live keys",
        [f"{r.changelog.tombstones:,} / {r.changelog.live_keys:,}" for r in results],
    )
    row("  largest value (bytes)", [f"{r.changelog.largest_value:,}" for r in results])
    row("redis-pending changelog records", [f"{r.pending_changelog.records:,}" for r in results])
    row("data dir on disk after the stop (bytes)", [f"{r.data_dir_bytes:,}" for r in results])
    row("restart: process start -> Worker ready (s)", [fmt(r.ready_s, 2) for r in results])
    row("restart: process start -> new event in Redis (s)", [fmt(r.first_event_s, 2) for r in results])
    row("  of which reading the changelogs (s, from Faust's log)", [fmt(r.recovery_s, 2) for r in results])
    row("  worker CPU seconds at Worker ready", [fmt(r.ready_cpu_s, 1) for r in results])
    row("  the restarted worker stopped by", [r.restart_stop_by for r in results])
    row("ERROR lines in the worker's log", [f"{len(r.log_errors)}" for r in results])
    return table


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--stores", default="memory,rocksdict", help="comma-separated: memory, rocksdict")
    parser.add_argument("--keep", action="store_true", help="keep the logs (their folder is printed)")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or any(s not in STORES for s in stores):
        parser.error(f"--stores: choose among {', '.join(STORES)}")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's leader elections are retried
    console = Console(stderr=True)
    run = f"bench-restart-{os.getpid()}-{int(time.time())}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    try:
        with console.status("generating the history"):
            events = HistoryGenerator(max(10, args.events // 5), 24, 7, parse_month("2024-01")).events()
            lines = [line.encode() for line in arrange(events, 7, late=0.05, duplicates=0.01)[: args.events]]
        results = [run_store(store, lines, tmp, run, console) for store in stores]
    finally:
        if args.keep:
            console.print(f"logs kept in {tmp}")
            for path in tmp.glob("*-data"):
                shutil.rmtree(path, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        for line in r.log_errors:
            console.print(f"[red]{r.store} worker log:[/red] {line}", highlight=False)
    Console(width=130).print(report(results, len(lines)))
    by = {r.store: r for r in results}
    out: dict[str, Any] = {"events": len(lines)}
    for store, r in by.items():
        out[f"{store}_ready_s"] = None if r.ready_s is None else round(r.ready_s, 3)
        out[f"{store}_first_event_s"] = round(r.first_event_s, 3)
        out[f"{store}_first_start_ready_s"] = None if r.first_ready_s is None else round(r.first_ready_s, 3)
        out[f"{store}_recovery_s"] = None if r.recovery_s is None else round(r.recovery_s, 3)
        out[f"{store}_ready_cpu_s"] = None if r.ready_cpu_s is None else round(r.ready_cpu_s, 2)
        out[f"{store}_changelog_records"] = r.changelog.records
        out[f"{store}_changelog_bytes"] = r.changelog.bytes
        out[f"{store}_stop"] = r.stop_by
        out[f"{store}_log_errors"] = len(r.log_errors)
    first = by.get("memory", results[0])  # what a memory:// restart reads
    out["changelog_records"] = first.changelog.records
    out["changelog_bytes"] = first.changelog.bytes
    out["changelog_live_keys"] = first.changelog.live_keys
    if "rocksdict" in by:
        out["rocksdict_data_dir_bytes"] = by["rocksdict"].data_dir_bytes
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
